//! The swarm outliving the process, tried as an operator would with the real binary: peers,
//! counts and `downloaded` back after a SIGTERM restart (with a different worker count, so the
//! restore re-shards) and after a SIGKILL (from the last periodic snapshot), connection ids
//! made before the restart still accepted, and every kind of unusable snapshot file moved aside
//! with the reason logged while the tracker starts empty.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hayate_tracker::state::snapshot::{self, Header, PeerRecord, SectionWriter};

const TORRENTS: u8 = 200;
/// Peers per torrent: two complete (a download each), three leech.
const PEERS: u16 = 5;

fn write_config(path: &Path, state: &Path, workers: u32, interval: u32) {
    std::fs::write(
        path,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = []\n\
             [workers]\ncount = {workers}\n[metrics]\naddress = \"\"\n\
             [state]\ndirectory = \"{}\"\nsnapshot_interval_secs = {interval}\n",
            state.display()
        ),
    )
    .unwrap();
}

fn torrent(n: u8) -> [u8; 20] {
    let mut h = [0x5a; 20];
    h[0] = n;
    h[19] = n.wrapping_mul(7);
    h
}

/// 1000 peers in 200 torrents, 400 of them completing: returns the connection id used.
fn populate(udp: SocketAddr) -> (Client, u64) {
    let mut c = Client::new(udp);
    let cid = c.connect();
    for t in 0..TORRENTS {
        for p in 0..PEERS {
            let port = 10_000 + p;
            let r = c.announce(cid, torrent(t), port, 1000, 2, 0);
            assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
            if p < 2 {
                let r = c.announce(cid, torrent(t), port, 0, 1, 0);
                assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
            }
        }
    }
    (c, cid)
}

/// Scrapes every torrent with `cid`: (seeders, completed, leechers) each, in torrent order.
fn scrape_all(c: &mut Client, cid: u64) -> Vec<(u32, u32, u32)> {
    let hashes: Vec<[u8; 20]> = (0..TORRENTS).map(torrent).collect();
    let mut all = Vec::new();
    for chunk in hashes.chunks(50) {
        match c.scrape(cid, chunk) {
            Reply::Scrape { entries, .. } => all.extend(entries),
            other => panic!("scrape refused: {other:?}"),
        }
    }
    all
}

fn expected() -> Vec<(u32, u32, u32)> {
    vec![(2, 2, 3); TORRENTS as usize]
}

struct Setup {
    config: PathBuf,
    state: PathBuf,
}

fn setup(name: &str, workers: u32, interval: u32) -> Setup {
    let dir = test_dir(name);
    let state = dir.join("state");
    let config = dir.join("hayate.toml");
    write_config(&config, &state, workers, interval);
    Setup { config, state }
}

#[test]
fn sigterm_restart_with_another_worker_count_keeps_peers_counts_downloads_and_ids() {
    let s = setup("state-sigterm", 2, 3600);
    let d = Daemon::start(hayate_with_config(&s.config));
    let (mut c, cid) = populate(d.udp[0]);
    assert_eq!(scrape_all(&mut c, cid), expected());
    d.signal(libc::SIGTERM);
    let (status, log) = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    assert!(log.contains("snapshot written"), "{log}");
    assert!(s.state.join("swarm.snap").is_file());

    // Three workers now: every torrent lives on a shard the restore worked out afresh.
    write_config(&s.config, &s.state, 3, 3600);
    let d = Daemon::start(hayate_with_config(&s.config));
    assert!(!d.log().contains("unusable"), "{}", d.log());
    // The id the client got before the restart is still good, against the new port.
    let mut c = Client::new(d.udp[0]);
    assert_eq!(scrape_all(&mut c, cid), expected(), "{}", d.log());
    // And the peers themselves are back: a new leecher of torrent 7 gets all five.
    match c.announce(cid, torrent(7), 20_000, 1000, 2, 50) {
        Reply::Announce {
            peers,
            seeders,
            leechers,
            ..
        } => {
            let mut ports: Vec<u16> = peers.iter().map(SocketAddr::port).collect();
            ports.sort();
            assert_eq!(ports, (10_000..10_000 + PEERS).collect::<Vec<_>>());
            assert_eq!((seeders, leechers), (2, 4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sigkill_restarts_from_the_last_periodic_snapshot() {
    let s = setup("state-sigkill", 2, 5);
    let mut d = Daemon::start(hayate_with_config(&s.config));
    let (mut c, cid) = populate(d.udp[0]);
    // The first periodic snapshot after the announces holds them all.
    let before = d.log().matches("snapshot written").count();
    d.wait_log("snapshot written", before + 2, Duration::from_secs(20));
    d.signal(libc::SIGKILL);
    let (_, log) = d.wait_exit(Duration::from_secs(10));
    assert!(log.contains("periodic"), "{log}");
    drop(c);

    let d = Daemon::start(hayate_with_config(&s.config));
    c = Client::new(d.udp[0]);
    assert_eq!(scrape_all(&mut c, cid), expected(), "{}", d.log());
}

/// A valid one-torrent snapshot file, made with the library's own encoder.
fn valid_file() -> Vec<u8> {
    let mut section = SectionWriter::new();
    section.torrent(&torrent(1), 9, 0, 1, 0);
    section.peer_v4(&PeerRecord {
        ip: [127, 0, 0, 9],
        port: 7000,
        seeder: true,
        counted: true,
        ttl_secs: 600,
    });
    let header = Header {
        written_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        clock_origin_unix: 1,
        connection_key: [3; 16],
    };
    let mut out = Vec::new();
    snapshot::encode_file(&header, &[section.as_bytes()], &mut out);
    out
}

#[test]
fn a_valid_file_written_elsewhere_is_restored() {
    let s = setup("state-valid", 1, 3600);
    std::fs::create_dir_all(&s.state).unwrap();
    std::fs::write(s.state.join("swarm.snap"), valid_file()).unwrap();
    let d = Daemon::start(hayate_with_config(&s.config));
    let mut c = Client::new(d.udp[0]);
    let cid = c.connect();
    match c.scrape(cid, &[torrent(1)]) {
        Reply::Scrape { entries, .. } => assert_eq!(entries, vec![(1, 9, 0)], "{}", d.log()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusable_snapshots_are_moved_aside_and_the_tracker_starts_empty() {
    let valid = valid_file();
    let mut flipped = valid.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let mut newer = valid.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("empty", Some(Vec::new()), "empty"),
        (
            "truncated",
            Some(valid[..valid.len() - 7].to_vec()),
            "truncated",
        ),
        ("corrupt", Some(flipped), "checksum"),
        (
            "foreign",
            Some(b"not a snapshot at all\n".to_vec()),
            "not a",
        ),
        ("newer", Some(newer), "version"),
        ("directory", None, "directory"),
    ];
    for (name, bytes, reason) in cases {
        let s = setup(&format!("state-bad-{name}"), 1, 3600);
        std::fs::create_dir_all(&s.state).unwrap();
        let file = s.state.join("swarm.snap");
        match &bytes {
            Some(b) => std::fs::write(&file, b).unwrap(),
            None => std::fs::create_dir(&file).unwrap(),
        }
        let d = Daemon::start(hayate_with_config(&s.config));
        let log = d.log();
        let line = log
            .lines()
            .find(|l| l.contains("snapshot unusable"))
            .unwrap_or_else(|| panic!("{name}: no reason logged:\n{log}"));
        assert!(
            line.to_lowercase().contains(reason),
            "{name}: reason should say {reason:?}: {line}"
        );
        let aside = s.state.join("swarm.snap.bad");
        match &bytes {
            Some(b) => assert_eq!(&std::fs::read(&aside).unwrap(), b, "{name}: kept aside"),
            None => assert!(aside.is_dir(), "{name}: moved aside"),
        }
        // Serving, and empty.
        let mut c = Client::new(d.udp[0]);
        let cid = c.connect();
        match c.scrape(cid, &[torrent(1)]) {
            Reply::Scrape { entries, .. } => assert_eq!(entries, vec![(0, 0, 0)], "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn state_off_says_so_once() {
    let dir = test_dir("state-off");
    let config = dir.join("hayate.toml");
    std::fs::write(
        &config,
        "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = []\n[metrics]\naddress = \"\"\n\
         [state]\ndirectory = \"\"\n",
    )
    .unwrap();
    let d = Daemon::start(hayate_with_config(&config));
    assert_eq!(
        d.log().matches("state is not kept").count(),
        1,
        "{}",
        d.log()
    );
}
