//! Criterion micro-benchmarks of the wire formats: BEP 15 parsing and reply writing, the HTTP
//! query parser and the bencoded announce reply. `cargo bench --bench codec`.
//!
//! Every input is built once outside the timed loop; the loop only parses or writes.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hayate_tracker::http::query;
use hayate_tracker::http::response::{self, PeerFormat};
use hayate_tracker::mesh::{HttpAnnounced, HttpPeer};
use hayate_tracker::protocol::udp::{self, parse_request, Request};
use hayate_tracker::protocol::SwarmCounts;

const MAX_SCRAPE: usize = 74;

fn hash(n: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (i, b) in h.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8 * 17) ^ 0x5a;
    }
    h
}

fn connect_packet() -> Vec<u8> {
    let mut p = udp::PROTOCOL_ID.to_be_bytes().to_vec();
    p.extend_from_slice(&udp::ACTION_CONNECT.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p
}

/// A 98-byte announce; with `bep41`, an 11-byte URLData option ("/announce") after it.
fn announce_packet(bep41: bool) -> Vec<u8> {
    let mut p = 0x0102_0304_0506_0708u64.to_be_bytes().to_vec();
    p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&hash(1));
    p.extend_from_slice(b"-qB4650-abcdefghijkl");
    p.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    p.extend_from_slice(&123_456_789u64.to_be_bytes()); // left
    p.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    p.extend_from_slice(&2u32.to_be_bytes()); // started
    p.extend_from_slice(&0u32.to_be_bytes()); // ip
    p.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // key
    p.extend_from_slice(&30i32.to_be_bytes()); // num_want
    p.extend_from_slice(&6881u16.to_be_bytes());
    assert_eq!(p.len(), udp::ANNOUNCE_LEN);
    if bep41 {
        p.extend_from_slice(&[0x2, 9]);
        p.extend_from_slice(b"/announce");
        assert_eq!(p.len(), 109);
    }
    p
}

fn scrape_packet(hashes: u8) -> Vec<u8> {
    let mut p = 0x0102_0304_0506_0708u64.to_be_bytes().to_vec();
    p.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    for n in 0..hashes {
        p.extend_from_slice(&hash(n));
    }
    p
}

fn udp_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_parse");
    let cases = [
        ("connect", connect_packet()),
        ("announce_98", announce_packet(false)),
        ("announce_109_bep41", announce_packet(true)),
        ("scrape_1", scrape_packet(1)),
        ("scrape_74", scrape_packet(74)),
    ];
    for (name, packet) in &cases {
        assert!(parse_request(packet, MAX_SCRAPE).is_ok(), "{name} parses");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(name), packet, |b, p| {
            b.iter(|| {
                // Read what a handler reads, so nothing is optimised away.
                match parse_request(black_box(p), MAX_SCRAPE) {
                    Ok(Request::Connect { transaction_id }) => transaction_id as u64,
                    Ok(Request::Announce { announce, .. }) => {
                        announce.left ^ u64::from(announce.port) ^ u64::from(announce.info_hash[7])
                    }
                    Ok(Request::Scrape { info_hashes, .. }) => info_hashes.len() as u64,
                    Err(_) => 0,
                }
            })
        });
    }
    g.finish();
}

fn udp_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_write");
    let mut out = vec![0u8; 2048];
    let counts = SwarmCounts {
        seeders: 120,
        leechers: 340,
        downloaded: 5000,
    };
    let peers: Vec<([u8; 4], u16)> = (0..30u32)
        .map(|i| ((0x0a00_0000 + i * 7919).to_be_bytes(), 6881 + i as u16))
        .collect();
    g.bench_function("connect", |b| {
        b.iter(|| udp::write_connect(black_box(&mut out), 0x1234_5678, black_box(0xfeed_f00d)))
    });
    g.bench_function("announce_30_peers_v4", |b| {
        b.iter(|| {
            let out = black_box(&mut out[..]);
            let mut n = udp::ANNOUNCE_REPLY_HEADER_LEN;
            for (ip, port) in black_box(&peers) {
                n += udp::write_peer(&mut out[n..], ip, *port);
            }
            udp::write_announce_header(out, 0x1234_5678, 1800, counts);
            n
        })
    });
    for hashes in [1usize, 74] {
        g.bench_function(format!("scrape_{hashes}"), |b| {
            b.iter(|| {
                let out = black_box(&mut out[..]);
                let mut n = udp::write_scrape_header(out, 0x1234_5678);
                for _ in 0..hashes {
                    n += udp::write_scrape_entry(&mut out[n..], black_box(counts));
                }
                n
            })
        });
    }
    g.bench_function("error", |b| {
        b.iter(|| {
            udp::write_error(
                black_box(&mut out),
                0x1234_5678,
                black_box("connection id expired or forged"),
                98,
            )
        })
    });
    g.finish();
}

/// Percent-encodes bytes the way libtorrent does: unreserved characters as they are, the rest
/// as `%XX`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02x}"));
        }
    }
    s
}

/// An announce query as libtorrent (qBittorrent, Deluge) sends it, parameters in its order.
fn libtorrent_announce_query() -> String {
    format!(
        "info_hash={}&peer_id={}&port=51413&uploaded=0&downloaded=0&left=1610612736\
         &corrupt=0&key=6A1C2B3D&event=started&numwant=200&compact=1&no_peer_id=1\
         &supportcrypto=1&redundant=0",
        escape(&[
            0xd8, 0x4f, 0x2a, 0x10, 0x9c, 0x33, b'A', b'b', 0x00, 0xff, 0x7e, 0x12, 0x80, b'z',
            0x45, 0x61, 0x3f, 0x26, 0x3d, 0x25
        ]),
        escape(b"-qB4650-\x8a\x1f(X!k~9\xc3Pq.")
    )
}

fn http_query(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_query");
    let announce = libtorrent_announce_query();
    assert!(query::parse_announce(announce.as_bytes(), false).is_ok());
    g.bench_function("announce_libtorrent", |b| {
        b.iter(|| {
            query::parse_announce(black_box(announce.as_bytes()), false)
                .map(|q| q.announce.port)
                .unwrap_or(0)
        })
    });
    let scrape: Vec<String> = (0..10u8)
        .map(|n| format!("info_hash={}", escape(&hash(n))))
        .collect();
    let scrape = scrape.join("&");
    assert_eq!(
        query::parse_scrape(scrape.as_bytes(), MAX_SCRAPE)
            .unwrap()
            .len(),
        10
    );
    g.bench_function("scrape_10", |b| {
        b.iter(|| {
            query::parse_scrape(black_box(scrape.as_bytes()), MAX_SCRAPE)
                .map(|h| h.len())
                .unwrap_or(0)
        })
    });
    g.finish();
}

fn http_reply(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_reply");
    let reply = HttpAnnounced {
        counts: SwarmCounts {
            seeders: 120,
            leechers: 340,
            downloaded: 5000,
        },
        peers: (0..30u32)
            .map(|i| HttpPeer {
                ip: IpAddr::from((0x0a00_0000 + i * 7919).to_be_bytes()),
                port: 6881 + i as u16,
            })
            .collect(),
        interval: 1800,
        min_interval: 900,
    };
    let format = PeerFormat {
        compact: true,
        ipv6: false,
    };
    g.bench_function("announce_30_peers_compact", |b| {
        b.iter(|| response::announce(black_box(&reply), format).len())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    targets = udp_parse, udp_write, http_query, http_reply
}
criterion_main!(benches);
