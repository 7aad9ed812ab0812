//! Criterion benchmark of the swarm snapshot format: encoding and decoding 2M peers in 200k
//! torrents (7 IPv4 and 3 IPv6 peers each, over 4 shard sections), the size restore must handle
//! in well under a second. `cargo bench --bench snapshot`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hayate_tracker::state::snapshot::{decode, encode_file, Header, PeerRecord, SectionWriter};

const TORRENTS: u32 = 200_000;
const SECTIONS: u32 = 4;
const V4: u32 = 7;
const V6: u32 = 3;

fn header() -> Header {
    Header {
        written_unix: 1_790_000_000,
        clock_origin_unix: 1_789_990_000,
        connection_key: [7; 16],
    }
}

fn fill(sections: &mut [SectionWriter]) {
    for w in sections.iter_mut() {
        w.clear();
    }
    for t in 0..TORRENTS {
        let w = &mut sections[(t % SECTIONS) as usize];
        let mut hash = [0u8; 20];
        hash[..4].copy_from_slice(&t.to_le_bytes());
        w.torrent(&hash, t % 1000, 0, V4, V6);
        for p in 0..V4 + V6 {
            let (port, seeder, counted, ttl_secs) =
                (6881 + p as u16, p % 3 == 0, p % 2 == 0, 1 + p);
            if p < V4 {
                w.peer_v4(&PeerRecord {
                    ip: t.to_be_bytes(),
                    port,
                    seeder,
                    counted,
                    ttl_secs,
                });
            } else {
                let mut ip = [0x20u8; 16];
                ip[12..].copy_from_slice(&t.to_be_bytes());
                w.peer_v6(&PeerRecord {
                    ip,
                    port,
                    seeder,
                    counted,
                    ttl_secs,
                });
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut sections: Vec<SectionWriter> = (0..SECTIONS).map(|_| SectionWriter::new()).collect();
    let mut file = Vec::new();
    fill(&mut sections);
    let bytes: Vec<&[u8]> = sections.iter().map(|s| s.as_bytes()).collect();
    encode_file(&header(), &bytes, &mut file);
    let peers: u64 = sections.iter().map(|s| s.peers()).sum();
    assert_eq!(peers, 2_000_000);
    assert_eq!(
        decode(&file)
            .expect("the benchmark's file decodes")
            .torrents
            .len(),
        TORRENTS as usize
    );

    let mut g = c.benchmark_group("snapshot_2m_peers");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(peers));
    g.bench_function("write_sections_and_encode", |b| {
        b.iter(|| {
            fill(&mut sections);
            let bytes: Vec<&[u8]> = sections.iter().map(|s| s.as_bytes()).collect();
            encode_file(&header(), &bytes, &mut file);
            black_box(file.len())
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode(black_box(&file)).unwrap().torrents.len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
