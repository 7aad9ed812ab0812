//! Announce steering (`udp.steer_announces`) over real sockets: with it, the kernel delivers
//! each announce to the socket of the worker that owns its torrent, so none is forwarded; with
//! it off, the announces of one client socket all land on one worker and those for the other
//! worker's torrents are forwarded. Either way every announce is answered alike, and connects
//! keep reaching every worker (steering leaves them to the kernel's spread).

mod common;

use common::*;

/// Announces 200 torrents, half owned by each of 2 workers, from one socket on `addr`, each
/// answered as the first peer of its swarm; returns the announces forwarded.
fn forwarded_of_200(t: &hayate_tracker::Tracker, addr: std::net::SocketAddr) -> f64 {
    let mut c = Client::new(addr);
    let cid = c.connect();
    for n in 0..200u32 {
        let mut hash = hash_for_shard((n % 2) as usize, 2, n as u8);
        hash[19] = (n >> 8) as u8;
        // Each family its own torrents: counts are over both.
        hash[18] = u8::from(addr.is_ipv4());
        match c.announce(cid, hash, 6881, 10, EVENT_STARTED, 1) {
            Reply::Announce {
                leechers, peers, ..
            } => assert_eq!((leechers, peers.len()), (1, 0), "announce {n}"),
            other => panic!("announce {n}: {other:?}"),
        }
    }
    let v = if addr.is_ipv4() { "4" } else { "6" };
    // Every announce answered and counted (a relaxed counter read may lag by a moment).
    let page = wait_sample(
        t.metrics_address().unwrap(),
        "hayate_responses_total",
        &[
            ("protocol", "udp"),
            ("action", "announce"),
            ("ip_version", v),
        ],
        200.0,
        std::time::Duration::from_secs(10),
    );
    sample(
        &page,
        "hayate_forwarded_total",
        &[("protocol", "udp"), ("kind", "announce")],
    )
    .unwrap_or(0.0)
}

#[test]
fn steered_announces_reach_their_owner_without_a_forward() {
    for backend in BACKENDS {
        if skip_backend(backend) {
            continue;
        }
        let t = start_tracker_on(backend, 2, FAST_METRICS);
        assert_eq!(forwarded_of_200(&t, v4(&t)), 0.0, "{backend}, IPv4");
        assert_eq!(forwarded_of_200(&t, v6(&t)), 0.0, "{backend}, IPv6");
        // Connects are not steered: sockets still reach both workers.
        assert_eq!(client_per_worker(&t, v4(&t)).len(), 2);
    }
}

#[test]
fn without_steering_the_other_workers_announces_are_forwarded() {
    let t = start_tracker_with_udp(2, "steer_announces = false", FAST_METRICS);
    // All from one socket, so all on one worker: the other's 100 are forwarded.
    assert_eq!(forwarded_of_200(&t, v4(&t)), 100.0);
}
