//! Bytes the swarm table spends per peer, measured with a counting allocator: the heap a shard
//! holds after N announces, divided by N. Printed for the README and bounded so a change that
//! bloats the table fails here.

use hayate_tracker::protocol::{Announce, AnnounceEvent};
use hayate_tracker::swarm::Shard;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

/// Heap bytes per peer for `torrents` torrents of `per_torrent` IPv4 peers each.
fn bytes_per_peer(torrents: u32, per_torrent: u32) -> f64 {
    let mut shard = Shard::new(3600);
    let before = counting_alloc::live_bytes();
    for t in 0..torrents {
        let mut info_hash = [0u8; 20];
        info_hash[..4].copy_from_slice(&t.to_le_bytes());
        info_hash[4..8].copy_from_slice(&t.wrapping_mul(0x9e37_79b9).to_le_bytes());
        for p in 0..per_torrent {
            let a = Announce {
                info_hash,
                peer_id: [7; 20],
                port: 1000 + (p % 50000) as u16,
                left: u64::from(p % 3),
                event: AnnounceEvent::Started,
                num_want: 0,
            };
            shard
                .announce((p / 50000 + 1).to_be_bytes(), &a, 0, 0, |_| {})
                .unwrap();
        }
    }
    let after = counting_alloc::live_bytes();
    let peers = f64::from(torrents) * f64::from(per_torrent);
    let total = shard.totals();
    assert_eq!((total.seeders + total.leechers) as f64, peers);
    (after - before) as f64 / peers
}

#[test]
fn bytes_per_ipv4_peer() {
    let cases = [(1, 200_000), (100_000, 2), (20_000, 10), (200, 1_000)];
    let mut worst: f64 = 0.0;
    for (torrents, per) in cases {
        let b = bytes_per_peer(torrents, per);
        println!("swarm table: {torrents} torrents x {per} IPv4 peers: {b:.1} bytes/peer");
        worst = worst.max(b);
    }
    // A regression guard at today's layout (worst case 62.6 B: 100k two-peer torrents), not the
    // goal (see README, Benchmarks): keeping the 20-byte peer id again would cross it.
    assert!(worst < 75.0, "worst case {worst:.1} bytes/peer");
}
