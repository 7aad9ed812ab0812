//! The stats endpoint end to end: a tracker in-process, a known number of UDP requests of every
//! kind, then `/metrics` must report exactly those counts (polled, boundedly, to allow for the
//! stats interval), gauges must match the swarm, `/health` must answer, and the page must be
//! valid Prometheus text for an in-process strict parser, for prometheus-parse, and for
//! `promtool check metrics` when it is installed (required when CI=true).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const FAST: &str = "[metrics]\naddress = \"127.0.0.1:0\"\ninterval_ms = 100\n";

/// One sample: name and sorted labels.
type Key = (String, BTreeMap<String, String>);

/// A metrics page, checked line by line against the Prometheus text format 0.0.4 and our
/// naming rules, then indexed by sample.
struct Page {
    samples: HashMap<Key, f64>,
    types: HashMap<String, String>,
}

fn parse_labels(s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name in {line:?}"
        );
        // Our label values never hold quotes or backslashes.
        let (v, r) = r
            .split_once('"')
            .unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
        assert!(!v.contains('\\'), "{line:?}");
        labels.insert(k.to_string(), v.to_string());
        rest = r.strip_prefix(',').unwrap_or(r);
        assert!(r.is_empty() || r.starts_with(','), "{line:?}");
    }
    labels
}

fn parse_page(text: &str) -> Page {
    let mut helps = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty help: {line}");
            assert!(
                helps.insert(name.to_string(), ()).is_none(),
                "HELP twice: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(name.starts_with("hayate_"), "name without prefix: {line}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{line}"
            );
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(
                helps.contains_key(name),
                "TYPE without HELP before it: {line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{line}"
            );
            family = name.to_string();
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        assert!(!line.is_empty(), "blank line in page");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(l.strip_suffix('}').expect("closing brace"), line),
            ),
            None => (series, BTreeMap::new()),
        };
        let kind = types[&family].as_str();
        let belongs = name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str())));
        assert!(belongs, "sample {name} outside its family {family}");
        let key = (name.to_string(), labels);
        assert!(
            samples.insert(key, value).is_none(),
            "duplicate sample {line}"
        );
    }
    Page { samples, types }
}

impl Page {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *self
            .samples
            .get(&(name.to_string(), key))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Sum over every sample of `name` whose labels include `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Checks the page with prometheus-parse too, and that it agrees with the strict parser.
fn cross_check(text: &str, page: &Page) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the page");
    for (name, kind) in &page.types {
        assert!(
            scrape.docs.contains_key(name),
            "prometheus-parse lost {name} ({kind})"
        );
    }
    let requests: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "hayate_requests_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("hayate_requests_total parsed as {other:?}"),
        })
        .sum();
    assert_eq!(requests, page.sum("hayate_requests_total", &[]));
}

/// `promtool check metrics` on the page: required under CI=true, skipped with a note otherwise.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("promtool is required under CI=true (Debian package `prometheus`): {e}");
            }
            eprintln!("note: promtool not found ({e}); skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes each way, as the clients saw them.
#[derive(Default)]
struct Tally {
    sent: usize,
    received: usize,
}

impl Tally {
    /// Sends `packet` and returns the reply.
    fn ask(&mut self, c: &Client, packet: &[u8]) -> Vec<u8> {
        c.send(packet);
        self.sent += packet.len();
        let reply = c.recv_raw().expect("tracker answered within the timeout");
        self.received += reply.len();
        reply
    }

    fn connect(&mut self, c: &Client, txid: u32) -> u64 {
        let r = self.ask(c, &connect_packet(txid));
        assert_eq!(r.len(), 16, "{r:?}");
        u64::from_be_bytes(r[8..16].try_into().unwrap())
    }

    /// Announces and returns (action, peers in the reply).
    fn announce(
        &mut self,
        c: &Client,
        cid: u64,
        hash: [u8; 20],
        port: u16,
        left: u64,
        event: u32,
    ) -> (u32, usize) {
        let r = self.ask(c, &announce_packet(cid, 7, hash, port, left, event, -1));
        let action = u32::from_be_bytes(r[..4].try_into().unwrap());
        let peer = if c.tracker.is_ipv4() { 6 } else { 18 };
        (action, r.len().saturating_sub(20) / peer)
    }
}

/// Polls `/metrics` until `check` finds every expected figure (or 5 s pass, then fails with
/// the last mismatch).
fn wait_for(
    t: &hayate_tracker::Tracker,
    check: impl Fn(&Page) -> Result<(), String>,
) -> (String, Page) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(t);
        let page = parse_page(&text);
        match check(&page) {
            Ok(()) => return (text, page),
            Err(e) if Instant::now() > deadline => panic!("metrics never matched: {e}\n{text}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// An expected sample: name, labels, value.
type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

fn expect(page: &Page, want: &[Want]) -> Result<(), String> {
    for (name, labels, v) in want {
        let got = page.get(name, labels);
        if got != *v {
            return Err(format!("{name}{labels:?} = {got}, want {v}"));
        }
    }
    Ok(())
}

#[test]
fn udp_traffic_is_counted_exactly_and_gauges_follow_the_swarm() {
    // Unsteered, each client's packets all land on one worker (SO_REUSEPORT hashes the
    // 4-tuple), so a client that announces one torrent of each shard is forwarded exactly once.
    let t = start_tracker_with_udp(2, "steer_announces = false", FAST);
    let (h0, h1) = (hash_for_shard(0, 2, 1), hash_for_shard(1, 2, 1));
    let mut tally = Tally::default();
    let c4 = Client::new(v4(&t));
    let c4b = Client::new(v4(&t));
    let c6 = Client::new(v6(&t));
    tally.connect(&c4, 1);
    let cid4 = tally.connect(&c4, 2);
    let cid4b = tally.connect(&c4b, 3);
    let cid6 = tally.connect(&c6, 4);
    let mut peers = Vec::new();
    for (c, cid, hash, port, left) in [
        (&c4, cid4, h0, 1001, 5),
        (&c4, cid4, h1, 1002, 0),
        (&c6, cid6, h1, 2002, 5),
        (&c6, cid6, h0, 2003, 0),
        (&c4b, cid4b, h0, 3001, 5),
        (&c4b, cid4b, h1, 3002, 5),
    ] {
        let (action, n) = tally.announce(c, cid, hash, port, left, EVENT_STARTED);
        assert_eq!(action, 1, "announce answered");
        peers.push(n);
    }
    assert_eq!(peers, [0, 0, 0, 0, 1, 1], "same-family peers only");
    // A scrape spanning both shards: one chain forward.
    let r = tally.ask(&c4, &scrape_packet(cid4, 9, &[h0, h1]));
    assert_eq!(r.len(), 8 + 2 * 12);
    // Refusals: a forged connection id, a scrape with no hash, a truncated announce, and a
    // datagram that is not BEP 15.
    let r = tally.ask(&c4, &announce_packet(cid4 ^ 1, 9, h0, 9, 0, EVENT_NONE, -1));
    assert_eq!(r[3], 3, "error reply");
    let r = tally.ask(&c4, &scrape_packet(cid4, 9, &[]));
    assert_eq!(r[3], 3, "error reply");
    let r = tally.ask(
        &c4,
        &announce_packet(cid4, 9, h0, 9, 0, EVENT_NONE, -1)[..50],
    );
    assert_eq!(r[3], 3, "error reply");
    c4.send(b"hi!");
    tally.sent += 3;

    let (udp, v4l, v6l) = (
        ("protocol", "udp"),
        ("ip_version", "4"),
        ("ip_version", "6"),
    );
    let act = |a| ("action", a);
    let sent = tally.sent as f64;
    let received = tally.received as f64;
    let (text, page) = wait_for(&t, |p| {
        expect(
            p,
            &[
                ("hayate_requests_total", &[udp, act("connect"), v4l], 3.0),
                ("hayate_requests_total", &[udp, act("connect"), v6l], 1.0),
                ("hayate_requests_total", &[udp, act("announce"), v4l], 6.0),
                ("hayate_requests_total", &[udp, act("announce"), v6l], 2.0),
                ("hayate_requests_total", &[udp, act("scrape"), v4l], 2.0),
                ("hayate_requests_total", &[udp, act("scrape"), v6l], 0.0),
                // Refused requests count under the action they name, never as "error".
                ("hayate_requests_total", &[udp, act("error"), v4l], 0.0),
                ("hayate_requests_total", &[udp, act("error"), v6l], 0.0),
                ("hayate_responses_total", &[udp, act("connect"), v4l], 3.0),
                ("hayate_responses_total", &[udp, act("connect"), v6l], 1.0),
                ("hayate_responses_total", &[udp, act("announce"), v4l], 4.0),
                ("hayate_responses_total", &[udp, act("announce"), v6l], 2.0),
                ("hayate_responses_total", &[udp, act("scrape"), v4l], 1.0),
                ("hayate_responses_total", &[udp, act("error"), v4l], 3.0),
                ("hayate_responses_total", &[udp, act("error"), v6l], 0.0),
                (
                    "hayate_errors_total",
                    &[udp, ("reason", "not_tracker")],
                    1.0,
                ),
                ("hayate_errors_total", &[udp, ("reason", "malformed")], 2.0),
                (
                    "hayate_errors_total",
                    &[udp, ("reason", "connection_id_invalid")],
                    1.0,
                ),
                (
                    "hayate_errors_total",
                    &[udp, ("reason", "connection_id_expired")],
                    0.0,
                ),
                ("hayate_errors_total", &[udp, ("reason", "inbox_full")], 0.0),
                ("hayate_received_bytes_total", &[udp], sent),
                ("hayate_sent_bytes_total", &[udp], received),
                ("hayate_forwarded_total", &[udp, ("kind", "announce")], 3.0),
                ("hayate_forwarded_total", &[udp, ("kind", "scrape")], 1.0),
                (
                    "hayate_inbox_dropped_total",
                    &[udp, ("kind", "announce")],
                    0.0,
                ),
                ("hayate_torrents", &[], 2.0),
                ("hayate_seeders", &[], 2.0),
                ("hayate_leechers", &[], 4.0),
                ("hayate_worker_torrents", &[("worker", "0")], 1.0),
                ("hayate_worker_torrents", &[("worker", "1")], 1.0),
                ("hayate_worker_seeders", &[("worker", "0")], 1.0),
                ("hayate_worker_leechers", &[("worker", "1")], 2.0),
                // Every reply's send completed: 4 connects, 6 announces, 1 scrape, 3 errors.
                ("hayate_request_duration_seconds_count", &[udp], 14.0),
                ("hayate_announce_reply_peers_count", &[udp], 6.0),
                ("hayate_announce_reply_peers_sum", &[udp], 2.0),
                (
                    "hayate_announce_reply_peers_bucket",
                    &[udp, ("le", "0.0")],
                    4.0,
                ),
                (
                    "hayate_announce_reply_peers_bucket",
                    &[udp, ("le", "1.0")],
                    6.0,
                ),
            ],
        )
    });
    // Nothing came over HTTP.
    assert_eq!(
        page.sum("hayate_requests_total", &[("protocol", "http")]),
        0.0
    );
    assert_eq!(page.get("hayate_workers", &[]), 2.0);
    let inf = page.get(
        "hayate_request_duration_seconds_bucket",
        &[udp, ("le", "+Inf")],
    );
    assert_eq!(inf, 14.0);
    let sum = page.get("hayate_request_duration_seconds_sum", &[udp]);
    assert!(sum > 0.0 && sum < 14.0, "latency sum {sum}");
    cross_check(&text, &page);
    promtool_check(&text);

    // The swarm shrinks: c4 stops both torrents (one more forward), and the gauges follow.
    for (hash, port) in [(h0, 1001), (h1, 1002)] {
        let (action, n) = tally.announce(&c4, cid4, hash, port, 0, EVENT_STOPPED);
        assert_eq!((action, n), (1, 0));
    }
    wait_for(&t, |p| {
        expect(
            p,
            &[
                ("hayate_torrents", &[], 2.0),
                ("hayate_seeders", &[], 1.0),
                ("hayate_leechers", &[], 3.0),
                ("hayate_worker_seeders", &[("worker", "1")], 0.0),
                ("hayate_responses_total", &[udp, act("announce"), v4l], 6.0),
                ("hayate_forwarded_total", &[udp, ("kind", "announce")], 4.0),
                ("hayate_announce_reply_peers_count", &[udp], 8.0),
                ("hayate_sent_bytes_total", &[udp], tally.received as f64),
            ],
        )
    });
    t.stop().unwrap();
}

#[test]
fn health_answers_ok_and_the_endpoint_stops_with_the_tracker() {
    let t = start_tracker(3, FAST);
    let addr: SocketAddr = t.metrics_address().expect("metrics on");
    assert_ne!(addr.port(), 0, "port 0 resolved");
    let (status, _, body) = http_get(addr, "/health", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok\n"), "{body}");
    for w in 0..3 {
        assert!(body.contains(&format!("worker {w} ok")), "{body}");
    }
    let (status, _, _) = http_get(addr, "/nope", None);
    assert_eq!(status, 404);
    // Workers tick every second: once each has ticked twice since start-up (polled, bounded),
    // every heartbeat on the page is younger than 1.5 s.
    let beat = |w: usize| t.sources().workers[w].heartbeat_ms.get();
    let mut ticks = [(beat(0), 0), (beat(1), 0), (beat(2), 0)];
    let deadline = Instant::now() + Duration::from_secs(5);
    while ticks.iter().any(|&(_, n)| n < 2) {
        assert!(
            Instant::now() < deadline,
            "workers stopped ticking: {ticks:?}"
        );
        for (w, (last, n)) in ticks.iter_mut().enumerate() {
            if beat(w) != *last {
                (*last, *n) = (beat(w), *n + 1);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let page = parse_page(&metrics_text(&t));
    for w in ["0", "1", "2"] {
        let age = page.get("hayate_worker_heartbeat_age_seconds", &[("worker", w)]);
        assert!(
            (0.0..1.5).contains(&age),
            "worker {w} heartbeat {age} s old"
        );
    }
    let asked = Instant::now();
    t.stop().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        asked.elapsed()
    );
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "the endpoint is closed after stop"
    );
}

#[test]
fn openmetrics_on_request_and_process_figures_present() {
    let t = start_tracker(1, FAST);
    let addr = t.metrics_address().unwrap();
    let (status, kind, body) = http_get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE hayate_requests counter\n"), "{body}");
    assert!(body.contains("# UNIT hayate_process_resident_memory_bytes bytes\n"));

    let (_, kind, text) = http_get(addr, "/metrics", None);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let page = parse_page(&text);
    let version = env!("CARGO_PKG_VERSION");
    // The default backend falls back to epoll where the host has no io_uring.
    let io = match io_uring_unavailable() {
        None => "io_uring",
        Some(_) => "epoll",
    };
    assert_eq!(
        page.get("hayate_build_info", &[("version", version), ("io", io)]),
        1.0
    );
    assert!(page.get("hayate_process_resident_memory_bytes", &[]) > 1e6);
    assert!(page.get("hayate_process_open_fds", &[]) >= 4.0);
    assert!(page.get("hayate_process_max_fds", &[]) >= page.get("hayate_process_open_fds", &[]));
    assert!(page.get("hayate_process_cpu_seconds_total", &[]) >= 0.0);
    assert!(page.get("hayate_process_threads", &[]) >= 3.0);
    assert!(page.get("hayate_process_start_time_seconds", &[]) > 1.6e9);
    assert_eq!(page.types["hayate_request_duration_seconds"], "histogram");
    // Every series the Grafana dashboard queries is on the page.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana-hayate.json"
    ))
    .expect("contrib/grafana-hayate.json");
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("hayate_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // The cluster row's series exist only with [cluster] on: tests/cluster.rs checks them.
        if name == "hayate_"
            || name.starts_with("hayate_tracker")
            || name.starts_with("hayate_cluster_")
        {
            continue;
        }
        queried += 1;
        assert!(
            page.samples.keys().any(|(n, _)| *n == name),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
    assert!(
        queried > 20,
        "only {queried} metric references in the dashboard"
    );
    cross_check(&text, &page);
    promtool_check(&text);
    t.stop().unwrap();
}

#[test]
fn an_empty_address_turns_the_endpoint_off() {
    let t = start_tracker(1, "[metrics]\naddress = \"\"\n");
    assert_eq!(t.metrics_address(), None);
    t.stop().unwrap();
}

/// `%XX` for every byte: a binary info hash as a query value.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02x}")).collect()
}

#[test]
fn http_traffic_is_counted_by_action_ip_version_and_reason() {
    let t = start_tracker_http(2, "", FAST);
    let (v4, v6) = (http_v4(&t), http_v6(&t));
    let announce = |hash: [u8; 20], port: u16| {
        format!(
            "/announce?info_hash={}&peer_id=-TT0001-000000000000&port={port}&left=5",
            escaped(&hash)
        )
    };
    // Three first announces of new torrents (no peers to hand out, so the body is plain text),
    // one over IPv6, one scrape of a hash per shard, two refusals.
    let (h0, h1) = (hash_for_shard(0, 2, 7), hash_for_shard(1, 2, 7));
    for (addr, hash) in [(v4, h0), (v4, h1), (v6, hash_for_shard(0, 2, 8))] {
        let (status, _, body) = http_get(addr, &announce(hash, 6881), None);
        assert_eq!(status, 200);
        assert!(body.contains("8:intervali"), "{body}");
    }
    let scrape = format!(
        "/scrape?info_hash={}&info_hash={}",
        escaped(&h0),
        escaped(&h1)
    );
    let (_, _, body) = http_get(v4, &scrape, None);
    assert!(body.starts_with("d5:filesd"), "{body}");
    let (_, _, body) = http_get(v4, "/announce?peer_id=-TT0001-000000000000&port=1", None);
    assert!(body.contains("failure reason"), "{body}");
    let (_, _, body) = http_get(v4, "/scrape", None);
    assert!(body.contains("failure reason"), "{body}");
    let http = ("protocol", "http");
    let act = |a| ("action", a);
    let (v4l, v6l) = (("ip_version", "4"), ("ip_version", "6"));
    wait_for(&t, |page| {
        expect(
            page,
            &[
                ("hayate_requests_total", &[http, act("announce"), v4l], 3.0),
                ("hayate_requests_total", &[http, act("announce"), v6l], 1.0),
                ("hayate_requests_total", &[http, act("scrape"), v4l], 2.0),
                ("hayate_responses_total", &[http, act("announce"), v4l], 2.0),
                ("hayate_responses_total", &[http, act("announce"), v6l], 1.0),
                ("hayate_responses_total", &[http, act("scrape"), v4l], 1.0),
                ("hayate_responses_total", &[http, act("error"), v4l], 2.0),
                ("hayate_errors_total", &[http, ("reason", "malformed")], 2.0),
                ("hayate_forwarded_total", &[http, ("kind", "announce")], 3.0),
                ("hayate_forwarded_total", &[http, ("kind", "scrape")], 2.0),
                ("hayate_announce_reply_peers_count", &[http], 3.0),
                ("hayate_request_duration_seconds_count", &[http], 6.0),
            ],
        )
    });
    t.stop().unwrap();
}

#[test]
fn build_info_names_the_io_backend_in_use() {
    for backend in BACKENDS {
        if skip_backend(backend) {
            continue;
        }
        let t = start_tracker_on(backend, 1, FAST);
        let text = metrics_text(&t);
        let info = text
            .lines()
            .find(|l| l.starts_with("hayate_build_info"))
            .expect("a build info sample");
        assert!(info.contains(&format!("io=\"{backend}\"")), "{info}");
        t.stop().unwrap();
    }
}

/// The request, response and error counters of a page.
fn counting(page: &Page) -> HashMap<Key, f64> {
    const FAMILIES: [&str; 3] = [
        "hayate_requests_total",
        "hayate_responses_total",
        "hayate_errors_total",
    ];
    page.samples
        .iter()
        .filter(|((name, _), _)| FAMILIES.contains(&name.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (name.to_string(), labels)
}

/// Runs `send`, then waits until the counters moved by exactly `moved` (one each) from where
/// they were, and nothing else moved.
fn counted_as(t: &hayate_tracker::Tracker, what: &str, send: impl FnOnce(), moved: &[Key]) {
    let before = counting(&parse_page(&metrics_text(t)));
    send();
    wait_for(t, |page| {
        let now = counting(page);
        let mut changed: Vec<(&Key, f64)> = now
            .iter()
            .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|&(_, d)| d != 0.0)
            .collect();
        changed.sort_by(|a, b| a.0.cmp(b.0));
        let mut want: Vec<(&Key, f64)> = moved.iter().map(|k| (k, 1.0)).collect();
        want.sort_by(|a, b| a.0.cmp(b.0));
        if changed == want {
            Ok(())
        } else {
            Err(format!("{what}: counters moved {changed:?}, want {want:?}"))
        }
    });
}

#[test]
fn one_counting_rule_for_udp_and_http() {
    let t = start_tracker_http(2, "", FAST);
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let (udp, http, v4l) = (
        ("protocol", "udp"),
        ("protocol", "http"),
        ("ip_version", "4"),
    );
    let requests = |p, a| key("hayate_requests_total", &[p, ("action", a), v4l]);
    let refused = |p| key("hayate_responses_total", &[p, ("action", "error"), v4l]);
    let why = |p, r| key("hayate_errors_total", &[p, ("reason", r)]);
    // The first baseline must already hold the connect (the page lags by up to interval_ms).
    wait_for(&t, |page| {
        expect(
            page,
            &[(
                "hayate_requests_total",
                &[udp, ("action", "connect"), v4l],
                1.0,
            )],
        )
    });
    let error_reply = |c: &Client, packet: &[u8]| {
        c.send(packet);
        let d = c.recv_raw().expect("an error reply");
        assert!(matches!(decode(&d, true), Reply::Error { .. }), "{d:?}");
    };
    let announce = announce_packet(cid, 5, [1; 20], 6881, 1, EVENT_STARTED, -1);
    let udp_cases: [(&str, Vec<u8>, Key, &str); 5] = [
        (
            "truncated UDP announce",
            announce[..60].to_vec(),
            requests(udp, "announce"),
            "malformed",
        ),
        (
            "UDP announce with an unknown event",
            {
                let mut p = announce.clone();
                p[80..84].copy_from_slice(&9u32.to_be_bytes());
                p
            },
            requests(udp, "announce"),
            "malformed",
        ),
        (
            "forged-id UDP announce",
            announce_packet(cid ^ 1, 5, [1; 20], 6881, 1, EVENT_STARTED, -1),
            requests(udp, "announce"),
            "connection_id_invalid",
        ),
        (
            "UDP scrape of no hash",
            scrape_packet(cid, 6, &[]),
            requests(udp, "scrape"),
            "malformed",
        ),
        (
            "forged-id UDP scrape",
            scrape_packet(cid ^ 1, 6, &[[1; 20]]),
            requests(udp, "scrape"),
            "connection_id_invalid",
        ),
    ];
    for (what, packet, request, reason) in udp_cases {
        counted_as(
            &t,
            what,
            || error_reply(&c, &packet),
            &[request, refused(udp), why(udp, reason)],
        );
    }
    // Not BEP 15 at all: no answer, so no request; only the reason.
    counted_as(
        &t,
        "a datagram that is not BEP 15",
        || {
            let mut p = connect_packet(7);
            p[..8].copy_from_slice(&1u64.to_be_bytes());
            c.send(&p);
        },
        &[why(udp, "not_tracker")],
    );
    let http_cases = [
        ("/announce?port=1&left=1", "announce"),
        ("/scrape?info_hash=short", "scrape"),
    ];
    for (path, route) in http_cases {
        counted_as(
            &t,
            path,
            || {
                let (status, _, body) = http_get(http_v4(&t), path, None);
                assert_eq!(status, 200);
                assert!(body.starts_with("d14:failure reason"), "{body}");
            },
            &[requests(http, route), refused(http), why(http, "malformed")],
        );
    }
    t.stop().unwrap();
}
