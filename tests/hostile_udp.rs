//! Bad input over real sockets: every truncation of every action, wrong protocol ids, unknown
//! actions, scrapes of no and of too many hashes, port 0, huge and negative numwant, and floods
//! past the torrent and peer limits. After each, another client's well-formed request is
//! answered, and no error reply is ever larger than the request that caused it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use hayate_tracker::stats::ErrorReason;
use hayate_tracker::Tracker;

/// What a request of `len` bytes may be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Nothing,
    Connect,
    Announce,
    Scrape(usize),
    Error,
    /// An error, or nothing at all (a datagram larger than a receive buffer may be dropped).
    ErrorOrNothing,
}

/// A client that sends hostile packets and sorts whatever comes back, plus a well-behaved
/// client on another address that must keep being served.
struct Prober {
    bad: Client,
    good: Client,
    sent: HashMap<u32, (usize, Expect)>,
    answered: HashMap<u32, Reply>,
    sync_txid: u32,
}

impl Prober {
    fn new(t: &Tracker) -> Prober {
        Prober {
            bad: Client::new(v4(t)),
            good: Client::bound(v4(t), "127.0.0.2:0"),
            sent: HashMap::new(),
            answered: HashMap::new(),
            sync_txid: 0x8000_0000,
        }
    }

    /// Sends `packet` (whose transaction id, if it has one, is `txid`), then proves the tracker
    /// still serves: the good client connects, and the bad client's own connect is answered
    /// (collecting any reply to `packet` that came first).
    fn probe(&mut self, packet: &[u8], txid: u32, expect: Expect) {
        self.bad.send(packet);
        if packet.len() >= 16 {
            self.sent.insert(txid, (packet.len(), expect));
        }
        self.good.connect();
        self.sync();
    }

    /// Sends the bad client's own connect and collects every reply until its answer. One
    /// worker handles that client's datagrams in order, so whatever it answers itself to
    /// earlier packets arrives first; only replies from the owner of a forwarded request may
    /// come later.
    fn sync(&mut self) {
        self.sync_txid += 1;
        self.bad.send(&connect_packet(self.sync_txid));
        loop {
            let d = self
                .bad
                .recv_raw()
                .expect("the tracker answers the connect after a bad packet");
            if self.take(&d) == Some(self.sync_txid) {
                break;
            }
        }
    }

    /// Records one reply; returns its transaction id if it answered a sync connect.
    fn take(&mut self, d: &[u8]) -> Option<u32> {
        let reply = decode(d, true);
        let txid = match &reply {
            Reply::Connect { txid, .. }
            | Reply::Announce { txid, .. }
            | Reply::Scrape { txid, .. }
            | Reply::Error { txid, .. } => *txid,
        };
        if txid > 0x8000_0000 && matches!(reply, Reply::Connect { .. }) {
            return Some(txid);
        }
        let &(len, expect) = self
            .sent
            .get(&txid)
            .unwrap_or_else(|| panic!("reply to nothing sent: {reply:?}"));
        if let Reply::Error { .. } = reply {
            assert!(
                d.len() <= len,
                "{}-byte error to a {len}-byte request",
                d.len()
            );
        }
        let ok = match (expect, &reply) {
            (Expect::Connect, Reply::Connect { .. })
            | (Expect::Announce, Reply::Announce { .. })
            | (Expect::Error | Expect::ErrorOrNothing, Reply::Error { .. }) => true,
            (Expect::Scrape(n), Reply::Scrape { entries, .. }) => entries.len() == n,
            _ => false,
        };
        assert!(
            ok,
            "request of {len} bytes expected {expect:?}, got {reply:?}"
        );
        assert!(
            self.answered.insert(txid, reply).is_none(),
            "answered twice"
        );
        None
    }

    /// Waits (boundedly) for every request that must be answered, then syncs once more so a
    /// reply to a request that must not be answered would have arrived, and checks both.
    fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let missing = self.sent.iter().find(|(txid, (_, expect))| {
                !matches!(expect, Expect::Nothing | Expect::ErrorOrNothing)
                    && !self.answered.contains_key(*txid)
            });
            let Some((_, &(len, expect))) = missing else {
                break;
            };
            assert!(
                Instant::now() < deadline,
                "a {len}-byte request expecting {expect:?} got nothing"
            );
            if let Some(d) = self.bad.recv_raw() {
                self.take(&d);
            }
        }
        self.sync();
        for (txid, (len, expect)) in &self.sent {
            if *expect == Expect::Nothing {
                assert!(
                    !self.answered.contains_key(txid),
                    "a {len}-byte packet was answered"
                );
            }
        }
    }
}

fn padded(mut p: Vec<u8>, len: usize, fill: u8) -> Vec<u8> {
    p.resize(len, fill);
    p
}

#[test]
fn every_truncation_of_every_action() {
    let t = start_tracker(2, "");
    let mut p = Prober::new(&t);
    let cid = p.bad.connect();
    let mut txid = 1u32;
    // Whole requests of 120 bytes: a connect with trailing bytes, an announce with BEP 41
    // options, a scrape of five hashes (and a partial sixth).
    let connect = padded(connect_packet(0), 120, 0);
    let announce = padded(
        announce_packet(cid, 0, [7; 20], 6881, 5, EVENT_STARTED, -1),
        120,
        1,
    );
    let scrape = padded(scrape_packet(cid, 0, &[[9; 20]; 5]), 120, 0xcc);
    for len in 0..=120usize {
        for (kind, whole) in [(0, &connect), (1, &announce), (2, &scrape)] {
            txid += 1;
            let mut packet = whole[..len].to_vec();
            if len >= 16 {
                packet[12..16].copy_from_slice(&txid.to_be_bytes());
            }
            let expect = match (kind, len) {
                (_, 0..=15) => Expect::Nothing,
                (0, _) => Expect::Connect,
                (1, 16..=97) => Expect::Error,
                (1, _) => Expect::Announce,
                (_, 16..=35) => Expect::Error,
                (_, _) => Expect::Scrape((len - 16) / 20),
            };
            p.probe(&packet, txid, expect);
        }
    }
    p.finish();
    t.stop().unwrap();
}

#[test]
fn wrong_protocol_id_unknown_actions_and_scrape_bounds() {
    let t = start_tracker(2, "[protocol]\nmax_scrape_hashes = 5\n");
    let mut p = Prober::new(&t);
    let cid = p.bad.connect();
    // A connect without the protocol id, or with one off by a bit: not BEP 15, not answered.
    let wrong_ids = [0u64, 1, 0x41727101981, 0x41727101980 ^ (1 << 63), u64::MAX];
    for (i, wrong) in wrong_ids.into_iter().enumerate() {
        let txid = 100 + i as u32;
        let mut c = connect_packet(txid);
        c[..8].copy_from_slice(&wrong.to_be_bytes());
        p.probe(&c, txid, Expect::Nothing);
    }
    // Unknown actions, including "error" sent to the tracker, are not answered.
    for (i, action) in [3u32, 4, 255, 0x8000_0000, u32::MAX]
        .into_iter()
        .enumerate()
    {
        let txid = 2000 + i as u32;
        let mut c = announce_packet(cid, txid, [1; 20], 1, 0, EVENT_NONE, -1);
        c[8..12].copy_from_slice(&action.to_be_bytes());
        p.probe(&c, txid, Expect::Nothing);
    }
    // Scrapes of no hash, of the most allowed, of one too many and of far too many.
    p.probe(&scrape_packet(cid, 3000, &[]), 3000, Expect::Error);
    p.probe(
        &scrape_packet(cid, 3001, &[[1; 20]; 5]),
        3001,
        Expect::Scrape(5),
    );
    p.probe(
        &scrape_packet(cid, 3002, &[[1; 20]; 6]),
        3002,
        Expect::Error,
    );
    p.probe(
        &scrape_packet(cid, 3003, &[[1; 20]; 74]),
        3003,
        Expect::Error,
    );
    // A jumbo datagram (a scrape of 3000 hashes) is refused or dropped, never read past the
    // receive buffer.
    p.probe(
        &scrape_packet(cid, 3004, &[[1; 20]; 3000]),
        3004,
        Expect::ErrorOrNothing,
    );
    // Bad connection ids.
    p.probe(
        &scrape_packet(cid ^ 1, 3005, &[[1; 20]]),
        3005,
        Expect::Error,
    );
    p.probe(
        &announce_packet(0, 3006, [1; 20], 1, 0, EVENT_NONE, -1),
        3006,
        Expect::Error,
    );
    p.finish();
    t.stop().unwrap();
}

#[test]
fn port_zero_and_numwant_extremes() {
    let t = start_tracker(2, "[protocol]\ndefault_numwant = 3\nmax_numwant = 7\n");
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let hash = hash_for_shard(1, 2, 4);
    for port in 1..=20 {
        c.announce(cid, hash, port, 1, EVENT_STARTED, -1);
    }
    let peers = |r: Reply| match r {
        Reply::Announce { peers, .. } => peers.len(),
        other => panic!("{other:?}"),
    };
    let mut other = Client::bound(v4(&t), "127.0.0.3:0");
    let ocid = other.connect();
    for (num_want, expected) in [
        (i32::MAX, 7),
        (1_000_000, 7),
        (8, 7),
        (7, 7),
        (2, 2),
        (0, 3),
        (-1, 3),
        (-2, 3),
        (i32::MIN, 3),
    ] {
        let got = peers(other.announce(ocid, hash, 999, 1, EVENT_NONE, num_want));
        assert_eq!(got, expected, "numwant {num_want}");
    }
    let mut p = Prober::new(&t);
    let cid = p.bad.connect();
    for (i, event) in [EVENT_NONE, EVENT_STARTED, EVENT_STOPPED]
        .into_iter()
        .enumerate()
    {
        let txid = 50 + i as u32;
        let packet = announce_packet(cid, txid, hash, 0, 1, event, -1);
        p.probe(&packet, txid, Expect::Error);
    }
    p.finish();
    // Port 0 never made it into the swarm.
    match other.announce(ocid, hash, 999, 1, EVENT_NONE, 100) {
        Reply::Announce {
            peers, leechers, ..
        } => {
            assert_eq!(leechers, 21, "20 peers and the asker; no port 0");
            assert!(peers.iter().all(|p| p.port() != 0));
        }
        r => panic!("{r:?}"),
    }
    t.stop().unwrap();
}

fn errors(t: &Tracker, reason: ErrorReason) -> u64 {
    t.sources()
        .workers
        .iter()
        .map(|w| w.udp.snapshot().errors(reason))
        .sum()
}

/// Announces 300 new torrents spread over every shard from `c`; returns those stored, checking
/// each refusal says "tracker is full".
fn flood_of_torrents(c: &mut Client, cid: u64) -> Vec<[u8; 20]> {
    let mut stored = Vec::new();
    for n in 0..300u32 {
        let mut hash = [0u8; 20];
        // The first 4 bytes pick the shard: spread them.
        hash[..4].copy_from_slice(&n.wrapping_mul(0x9e37_79b9).to_be_bytes());
        hash[4..8].copy_from_slice(&n.to_le_bytes());
        match c.announce(cid, hash, 1000, 1, EVENT_STARTED, -1) {
            Reply::Announce { .. } => stored.push(hash),
            Reply::Error { message, .. } => assert_eq!(message, "tracker is full"),
            r => panic!("{r:?}"),
        }
    }
    stored
}

fn on_shard(hashes: &[[u8; 20]], shard: usize, shards: usize) -> Vec<[u8; 20]> {
    hashes
        .iter()
        .copied()
        .filter(|h| hayate_tracker::mesh::shard_of(h, shards) == shard)
        .collect()
}

#[test]
fn a_flood_of_fake_torrents_stops_at_the_limit() {
    // Two workers share 10 torrents: 5 each.
    let t = start_tracker(
        2,
        "[limits]\nmax_torrents = 10\nmax_peers_per_torrent = 1000\n",
    );
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let stored = flood_of_torrents(&mut c, cid);
    assert_eq!(stored.len(), 10, "the whole tracker holds max_torrents");
    assert_eq!(on_shard(&stored, 0, 2).len(), 5);
    assert_eq!(errors(&t, ErrorReason::TrackerFull), 290);

    // A torrent already held is still served: a new peer joins it, and gets the first.
    let held = on_shard(&stored, 0, 2)[0];
    let mut d = Client::bound(v4(&t), "127.0.0.4:0");
    let dcid = d.connect();
    match d.announce(dcid, held, 1, 1, EVENT_STARTED, -1) {
        Reply::Announce {
            leechers,
            seeders,
            peers,
            ..
        } => {
            assert_eq!((leechers, seeders), (2, 0));
            assert_eq!(peers, ["127.0.0.1:1000".parse().unwrap()]);
        }
        r => panic!("held torrent refused: {r:?}"),
    }
    // A new torrent of the same worker is refused while it is full.
    let fresh = hash_for_shard(0, 2, 0xab);
    let fresh2 = hash_for_shard(0, 2, 0xac);
    match d.announce(dcid, fresh, 1, 1, EVENT_STARTED, -1) {
        Reply::Error { message, .. } => assert_eq!(message, "tracker is full"),
        r => panic!("{r:?}"),
    }
    // Its two peers stop, which drops the torrent and makes room for exactly one new one.
    match d.announce(dcid, held, 1, 1, EVENT_STOPPED, -1) {
        Reply::Announce {
            leechers, seeders, ..
        } => assert_eq!((leechers, seeders), (1, 0)),
        r => panic!("{r:?}"),
    }
    match c.announce(cid, held, 1000, 1, EVENT_STOPPED, -1) {
        Reply::Announce {
            leechers, seeders, ..
        } => assert_eq!((leechers, seeders), (0, 0)),
        r => panic!("{r:?}"),
    }
    match d.announce(dcid, fresh, 1, 1, EVENT_STARTED, -1) {
        Reply::Announce {
            leechers,
            seeders,
            peers,
            ..
        } => {
            assert_eq!((leechers, seeders), (1, 0));
            assert!(peers.is_empty(), "{peers:?}");
        }
        r => panic!("the stop made no room: {r:?}"),
    }
    match d.announce(dcid, fresh2, 1, 1, EVENT_STARTED, -1) {
        Reply::Error { message, .. } => assert_eq!(message, "tracker is full"),
        r => panic!("{r:?}"),
    }
    assert_eq!(errors(&t, ErrorReason::TrackerFull), 292);
    // Scrapes keep working, whatever the table holds.
    let other = *stored.iter().find(|h| **h != held).unwrap();
    match d.scrape(dcid, &[held, fresh, other]) {
        Reply::Scrape { entries, .. } => {
            assert_eq!(entries, [(0, 0, 0), (0, 0, 1), (0, 0, 1)]);
        }
        r => panic!("{r:?}"),
    }
    t.stop().unwrap();
}

#[test]
fn an_odd_limit_over_two_workers_is_never_exceeded() {
    // 7 over two workers: 4 and 3. Rounding each worker's part up would let 8 in.
    let t = start_tracker(
        2,
        "[limits]\nmax_torrents = 7\nmax_peers_per_torrent = 1000\n",
    );
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let stored = flood_of_torrents(&mut c, cid);
    assert_eq!(stored.len(), 7, "the whole tracker holds max_torrents");
    assert_eq!(on_shard(&stored, 0, 2).len(), 4);
    assert_eq!(on_shard(&stored, 1, 2).len(), 3);
    assert_eq!(errors(&t, ErrorReason::TrackerFull), 293);
    t.stop().unwrap();
}

#[test]
fn a_flood_of_fake_peers_stops_at_the_limit() {
    let t = start_tracker(2, "[limits]\nmax_peers_per_torrent = 25\n");
    let hash = hash_for_shard(1, 2, 8);
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    for port in 1..=25 {
        assert!(matches!(
            c.announce(cid, hash, port, 1, EVENT_STARTED, -1),
            Reply::Announce { .. }
        ));
    }
    for port in 26..=60 {
        match c.announce(cid, hash, port, 1, EVENT_STARTED, -1) {
            Reply::Error { message, .. } => assert_eq!(message, "torrent is full"),
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(errors(&t, ErrorReason::TorrentFull), 35);
    // Peers already in the torrent still re-announce and complete; a stop frees a place.
    match c.announce(cid, hash, 5, 0, EVENT_COMPLETED, -1) {
        Reply::Announce {
            seeders, leechers, ..
        } => assert_eq!((seeders, leechers), (1, 24)),
        r => panic!("{r:?}"),
    }
    c.announce(cid, hash, 6, 1, EVENT_STOPPED, -1);
    assert!(matches!(
        c.announce(cid, hash, 61, 1, EVENT_STARTED, -1),
        Reply::Announce { .. }
    ));
    // Other torrents are untouched by one full swarm; IPv6 counts towards the same limit.
    let mut v6c = Client::new(v6(&t));
    let cid6 = v6c.connect();
    match v6c.announce(cid6, hash, 7000, 1, EVENT_STARTED, -1) {
        Reply::Error { message, .. } => assert_eq!(message, "torrent is full"),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        v6c.announce(cid6, [0x55; 20], 7000, 1, EVENT_STARTED, -1),
        Reply::Announce { .. }
    ));
    t.stop().unwrap();
}

#[test]
fn forged_replayed_and_expired_connection_ids_are_refused_without_amplification() {
    use hayate_tracker::connection_id::ConnectionIds;
    use hayate_tracker::mesh::inbox;
    use hayate_tracker::worker::handler::Handler;
    use hayate_tracker::Config;

    let config = Config::from_toml_str("[workers]\ncount = 1\n", "test").unwrap();
    let lifetime = config.protocol.connection_id_lifetime_secs;
    let ids = ConnectionIds::with_key([7; 16], lifetime);
    let (mailbox, _inbox) = inbox::inbox(16).unwrap();
    let mut h = Handler::new(0, &config, ids.clone(), vec![mailbox], Default::default());
    let client: std::net::SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let other: std::net::SocketAddr = "192.0.2.2:4000".parse().unwrap();
    let mut out = vec![0u8; Handler::max_reply_len(&config)];
    let now = 10_000;
    let mut send = |h: &mut Handler, at: u32, from, cid: u64| {
        let announce = announce_packet(cid, 5, [3; 20], 6881, 1, EVENT_STARTED, -1);
        let n = h.handle_datagram(at, from, 0, &announce, &mut out);
        let reply = decode(&out[..n], true);
        let scrape = scrape_packet(cid, 6, &[[3; 20]]);
        let m = h.handle_datagram(at, from, 0, &scrape, &mut out);
        assert!(
            n <= announce.len() && m <= scrape.len(),
            "replies never amplify"
        );
        (reply, decode(&out[..m], true))
    };
    let refused =
        |r: &Reply| matches!(r, Reply::Error { message, .. } if message.contains("connection id"));
    let good = ids.make(client.ip(), now);
    let (a, s) = send(&mut h, now, client, good);
    assert!(matches!(a, Reply::Announce { .. }) && matches!(s, Reply::Scrape { .. }));
    // Still good at the end of its lifetime; expired one second later.
    let (a, _) = send(&mut h, now + lifetime, client, good);
    assert!(matches!(a, Reply::Announce { .. }), "{a:?}");
    let (a, s) = send(&mut h, now + lifetime + 1, client, good);
    assert!(refused(&a) && refused(&s), "expired: {a:?} {s:?}");
    // Replayed from another address.
    let (a, s) = send(&mut h, now, other, good);
    assert!(refused(&a) && refused(&s), "replayed: {a:?} {s:?}");
    // Random ids, and ids from the future.
    let mut rng = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (a, s) = send(&mut h, now, client, rng);
        assert!(refused(&a) && refused(&s), "random id {rng:#x} accepted");
    }
    let future = ids.make(client.ip(), now + 60);
    let (a, s) = send(&mut h, now, client, future);
    assert!(refused(&a) && refused(&s), "future: {a:?} {s:?}");
}

#[test]
fn limits_refuse_http_announces_too() {
    let t = start_tracker_http(
        2,
        "",
        "[limits]\nmax_torrents = 2\nmax_peers_per_torrent = 2\n",
    );
    let announce = |hash: u8, port: u16| {
        let hash: String = std::iter::repeat_n(format!("%{hash:02x}"), 20).collect();
        let path =
            format!("/announce?info_hash={hash}&peer_id=ABCDEFGHIJKLMNOPQRST&port={port}&left=1");
        http_get(http_v4(&t), &path, None).2
    };
    assert!(announce(1, 1).contains("8:completei0e"));
    assert!(announce(1, 2).contains("8:completei0e"));
    assert_eq!(announce(1, 3), "d14:failure reason15:torrent is fulle");
    // Each of the two workers holds one torrent, and torrent 1 filled its owner: every other
    // torrent of that owner is refused.
    let owner = |h: u8| hayate_tracker::mesh::shard_of(&[h; 20], 2);
    let same: Vec<u8> = (2..40u8).filter(|&h| owner(h) == owner(1)).collect();
    assert!(same.len() >= 10);
    let refused = same
        .iter()
        .map(|&h| announce(h, 1))
        .filter(|body| body == "d14:failure reason15:tracker is fulle")
        .count();
    assert_eq!(refused, same.len());
    t.stop().unwrap();
}
