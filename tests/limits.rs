//! `[limits]` and `http.max_connections_per_ip` against floods from one source, over real
//! sockets on loopback (127.0.0.2 and up are other hosts; loopback's default exemption is
//! turned off where a test needs it held to the limits):
//! - one source's flood of new torrents stops at its quota, and another source still adds one;
//! - a tracker full of torrents kept only for their download counts still takes a new swarm;
//! - a source over its request rate is dropped (UDP) or answered 429 (HTTP), and counted,
//!   while another source is served;
//! - an idle-connection flood from one address leaves other clients served.

mod common;
#[path = "support/udp_flood.rs"]
mod udp_flood;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use udp_flood::*;

fn errors(t: &hayate_tracker::Tracker, protocol: &str, reason: &str) -> f64 {
    sample(
        &metrics_text(t),
        "hayate_errors_total",
        &[("protocol", protocol), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

fn wait_errors(t: &hayate_tracker::Tracker, protocol: &str, reason: &str, want: f64) {
    wait_sample(
        t.metrics_address().unwrap(),
        "hayate_errors_total",
        &[("protocol", protocol), ("reason", reason)],
        want,
        Duration::from_secs(10),
    );
}

const UNLIMITED_RATE: &str = "requests_per_source_per_sec = 0\n";

#[test]
fn one_sources_flood_of_new_torrents_stops_at_its_quota_and_others_still_add_theirs() {
    let t = start_tracker(
        2,
        &format!(
            "{FAST_METRICS}[limits]\nmax_new_torrents_per_source = 100\nexempt = []\n{UNLIMITED_RATE}"
        ),
    );
    let mut flood = Client::bound(v4(&t), "127.0.0.2:0");
    let cid = flood.connect();
    let announces: Vec<_> = (0..1000).map(|n| (n, 6881, 1, EVENT_STARTED)).collect();
    let replies = pipeline(&mut flood, cid, &announces);
    assert_eq!(replies.len(), 1000, "every announce is answered");
    let refused = refusals(&replies, "too many new torrents from your address");
    // Each of the two workers holds half the quota, and the flood's hashes fill both halves.
    assert_eq!(refused, 900, "{:?}", &replies[..3]);
    wait_errors(&t, "udp", "source_quota", 900.0);
    // Torrents that exist are not new: the flooder may still join one.
    let mut other = Client::bound(v4(&t), "127.0.0.3:0");
    let cid3 = other.connect();
    match other.announce(cid3, hash(5000), 1, 1, EVENT_STARTED, 10) {
        Reply::Announce { leechers: 1, .. } => {}
        r => panic!("another source's new torrent was refused: {r:?}"),
    }
    let joined = pipeline(&mut flood, cid, &[(5000, 6881, 1, EVENT_STARTED)]);
    assert!(
        matches!(&joined[..], [Reply::Announce { leechers: 2, .. }]),
        "{joined:?}"
    );
    let page = wait_sample(
        t.metrics_address().unwrap(),
        "hayate_torrents",
        &[],
        101.0,
        Duration::from_secs(10),
    );
    assert!(page.contains("hayate_torrents 101"), "{page}");
}

#[test]
fn a_tracker_full_of_torrents_kept_for_their_counts_still_takes_a_new_swarm() {
    let t = start_tracker(
        1,
        &format!("{FAST_METRICS}[limits]\nmax_torrents = 200\nexempt = []\n{UNLIMITED_RATE}"),
    );
    // Four hosts each complete and leave 50 torrents: 200 torrents with no peers, kept for a
    // week for their download counts.
    for host in 2..6 {
        let mut c = Client::bound(v4(&t), &format!("127.0.1.{host}:0"));
        let cid = c.connect();
        let mut announces = Vec::new();
        for n in (host - 2) * 50..(host - 1) * 50 {
            announces.push((n, 6881, 0, EVENT_COMPLETED));
            announces.push((n, 6881, 0, EVENT_STOPPED));
        }
        let replies = pipeline(&mut c, cid, &announces);
        assert_eq!(refusals(&replies, "tracker is full"), 0);
    }
    wait_sample(
        t.metrics_address().unwrap(),
        "hayate_torrents",
        &[],
        200.0,
        Duration::from_secs(10),
    );
    let mut newcomer = Client::bound(v4(&t), "127.0.2.1:0");
    let cid = newcomer.connect();
    for n in 1000..1010 {
        match newcomer.announce(cid, hash(n), 1, 1, EVENT_STARTED, 10) {
            Reply::Announce { leechers: 1, .. } => {}
            r => panic!("a new swarm was locked out by history: {r:?}"),
        }
    }
    assert_eq!(errors(&t, "udp", "tracker_full"), 0.0);
}

#[test]
fn a_source_over_its_rate_is_dropped_over_udp_and_told_429_over_http_and_counted() {
    let t = start_tracker_toml(&format!(
        "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = [\"127.0.0.1:0\"]\n\
         [workers]\ncount = 1\n{FAST_METRICS}[limits]\nrequests_per_source_per_sec = 1\n\
         request_burst = 20\nexempt = []\n"
    ));
    let fast = Client::bound(v4(&t), "127.0.0.2:0");
    fast.socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for txid in 0..100 {
        fast.send(&connect_packet(txid));
    }
    let mut answered = 0;
    while fast.recv_raw().is_some() {
        answered += 1;
    }
    // The burst, and at most one more if the test straddled a second.
    assert!((20..=21).contains(&answered), "{answered} answered");
    wait_errors(&t, "udp", "rate_limited", f64::from(100 - answered));
    let mut calm = Client::bound(v4(&t), "127.0.0.3:0");
    calm.connect();

    let http = t.http_addresses()[0];
    let stream = connect_from("127.0.0.2:0", http);
    let mut statuses = Vec::new();
    let mut stream = stream;
    for _ in 0..25 {
        write!(stream, "GET /scrape HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (status, head) = read_response(&mut stream);
        if status == 429 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: 60"),
                "{head}"
            );
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!((20..=21).contains(&ok), "{statuses:?}");
    assert!(statuses[ok..].iter().all(|&s| s == 429), "{statuses:?}");
    wait_errors(&t, "http", "rate_limited", (25 - ok) as f64);
    let mut other = connect_from("127.0.0.3:0", http);
    write!(other, "GET /scrape HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut other).0, 200);
}

#[test]
fn an_idle_connection_flood_from_one_address_leaves_other_clients_served() {
    let t = start_tracker_toml(&format!(
        "[udp]\naddresses = []\n[http]\naddresses = [\"127.0.0.1:0\"]\nmax_connections_per_ip = 16\n\
         [workers]\ncount = 1\n{FAST_METRICS}[limits]\nexempt = []\n"
    ));
    let http = t.http_addresses()[0];
    // 300 idle connections from one address: 16 are held open, the rest closed at once.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| connect_from("127.0.0.2:0", http))
        .collect();
    wait_errors(&t, "http", "connections_per_ip", 284.0);
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.3:0", http);
        write!(
            s,
            "GET /scrape HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        assert_eq!(read_response(&mut s).0, 200);
    }
    // The flooder's held connections still work; a refused one was closed unanswered.
    let mut answered = 0;
    for mut s in idle {
        if write!(s, "GET /scrape HTTP/1.1\r\nHost: t\r\n\r\n").is_ok()
            && read_response(&mut s).0 == 200
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 16);
}

/// Reads one response (head and a Content-Length body) from a keep-alive connection: its
/// status (0 if the connection closed first) and head.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => data.push(byte[0]),
            _ => return (0, String::from_utf8_lossy(&data).into_owned()),
        }
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = s.read_exact(&mut body);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}
