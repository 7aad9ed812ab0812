//! Criterion micro-benchmarks of the swarm table: an announce on a shard holding one torrent
//! of 10k and of 1M peers, a new torrent's first announce, scrape counts over a shard of 1M
//! torrents, peer selection alone, a whole UDP announce datagram through a worker's
//! handler (parse, connection id, swarm, reply; no I/O), and a census of 1M torrents beside a
//! snapshot walk and the full scrape's body built from it. `cargo bench --bench swarm`.
//!
//! Tables are built once, outside the timed loops. Timed announces re-announce peers the table
//! already holds, in a scattered order, so the caches see what a busy tracker's would.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hayate_tracker::config::Config;
use hayate_tracker::connection_id::ConnectionIds;
use hayate_tracker::http::full_scrape::Body;
use hayate_tracker::mesh::inbox;
use hayate_tracker::protocol::udp;
use hayate_tracker::protocol::{Announce, AnnounceEvent, InfoHash};
use hayate_tracker::state::snapshot::SectionWriter;
use hayate_tracker::swarm::{Census, Peer, PeerSet, Shard, Torrent};
use hayate_tracker::worker::handler::Handler;

const NOW: u32 = 1_000;
const LIFETIME: u32 = 2_700;
const WANT: usize = 30;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn info_hash(n: u64) -> InfoHash {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&splitmix(n).to_le_bytes());
    h[8..16].copy_from_slice(&splitmix(n ^ 0xabcdef).to_le_bytes());
    h[16..].copy_from_slice(&(n as u32).to_le_bytes());
    h
}

/// Peer `i`: a distinct (IPv4, port); every fourth one a seeder.
fn peer_ip(i: u64) -> [u8; 4] {
    (0x0a00_0000u32.wrapping_add((i / 4) as u32)).to_be_bytes()
}

fn announce(hash: InfoHash, i: u64, event: AnnounceEvent) -> Announce {
    Announce {
        info_hash: hash,
        peer_id: *b"-qB4650-abcdefghijkl",
        port: 6881 + (i % 4) as u16,
        left: if i % 4 == 0 { 0 } else { 1_000_000 },
        event,
        num_want: WANT as i32,
    }
}

/// A scattered walk over `0..n` (a step coprime to n would do; a hash is simpler).
fn scattered(i: u64, n: u64) -> u64 {
    splitmix(i) % n
}

/// A shard holding one torrent of `peers` peers.
fn one_torrent(peers: u64) -> (Shard, InfoHash) {
    let started = Instant::now();
    let mut shard = Shard::new(LIFETIME);
    let hash = info_hash(7);
    for i in 0..peers {
        shard
            .announce(
                peer_ip(i),
                &announce(hash, i, AnnounceEvent::Started),
                0,
                NOW,
                |_| {},
            )
            .expect("no limits");
    }
    eprintln!(
        "built a torrent of {peers} peers in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    (shard, hash)
}

fn announce_known_peer(c: &mut Criterion) {
    let mut g = c.benchmark_group("announce_reannounce_numwant30");
    g.throughput(Throughput::Elements(1));
    let mut out = [0u8; 2048];
    for peers in [10_000u64, 1_000_000] {
        let (mut shard, hash) = one_torrent(peers);
        let mut i = 0u64;
        g.bench_function(BenchmarkId::from_parameter(peers), |b| {
            b.iter(|| {
                i += 1;
                let p = scattered(i, peers);
                let mut n = udp::ANNOUNCE_REPLY_HEADER_LEN;
                let a = announce(hash, p, AnnounceEvent::None);
                let counts = shard
                    .announce(peer_ip(p), black_box(&a), WANT, NOW, |peer| {
                        n += udp::write_peer(&mut out[n..], &peer.ip, peer.port);
                    })
                    .expect("no limits");
                black_box((n, counts))
            })
        });
    }
    g.finish();
}

fn new_torrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("announce_new_torrent");
    g.throughput(Throughput::Elements(1));
    // A shard that already holds 100k torrents, as a live one would.
    let mut shard = Shard::new(LIFETIME);
    for t in 0..100_000u64 {
        shard
            .announce(
                peer_ip(t),
                &announce(info_hash(t), t, AnnounceEvent::Started),
                0,
                NOW,
                |_| {},
            )
            .expect("no limits");
    }
    let mut next = 1u64 << 40;
    g.bench_function("first_announce", |b| {
        b.iter_custom(|iters| {
            let first = next;
            let started = Instant::now();
            for t in first..first + iters {
                let a = announce(info_hash(t), t, AnnounceEvent::Started);
                black_box(shard.announce(peer_ip(t), &a, WANT, NOW, |_| {}).ok());
            }
            let took = started.elapsed();
            // Untimed: remove them again so the shard stays at 100k torrents.
            for t in first..first + iters {
                let a = announce(info_hash(t), t, AnnounceEvent::Stopped);
                let _ = shard.announce(peer_ip(t), &a, 0, NOW, |_| {});
            }
            next += iters;
            took
        })
    });
    g.finish();
}

fn scrape_counts(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape_counts");
    g.throughput(Throughput::Elements(1));
    let torrents = 1_000_000u64;
    let started = Instant::now();
    let mut shard = Shard::new(LIFETIME);
    for t in 0..torrents {
        shard
            .announce(
                peer_ip(t),
                &announce(info_hash(t), t, AnnounceEvent::Started),
                0,
                NOW,
                |_| {},
            )
            .expect("no limits");
    }
    let hashes: Vec<InfoHash> = (0..torrents).map(info_hash).collect();
    eprintln!(
        "built a shard of {torrents} torrents in {:.2} s ({} bytes per table entry)",
        started.elapsed().as_secs_f64(),
        std::mem::size_of::<(InfoHash, Torrent)>()
    );
    let mut i = 0u64;
    g.bench_function("1M_torrents", |b| {
        b.iter(|| {
            i += 1;
            shard.counts(black_box(&hashes[scattered(i, torrents) as usize]))
        })
    });
    g.finish();
}

/// A whole census of a shard of 1M torrents and 2M peers (what a worker spreads over slices
/// between requests), beside the snapshot walk of the same shard it resembles, and the full
/// scrape's body built from the census's list (bencode and gzip, on a blocking thread).
fn census(c: &mut Criterion) {
    let mut g = c.benchmark_group("census");
    g.sample_size(10);
    let torrents = 1_000_000u64;
    let mut shard = Shard::new(LIFETIME);
    for t in 0..torrents {
        for i in [t, t + torrents] {
            let a = announce(info_hash(t), i, AnnounceEvent::Started);
            shard
                .announce(peer_ip(i), &a, 0, NOW, |_| {})
                .expect("no limits");
        }
    }
    g.bench_function("walk_1M_torrents_2M_peers", |b| {
        b.iter(|| {
            let mut census = Census::new(true);
            let mut walk = shard.start_walk();
            while !shard.census_slice(&mut walk, 8192, &mut census) {}
            black_box(census.torrents.map(|t| t.len()))
        })
    });
    g.bench_function("snapshot_walk_1M_torrents_2M_peers", |b| {
        let mut out = SectionWriter::new();
        b.iter(|| {
            out.clear();
            shard.write_all(NOW, &mut out);
            black_box(out.peers())
        })
    });
    let mut list = Census::new(true);
    let mut walk = shard.start_walk();
    while !shard.census_slice(&mut walk, usize::MAX, &mut list) {}
    let list = list.torrents.expect("asked for");
    g.bench_function("full_scrape_body_1M_torrents", |b| {
        b.iter(|| black_box(Body::build(list.clone()).gzip.len()))
    });
    g.finish();
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("peerset_select_30");
    g.throughput(Throughput::Elements(1));
    let hs = ahash::RandomState::new();
    let mut set = PeerSet::<[u8; 4]>::default();
    for i in 0..10_000u64 {
        let a = announce([0; 20], i, AnnounceEvent::None);
        let peer = Peer {
            expires: NOW + LIFETIME,
            ip: peer_ip(i),
            port: a.port,
            counted: false,
            client: 0,
        };
        set.upsert(peer, a.left == 0, &hs);
    }
    let mut rng = fastrand::Rng::with_seed(1);
    let mut out = [0u8; 2048];
    for (name, for_seeder) in [
        ("from_10k_for_leecher", false),
        ("from_10k_for_seeder", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                set.select(
                    (peer_ip(5), 6882),
                    black_box(for_seeder),
                    WANT,
                    &mut rng,
                    |peer| n += udp::write_peer(&mut out[n..], &peer.ip, peer.port),
                );
                n
            })
        });
    }
    g.finish();
}

/// A whole BEP 15 announce through a one-worker handler whose torrent holds 10k peers: what a
/// worker spends on one packet apart from the ring and the syscalls.
fn handler_datagram(c: &mut Criterion) {
    let mut g = c.benchmark_group("handler_announce_datagram");
    g.throughput(Throughput::Elements(1));
    let config = Config::from_toml_str("[workers]\ncount = 1\n", "bench").expect("config");
    let ids = ConnectionIds::with_key([7; 16], config.protocol.connection_id_lifetime_secs);
    let (mailbox, _inbox) = inbox::inbox(16).expect("inbox");
    let mut h = Handler::new(0, &config, ids.clone(), vec![mailbox], Default::default());
    let mut out = vec![0u8; Handler::max_reply_len(&config)];
    let hash = info_hash(7);
    let peers = 10_000u64;
    let packet = |i: u64, event: u32| {
        let ip = IpAddr::from(peer_ip(i));
        let a = announce(hash, i, AnnounceEvent::None);
        let mut p = ids.make(ip, NOW).to_be_bytes().to_vec();
        p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&(i as u32).to_be_bytes());
        p.extend_from_slice(&hash);
        p.extend_from_slice(&a.peer_id);
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&a.left.to_be_bytes());
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&event.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&(WANT as i32).to_be_bytes());
        p.extend_from_slice(&a.port.to_be_bytes());
        (SocketAddr::new(ip, a.port), p)
    };
    for i in 0..peers {
        let (from, p) = packet(i, 2);
        assert!(
            h.handle_datagram(NOW, from, 0, &p, &mut out) > udp::ANNOUNCE_REPLY_HEADER_LEN
                || i == 0
        );
    }
    let packets: Vec<(SocketAddr, Vec<u8>)> =
        (0..4096).map(|i| packet(scattered(i, peers), 0)).collect();
    let mut i = 0usize;
    g.bench_function("10k_peers_numwant30", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            let (from, p) = &packets[i];
            h.handle_datagram(NOW, *from, 0, black_box(p), &mut out)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    targets = announce_known_peer, new_torrent, scrape_counts, select, handler_datagram, census
}
criterion_main!(benches);
