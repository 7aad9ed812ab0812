//! A flood of distinct fake info hashes (and of fake peers into one torrent) against a shard
//! with limits: the heap it holds, measured with a counting allocator, stops growing at the
//! limit instead of following the flood. Also prints what one single-peer torrent costs, the
//! figure `config.toml` sizes `limits.max_torrents` by.

use hayate_tracker::protocol::{Announce, AnnounceEvent};
use hayate_tracker::swarm::{Limits, Quotas, Refused, Shard};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn fake(n: u32, port: u16) -> Announce {
    let mut info_hash = [0u8; 20];
    info_hash[..4].copy_from_slice(&n.to_le_bytes());
    info_hash[4..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9).to_le_bytes());
    Announce {
        info_hash,
        peer_id: [1; 20],
        port,
        left: 1,
        event: AnnounceEvent::Started,
        num_want: -1,
    }
}

/// Floods `shard` with torrents `from..to`, one peer each; returns (stored, refused).
fn flood(shard: &mut Shard, from: u32, to: u32) -> (u32, u32) {
    let (mut stored, mut refused) = (0, 0);
    for i in from..to {
        match shard.announce([10, 0, 0, 1], &fake(i, 6881), 50, 0, |_| {}) {
            Ok(_) => stored += 1,
            Err(Refused::TrackerFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    (stored, refused)
}

/// One test, so no other test's allocations run between the counter's reads.
#[test]
fn floods_stop_at_the_limits() {
    // What a single-peer torrent costs, with no limit in the way.
    let before = counting_alloc::live_bytes();
    let mut open = Shard::new(3600);
    flood(&mut open, 0, 200_000);
    let per_torrent = (counting_alloc::live_bytes() - before) as f64 / 200_000.0;
    println!("swarm table: {per_torrent:.0} bytes per single-peer torrent");
    drop(open);

    // The worst case the default limits allow: every peer from a source of its own (each one
    // an entry in the quota map), the first max_torrents of them alone in their torrents, the
    // rest joining those torrents.
    let before = counting_alloc::live_bytes();
    let mut worst = Shard::new(3600);
    worst.limit_sources(Quotas {
        peers: 20_000,
        new_torrents: 1_000,
        exempt: Default::default(),
    });
    for i in 0..100_000u32 {
        let ip = (0x0b00_0000 + i).to_be_bytes();
        worst.announce(ip, &fake(i, 6881), 50, 0, |_| {}).unwrap();
    }
    let alone = (counting_alloc::live_bytes() - before) as f64 / 100_000.0;
    let before = counting_alloc::live_bytes();
    for i in 100_000..400_000u32 {
        let ip = (0x0b00_0000 + i).to_be_bytes();
        worst
            .announce(ip, &fake(i % 100_000, 6881), 50, 0, |_| {})
            .unwrap();
    }
    let joining = (counting_alloc::live_bytes() - before) as f64 / 300_000.0;
    let (max_torrents, max_peers) = (4_000_000f64, 10_000_000f64);
    println!(
        "with quotas on: {alone:.0} bytes per single-peer torrent, {joining:.0} per peer joining \
         one, each from its own address; the default limits' worst case: {:.2} GB",
        (max_torrents * alone + (max_peers - max_torrents) * joining) / 1e9
    );
    assert!(
        alone < 2.0 * per_torrent,
        "a source's entry costs {alone:.0} B a torrent"
    );
    drop(worst);

    // A flood ten times the limit holds what the limit allows, not what the flood sent.
    let max_torrents = 50_000;
    let limits = Limits {
        max_torrents,
        max_peers_per_torrent: 100,
        ..Limits::NONE
    };
    let before = counting_alloc::live_bytes();
    let mut shard = Shard::with_limits(3600, limits);
    let (stored, refused) = flood(&mut shard, 0, 100_000);
    let at_limit = counting_alloc::live_bytes() - before;
    let (more, refused_more) = flood(&mut shard, 100_000, 600_000);
    let after_flood = counting_alloc::live_bytes() - before;
    assert_eq!((stored, refused), (50_000, 50_000));
    assert_eq!((more, refused_more), (0, 500_000));
    assert_eq!(shard.totals().torrents, max_torrents);
    assert_eq!(after_flood, at_limit, "refused announces cost no memory");
    let bound = max_torrents as f64 * per_torrent * 1.5;
    assert!(
        (at_limit as f64) < bound,
        "{at_limit} bytes held at the limit, bound {bound:.0}"
    );

    // Fake peers into one torrent stop at its limit too.
    let before = counting_alloc::live_bytes();
    let mut refused = 0;
    for port in 1..=5_000u16 {
        match shard.announce([10, 0, 0, 2], &fake(0, port), 50, 0, |_| {}) {
            Ok(_) => {}
            Err(Refused::TorrentFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let grown = counting_alloc::live_bytes() - before;
    assert_eq!(refused, 5_000 - 99, "one peer was there, 99 more fit");
    assert!(grown < 100 * 64 + 4096, "{grown} bytes for 99 peers");
    shard.check_invariants();
}
