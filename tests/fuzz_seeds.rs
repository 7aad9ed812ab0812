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
#[path = "../fuzz/harness/snapshot.rs"]
mod snapshot;
#[path = "../fuzz/harness/udp_request.rs"]
mod udp_request;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use handler::{AnnounceOp, Id, Op, Reach};
use hayate_tracker::state::snapshot::{encode_file, Header, PeerRecord, SectionWriter, VERSION};

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

/// The snapshot seeds hold, and between them reach every outcome of the reader: files that
/// decode (with peers of both families), and each way a file is refused.
#[test]
fn snapshot_seeds_hold_and_reach_every_outcome() {
    use snapshot::Outcome;
    let outcomes = replay("snapshot", snapshot::run);
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Decoded { v4, v6 } if *v4 > 0 && *v6 > 0)),
        "no seed decodes with IPv4 and IPv6 peers: {outcomes:?}"
    );
    for want in [
        Outcome::Empty,
        Outcome::NotASnapshot,
        Outcome::NewerVersion,
        Outcome::Truncated,
        Outcome::Checksum,
        Outcome::Malformed,
    ] {
        assert!(outcomes.contains(&want), "no seed is refused as {want:?}");
    }
}

/// The snapshot seeds, made with the encoder (so they follow the format as it is):
/// `cargo test --release --test fuzz_seeds -- --ignored write_snapshot_seeds` after changing it.
#[test]
#[ignore = "writes fuzz/corpus/snapshot/; run by hand after changing the format"]
fn write_snapshot_seeds() {
    let header = Header {
        written_unix: 1_790_000_000,
        clock_origin_unix: 1_789_996_400,
        connection_key: *b"hayate-snap-key!",
    };
    let peer4 = |n: u8, seeder: bool| PeerRecord {
        ip: [10, 0, n / 16, n],
        port: 6881 + u16::from(n),
        seeder,
        counted: seeder,
        ttl_secs: 1 + u32::from(n) * 60,
    };
    let peer6 = |n: u8, seeder: bool| PeerRecord {
        ip: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n],
        port: 51413 - u16::from(n),
        seeder,
        counted: !seeder,
        ttl_secs: 1800 - u32::from(n),
    };
    let file = |sections: &[&SectionWriter]| {
        let bytes: Vec<&[u8]> = sections.iter().map(|s| s.as_bytes()).collect();
        let mut out = Vec::new();
        encode_file(&header, &bytes, &mut out);
        out
    };
    // One shard: a torrent with a peer of each family, one kept without peers.
    let mut small = SectionWriter::new();
    small.torrent(&[0x11; 20], 3, 0, 1, 1);
    small.peer_v4(&peer4(1, true));
    small.peer_v6(&peer6(1, false));
    small.torrent(&[0x22; 20], 40, 3600, 0, 0);
    // Three shards, one empty: 9 torrents, 45 peers.
    let mut shards = [
        SectionWriter::new(),
        SectionWriter::new(),
        SectionWriter::new(),
    ];
    for t in 0..9u8 {
        let w = &mut shards[usize::from(t % 2) * 2];
        let (v4, v6) = (t % 4, t % 3 + 1);
        w.torrent(&[t; 20], u32::from(t) * 7, 0, v4.into(), v6.into());
        (0..v4).for_each(|n| w.peer_v4(&peer4(t * 8 + n, n % 2 == 0)));
        (0..v6).for_each(|n| w.peer_v6(&peer6(t * 8 + n, n % 2 == 1)));
    }
    let valid = file(&[&small]);
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-valid-small", valid.clone()),
        (
            "seed-valid-shards",
            file(&[&shards[0], &shards[1], &shards[2]]),
        ),
        ("seed-valid-none", file(&[])),
        ("seed-empty", Vec::new()),
        (
            "seed-foreign",
            b"[tracker]\nudp = \"0.0.0.0:6969\"\n".to_vec(),
        ),
        ("seed-truncated-header", valid[..30].to_vec()),
        ("seed-truncated-body", valid[..valid.len() - 10].to_vec()),
    ];
    let mut version = valid.clone();
    version[8] = VERSION as u8 + 1;
    seeds.push(("seed-newer-version", version));
    let mut flipped = valid.clone();
    flipped[100] ^= 0x40;
    seeds.push(("seed-flipped", flipped));
    // Valid checksums over bad records: port 0, and 4 billion IPv4 peers in a small file.
    let peer_at = 60 + 8 + 36;
    let mut port0 = valid.clone();
    port0[peer_at + 4..peer_at + 6].fill(0);
    snapshot::reseal(&mut port0);
    seeds.push(("seed-malformed-port0", port0));
    let mut huge = valid.clone();
    huge[60 + 8 + 28..60 + 8 + 32].fill(0xff);
    snapshot::reseal(&mut huge);
    seeds.push(("seed-malformed-huge-count", huge));
    let dir = repo().join("fuzz/corpus/snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
