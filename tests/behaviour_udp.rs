//! UDP behaviours a user relies on that only a running tracker shows: peers leave on the
//! sweep timer with no request touching them, IPv6 clients scrape, every reply leaves from the
//! address its request went to (forwarded announces too), a burst past `udp.send_depth` is
//! answered or counted one by one, connection ids expire after their lifetime with their own
//! reason and metric, and a new peer id on the same IP and port replaces the old peer.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

fn udp_reason(reason: &str) -> [(&'static str, &str); 2] {
    [("protocol", "udp"), ("reason", reason)]
}

fn udp_requests<'a>(action: &'a str, ip: &'a str) -> [(&'static str, &'a str); 3] {
    [("protocol", "udp"), ("action", action), ("ip_version", ip)]
}

fn scrape_entries(r: Reply) -> Vec<(u32, u32, u32)> {
    match r {
        Reply::Scrape { entries, .. } => entries,
        other => panic!("expected a scrape reply, got {other:?}"),
    }
}

/// (seeders, leechers, peers) of an announce reply.
fn announced(r: Reply) -> (u32, u32, Vec<SocketAddr>) {
    match r {
        Reply::Announce {
            seeders,
            leechers,
            mut peers,
            ..
        } => {
            peers.sort();
            (seeders, leechers, peers)
        }
        other => panic!("expected an announce reply, got {other:?}"),
    }
}

#[test]
fn the_sweep_timer_drops_expired_peers_with_no_request_touching_them() {
    const LIFETIME: u64 = 4;
    for backend in BACKENDS {
        let t = start_tracker_on(
            backend,
            2,
            &format!(
                "[protocol]\nannounce_interval_secs = 1\nmin_interval_secs = 1\n\
                 [cleaning]\npeer_lifetime_secs = {LIFETIME}\nsweep_interval_secs = 1\n\
                 {FAST_METRICS}"
            ),
        );
        let metrics = t.metrics_address().unwrap();
        let a = hash_for_shard(0, 2, 1);
        let b = hash_for_shard(1, 2, 2);
        let mut c = Client::new(v4(&t));
        let cid = c.connect();
        let announced_at = Instant::now();
        for port in 1..=3 {
            c.announce(cid, a, port, 5, EVENT_STARTED, -1);
        }
        let (seeders, leechers, _) = announced(c.announce(cid, b, 9, 0, EVENT_STARTED, -1));
        assert_eq!((seeders, leechers), (1, 0));
        assert_eq!(
            scrape_entries(c.scrape(cid, &[a, b])),
            vec![(0, 0, 3), (1, 0, 0)]
        );
        // The gauges show the swarm while it lives (published on the workers' one-second tick).
        wait_sample(
            metrics,
            "hayate_leechers",
            &[],
            3.0,
            Duration::from_secs(LIFETIME - 1),
        );
        // From here on the tracker gets no request until every peer is gone.
        let page = wait_sample(
            metrics,
            "hayate_torrents",
            &[],
            0.0,
            Duration::from_secs(LIFETIME + 10),
        );
        let gone_after = announced_at.elapsed();
        assert!(
            gone_after >= Duration::from_secs(LIFETIME - 1),
            "{backend}: peers dropped after {gone_after:?}, before their {LIFETIME} s lifetime"
        );
        assert_eq!(sample(&page, "hayate_seeders", &[]), Some(0.0));
        assert_eq!(sample(&page, "hayate_leechers", &[]), Some(0.0));
        assert_eq!(
            sample(
                &page,
                "hayate_requests_total",
                &udp_requests("announce", "4")
            ),
            Some(4.0),
            "{backend}: no request touched the swarm meanwhile"
        );
        // The next announce finds an empty swarm, and a scrape agrees.
        let cid = c.connect();
        let (seeders, leechers, peers) = announced(c.announce(cid, a, 7, 5, EVENT_STARTED, -1));
        assert_eq!((seeders, leechers, peers), (0, 1, vec![]), "{backend}");
        assert_eq!(
            scrape_entries(c.scrape(cid, &[a, b])),
            vec![(0, 0, 1), (0, 0, 0)]
        );
        t.stop().unwrap();
    }
}

#[test]
fn ipv6_clients_scrape_across_workers() {
    for backend in BACKENDS {
        let t = start_tracker_on(backend, 2, FAST_METRICS);
        let a = hash_for_shard(0, 2, 3);
        let b = hash_for_shard(1, 2, 4);
        let mut six = Client::new(v6(&t));
        let cid6 = six.connect();
        six.announce(cid6, a, 1, 5, EVENT_STARTED, -1);
        six.announce(cid6, a, 2, 5, EVENT_STARTED, -1);
        six.announce(cid6, b, 3, 0, EVENT_COMPLETED, -1);
        let mut four = Client::new(v4(&t));
        let cid4 = four.connect();
        four.announce(cid4, a, 4, 0, EVENT_STARTED, -1);
        let txid = six.txid();
        six.send(&scrape_packet(cid6, txid, &[b, [0xee; 20], a]));
        let (from, reply) = recv_with_source(&six);
        assert_eq!(
            from,
            v6(&t),
            "{backend}: the reply leaves from the address asked"
        );
        assert_eq!(
            reply,
            Reply::Scrape {
                txid,
                // IPv4 and IPv6 peers are counted together; an unknown torrent is zeros.
                entries: vec![(1, 1, 0), (0, 0, 0), (1, 0, 2)],
            },
            "{backend}"
        );
        let page = wait_sample(
            t.metrics_address().unwrap(),
            "hayate_responses_total",
            &udp_requests("scrape", "6"),
            1.0,
            Duration::from_secs(5),
        );
        assert_eq!(
            sample(&page, "hayate_requests_total", &udp_requests("scrape", "6")),
            Some(1.0)
        );
        assert_eq!(
            sample(&page, "hayate_requests_total", &udp_requests("scrape", "4")),
            Some(0.0)
        );
        t.stop().unwrap();
    }
}

#[test]
fn replies_leave_from_the_address_the_request_was_sent_to() {
    // Steered, each announce arrives at its owner; not, one of each pair is forwarded.
    for (backend, steer) in BACKENDS.iter().flat_map(|b| [(b, false), (b, true)]) {
        // Two IPv4 addresses, so the wrong socket would show as the wrong source.
        let t = start_tracker_toml(&format!(
            "[udp]\naddresses = [\"127.0.0.1:0\", \"127.0.0.2:0\", \"[::1]:0\"]\n\
             backend = \"{backend}\"\nsteer_announces = {steer}\n[http]\naddresses = []\n\
             [workers]\ncount = 2\n{FAST_METRICS}"
        ));
        let a = hash_for_shard(0, 2, 5);
        let b = hash_for_shard(1, 2, 6);
        let mut pairs = 0;
        for &tracker in t.udp_addresses() {
            // Several client ports, so both workers receive some of them.
            for n in 0..4u16 {
                let mut c = Client::new(tracker);
                let txid = c.txid();
                c.send(&connect_packet(txid));
                let (from, reply) = recv_with_source(&c);
                assert_eq!(from, tracker, "{backend}: connect reply");
                let Reply::Connect { connection_id, .. } = reply else {
                    panic!("{reply:?}")
                };
                // One of the two is owned by the other worker: steered to it, or forwarded and
                // answered from there.
                for h in [a, b] {
                    let txid = c.txid();
                    c.send(&announce_packet(
                        connection_id,
                        txid,
                        h,
                        100 + n,
                        5,
                        EVENT_STARTED,
                        -1,
                    ));
                    let (from, reply) = recv_with_source(&c);
                    assert_eq!(from, tracker, "{backend}: announce reply");
                    assert!(matches!(reply, Reply::Announce { txid: t, .. } if t == txid));
                }
                let txid = c.txid();
                c.send(&scrape_packet(connection_id, txid, &[a, b]));
                let (from, reply) = recv_with_source(&c);
                assert_eq!(from, tracker, "{backend}: scrape reply");
                assert!(matches!(reply, Reply::Scrape { txid: t, .. } if t == txid));
                pairs += 1;
            }
        }
        assert_eq!(pairs, 12);
        // Unsteered, exactly one announce of each pair went to the other worker.
        wait_sample(
            t.metrics_address().unwrap(),
            "hayate_forwarded_total",
            &[("protocol", "udp"), ("kind", "announce")],
            if steer { 0.0 } else { pairs as f64 },
            Duration::from_secs(5),
        );
        t.stop().unwrap();
    }
}

/// Sends `n` connects at once and counts the replies that arrive before the tracker falls
/// quiet (each read waits at most `quiet`).
fn burst(socket: &UdpSocket, n: u32, quiet: Duration) -> u32 {
    for txid in 0..n {
        socket.send(&connect_packet(txid)).unwrap();
    }
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    while socket.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn a_burst_past_the_send_buffers_is_answered_or_counted_one_by_one() {
    for backend in BACKENDS {
        let t = start_tracker_with_udp(
            1,
            &format!("backend = \"{backend}\"\nsend_depth = 1"),
            FAST_METRICS,
        );
        let metrics = t.metrics_address().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(v4(&t)).unwrap();
        let (mut sent, mut got) = (0, 0);
        // io_uring frees a send slot only when the kernel reports the send done, so replies
        // to a burst read in one batch find it taken; epoll sends what it has and carries on.
        for _ in 0..20 {
            sent += 64;
            got += burst(&socket, 64, Duration::from_millis(300));
            if backend == "epoll" || got < sent {
                break;
            }
        }
        // A request that finds no send slot is dropped before it is read: it counts as
        // send_buffers_full, not as a request.
        let page = wait_sample(
            metrics,
            "hayate_errors_total",
            &udp_reason("send_buffers_full"),
            (sent - got) as f64,
            Duration::from_secs(5),
        );
        if backend == "io_uring" {
            assert!(got < sent, "20 bursts of 64 never ran out of 1 send slot");
        } else {
            assert_eq!(got, sent, "epoll sends what it has and answers every one");
        }
        for count in ["hayate_requests_total", "hayate_responses_total"] {
            assert_eq!(
                sample(&page, count, &udp_requests("connect", "4")),
                Some(got as f64),
                "{backend}: {count}"
            );
        }
        t.stop().unwrap();
    }
}

#[test]
fn a_connection_id_expires_after_its_lifetime_with_its_own_reason_and_metric() {
    // 120 s is the least connection_id_lifetime_secs allows (BEP 15: trackers accept an id
    // for 2 minutes), so this test waits that long, polling once a second.
    let t = start_tracker(2, FAST_METRICS);
    let mut c = Client::new(v4(&t));
    let asked = Instant::now();
    let cid = c.connect();
    let hash = [0x77; 20];
    let mut accepted = 0;
    let expired_after = loop {
        let since = asked.elapsed();
        assert!(since < Duration::from_secs(130), "the id never expired");
        match c.announce(cid, hash, 5000, 5, EVENT_NONE, -1) {
            Reply::Announce { .. } => accepted += 1,
            Reply::Error { message, .. } => {
                assert_eq!(message, "connection id expired");
                break since;
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        expired_after >= Duration::from_secs(119),
        "refused after {expired_after:?}, before its 120 s lifetime"
    );
    // A fresh id works at once.
    let fresh = c.connect();
    announced(c.announce(fresh, hash, 5000, 5, EVENT_NONE, -1));
    let page = wait_sample(
        t.metrics_address().unwrap(),
        "hayate_errors_total",
        &udp_reason("connection_id_expired"),
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        sample(
            &page,
            "hayate_errors_total",
            &udp_reason("connection_id_invalid")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &page,
            "hayate_requests_total",
            &udp_requests("announce", "4")
        ),
        Some((accepted + 2) as f64)
    );
    t.stop().unwrap();
}

/// An announce packet with an explicit peer id.
fn announce_as(
    cid: u64,
    txid: u32,
    hash: [u8; 20],
    peer_id: &[u8; 20],
    port: u16,
    left: u64,
) -> Vec<u8> {
    let mut p = announce_packet(cid, txid, hash, port, left, EVENT_STARTED, -1);
    p[36..56].copy_from_slice(peer_id);
    p
}

#[test]
fn a_new_peer_id_on_the_same_address_and_port_replaces_the_old_peer() {
    let t = start_tracker(2, "");
    let hash = [0x42; 20];
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let ask = |c: &mut Client, peer_id: &[u8; 20], left: u64| {
        let txid = c.txid();
        c.send(&announce_as(cid, txid, hash, peer_id, 6000, left));
        announced(c.recv())
    };
    assert_eq!(ask(&mut c, b"-AA0001-aaaaaaaaaaaa", 5), (0, 1, vec![]));
    // The client restarted with a new peer id: still one peer, not two.
    assert_eq!(ask(&mut c, b"-BB0002-bbbbbbbbbbbb", 5), (0, 1, vec![]));
    // ...and it is the new one's role that counts.
    assert_eq!(ask(&mut c, b"-CC0003-cccccccccccc", 0), (1, 0, vec![]));
    assert_eq!(scrape_entries(c.scrape(cid, &[hash])), vec![(1, 0, 0)]);
    // Another peer sees exactly one peer at that address.
    let (seeders, leechers, peers) = announced(c.announce(cid, hash, 6001, 5, EVENT_STARTED, -1));
    assert_eq!(
        (seeders, leechers, peers),
        (1, 1, vec!["127.0.0.1:6000".parse().unwrap()])
    );
    t.stop().unwrap();
}
