//! `limits.max_peers` bounds the tracker's memory under a flood of two million peers, while
//! peers it holds still re-announce and stop. The only test in its binary: it reads the
//! process's resident memory, which any test running beside it would move (CI saw 37 MiB of
//! another test's growth counted here when it shared `tests/limits.rs`).

mod common;
#[path = "support/udp_flood.rs"]
mod udp_flood;

use std::time::Duration;

use common::*;
use udp_flood::*;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn max_peers_bounds_memory_under_a_flood_of_two_million_peers() {
    const MAX_PEERS: u32 = 100_000;
    // Loopback stays exempt from the per-source quotas, so only max_peers stands in the way.
    let t = start_tracker(
        1,
        &format!("{FAST_METRICS}[limits]\nmax_peers = {MAX_PEERS}\n"),
    );
    let mut c = Client::new(v4(&t));
    let before = rss();
    let mut at_limit = 0;
    let mut refused = 0;
    let mut answered = 0;
    // 40 torrents x 50,000 ports: two million distinct peers. The first two fill the tracker.
    let torrents: u32 = std::env::var("FLOOD_TORRENTS").map_or(40, |v| v.parse().unwrap());
    for n in 0..torrents {
        let cid = c.connect();
        let announces: Vec<_> = (1..=50_000u16).map(|p| (n, p, 1, EVENT_STARTED)).collect();
        let replies = pipeline(&mut c, cid, &announces);
        answered += replies.len();
        refused += refusals(&replies, "tracker is full");
        if n == 1 {
            at_limit = rss();
        }
    }
    let after = rss();
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{} peers sent, {answered} answered, {refused} refused; RSS grew {:.1} MiB to hold {MAX_PEERS} peers, then {:.1} MiB over the rest of the flood",
        torrents * 50_000,
        mb(at_limit.saturating_sub(before)),
        mb(after.saturating_sub(at_limit))
    );
    assert!(answered > 1_900_000, "{answered} of 2,000,000 answered");
    assert!(
        refused >= answered - MAX_PEERS as usize,
        "{refused} refused"
    );
    // Two million peers would cost well over 100 MiB; the 1.9 million refused cost nothing
    // but the test's own buffers.
    assert!(
        after.saturating_sub(at_limit) < 8 << 20,
        "RSS grew {} bytes after the tracker was full",
        after.saturating_sub(at_limit)
    );
    let page = wait_sample(
        t.metrics_address().unwrap(),
        "hayate_leechers",
        &[],
        f64::from(MAX_PEERS),
        Duration::from_secs(10),
    );
    assert!(page.contains("reason=\"tracker_full\""), "{page}");
    // Peers held still re-announce and stop; a stop makes room for one new peer.
    let cid = c.connect();
    let kept = c.announce(cid, hash(0), 1, 1, EVENT_NONE, 0);
    assert!(matches!(kept, Reply::Announce { .. }), "{kept:?}");
    let new = c.announce(cid, hash(39), 60_000, 1, EVENT_STARTED, 0);
    assert!(matches!(&new, Reply::Error { message, .. } if message == "tracker is full"));
    c.announce(cid, hash(0), 1, 1, EVENT_STOPPED, 0);
    let new = c.announce(cid, hash(39), 60_000, 1, EVENT_STARTED, 0);
    assert!(matches!(new, Reply::Announce { .. }), "{new:?}");
}
