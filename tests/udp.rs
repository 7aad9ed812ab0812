//! The UDP tracker over real sockets on loopback: what a BEP 15 client sees. Every scenario runs
//! against both UDP I/O loops (`io_uring::*` and `epoll::*` tests), which must behave the same.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Makes a `#[test]` per scenario and backend: `io_uring::name` and `epoll::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(#[test] fn $name() {
                if !crate::common::skip_backend("io_uring") {
                    super::$name("io_uring")
                }
            })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name("epoll") })*
        }
    };
}

on_both_backends!(
    connect_then_announce_and_a_second_peer_finds_the_first,
    stopped_removes_the_peer,
    scrape_across_workers_returns_counts_in_request_order,
    invalid_connection_ids_get_an_error_packet,
    garbage_and_truncated_packets_do_not_stop_the_tracker,
    announce_options_port_zero_and_numwant,
    ipv4_and_ipv6_swarms_are_apart_but_counted_together,
    a_flood_of_connects_is_answered,
    stop_is_prompt,
);

fn connect_then_announce_and_a_second_peer_finds_the_first(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    for addr in [v4(&t), v6(&t)] {
        // Two hashes, one per worker, so both the local and the forwarded path are exercised.
        for shard in 0..2 {
            let hash = hash_for_shard(shard, 2, addr.is_ipv4() as u8);
            let mut a = Client::new(addr);
            let mut b = Client::new(addr);
            let ca = a.connect();
            let cb = b.connect();
            match a.announce(ca, hash, 1111, 100, EVENT_STARTED, -1) {
                Reply::Announce {
                    interval,
                    leechers,
                    seeders,
                    peers,
                    ..
                } => {
                    assert_eq!(interval, 1800);
                    assert_eq!((leechers, seeders), (1, 0));
                    assert!(peers.is_empty(), "the first peer gets nobody, not itself");
                }
                other => panic!("{other:?}"),
            }
            match b.announce(cb, hash, 2222, 0, EVENT_STARTED, 50) {
                Reply::Announce {
                    leechers,
                    seeders,
                    peers,
                    ..
                } => {
                    assert_eq!((leechers, seeders), (1, 1));
                    let ip = if addr.is_ipv4() { "127.0.0.1" } else { "::1" };
                    let first: SocketAddr = SocketAddr::new(ip.parse().unwrap(), 1111);
                    assert_eq!(peers, vec![first]);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    t.stop().unwrap();
}

fn stopped_removes_the_peer(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    let hash = hash_for_shard(1, 2, 9);
    let mut a = Client::new(v4(&t));
    let mut b = Client::new(v4(&t));
    let (ca, cb) = (a.connect(), b.connect());
    a.announce(ca, hash, 1000, 5, EVENT_STARTED, -1);
    match a.announce(ca, hash, 1000, 5, EVENT_STOPPED, -1) {
        Reply::Announce {
            leechers, seeders, ..
        } => assert_eq!((leechers, seeders), (0, 0)),
        other => panic!("{other:?}"),
    }
    match b.announce(cb, hash, 2000, 5, EVENT_STARTED, -1) {
        Reply::Announce {
            peers, leechers, ..
        } => {
            assert!(peers.is_empty(), "stopped peer handed out: {peers:?}");
            assert_eq!(leechers, 1);
        }
        other => panic!("{other:?}"),
    }
    t.stop().unwrap();
}

fn scrape_across_workers_returns_counts_in_request_order(backend: &str) {
    let t = start_tracker_on(backend, 3, "");
    let hashes = [
        hash_for_shard(2, 3, 1),
        hash_for_shard(0, 3, 2),
        hash_for_shard(1, 3, 3),
        hash_for_shard(2, 3, 4),
        [0xee; 20], // never announced
    ];
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    // hashes[i] gets i seeders and i+1 leechers; hashes[1] also one completed download.
    for (i, h) in hashes[..4].iter().enumerate() {
        for s in 0..i {
            c.announce(cid, *h, 100 + s as u16, 0, EVENT_STARTED, -1);
        }
        for l in 0..=i {
            c.announce(cid, *h, 200 + l as u16, 10, EVENT_STARTED, -1);
        }
    }
    c.announce(cid, hashes[1], 300, 0, EVENT_COMPLETED, -1);
    // Asked of every worker: the chain starts at each, whoever owns the hashes.
    for (mut s, cid) in client_per_worker(&t, v4(&t)) {
        match s.scrape(cid, &hashes) {
            Reply::Scrape { entries, .. } => assert_eq!(
                entries,
                vec![(0, 0, 1), (2, 1, 2), (2, 0, 3), (3, 0, 4), (0, 0, 0)],
                "(seeders, completed, leechers) per hash"
            ),
            other => panic!("{other:?}"),
        }
    }
    t.stop().unwrap();
}

fn invalid_connection_ids_get_an_error_packet(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    let mut c = Client::new(v4(&t));
    let good = c.connect();
    for bad in [0u64, good ^ 1, good.wrapping_add(1 << 32), 0x41727101980] {
        match c.announce(bad, [3; 20], 1000, 1, EVENT_STARTED, -1) {
            Reply::Error { message, .. } => assert!(message.contains("connection id"), "{message}"),
            other => panic!("{other:?}"),
        }
        match c.scrape(bad, &[[3; 20]]) {
            Reply::Error { message, .. } => assert!(message.contains("connection id"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    // An id issued to another address is refused too.
    let mut other = Client::bound(v4(&t), "127.0.0.2:0");
    match other.announce(good, [3; 20], 1000, 1, EVENT_STARTED, -1) {
        Reply::Error { message, .. } => assert!(message.contains("connection id"), "{message}"),
        r => panic!("{r:?}"),
    }
    t.stop().unwrap();
}

fn garbage_and_truncated_packets_do_not_stop_the_tracker(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let announce = announce_packet(cid, 77, [4; 20], 1000, 1, EVENT_STARTED, -1);
    let mut answered_errors = 0;
    for len in 0..announce.len() {
        c.send(&announce[..len]);
    }
    c.send(&[0xff; 3000]);
    c.send(&connect_packet(5)[..15]);
    // Truncated announces of 16 bytes or more are answered with an error no larger than them.
    // One worker handles this socket's datagrams in order, so every error comes before the
    // answer to a connect sent last.
    c.send(&connect_packet(78));
    loop {
        let d = c.recv_raw().expect("the closing connect is answered");
        match decode(&d, true) {
            Reply::Error { txid, .. } => {
                assert_eq!(txid, 77);
                answered_errors += 1;
            }
            Reply::Connect { txid: 78, .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered_errors, announce.len() - 16);
    // Still serving, to this client and another.
    assert!(matches!(
        c.announce(cid, [4; 20], 1000, 1, EVENT_STARTED, -1),
        Reply::Announce { .. }
    ));
    let mut d = Client::new(v4(&t));
    let cid = d.connect();
    assert!(matches!(
        d.announce(cid, [4; 20], 2000, 1, EVENT_STARTED, -1),
        Reply::Announce { .. }
    ));
    t.stop().unwrap();
}

fn announce_options_port_zero_and_numwant(backend: &str) {
    let t = start_tracker_on(
        backend,
        2,
        "[protocol]\ndefault_numwant = 5\nmax_numwant = 10\n",
    );
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let hash = [8; 20];
    for port in 1..=20 {
        c.announce(cid, hash, port, 1, EVENT_NONE, -1);
    }
    let count = |r: Reply| match r {
        Reply::Announce { peers, .. } => peers.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        count(c.announce(cid, hash, 100, 1, EVENT_NONE, -1)),
        5,
        "-1 means default"
    );
    assert_eq!(
        count(c.announce(cid, hash, 100, 1, EVENT_NONE, 0)),
        5,
        "0 means default"
    );
    assert_eq!(count(c.announce(cid, hash, 100, 1, EVENT_NONE, 3)), 3);
    assert_eq!(
        count(c.announce(cid, hash, 100, 1, EVENT_NONE, 1000)),
        10,
        "capped"
    );
    // BEP 41 options after the announce are accepted.
    let mut p = announce_packet(cid, 55, hash, 100, 1, EVENT_NONE, 2);
    p.extend_from_slice(&[
        2, 9, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c', b'e', 0,
    ]);
    c.send(&p);
    assert!(matches!(c.recv(), Reply::Announce { txid: 55, .. }));
    match c.announce(cid, hash, 0, 1, EVENT_NONE, 2) {
        Reply::Error { message, .. } => assert!(message.contains("port"), "{message}"),
        other => panic!("{other:?}"),
    }
    t.stop().unwrap();
}

fn ipv4_and_ipv6_swarms_are_apart_but_counted_together(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    let hash = [21; 20];
    let mut a = Client::new(v4(&t));
    let mut b = Client::new(v6(&t));
    let (ca, cb) = (a.connect(), b.connect());
    a.announce(ca, hash, 1000, 1, EVENT_STARTED, -1);
    match b.announce(cb, hash, 2000, 1, EVENT_STARTED, -1) {
        Reply::Announce {
            peers, leechers, ..
        } => {
            assert!(peers.is_empty(), "an IPv6 client gets 18-byte peers only");
            assert_eq!(leechers, 2);
        }
        other => panic!("{other:?}"),
    }
    t.stop().unwrap();
}

fn a_flood_of_connects_is_answered(backend: &str) {
    let t = start_tracker_on(backend, 2, "");
    let c = Client::new(v4(&t));
    // Bursts of 100: the tracker answers faster than this client reads, and the client's own
    // receive buffer (about 200 small datagrams by default) must not be what drops replies.
    let mut got = 0;
    for burst in 0..5u32 {
        for i in 0..100 {
            c.send(&connect_packet(burst * 100 + i));
        }
        let mut in_burst = 0;
        while in_burst < 100 {
            match c.recv_raw() {
                Some(d) => {
                    assert!(matches!(decode(&d, true), Reply::Connect { .. }));
                    in_burst += 1;
                }
                None => break,
            }
        }
        got += in_burst;
    }
    assert_eq!(got, 500, "connects answered");
    t.stop().unwrap();
}

fn stop_is_prompt(backend: &str) {
    let t = start_tracker_on(backend, 4, "");
    let started = std::time::Instant::now();
    t.stop().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        started.elapsed()
    );
}
