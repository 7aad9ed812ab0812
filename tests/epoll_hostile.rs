//! The epoll I/O loop under hostile input, checked as an operator would: every truncation of
//! every request, and datagrams longer than a receive buffer, get exactly the answer (or the
//! silence) the io_uring loop gives, and `/metrics` counts each of them exactly. A datagram the
//! kernel had to cut (MSG_TRUNC) must be dropped and counted, never answered as if its start
//! were the whole request; that part runs on both loops. HTTP requests handed to epoll workers
//! are answered as they are by io_uring workers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Bytes of the epoll loop's receive buffer: a datagram of this length is read whole.
const EPOLL_RECV_BUF: usize = 2048;

/// Sends a connect and reads replies until its answer: the datagrams sent before it on this
/// socket were all handled by then (one socket pair always lands on one worker, in order), so
/// any reply that comes first is theirs and is returned.
fn replies_before_sync(c: &mut Client) -> Vec<Reply> {
    let txid = c.txid() | 0x4000_0000;
    c.send(&connect_packet(txid));
    let mut before = Vec::new();
    loop {
        match c.recv() {
            Reply::Connect { txid: t, .. } if t == txid => return before,
            other => before.push(other),
        }
    }
}

/// A connect request padded with zeros to `len` bytes: answered if read whole.
fn padded_connect(txid: u32, len: usize) -> Vec<u8> {
    let mut p = connect_packet(txid);
    p.resize(len, 0);
    p
}

fn udp(reason: &str) -> [(&'static str, &str); 2] {
    [("protocol", "udp"), ("reason", reason)]
}

fn requests(action: &str) -> [(&'static str, &str); 3] {
    [("protocol", "udp"), ("action", action), ("ip_version", "4")]
}

#[test]
fn every_truncation_and_oversized_datagram_is_answered_or_dropped_and_counted_exactly() {
    // One worker: every reply leaves from it, in order, so the sync connect comes last.
    let t = start_tracker_on("epoll", 1, FAST_METRICS);
    let metrics = t.metrics_address().unwrap();
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let mut connects = 1u32;
    let mut bytes = 16usize;
    let mut not_tracker = 0u32;
    let mut malformed = 0u32;
    let mut malformed_announces = 0u32;
    let hash = [0x5a; 20];
    let whole = [
        connect_packet(77),
        announce_packet(cid, 78, hash, 4000, 5, EVENT_STARTED, -1),
        scrape_packet(cid, 79, &[hash]),
    ];
    for full in &whole {
        for len in 0..=full.len() {
            c.send(&full[..len]);
            bytes += len;
            let got = replies_before_sync(&mut c);
            connects += 1;
            bytes += 16;
            if len < 16 {
                // Shorter than a header: not BEP 15, no answer.
                not_tracker += 1;
                assert_eq!(got, vec![], "{len} bytes of {full:?}");
                continue;
            }
            let txid = u32::from_be_bytes(full[12..16].try_into().unwrap());
            if len == full.len() {
                assert_eq!(got.len(), 1, "the whole request is answered: {got:?}");
                match (&got[0], full[11]) {
                    (Reply::Connect { txid: t, .. }, 0) => {
                        assert_eq!(*t, txid);
                        connects += 1;
                    }
                    (
                        Reply::Announce {
                            txid: t,
                            leechers: 1,
                            seeders: 0,
                            peers,
                            ..
                        },
                        1,
                    ) => assert_eq!((*t, peers.len()), (txid, 0)),
                    (Reply::Scrape { txid: t, entries }, 2) => {
                        assert_eq!((*t, entries.as_slice()), (txid, &[(0, 0, 1)][..]))
                    }
                    (other, action) => panic!("action {action} answered with {other:?}"),
                }
                continue;
            }
            // A header and part of a body: a BEP 15 error naming what is wrong, cut to the
            // request's length so that it never amplifies.
            malformed += 1;
            // Counted under the action it names (one rule with HTTP: README, metrics).
            if full[11] == 1 {
                malformed_announces += 1;
            }
            let want = if full[11] == 1 {
                "announce is too short"
            } else {
                "scrape names no info hash"
            };
            let fits = (len - 8).min(want.len());
            assert_eq!(
                got,
                vec![Reply::Error {
                    txid,
                    message: want[..fits].to_string()
                }],
                "{len} bytes of action {}",
                full[11]
            );
        }
    }

    // A connect read whole, then ones one byte too long and far too long (up to the largest
    // UDP payload over IPv4): the kernel cuts those, and their start must not be answered.
    let fits = padded_connect(90, EPOLL_RECV_BUF);
    c.send(&fits);
    bytes += fits.len();
    assert!(matches!(
        replies_before_sync(&mut c)[..],
        [Reply::Connect { txid: 90, .. }]
    ));
    connects += 2;
    bytes += 16;
    for len in [EPOLL_RECV_BUF + 1, 4096, 9000, 65_507] {
        c.send(&padded_connect(91, len));
        // What was read of it: the loop cannot learn more.
        bytes += EPOLL_RECV_BUF;
        assert_eq!(replies_before_sync(&mut c), vec![], "{len} bytes");
        not_tracker += 1;
        connects += 1;
        bytes += 16;
    }

    let page = wait_sample(
        metrics,
        "hayate_requests_total",
        &requests("connect"),
        connects.into(),
        Duration::from_secs(5),
    );
    let want = [
        (
            "hayate_errors_total",
            udp("not_tracker").to_vec(),
            not_tracker,
        ),
        ("hayate_errors_total", udp("malformed").to_vec(), malformed),
        ("hayate_requests_total", requests("error").to_vec(), 0),
        (
            "hayate_responses_total",
            requests("error").to_vec(),
            malformed,
        ),
        (
            "hayate_requests_total",
            requests("announce").to_vec(),
            1 + malformed_announces,
        ),
        ("hayate_responses_total", requests("announce").to_vec(), 1),
        (
            "hayate_requests_total",
            requests("scrape").to_vec(),
            1 + malformed - malformed_announces,
        ),
        (
            "hayate_responses_total",
            requests("connect").to_vec(),
            connects,
        ),
        (
            "hayate_received_bytes_total",
            vec![("protocol", "udp")],
            bytes as u32,
        ),
    ];
    for (name, labels, value) in want {
        assert_eq!(
            sample(&page, name, &labels),
            Some(value.into()),
            "{name}{labels:?}"
        );
    }
    for reason in [
        "connection_id_invalid",
        "send_buffers_full",
        "receive_failed",
    ] {
        assert_eq!(
            sample(&page, "hayate_errors_total", &udp(reason)),
            Some(0.0)
        );
    }
    // Still serving.
    c.connect();
    t.stop().unwrap();
}

#[test]
fn a_datagram_longer_than_a_receive_buffer_is_dropped_and_counted_on_both_loops() {
    for backend in BACKENDS {
        let t = start_tracker_on(backend, 1, FAST_METRICS);
        let mut c = Client::new(v4(&t));
        // A valid connect at the front: a loop that answered the cut start would reply to it.
        for len in [2100, 9000, 65_507] {
            c.send(&padded_connect(5, len));
            assert_eq!(
                replies_before_sync(&mut c),
                vec![],
                "{backend}: {len} bytes"
            );
        }
        let page = wait_sample(
            t.metrics_address().unwrap(),
            "hayate_errors_total",
            &udp("not_tracker"),
            3.0,
            Duration::from_secs(5),
        );
        assert_eq!(
            sample(&page, "hayate_responses_total", &requests("connect")),
            Some(3.0),
            "{backend}: only the sync connects were answered"
        );
        t.stop().unwrap();
    }
}

#[test]
fn http_requests_are_handed_to_epoll_workers_and_meet_udp_peers() {
    let t = start_tracker_http_on("epoll", 2, FAST_METRICS);
    let a = hash_for_shard(0, 2, 1);
    let b = hash_for_shard(1, 2, 2);
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    for h in [a, b] {
        c.announce(cid, h, 1000, 5, EVENT_STARTED, -1);
        let (status, body) = http_announce(http_v4(&t), &h, 2000, 0, "");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("8:completei1e10:incompletei1e"),
            "the HTTP seeder and the UDP leecher: {body}"
        );
        assert_eq!(http_dict_peers(&body), vec![local(1000)]);
        match c.announce(cid, h, 3000, 5, EVENT_STARTED, -1) {
            Reply::Announce {
                seeders: 1,
                leechers: 2,
                mut peers,
                ..
            } => {
                peers.sort();
                assert_eq!(peers, vec![local(1000), local(2000)]);
            }
            other => panic!("{other:?}"),
        }
    }
    for h in [a, b] {
        assert_eq!(http_scrape(http_v4(&t), &[a, b], &h), (1, 0, 2));
    }
    let forwarded = |kind| [("protocol", "http"), ("kind", kind)];
    let page = wait_sample(
        t.metrics_address().unwrap(),
        "hayate_forwarded_total",
        &forwarded("scrape"),
        // Two scrapes of two hashes owned by two workers: one part per owner each.
        4.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        sample(&page, "hayate_forwarded_total", &forwarded("announce")),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &page,
            "hayate_errors_total",
            &[("protocol", "http"), ("reason", "worker_timeout")]
        ),
        Some(0.0)
    );
    t.stop().unwrap();
}
