//! The HTTP tracker over real TCP on 127.0.0.1 and ::1: BEP 3 announces with compact (BEP 23),
//! dictionary peers (no peer ids, with or without no_peer_id), IPv6 peers (BEP 7), multi-hash scrapes across shards
//! (BEP 48), HTTP and UDP peers in one swarm, refusals, slow and idle clients, the connection
//! cap, and the trusted-proxy rule. Replies are decoded with an independent bencode crate.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_bencode::value::Value;

/// A plain HTTP/1.1 client over one keep-alive connection; every read and write is bounded.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    fn get(&mut self, target: &str) -> Response {
        self.get_with(target, &[])
    }

    fn get_with(&mut self, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: tracker\r\nUser-Agent: test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).expect("send request");
        self.response()
    }

    fn response(&mut self) -> Response {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill() > 0, "connection closed before a response");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let status = status.parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        while self.buf.len() < head_end + len {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Response {
            status,
            headers,
            body,
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .expect("read within the timeout");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Whether the server closes this connection within `within` (anything it sends first,
    /// such as an error status, is read and ignored).
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 512];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Percent-encodes every byte, the way the strictest clients do.
fn esc(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn peer_id(port: u16) -> [u8; 20] {
    let mut id = *b"-HT0001-\x00\xff\x10abcdefghi";
    id[18..20].copy_from_slice(&port.to_be_bytes());
    id
}

fn announce_target(hash: &[u8; 20], port: u16, left: u64, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        esc(hash),
        esc(&peer_id(port))
    )
}

fn decode(body: &[u8]) -> HashMap<Vec<u8>, Value> {
    match serde_bencode::from_bytes::<Value>(body) {
        Ok(Value::Dict(d)) => d,
        other => panic!("not a bencoded dict: {other:?} from {body:?}"),
    }
}

fn int(d: &HashMap<Vec<u8>, Value>, key: &str) -> i64 {
    match d.get(key.as_bytes()) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key}: {other:?}"),
    }
}

fn bytes<'a>(d: &'a HashMap<Vec<u8>, Value>, key: &str) -> &'a [u8] {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => b,
        other => panic!("{key}: {other:?}"),
    }
}

fn failure(r: &Response) -> String {
    assert_eq!(r.status, 200, "refusals are status 200");
    let d = decode(&r.body);
    assert_eq!(d.len(), 1, "a failure is only a failure reason: {d:?}");
    String::from_utf8(bytes(&d, "failure reason").to_vec()).unwrap()
}

fn compact_peers(b: &[u8], v6: bool) -> Vec<SocketAddr> {
    let size = if v6 { 18 } else { 6 };
    assert_eq!(b.len() % size, 0, "whole peers");
    b.chunks(size)
        .map(|c| {
            let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
            let ip: IpAddr = if v6 {
                <[u8; 16]>::try_from(&c[..16]).unwrap().into()
            } else {
                <[u8; 4]>::try_from(&c[..4]).unwrap().into()
            };
            SocketAddr::new(ip, port)
        })
        .collect()
}

/// Announces over a fresh connection and decodes the reply.
fn announce(addr: SocketAddr, target: &str) -> HashMap<Vec<u8>, Value> {
    let r = Http::connect(addr).get(target);
    assert_eq!(r.status, 200);
    let d = decode(&r.body);
    assert!(!d.contains_key(&b"failure reason"[..]), "{d:?}");
    d
}

#[test]
fn compact_replies_over_ipv4_and_ipv6() {
    let t = start_tracker_http(2, "", "");
    for (addr, v6) in [(http_v4(&t), false), (http_v6(&t), true)] {
        let hash = hash_for_shard(1, 2, v6 as u8);
        let first = announce(addr, &announce_target(&hash, 1000, 5, "&event=started"));
        assert_eq!(int(&first, "incomplete"), 1);
        assert_eq!(bytes(&first, "peers"), b"", "nobody else yet");
        let d = announce(addr, &announce_target(&hash, 2000, 5, "&compact=1"));
        assert_eq!(int(&d, "interval"), 1800);
        assert_eq!(int(&d, "min interval"), 900);
        assert_eq!((int(&d, "complete"), int(&d, "incomplete")), (0, 2));
        let me = SocketAddr::new(addr.ip(), 1000);
        if v6 {
            assert_eq!(bytes(&d, "peers"), b"", "IPv6 peers go in peers6");
            assert_eq!(compact_peers(bytes(&d, "peers6"), true), vec![me]);
        } else {
            assert_eq!(compact_peers(bytes(&d, "peers"), false), vec![me]);
            assert!(!d.contains_key(&b"peers6"[..]));
        }
    }
    t.stop().unwrap();
}

#[test]
fn dictionary_replies_carry_no_peer_ids() {
    let t = start_tracker_http(2, "", "");
    let hash = hash_for_shard(0, 2, 7);
    let addr = http_v4(&t);
    announce(addr, &announce_target(&hash, 1000, 0, ""));
    let d = announce(addr, &announce_target(&hash, 2000, 9, "&compact=0"));
    assert_eq!((int(&d, "complete"), int(&d, "incomplete")), (1, 1));
    let Some(Value::List(peers)) = d.get(&b"peers"[..]) else {
        panic!("peers is a list: {d:?}")
    };
    assert_eq!(peers.len(), 1);
    let Value::Dict(p) = &peers[0] else {
        panic!("a peer is a dict")
    };
    assert_eq!(bytes(p, "ip"), b"127.0.0.1");
    assert_eq!(int(p, "port"), 1000);
    // The swarm keeps no peer ids (README, "Memory"): a dictionary peer is its address and port.
    assert!(!p.contains_key(&b"peer id"[..]), "{p:?}");
    let d = announce(
        addr,
        &announce_target(&hash, 2000, 9, "&compact=0&no_peer_id=1"),
    );
    let Some(Value::List(peers)) = d.get(&b"peers"[..]) else {
        panic!("peers is a list")
    };
    let Value::Dict(p) = &peers[0] else {
        panic!("a peer is a dict")
    };
    assert_eq!(int(p, "port"), 1000);
    assert!(!p.contains_key(&b"peer id"[..]), "{p:?}");
    // Dictionary peers over IPv6 carry the address as text, and list both families.
    let a6 = http_v6(&t);
    announce(a6, &announce_target(&hash, 3000, 9, ""));
    let d = announce(a6, &announce_target(&hash, 4000, 9, "&compact=0"));
    let Some(Value::List(peers)) = d.get(&b"peers"[..]) else {
        panic!("peers is a list")
    };
    let mut listed: Vec<(Vec<u8>, i64)> = peers
        .iter()
        .map(|p| {
            let Value::Dict(p) = p else {
                panic!("a peer is a dict")
            };
            (bytes(p, "ip").to_vec(), int(p, "port"))
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (b"127.0.0.1".to_vec(), 1000),
            (b"127.0.0.1".to_vec(), 2000),
            (b"::1".to_vec(), 3000)
        ]
    );
    t.stop().unwrap();
}

#[test]
fn clients_escaping_little_or_everything_reach_the_same_torrent() {
    let t = start_tracker_http(2, "", "");
    let addr = http_v4(&t);
    // A hash made of characters clients leave unescaped, sent raw once and escaped once, with
    // lower-case escapes, parameters reordered and unknown ones mixed in.
    let hash = *b"AZaz09-_.~!*'()ABCDE";
    let raw = std::str::from_utf8(&hash).unwrap();
    let lower: String = hash.iter().map(|b| format!("%{b:02x}")).collect();
    announce(
        addr,
        &format!("/announce?supportcrypto=1&port=1000&info_hash={raw}&peer_id=ABCDEFGHIJKLMNOPQRST&left=1&key=%ff%00%80"),
    );
    let d = announce(
        addr,
        &format!(
            "/announce?peer_id=ABCDEFGHIJKLMNOPQRSX&left=1&port=2000&info_hash={lower}&corrupt=0"
        ),
    );
    assert_eq!(int(&d, "incomplete"), 2);
    assert_eq!(
        compact_peers(bytes(&d, "peers"), false),
        vec!["127.0.0.1:1000".parse().unwrap()]
    );
    t.stop().unwrap();
}

#[test]
fn scrape_of_many_hashes_across_shards() {
    let t = start_tracker_http(3, "", "");
    let addr = http_v4(&t);
    let hashes: Vec<[u8; 20]> = (0..3).map(|s| hash_for_shard(s, 3, 40 + s as u8)).collect();
    // Shard 0: a seeder and a leecher; shard 1: one completed download; shard 2: a leecher.
    announce(addr, &announce_target(&hashes[0], 1, 0, ""));
    announce(addr, &announce_target(&hashes[0], 2, 7, ""));
    announce(addr, &announce_target(&hashes[1], 3, 9, "&event=started"));
    announce(addr, &announce_target(&hashes[1], 3, 0, "&event=completed"));
    announce(addr, &announce_target(&hashes[2], 4, 7, ""));
    let unknown = hash_for_shard(1, 3, 99);
    let mut target = String::from("/scrape?");
    for h in hashes.iter().chain([&unknown]) {
        target.push_str(&format!("info_hash={}&", esc(h)));
    }
    let r = Http::connect(addr).get(&target);
    assert_eq!(r.status, 200);
    let d = decode(&r.body);
    let Some(Value::Dict(files)) = d.get(&b"files"[..]) else {
        panic!("files is a dict: {d:?}")
    };
    assert_eq!(files.len(), 4);
    let counts = |h: &[u8; 20]| {
        let Some(Value::Dict(f)) = files.get(&h[..]) else {
            panic!("no entry for {h:?}")
        };
        (
            int(f, "complete"),
            int(f, "incomplete"),
            int(f, "downloaded"),
        )
    };
    assert_eq!(counts(&hashes[0]), (1, 1, 0));
    assert_eq!(counts(&hashes[1]), (1, 0, 1));
    assert_eq!(counts(&hashes[2]), (0, 1, 0));
    assert_eq!(counts(&unknown), (0, 0, 0));
    // The same over IPv6, one hash.
    let r = Http::connect(http_v6(&t)).get(&format!("/scrape?info_hash={}", esc(&hashes[2])));
    let d = decode(&r.body);
    let Some(Value::Dict(files)) = d.get(&b"files"[..]) else {
        panic!("files is a dict")
    };
    assert_eq!(files.len(), 1);
    t.stop().unwrap();
}

#[test]
fn http_and_udp_peers_see_each_other() {
    let t = start_tracker_http(2, "", "");
    for (udp, http, n) in [(v4(&t), http_v4(&t), 1u8), (v6(&t), http_v6(&t), 2)] {
        let hash = hash_for_shard(1, 2, n);
        let mut client = Client::new(udp);
        let cid = client.connect();
        client.announce(cid, hash, 7000, 5, EVENT_STARTED, -1);
        let d = announce(http, &announce_target(&hash, 8000, 5, ""));
        let key = if udp.is_ipv4() { "peers" } else { "peers6" };
        assert_eq!(
            compact_peers(bytes(&d, key), udp.is_ipv6()),
            vec![SocketAddr::new(udp.ip(), 7000)]
        );
        match client.announce(cid, hash, 7000, 5, EVENT_NONE, -1) {
            Reply::Announce {
                peers, leechers, ..
            } => {
                assert_eq!(leechers, 2);
                assert_eq!(peers, vec![SocketAddr::new(udp.ip(), 8000)]);
            }
            other => panic!("{other:?}"),
        }
    }
    t.stop().unwrap();
}

#[test]
fn bad_requests_get_a_failure_reason_on_a_kept_alive_connection() {
    let t = start_tracker_http(2, "", "");
    let mut c = Http::connect(http_v4(&t));
    let h = esc(&[7; 20]);
    let id = esc(&[8; 20]);
    let ok = format!("info_hash={h}&peer_id={id}");
    let too_many: String = (0..75u8)
        .map(|i| format!("info_hash={}&", esc(&[i; 20])))
        .collect();
    let cases = [
        (
            format!("/announce?peer_id={id}&port=1"),
            "missing info_hash",
        ),
        ("/announce".to_string(), "missing info_hash"),
        (
            format!("/announce?info_hash=%01%02&peer_id={id}&port=1"),
            "invalid info_hash: must be 20 bytes, got 2",
        ),
        (
            format!("/announce?info_hash={h}%zz&peer_id={id}&port=1"),
            "invalid info_hash: bad percent escape",
        ),
        (format!("/announce?info_hash={h}&port=1"), "missing peer_id"),
        (
            format!("/announce?info_hash={h}&peer_id=abc&port=1"),
            "invalid peer_id: must be 20 bytes, got 3",
        ),
        (format!("/announce?{ok}"), "missing port"),
        (format!("/announce?{ok}&port=0"), "invalid port"),
        (format!("/announce?{ok}&port=70000"), "invalid port"),
        (format!("/announce?{ok}&port=http"), "invalid port"),
        (format!("/announce?{ok}&port=1&left=-1"), "invalid left"),
        (
            format!("/announce?{ok}&port=1&event=paused2"),
            "invalid event",
        ),
        ("/scrape".to_string(), "missing info_hash"),
        ("/scrape?info_hash=short".to_string(), "must be 20 bytes"),
        (
            format!("/scrape?{too_many}"),
            "too many info_hash values: at most 74",
        ),
    ];
    for (target, want) in &cases {
        let reason = failure(&c.get(target));
        assert!(reason.contains(want), "{target}: {reason}");
        assert!(
            !reason.contains(".rs") && !reason.contains("src/"),
            "{reason}"
        );
    }
    let r = c.get("/nothing-here");
    assert_eq!(r.status, 404);
    let r = c.get("/announce.php");
    assert_eq!(r.status, 404);
    // The same connection still serves a good request after all that.
    let d = decode(&c.get(&format!("/announce?{ok}&port=1")).body);
    assert_eq!(int(&d, "incomplete"), 1);
    let ct = c.get("/scrape?info_hash=x").headers;
    assert!(ct
        .iter()
        .any(|(k, v)| k == "content-type" && v == "text/plain"));
    t.stop().unwrap();
}

#[test]
fn other_methods_and_oversized_requests_are_refused() {
    let t = start_tracker_http(1, "max_request_bytes = 2048", "");
    let mut c = Http::connect(http_v4(&t));
    c.stream
        .write_all(b"POST /announce HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(c.response().status, 405);
    let r = c.get(&format!("/announce?pad={}", "a".repeat(4000)));
    assert_eq!(r.status, 431, "a request head over max_request_bytes");
    t.stop().unwrap();
}

#[test]
fn a_slow_client_does_not_stop_another_and_is_dropped() {
    let t = start_tracker_http(2, "header_read_timeout_secs = 1", "");
    let addr = http_v4(&t);
    let mut slow = Http::connect(addr);
    slow.stream
        .write_all(b"GET /announce?info_hash=%01%02")
        .unwrap();
    let mut idle = Http::connect(addr);
    let started = Instant::now();
    let hash = hash_for_shard(0, 2, 3);
    let d = announce(addr, &announce_target(&hash, 1, 1, ""));
    assert_eq!(int(&d, "incomplete"), 1);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served in {:?} while another client dawdled",
        started.elapsed()
    );
    assert!(
        slow.closed_within(Duration::from_secs(3)),
        "slow client dropped"
    );
    assert!(
        idle.closed_within(Duration::from_secs(3)),
        "idle client dropped"
    );
    t.stop().unwrap();
}

#[test]
fn connections_past_the_cap_are_closed() {
    let t = start_tracker_http(1, "max_connections = 2", "");
    let addr = http_v4(&t);
    let mut a = Http::connect(addr);
    let mut b = Http::connect(addr);
    let hash = [3; 20];
    // Both held open, each proven accepted by being served.
    a.get(&announce_target(&hash, 1, 1, ""));
    b.get(&announce_target(&hash, 2, 1, ""));
    let mut c = Http::connect(addr);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "third connection refused"
    );
    wait_sample(
        t.metrics_address().unwrap(),
        "hayate_errors_total",
        &[("protocol", "http"), ("reason", "connections_full")],
        1.0,
        Duration::from_secs(10),
    );
    drop(a);
    // The freed slot is reused once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut d = Http::connect(addr);
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
            announce_target(&hash, 3, 1, "")
        );
        if d.stream.write_all(req.as_bytes()).is_ok() {
            let mut chunk = [0u8; 16];
            if let Ok(n) = d.stream.read(&mut chunk) {
                if n > 0 && chunk.starts_with(b"HTTP/1.1 200") {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.stop().unwrap();
}

/// The address a client was listed under, as a second announcer over `v4` sees it.
fn listed_as(t: &hayate_tracker::Tracker, hash: &[u8; 20], v6: bool) -> Vec<SocketAddr> {
    let addr = if v6 { http_v6(t) } else { http_v4(t) };
    let d = announce(addr, &announce_target(hash, 9999, 1, ""));
    compact_peers(bytes(&d, if v6 { "peers6" } else { "peers" }), v6)
}

#[test]
fn only_trusted_proxies_set_the_client_address() {
    let t = start_tracker_http(
        2,
        "trusted_proxies = [\"127.0.0.0/8\"]\nreal_ip_header = \"X-Real-Client\"",
        "",
    );
    let v4 = http_v4(&t);
    let via = |hash: &[u8; 20], port: u16, header: &str, addr: SocketAddr| {
        let r = Http::connect(addr).get_with(
            &announce_target(hash, port, 1, ""),
            &[("X-Real-Client", header)],
        );
        decode(&r.body)
    };
    // From a trusted proxy: the right-most entry that is not itself a trusted proxy.
    let h = [1; 20];
    via(&h, 1000, "203.0.113.7, 198.51.100.2, 127.0.0.5", v4);
    assert_eq!(
        listed_as(&t, &h, false),
        vec!["198.51.100.2:1000".parse().unwrap()]
    );
    // A header the proxy filled with nonsense is refused, not guessed at.
    let d = via(&[2; 20], 1000, "unknown", v4);
    let reason = String::from_utf8(bytes(&d, "failure reason").to_vec()).unwrap();
    assert!(
        reason.contains("X-Real-Client") || reason.contains("x-real-client"),
        "{reason}"
    );
    // ::1 is not a trusted proxy: its header is ignored.
    let h = [3; 20];
    via(&h, 1000, "203.0.113.7", http_v6(&t));
    assert_eq!(listed_as(&t, &h, true), vec!["[::1]:1000".parse().unwrap()]);
    // Other header names are not the configured one.
    let h = [4; 20];
    Http::connect(v4).get_with(
        &announce_target(&h, 1000, 1, ""),
        &[("X-Forwarded-For", "203.0.113.7")],
    );
    assert_eq!(
        listed_as(&t, &h, false),
        vec!["127.0.0.1:1000".parse().unwrap()]
    );
    t.stop().unwrap();
}

#[test]
fn ip_parameters_count_only_when_spoofing_is_allowed() {
    let off = start_tracker_http(1, "", "");
    let h = [5; 20];
    announce(
        http_v4(&off),
        &announce_target(&h, 1000, 1, "&ip=192.0.2.9"),
    );
    assert_eq!(
        listed_as(&off, &h, false),
        vec!["127.0.0.1:1000".parse().unwrap()]
    );
    off.stop().unwrap();
    let on = start_tracker_http(1, "allow_ip_spoofing = true", "");
    announce(http_v4(&on), &announce_target(&h, 1000, 1, "&ip=192.0.2.9"));
    assert_eq!(
        listed_as(&on, &h, false),
        vec!["192.0.2.9:1000".parse().unwrap()]
    );
    on.stop().unwrap();
}

#[test]
fn stops_within_a_second_with_connections_open() {
    let t = start_tracker_http(2, "", "");
    let addr = http_v4(&t);
    let mut kept = Http::connect(addr);
    kept.get(&announce_target(&[6; 20], 1, 1, ""));
    let _half = {
        let mut h = Http::connect(addr);
        h.stream.write_all(b"GET /scr").unwrap();
        h
    };
    let asked = Instant::now();
    t.stop().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert!(
        kept.closed_within(Duration::from_secs(1)),
        "connection closed"
    );
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn http_off_binds_nothing() {
    let t = start_tracker(1, "");
    assert!(t.http_addresses().is_empty());
    t.stop().unwrap();
}

/// A torrent with IPv4 peers on ports `v4` and IPv6 peers on ports `v6`, all leechers.
fn dual_swarm(t: &hayate_tracker::Tracker, hash: &[u8; 20], v4: &[u16], v6: &[u16]) {
    for &port in v4 {
        announce(http_v4(t), &announce_target(hash, port, 5, ""));
    }
    for &port in v6 {
        announce(http_v6(t), &announce_target(hash, port, 5, ""));
    }
}

#[test]
fn dual_stack_replies_carry_both_families_unless_respect_af() {
    let t = start_tracker_http(2, "", "");
    let hash = hash_for_shard(1, 2, 40);
    // An IPv6 seeder: an IPv4 client gets it in peers6, and IPv4 peers in peers.
    announce(http_v6(&t), &announce_target(&hash, 6000, 0, ""));
    announce(http_v4(&t), &announce_target(&hash, 4000, 5, ""));
    let d = announce(http_v4(&t), &announce_target(&hash, 4001, 5, ""));
    assert_eq!((int(&d, "complete"), int(&d, "incomplete")), (1, 2));
    assert_eq!(
        compact_peers(bytes(&d, "peers6"), true),
        vec!["[::1]:6000".parse().unwrap()]
    );
    assert_eq!(
        compact_peers(bytes(&d, "peers"), false),
        vec!["127.0.0.1:4000".parse().unwrap()]
    );
    // numwant is split between the families: 10 of each on hand, 6 asked, 3 and 3.
    let big = hash_for_shard(0, 2, 41);
    let ports: Vec<u16> = (5000..5010).collect();
    dual_swarm(&t, &big, &ports, &ports);
    let d = announce(http_v4(&t), &announce_target(&big, 7000, 5, "&numwant=6"));
    assert_eq!(compact_peers(bytes(&d, "peers"), false).len(), 3);
    assert_eq!(compact_peers(bytes(&d, "peers6"), true).len(), 3);
    // What one family lacks the other fills: 1 IPv6 peer, so 5 IPv4 ones.
    let lop = hash_for_shard(0, 2, 42);
    dual_swarm(&t, &lop, &ports, &[5000]);
    let d = announce(http_v4(&t), &announce_target(&lop, 7000, 5, "&numwant=6"));
    assert_eq!(compact_peers(bytes(&d, "peers"), false).len(), 5);
    assert_eq!(compact_peers(bytes(&d, "peers6"), true).len(), 1);
    // A seeder is sent leechers only, of both families.
    let d = announce(http_v6(&t), &announce_target(&hash, 6001, 0, ""));
    let mut v4 = compact_peers(bytes(&d, "peers"), false);
    v4.sort();
    assert_eq!(
        v4,
        vec![
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:4001".parse().unwrap()
        ]
    );
    assert_eq!(bytes(&d, "peers6"), b"", "the other seeder is not sent");
    // respect_af = true, by reload: same family only.
    let mut config = t.config().clone();
    config.protocol.respect_af = true;
    t.reload(&config).unwrap();
    let d = announce(http_v4(&t), &announce_target(&hash, 4002, 5, ""));
    assert!(!d.contains_key(&b"peers6"[..]), "{d:?}");
    assert_eq!(compact_peers(bytes(&d, "peers"), false).len(), 2);
    t.stop().unwrap();
}

#[test]
fn the_other_family_address_lists_a_dual_stack_client_twice_when_allowed() {
    let t = start_tracker_http(1, "allow_ip_spoofing = true", "");
    let hash = [44; 20];
    announce(http_v4(&t), &announce_target(&hash, 1000, 0, "&ipv6=::1"));
    // An IPv6-only client finds the dual-stack seeder under its IPv6 address.
    let mut config = t.config().clone();
    config.protocol.respect_af = true;
    t.reload(&config).unwrap();
    assert_eq!(
        listed_as(&t, &hash, true),
        vec!["[::1]:1000".parse().unwrap()]
    );
    assert_eq!(
        listed_as(&t, &hash, false),
        vec!["127.0.0.1:1000".parse().unwrap()]
    );
    t.stop().unwrap();
}

#[test]
fn interval_jitter_varies_each_reply_within_its_bound() {
    let t = start_tracker_http(
        2,
        "",
        "[protocol]\nannounce_interval_secs = 1800\nmin_interval_secs = 900\n\
         interval_jitter_secs = 300\njitter_min_interval = true\n",
    );
    let hash = hash_for_shard(0, 2, 43);
    let mut seen = std::collections::HashSet::new();
    for port in 1000..1040u16 {
        let d = announce(http_v4(&t), &announce_target(&hash, port, 5, ""));
        let (interval, min) = (int(&d, "interval"), int(&d, "min interval"));
        assert!((1800..=2100).contains(&interval), "{interval}");
        assert_eq!(interval - 1800, min - 900, "the same increase on both");
        seen.insert(interval);
    }
    assert!(
        seen.len() > 10,
        "40 replies, {} distinct intervals",
        seen.len()
    );
    // Over UDP too.
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let mut udp_seen = std::collections::HashSet::new();
    for port in 2000..2040u16 {
        match c.announce(cid, hash, port, 5, 0, -1) {
            Reply::Announce { interval, .. } => {
                assert!((1800..=2100).contains(&interval), "{interval}");
                udp_seen.insert(interval);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(udp_seen.len() > 10, "{udp_seen:?}");
    // Off again by reload: every reply says exactly the interval.
    let mut config = t.config().clone();
    config.protocol.interval_jitter_secs = 0;
    t.reload(&config).unwrap();
    let d = announce(http_v4(&t), &announce_target(&hash, 3000, 5, ""));
    assert_eq!((int(&d, "interval"), int(&d, "min interval")), (1800, 900));
    t.stop().unwrap();
}

#[test]
fn subnet_preference_hands_the_announcers_subnet_first_in_a_big_swarm() {
    let t = start_tracker_http(
        1,
        "allow_ip_spoofing = true",
        "[protocol]\nprefer_subnet_v4 = 24\nmax_numwant = 200\n",
    );
    let hash = [45; 20];
    let mut http = Http::connect(http_v4(&t));
    // 10,000 leechers over 127.0.0.0/8; 20 of them in 127.9.9.0/24.
    let near: Vec<SocketAddr> = (1..=20)
        .map(|i| SocketAddr::from(([127, 9, 9, i], 7000)))
        .collect();
    let far = (0..9980u32).map(|i| {
        let b = (i + 1).to_be_bytes();
        SocketAddr::from(([127, 10 + b[1], b[2], b[3]], 7000))
    });
    for addr in near.iter().copied().chain(far) {
        let target = announce_target(&hash, addr.port(), 5, &format!("&ip={}", addr.ip()));
        let r = http.get(&target);
        assert!(!decode(&r.body).contains_key(&b"failure reason"[..]));
    }
    for _ in 0..3 {
        let d = decode(
            &http
                .get(&announce_target(
                    &hash,
                    7001,
                    5,
                    "&ip=127.9.9.200&numwant=50",
                ))
                .body,
        );
        let peers = compact_peers(bytes(&d, "peers"), false);
        assert_eq!(peers.len(), 50);
        let mut first: Vec<SocketAddr> = peers[..20].to_vec();
        first.sort();
        assert_eq!(first, near, "the announcer's /24 comes first");
        assert!(peers[20..].iter().all(|p| !near.contains(p)), "once each");
    }
    t.stop().unwrap();
}
