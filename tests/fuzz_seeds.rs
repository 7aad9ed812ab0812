//! Replays the committed fuzz seeds (`fuzz/corpus/<target>/`) through the same harness bodies the
//! libFuzzer targets run (`fuzz/harness/`, included here by path), so `cargo test` checks the
//! invariants the README's Fuzzing section lists without cargo-fuzz or nightly. A failing seed
//! fails its test and names the file; a missing or empty corpus directory fails too, so a renamed
//! target cannot silently test nothing. Also keeps `fuzz/corpus/config/seed-default` equal to
//! the shipped `config.toml`.

#[path = "../fuzz/harness/config.rs"]
mod config;
#[path = "../fuzz/harness/handler.rs"]
mod handler;
#[path = "../fuzz/harness/http_bencode.rs"]
mod http_bencode;
#[path = "../fuzz/harness/http_query.rs"]
mod http_query;
#[path = "../fuzz/harness/udp_request.rs"]
mod udp_request;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use handler::{AnnounceOp, Id, Op, Reach};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of a target's corpus, sorted by name; panics when there is none.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus of fuzz target {target}: {}: {e}", dir.display()));
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| {
            let path = e
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    assert!(
        !seeds.is_empty(),
        "corpus of fuzz target {target} is empty: {}",
        dir.display()
    );
    seeds.sort();
    seeds
}

/// Runs every seed of `target` through `run`; fails naming each seed that panicked.
fn replay<R>(target: &str, mut run: impl FnMut(&[u8]) -> R) -> Vec<R> {
    let mut failed = Vec::new();
    let mut results = Vec::new();
    for (path, bytes) in seeds(target) {
        match catch_unwind(AssertUnwindSafe(|| run(&bytes))) {
            Ok(r) => results.push(r),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failed.push(format!("{}: {message}", path.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target}: seeds broke an invariant:\n{}",
        failed.join("\n")
    );
    results
}

#[test]
fn udp_request_seeds_hold() {
    replay("udp_request", udp_request::run);
}

#[test]
fn config_seeds_hold() {
    replay("config", config::run);
}

#[test]
fn http_query_seeds_hold() {
    replay("http_query", http_query::run);
}

#[test]
fn http_bencode_seeds_hold() {
    replay("http_bencode", http_bencode::run);
}

/// The handler seeds hold, and between them reach what the target claims to reach: a torrent
/// indexed, dropped below the index size and indexed again, and both sides of the +1 s
/// connection-id skew boundary.
#[test]
fn handler_seeds_hold_and_reach_indexed_swarms_and_the_skew_boundary() {
    let reach = replay("handler", handler::run);
    let largest = reach.iter().map(|r| r.largest_torrent).max().unwrap_or(0);
    assert!(
        largest > 32,
        "no seed grows a torrent past 32 peers ({largest})"
    );
    assert!(
        reach.iter().any(|r| r.regrown),
        "no seed grows a torrent past 32 peers, below 16 and past 32 again"
    );
    assert!(
        reach.iter().any(|r| r.skew_accepted > 0),
        "no seed sends an id 1 s ahead"
    );
    assert!(
        reach.iter().any(|r| r.skew_refused > 0),
        "no seed sends an id 2 s ahead"
    );
}

fn announce(from: u8, id: Id, port: u16) -> Op {
    Op::Announce(AnnounceOp {
        worker: false,
        from,
        id,
        txid: 7,
        hash: 1,
        port,
        left: 1,
        event: 2,
        num_want: 10,
        options: Vec::new(),
        cut: None,
    })
}

/// The connection-id boundaries, spelled out: the harness asserts ids made 0 and 1 s ahead and
/// up to the lifetime (120 s) old are accepted, 2 s ahead and 121 s old refused.
#[test]
fn handler_connection_id_skew_and_lifetime_boundaries() {
    let ops = vec![
        announce(0, Id::Future(0), 1000),
        announce(0, Id::Future(1), 1001),
        announce(3, Id::Future(1), 1002),
        announce(0, Id::Future(2), 1003),
        announce(3, Id::Future(2), 1004),
        announce(0, Id::Aged(120), 1005),
        announce(0, Id::Aged(121), 1006),
        Op::Deliver,
    ];
    let reach = handler::run_ops(ops);
    assert_eq!((reach.skew_accepted, reach.skew_refused), (2, 2));
}

fn crowd(hash: u8, first_port: u16, count: u8, left: u8, event: u8) -> Op {
    Op::Crowd {
        from: 1,
        hash,
        first_port,
        count,
        left,
        event,
        num_want: 40,
    }
}

/// A torrent grows past the index size, changes roles, shrinks by stops below 16, grows again
/// until full, and expires partly: every reply and the shards' invariants checked on the way.
#[test]
fn handler_crowd_crosses_the_index_sizes_both_ways() {
    let ops = vec![
        crowd(2, 100, 40, 1, 2), // 40 leechers: indexed
        crowd(2, 100, 12, 0, 1), // 12 of them complete: seeders, swapped in the index
        Op::Tick(30),
        crowd(2, 110, 28, 1, 3), // stops: 12 left, the index dropped
        crowd(2, 200, 40, 2, 0), // 40 more, 48 in all: full, indexed again
        crowd(2, 300, 3, 1, 2),  // refused: the torrent is full
        Op::Tick(70),            // the first 12 are 100 s old: past the 90 s lifetime
        Op::Sweep,
        crowd(2, 200, 10, 1, 3),
        Op::Deliver,
    ];
    let reach: Reach = handler::run_ops(ops);
    assert_eq!(
        reach.largest_torrent, 48,
        "limited to max_peers_per_torrent"
    );
    assert!(reach.regrown, "{reach:?}");
}

/// The config seed of the default file is the shipped `config.toml`, so fuzzing starts from
/// what operators run; and that file loads.
#[test]
fn config_seed_default_is_the_shipped_config() {
    let shipped = std::fs::read(repo().join("config.toml")).expect("config.toml");
    let seed = std::fs::read(repo().join("fuzz/corpus/config/seed-default"))
        .expect("fuzz/corpus/config/seed-default");
    assert!(
        seed == shipped,
        "fuzz/corpus/config/seed-default differs from config.toml: cp config.toml fuzz/corpus/config/seed-default"
    );
    let text = std::str::from_utf8(&shipped).expect("config.toml is UTF-8");
    hayate_tracker::config::Config::from_toml_str(text, "config.toml").expect("config.toml loads");
}
