//! The UDP hot path allocates nothing per packet. A counting global allocator watches the whole
//! process while a real tracker (two workers, each I/O loop in turn, inbox forwarding between them)
//! answers steady-state traffic: connects, re-announces, scrapes within and across shards, and
//! refused requests. New torrents and new peers may allocate (the table grows); packets about
//! ones already known must not. HTTP and the metrics endpoint are off, so only the workers run.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[path = "support/jwt_tokens.rs"]
mod jwt_tokens;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

/// The counter sees the whole process: tests that measure take turns.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends every packet once and reads every reply into a stack buffer; allocates nothing.
fn exchange(socket: &UdpSocket, packets: &[Vec<u8>], expect_replies: usize) -> usize {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    for chunk in packets.chunks(64) {
        for p in chunk {
            socket.send(p).unwrap();
        }
        for _ in 0..chunk.len().min(expect_replies - got) {
            if socket.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
    }
    got
}

#[test]
fn steady_state_udp_traffic_allocates_nothing() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // One after the other: the counter sees the whole process, so they must not overlap.
    for backend in BACKENDS {
        if backend == "io_uring" && skip_backend("io_uring") {
            continue;
        }
        steady_state_allocates_nothing_on(backend);
    }
}

fn steady_state_allocates_nothing_on(backend: &str) {
    // Unsteered, so forwarding between the workers is part of the steady state measured.
    let t = start_tracker_with_udp(
        2,
        &format!("backend = \"{backend}\"\nsteer_announces = false"),
        "[metrics]\naddress = \"\"\n",
    );
    assert_eq!(t.backend(), backend);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(v4(&t)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut c = Client::new(v4(&t));
    c.socket = socket.try_clone().unwrap();
    let cid = c.connect();

    // 200 torrents over both shards, 5 peers each; then the same announces again and again.
    let hashes: Vec<[u8; 20]> = (0..200u8)
        .map(|i| hash_for_shard(i as usize % 2, 2, i))
        .collect();
    let mut packets = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        for p in 0..5u16 {
            let left = if p == 0 { 0 } else { 100 };
            packets.push(announce_packet(
                cid,
                i as u32,
                *h,
                1000 + p,
                left,
                EVENT_NONE,
                30,
            ));
        }
    }
    for chunk in hashes.chunks(10) {
        packets.push(scrape_packet(cid, 7, chunk)); // spans both shards: a scrape chain
    }
    packets.push(scrape_packet(cid, 8, &[hashes[0], hashes[2]])); // one shard only
    for i in 0..50 {
        packets.push(connect_packet(i));
    }
    packets.push(announce_packet(cid ^ 1, 9, hashes[0], 1, 1, EVENT_NONE, 1)); // forged id
    let n = packets.len();

    // Warm up: the table grows, every slot and buffer is touched once. That this allocates in
    // the workers shows the counter sees their threads.
    let start = counting_alloc::allocations();
    assert_eq!(exchange(&socket, &packets, n), n);
    assert!(
        counting_alloc::allocations() - start >= 200,
        "new torrents allocate"
    );
    for _ in 0..2 {
        assert_eq!(exchange(&socket, &packets, n), n);
    }
    let before = counting_alloc::allocations();
    for _ in 0..20 {
        assert_eq!(exchange(&socket, &packets, n), n, "every request answered");
    }
    let after = counting_alloc::allocations();
    println!(
        "{backend}: {} requests, {} allocations",
        20 * n,
        after - before
    );
    assert_eq!(
        after - before,
        0,
        "{backend}: allocations during {} steady-state requests",
        20 * n
    );
    drop(c);
    t.stop().unwrap();
}

/// `packet` with BEP 41 URL data `url` appended, split into options of at most 255 bytes.
fn with_url(mut packet: Vec<u8>, url: &str) -> Vec<u8> {
    for part in url.as_bytes().chunks(255) {
        packet.push(2);
        packet.push(part.len() as u8);
        packet.extend_from_slice(part);
    }
    packet
}

#[test]
fn the_pipeline_hooks_allocate_nothing_per_packet() {
    // Every hook on: client approval, JWT approval (re-announces answered from the token
    // cache), interval jitter, dual stack; UDP announces carry their token in BEP 41 URL data.
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    if skip_backend("io_uring") {
        return;
    }
    let jwks = jwt_tokens::data_dir().join("jwks.json");
    let t = start_tracker_on(
        "io_uring",
        2,
        &format!(
            "[metrics]\naddress = \"\"\n\
             [client_list]\nmode = \"deny\"\nprefixes = [\"-XX\"]\n\
             [jwt]\nmode = \"required\"\njwks_path = {jwks:?}\nissuer = {:?}\naudience = {:?}\n\
             [protocol]\ninterval_jitter_secs = 300\n",
            jwt_tokens::ISSUER,
            jwt_tokens::AUDIENCE
        ),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(v4(&t)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut c = Client::new(v4(&t));
    c.socket = socket.try_clone().unwrap();
    let cid = c.connect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hashes: Vec<[u8; 20]> = (0..100u8)
        .map(|i| hash_for_shard(i as usize % 2, 2, i))
        .collect();
    let mut packets = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        let claims = serde_json::json!({
            "iss": jwt_tokens::ISSUER,
            "aud": jwt_tokens::AUDIENCE,
            "exp": now + 3600,
            "infohash": jwt_tokens::hex(h),
        });
        // Ed25519 keeps the many tokens cheap to sign; the check is the same for every key.
        let token = jwt_tokens::sign(jsonwebtoken::Algorithm::EdDSA, "ed-1", &claims);
        for p in 0..3u16 {
            let packet = announce_packet(cid, i as u32, *h, 1000 + p, 100, EVENT_NONE, 30);
            packets.push(with_url(packet, &format!("/announce?jwt={token}")));
        }
    }
    // Refused by each hook: no token, a denied client.
    packets.push(announce_packet(cid, 1, hashes[0], 9, 1, EVENT_NONE, 1));
    let mut denied = packets[0].clone();
    denied[36..39].copy_from_slice(b"-XX");
    packets.push(denied);
    let n = packets.len();
    // Warm up: new torrents, new peers and first sight of every token allocate.
    for _ in 0..3 {
        assert_eq!(exchange(&socket, &packets, n), n);
    }
    let before = counting_alloc::allocations();
    for _ in 0..20 {
        assert_eq!(exchange(&socket, &packets, n), n, "every request answered");
    }
    let after = counting_alloc::allocations();
    println!("hooks: {} requests, {} allocations", 20 * n, after - before);
    assert_eq!(
        after - before,
        0,
        "allocations during {} requests through every hook",
        20 * n
    );
    drop(c);
    t.stop().unwrap();
}
