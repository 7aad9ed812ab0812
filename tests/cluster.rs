//! Several nodes, one swarm: hayate trackers sharing their swarms through a real Redis
//! (standalone, and a Redis Cluster), each test with its own `redis-server` instances in a
//! temporary directory. What a user of two nodes behind one DNS name would check: a peer
//! announced on one node is handed out by the other, a stop takes it away, scrapes and
//! downloads add up, a node killed with SIGKILL has its peers age out, and Redis dying or
//! coming back empty never shows a client an error and heals on its own.

mod common;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hayate_tracker::Tracker;
use redis_server::Redis;

/// Milliseconds between syncs in these tests.
const SYNC_MS: u64 = 200;

fn node_toml(redis: &str, id: &str) -> String {
    format!("[cluster]\nredis = {redis}\nnode_id = \"{id}\"\nsync_interval_ms = {SYNC_MS}\n")
}

fn node(url: &str, id: &str) -> Tracker {
    start_tracker_http(2, "", &node_toml(&format!("\"{url}\""), id))
}

/// Announces with `c` until `check` holds for the reply (at most `within`); returns the reply
/// and how long it took.
fn announce_until(
    c: &mut Client,
    hash: [u8; 20],
    port: u16,
    left: u64,
    within: Duration,
    check: impl Fn(&[SocketAddr], u32, u32) -> bool,
) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let cid = c.connect();
        let r = c.announce(cid, hash, port, left, EVENT_NONE, -1);
        let Reply::Announce {
            peers,
            seeders,
            leechers,
            ..
        } = &r
        else {
            panic!("a node answered an announce with {r:?}");
        };
        if check(peers, *seeders, *leechers) {
            return (r, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "not within {within:?}; last reply {r:?}"
        );
        std::thread::sleep(Duration::from_millis(SYNC_MS / 4));
    }
}

/// Scrapes `hash` on `t` until `check` holds for (seeders, downloaded, leechers).
fn scrape_until(
    t: &Tracker,
    hash: [u8; 20],
    within: Duration,
    check: impl Fn((u32, u32, u32)) -> bool,
) -> (u32, u32, u32) {
    let started = Instant::now();
    let mut c = Client::new(v4(t));
    loop {
        let cid = c.connect();
        let Reply::Scrape { entries, .. } = c.scrape(cid, &[hash]) else {
            panic!("scrape answered with something else")
        };
        if check(entries[0]) {
            return entries[0];
        }
        assert!(
            started.elapsed() < within,
            "scrape not within {within:?}: {:?}",
            entries[0]
        );
        std::thread::sleep(Duration::from_millis(SYNC_MS / 4));
    }
}

/// Waits (at most 10 s) until metric `name` of `t` satisfies `check`.
fn wait_metric(t: &Tracker, name: &str, check: impl Fn(f64) -> bool) {
    let started = Instant::now();
    loop {
        let page = metrics_text(t);
        if sample(&page, name, &[]).is_some_and(&check) {
            return;
        }
        assert!(started.elapsed() < WITHIN, "{name}: {page}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const WITHIN: Duration = Duration::from_secs(10);

#[test]
fn three_nodes_on_one_redis_behave_as_one_tracker() {
    if !redis_server::available() {
        return;
    }
    let dir = test_dir("cluster-three-nodes");
    let redis = Redis::standalone(&dir.join("redis"));
    let (a, b, c) = (
        node(&redis.url, "a"),
        node(&redis.url, "b"),
        node(&redis.url, "c"),
    );
    let hash = [0x31; 20];

    // A seeder on A; a leecher on B gets it from B within a few syncs.
    let mut on_a = Client::new(v4(&a));
    let cid = on_a.connect();
    on_a.announce(cid, hash, 1001, 0, EVENT_STARTED, -1);
    let (r, took) = announce_until(
        &mut Client::new(v4(&b)),
        hash,
        2002,
        50,
        WITHIN,
        |p, s, l| p.contains(&peer(1001)) && s == 1 && l == 1,
    );
    eprintln!("A's seeder handed out by B after {took:?}: {r:?}");
    // The announcer never receives itself, from either side.
    let Reply::Announce { peers, .. } = &r else {
        unreachable!()
    };
    assert!(!peers.contains(&peer(2002)), "{peers:?}");

    // Back on A, the seeder sees B's leecher too (it seeds, so it gets leechers only).
    let (r, _) = announce_until(&mut on_a, hash, 1001, 0, WITHIN, |p, s, l| {
        p == [peer(2002)] && s == 1 && l == 1
    });
    eprintln!("A hands its seeder B's leecher: {r:?}");

    // Over HTTP on B as well, peers from A listed with B's own.
    let started = Instant::now();
    loop {
        let (status, body) = http_announce(http_v4(&b), &hash, 3003, 10, "");
        assert_eq!(status, 200, "{body}");
        let peers = http_dict_peers(&body);
        if peers.contains(&peer(1001)) && peers.contains(&peer(2002)) {
            assert!(!peers.contains(&peer(3003)), "{body}");
            break;
        }
        assert!(started.elapsed() < WITHIN, "HTTP on B: {body}");
        std::thread::sleep(Duration::from_millis(SYNC_MS / 4));
    }

    // C holds no peer of the torrent; its scrape is the sum of A's and B's.
    let counts = scrape_until(&c, hash, WITHIN, |(s, _, l)| s == 1 && l == 2);
    assert_eq!(counts, (1, 0, 2));

    // Downloads counted on A and on B add up everywhere.
    let cid = on_a.connect();
    on_a.announce(cid, hash, 1004, 0, EVENT_COMPLETED, -1);
    let mut on_b = Client::new(v4(&b));
    let cid = on_b.connect();
    on_b.announce(cid, hash, 2002, 0, EVENT_COMPLETED, -1);
    for t in [&a, &b, &c] {
        let counts = scrape_until(t, hash, WITHIN, |(_, d, _)| d == 2);
        assert_eq!(counts.1, 2, "downloads on {:?}", t.udp_addresses());
    }

    // A stop on A takes the seeder away from B's replies and every count.
    let cid = on_a.connect();
    on_a.announce(cid, hash, 1001, 0, EVENT_STOPPED, -1);
    announce_until(
        &mut Client::new(v4(&b)),
        hash,
        2002,
        0,
        WITHIN,
        |p, _, _| !p.contains(&peer(1001)),
    );
    // Left: 1004 (seeder on A), 2002 (now a seeder on B), 3003 (leecher on B).
    scrape_until(&c, hash, WITHIN, |(s, d, l)| (s, d, l) == (2, 2, 1));

    let metrics = metrics_text(&b);
    for name in [
        "hayate_cluster_sync_batches_total",
        "hayate_cluster_sync_commands_total",
        "hayate_cluster_remote_peers",
    ] {
        let v = sample(&metrics, name, &[]).unwrap_or_else(|| panic!("{name} in {metrics}"));
        assert!(v > 0.0, "{name} = {v}");
    }
    assert_eq!(sample(&metrics, "hayate_cluster_connected", &[]), Some(1.0));
    // Every series the Grafana dashboard's cluster row queries is on a node's page.
    let dashboard = include_str!("../contrib/grafana-hayate.json");
    let queried: std::collections::BTreeSet<&str> = dashboard
        .match_indices("hayate_cluster_")
        .map(|(at, _)| {
            let end = dashboard[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap();
            &dashboard[at..at + end]
        })
        .collect();
    assert!(queried.len() >= 8, "{queried:?}");
    for name in queried {
        assert!(
            sample(&metrics, name, &[]).is_some(),
            "the dashboard queries {name}, which a cluster node's /metrics does not have"
        );
    }
    assert_eq!(
        sample(&metrics, "hayate_cluster_sync_errors_total", &[]),
        Some(0.0)
    );
    for t in [a, b, c] {
        t.stop().unwrap();
    }
}

#[test]
fn redis_killed_then_restarted_empty_heals_without_a_client_noticing() {
    if !redis_server::available() {
        return;
    }
    let dir = test_dir("cluster-redis-restart");
    let mut redis = Redis::standalone(&dir.join("redis"));
    let (a, b) = (node(&redis.url, "a"), node(&redis.url, "b"));
    let hash = [0x42; 20];
    let mut on_a = Client::new(v4(&a));
    let cid = on_a.connect();
    on_a.announce(cid, hash, 1001, 0, EVENT_STARTED, -1);
    let mut on_b = Client::new(v4(&b));
    announce_until(&mut on_b, hash, 2002, 50, WITHIN, |p, _, _| {
        p.contains(&peer(1001))
    });

    redis.kill();
    // Local swarms keep working: a new peer on A is handed out by A at once, with no error.
    let mut other = Client::new(v4(&a));
    let cid = other.connect();
    let r = other.announce(cid, hash, 1002, 10, EVENT_STARTED, -1);
    let Reply::Announce { peers, .. } = r else {
        panic!("{r:?}")
    };
    assert!(peers.contains(&peer(1001)), "{peers:?}");
    wait_metric(&b, "hayate_cluster_sync_errors_total", |v| v > 0.0);
    assert_eq!(
        sample(&metrics_text(&b), "hayate_cluster_connected", &[]),
        Some(0.0)
    );

    // Redis back, empty: A publishes its whole swarm again, and B hands out both A peers.
    redis.restart();
    assert_eq!(redis.cli(&["dbsize"]).trim(), "0");
    let (r, took) = announce_until(&mut on_b, hash, 2002, 50, WITHIN, |p, _, _| {
        p.contains(&peer(1001)) && p.contains(&peer(1002))
    });
    eprintln!("after Redis restarted empty, B had A's peers again in {took:?}: {r:?}");
    // One publish at start, one after Redis came back empty.
    wait_metric(&a, "hayate_cluster_republishes_total", |v| v >= 2.0);
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn a_killed_node_has_its_peers_age_out_of_the_others_replies() {
    if !redis_server::available() {
        return;
    }
    let dir = test_dir("cluster-sigkill");
    let redis = Redis::standalone(&dir.join("redis"));
    // Node A is a separate process, so it can be killed with SIGKILL.
    let lifetime = 3;
    let short = format!(
        "[protocol]\nannounce_interval_secs = 2\nmin_interval_secs = 1\n\
         [cleaning]\npeer_lifetime_secs = {lifetime}\n"
    );
    let config = dir.join("a.toml");
    std::fs::write(
        &config,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = []\n\
             [metrics]\naddress = \"\"\n[state]\ndirectory = \"\"\n{short}{}",
            node_toml(&format!("\"{}\"", redis.url), "a")
        ),
    )
    .unwrap();
    let a = Daemon::start(hayate_with_config(&config));
    let b = start_tracker(
        1,
        &format!("{short}{}", node_toml(&format!("\"{}\"", redis.url), "b")),
    );
    let hash = [0x53; 20];
    let mut on_a = Client::new(a.udp[0]);
    let cid = on_a.connect();
    on_a.announce(cid, hash, 1001, 0, EVENT_STARTED, -1);
    let mut on_b = Client::new(v4(&b));
    announce_until(&mut on_b, hash, 2002, 50, WITHIN, |p, s, _| {
        p.contains(&peer(1001)) && s == 1
    });
    let killed = Instant::now();
    drop(a); // SIGKILL and reap: nothing is written on the way out.
    let (_, took) = announce_until(&mut on_b, hash, 2002, 50, WITHIN, |p, s, _| {
        !p.contains(&peer(1001)) && s == 0
    });
    let gone = killed.elapsed();
    eprintln!("A's seeder gone from B's replies {gone:?} after SIGKILL ({took:?} of polling)");
    assert!(
        gone <= Duration::from_secs(lifetime + 3),
        "aged out after {gone:?}, lifetime {lifetime} s"
    );
    b.stop().unwrap();
}

#[test]
fn a_redis_cluster_works_through_a_master_failing_over() {
    if !redis_server::available() {
        return;
    }
    let dir = test_dir("cluster-redis-cluster");
    let mut nodes = redis_server::cluster(&dir, 3, 1);
    let seeds: Vec<String> = nodes
        .iter()
        .take(3)
        .map(|n| format!("\"{}\"", n.url))
        .collect();
    let list = format!("[{}]", seeds.join(", "));
    let node = |id: &str| start_tracker_http(2, "", &node_toml(&list, id));
    let (a, b) = (node("a"), node("b"));
    // Torrents spread over every master's slots.
    let hashes: Vec<[u8; 20]> = (0..12u8)
        .map(|i| [i.wrapping_mul(37).wrapping_add(1); 20])
        .collect();
    let mut on_a = Client::new(v4(&a));
    for (i, h) in hashes.iter().enumerate() {
        let cid = on_a.connect();
        on_a.announce(cid, *h, 1000 + i as u16, 0, EVENT_STARTED, -1);
    }
    let mut on_b = Client::new(v4(&b));
    for (i, h) in hashes.iter().enumerate() {
        announce_until(&mut on_b, *h, 2000, 50, WITHIN, |p, _, _| {
            p.contains(&peer(1000 + i as u16))
        });
    }

    // Kill the master serving the first torrent's slot; its replica takes the slots over.
    let slot_of = |h: &[u8; 20]| -> String {
        nodes[0]
            .cli(&["cluster", "keyslot", &format!("hayate:{{{}}}:dl", hex(h))])
            .trim()
            .to_string()
    };
    let slot: u16 = slot_of(&hashes[0]).parse().unwrap();
    let shards = nodes[0].cli(&["cluster", "slots"]);
    let victim = nodes
        .iter()
        .position(|n| master_of(&shards, slot) == n.port)
        .expect("the slot's master is one of ours");
    nodes[victim].kill();
    let survivor = nodes
        .iter()
        .position(|n| n.port != nodes[victim].port)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards = nodes[survivor].cli(&["cluster", "slots"]);
        if master_of(&shards, slot).is_some_and(|p| Some(p) != nodes[victim].port)
            && nodes[survivor]
                .cli(&["cluster", "info"])
                .contains("cluster_state:ok")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover of slot {slot} from {:?} (master now {:?}): {}\n{shards}",
            nodes[victim].port,
            master_of(&shards, slot),
            nodes[survivor].cli(&["cluster", "info"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new peer on A for that torrent reaches B through the promoted replica.
    let cid = on_a.connect();
    on_a.announce(cid, hashes[0], 1500, 0, EVENT_STARTED, -1);
    announce_until(
        &mut on_b,
        hashes[0],
        2000,
        50,
        Duration::from_secs(20),
        |p, _, _| p.contains(&peer(1500)),
    );
    a.stop().unwrap();
    b.stop().unwrap();
}

/// The port of the master serving `slot` in a `CLUSTER SLOTS` reply as redis-cli prints it
/// (start, end, then each node's ip, port and id, master first).
fn master_of(slots: &str, slot: u16) -> Option<u16> {
    let lines: Vec<&str> = slots.lines().map(str::trim).collect();
    let mut i = 0;
    while i + 3 < lines.len() {
        if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
            if lines[i + 2] == "127.0.0.1" && (start..=end).contains(&slot) {
                return lines[i + 3].parse().ok();
            }
        }
        i += 1;
    }
    None
}
