//! A whole worker's request handling (parse → swarm → reply) for two workers that forward to
//! each other, driven by arbitrary sequences of datagrams from a handful of IPv4, IPv6 and
//! IPv4-mapped sources, valid and invalid connection ids, HTTP announces, clock steps and
//! sweeps. Crowds (many ports of one source announcing at once, or stopping at once) grow a
//! torrent past the 32 peers where its peer set is indexed and shrink it below the 16 where the
//! index is dropped. Small limits make "tracker is full" and "torrent is full" reachable. After
//! every step the shards' invariants hold and every reply is checked:
//! - never longer than the send buffer; an error reply never longer than its request;
//! - an announce reply holds whole peers of the announcer's family only (6 bytes for IPv4,
//!   18 for IPv6, never an IPv4-mapped address), never the announcer, never more than it
//!   asked for, and only peers that announced to that torrent;
//! - a scrape reply holds one entry per hash asked; a connect reply is 16 bytes;
//! - a request with a valid connection id never gets a connection-id error, and one with an
//!   id made for another address always does; an id made up to 1 s in the future (the clock
//!   skew between workers) is accepted and 2 s is refused; one exactly the lifetime old is
//!   accepted and one a second older refused.
//!
//! The body of the `handler` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/handler.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use hayate_tracker::config::Config;
use hayate_tracker::connection_id::ConnectionIds;
use hayate_tracker::mesh::{inbox, HttpWork, Inbox};
use hayate_tracker::protocol::udp;
use hayate_tracker::protocol::{Announce, AnnounceEvent, InfoHash};
use hayate_tracker::worker::handler::Handler;

const KEY: [u8; 16] = *b"hayate-fuzz-key!";
const LIFETIME: u32 = 120;
const WORKERS: usize = 2;

const SOURCES: [&str; 8] = [
    "10.0.0.1:1000",
    "10.0.0.2:2000",
    "10.0.0.1:3000",
    "[2001:db8::1]:1000",
    "[2001:db8::2]:4000",
    "[::ffff:10.0.0.3]:5000",
    "[::ffff:10.0.0.1]:6000",
    "[::1]:6969",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml_str(
            "[workers]\ncount = 2\n\
             [protocol]\nannounce_interval_secs = 60\nmin_interval_secs = 30\n\
             default_numwant = 3\nmax_numwant = 40\nmax_scrape_hashes = 6\n\
             [cleaning]\npeer_lifetime_secs = 90\n\
             [limits]\nmax_torrents = 6\nmax_peers_per_torrent = 48\n",
            "fuzz",
        )
        .expect("fuzz config is valid")
    })
}

/// The connection id a request carries.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Id {
    Valid,
    /// Made `age` seconds ago (expired past the lifetime).
    Aged(u16),
    /// Made `ahead` seconds in the future.
    Future(u8),
    /// Made for another source's address.
    OtherSource(u8),
    Raw(u64),
}

/// One step of the world: a datagram, an HTTP announce, a clock step, a sweep or a delivery of
/// what the workers forwarded to each other.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    Raw {
        worker: bool,
        from: u8,
        bytes: Vec<u8>,
    },
    Connect {
        worker: bool,
        from: u8,
        txid: u32,
        trailing: u8,
    },
    Announce(AnnounceOp),
    Scrape {
        worker: bool,
        from: u8,
        id: Id,
        txid: u32,
        hashes: Vec<u8>,
        partial: u8,
    },
    Http {
        from: u8,
        hash: u8,
        port: u16,
        left: u8,
        event: u8,
        num_want: i32,
    },
    Tick(u16),
    Sweep,
    Deliver,
    /// `count % 64` announces with valid ids from one source, on ports `first_port..`, to the
    /// torrent's owner: enough to cross the peer-set index sizes in one step.
    Crowd {
        from: u8,
        hash: u8,
        first_port: u16,
        count: u8,
        left: u8,
        event: u8,
        num_want: i32,
    },
}

/// A BEP 15 announce as the fuzzer shapes it: connection id, fields, BEP 41 option bytes and
/// an optional cut.
#[derive(Arbitrary, Debug, Clone)]
pub struct AnnounceOp {
    pub worker: bool,
    pub from: u8,
    pub id: Id,
    pub txid: u32,
    pub hash: u8,
    pub port: u16,
    pub left: u8,
    pub event: u8,
    pub num_want: i32,
    pub options: Vec<u8>,
    pub cut: Option<u8>,
}

/// How far a run reached, so a test can check the seeds exercise what the target claims.
#[allow(dead_code)] // read by tests/fuzz_seeds.rs; the fuzz binary only runs the checks
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The most peers one torrent held after any step.
    pub largest_torrent: usize,
    /// Whether a torrent grew past 32 peers, fell below 16 and grew past 32 again: its peer
    /// set was indexed, the index dropped and built again.
    pub regrown: bool,
    /// Announces whose connection id was made 1 s ahead (accepted) and 2 s ahead (refused).
    pub skew_accepted: usize,
    pub skew_refused: usize,
}

fn source(from: u8) -> SocketAddr {
    SOURCES[from as usize % SOURCES.len()].parse().unwrap()
}

/// Eight torrents, spread over both shards.
fn hash(h: u8) -> InfoHash {
    [(h % 8).wrapping_mul(37); 20]
}

fn event(e: u8) -> (u32, AnnounceEvent) {
    match e % 5 {
        0 => (0, AnnounceEvent::None),
        1 => (1, AnnounceEvent::Completed),
        2 => (2, AnnounceEvent::Started),
        3 => (3, AnnounceEvent::Stopped),
        _ => (u32::from(e) + 4, AnnounceEvent::None), // invalid on the wire
    }
}

struct World {
    handlers: Vec<Handler>,
    inboxes: Vec<Inbox>,
    ids: ConnectionIds,
    now: u32,
    out: Vec<u8>,
    /// (torrent, canonical ip, port) of every announce that may have stored a peer.
    announced: HashSet<(InfoHash, IpAddr, u16)>,
    reach: Reach,
    /// Per torrent: 0, then 1 once past 32 peers, 2 once below 16 after that, 3 past 32 again.
    phases: [u8; 8],
}

fn numwant(asked: i32) -> usize {
    let p = &config().protocol;
    if asked <= 0 {
        p.default_numwant as usize
    } else {
        (asked as usize).min(p.max_numwant as usize)
    }
}

impl World {
    fn new() -> World {
        let c = config();
        let ids = ConnectionIds::with_key(KEY, LIFETIME);
        let (mailboxes, inboxes): (Vec<_>, Vec<_>) = (0..WORKERS)
            .map(|_| inbox::inbox(16).expect("eventfd"))
            .unzip();
        let handlers = (0..WORKERS)
            .map(|i| Handler::new(i, c, ids.clone(), mailboxes.clone(), Default::default()))
            .collect();
        World {
            handlers,
            inboxes,
            ids,
            now: 10_000,
            out: vec![0; Handler::max_reply_len(c)],
            announced: HashSet::new(),
            reach: Reach::default(),
            phases: [0; 8],
        }
    }

    fn id(&self, id: Id, ip: IpAddr) -> u64 {
        match id {
            Id::Valid => self.ids.make(ip, self.now),
            Id::Aged(age) => self.ids.make(ip, self.now.saturating_sub(age.into())),
            Id::Future(ahead) => self.ids.make(ip, self.now + u32::from(ahead)),
            Id::OtherSource(s) => self.ids.make(source(s).ip(), self.now),
            Id::Raw(raw) => raw,
        }
    }

    /// Whether the handler must accept `id` from `ip` now: None when it may go either way.
    fn id_valid(&self, id: Id, ip: IpAddr) -> Option<bool> {
        match id {
            Id::Valid => Some(true),
            Id::Aged(age) => Some(u32::from(age) <= LIFETIME),
            Id::Future(ahead) => Some(ahead <= 1),
            Id::OtherSource(s) => {
                let other = source(s).ip().to_canonical();
                (other != ip.to_canonical()).then_some(false)
            }
            Id::Raw(_) => None,
        }
    }

    fn datagram(&mut self, worker: bool, client: SocketAddr, packet: &[u8]) -> usize {
        let now = self.now;
        let h = &mut self.handlers[worker as usize];
        let n = h.handle_datagram(now, client, 0, packet, &mut self.out);
        assert!(n <= self.out.len(), "reply longer than the send buffer");
        if n > 0 && action(&self.out) == udp::ACTION_ERROR {
            assert!(
                n <= packet.len(),
                "error reply {n} bytes to a {} byte request",
                packet.len()
            );
        }
        n
    }

    /// Checks an announce reply of `n` bytes to `client` announcing `a`.
    fn check_announce(&self, n: usize, client: SocketAddr, a: &Announce) {
        let d = &self.out[..n];
        match action(d) {
            udp::ACTION_ERROR => {
                assert!(n <= udp::ANNOUNCE_LEN);
                return;
            }
            udp::ACTION_ANNOUNCE => {}
            other => panic!("action {other} in reply to an announce"),
        }
        let ip = client.ip().to_canonical();
        let size = if ip.is_ipv4() { 6 } else { 18 };
        assert!(n >= udp::ANNOUNCE_REPLY_HEADER_LEN);
        let body = &d[udp::ANNOUNCE_REPLY_HEADER_LEN..];
        assert_eq!(body.len() % size, 0, "peers of the announcer's family only");
        let peers: Vec<(IpAddr, u16)> = body
            .chunks(size)
            .map(|c| {
                let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                let ip = match size {
                    6 => IpAddr::from(<[u8; 4]>::try_from(&c[..4]).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(&c[..16]).unwrap()),
                };
                (ip, port)
            })
            .collect();
        assert!(
            peers.len() <= numwant(a.num_want),
            "more peers than asked for"
        );
        let (seeders, leechers) = (be32(d, 16), be32(d, 12));
        assert!(peers.len() as u64 <= u64::from(seeders) + u64::from(leechers));
        if a.event == AnnounceEvent::Stopped {
            assert!(peers.is_empty(), "a stopping peer is handed peers");
        }
        let mut seen = HashSet::new();
        for &(pip, port) in &peers {
            assert_ne!((pip, port), (ip, a.port), "announcer handed itself");
            assert_eq!(pip.to_canonical(), pip, "IPv4-mapped peer in an IPv6 reply");
            assert!(seen.insert((pip, port)), "a peer handed twice");
            assert!(
                self.announced.contains(&(a.info_hash, pip, port)),
                "peer {pip}:{port} never announced to this torrent"
            );
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        for w in 0..WORKERS {
            while let Ok(m) = self.inboxes[w].announces.try_recv() {
                let r = self.handlers[w].forwarded_announce(now, &m, &mut self.out);
                assert!(r.len <= self.out.len());
                assert_eq!(r.client, m.client);
                self.check_announce(r.len, m.client, &m.announce);
            }
            while let Ok(chain) = self.inboxes[w].scrapes.try_recv() {
                let asked = chain.len as usize;
                let client = chain.client;
                if let Some(r) = self.handlers[w].scrape_leg(chain, &mut self.out) {
                    assert_eq!(r.client, client);
                    assert_eq!(r.len, 8 + 12 * asked, "one scrape entry per hash");
                    assert_eq!(action(&self.out), udp::ACTION_SCRAPE);
                }
            }
        }
    }

    /// Sends one announce datagram and checks its reply.
    fn announce(&mut self, op: AnnounceOp) {
        let AnnounceOp {
            worker,
            from,
            id,
            txid,
            hash: h,
            port,
            left,
            event: e,
            num_want,
            options,
            cut,
        } = op;
        let client = source(from);
        let (code, event) = event(e);
        let a = Announce {
            info_hash: hash(h),
            peer_id: [left; 20],
            port,
            left: u64::from(left % 3),
            event,
            num_want,
        };
        let cid = self.id(id, client.ip());
        let mut p = cid.to_be_bytes().to_vec();
        p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&txid.to_be_bytes());
        p.extend_from_slice(&a.info_hash);
        p.extend_from_slice(&a.peer_id);
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&a.left.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&num_want.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&options[..options.len().min(64)]);
        if let Some(cut) = cut {
            p.truncate(usize::from(cut) % (udp::ANNOUNCE_LEN + 1));
        }
        let well_formed = p.len() >= udp::ANNOUNCE_LEN && code < 4 && port != 0;
        if well_formed && event != AnnounceEvent::Stopped {
            self.announced
                .insert((a.info_hash, client.ip().to_canonical(), port));
        }
        let n = self.datagram(worker, client, &p);
        if p.len() < udp::HEADER_LEN {
            assert_eq!(n, 0, "a runt is not answered");
            return;
        }
        if n > 0 {
            assert_eq!(be32(&self.out, 4), txid, "transaction id echoed");
        }
        if !well_formed {
            assert!(n == 0 || action(&self.out) == udp::ACTION_ERROR);
            return;
        }
        let id_error = n > 0
            && action(&self.out) == udp::ACTION_ERROR
            && self.out[8..n].windows(13).any(|w| w == b"connection id");
        match self.id_valid(id, client.ip()) {
            Some(true) => assert!(!id_error, "valid connection id refused"),
            Some(false) => assert!(n > 0 && id_error, "bad connection id accepted"),
            None => {}
        }
        match id {
            Id::Future(1) if !id_error => self.reach.skew_accepted += 1,
            Id::Future(2) if id_error => self.reach.skew_refused += 1,
            _ => {}
        }
        if n > 0 && !id_error {
            self.check_announce(n, client, &a);
        }
    }

    /// Notes how big each torrent is after a step: the largest, and whether one was indexed,
    /// dropped its index and was indexed again.
    fn note_sizes(&mut self) {
        for t in 0..8u8 {
            let owner = hayate_tracker::mesh::shard_of(&hash(t), WORKERS);
            let c = self.handlers[owner].shard.counts(&hash(t));
            let peers = (c.seeders + c.leechers) as usize;
            self.reach.largest_torrent = self.reach.largest_torrent.max(peers);
            let phase = &mut self.phases[usize::from(t)];
            *phase = match (*phase, peers) {
                (0, p) if p > 32 => 1,
                (1, p) if p < 16 => 2,
                (2, p) if p > 32 => 3,
                (phase, _) => phase,
            };
            self.reach.regrown |= *phase == 3;
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Raw {
                worker,
                from,
                bytes,
            } => {
                self.datagram(worker, source(from), &bytes);
            }
            Op::Connect {
                worker,
                from,
                txid,
                trailing,
            } => {
                let mut p = udp::PROTOCOL_ID.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                p.extend_from_slice(&txid.to_be_bytes());
                p.resize(p.len() + usize::from(trailing % 8), 0);
                let client = source(from);
                let n = self.datagram(worker, client, &p);
                assert_eq!(n, 16, "a connect is answered");
                assert_eq!((action(&self.out), be32(&self.out, 4)), (0, txid));
                let id = u64::from_be_bytes(self.out[8..16].try_into().unwrap());
                assert!(self.ids.check(id, client.ip(), self.now).is_ok());
            }
            Op::Announce(a) => self.announce(a),
            Op::Scrape {
                worker,
                from,
                id,
                txid,
                hashes,
                partial,
            } => {
                let client = source(from);
                let mut p = self.id(id, client.ip()).to_be_bytes().to_vec();
                p.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
                p.extend_from_slice(&txid.to_be_bytes());
                let hashes = &hashes[..hashes.len().min(10)];
                for &h in hashes {
                    p.extend_from_slice(&hash(h));
                }
                p.resize(p.len() + usize::from(partial % 20), 0xaa);
                let n = self.datagram(worker, client, &p);
                if n == 0 {
                    return; // forwarded along a chain, answered on delivery
                }
                assert_eq!(be32(&self.out, 4), txid);
                let max = config().protocol.max_scrape_hashes as usize;
                match action(&self.out) {
                    udp::ACTION_SCRAPE => {
                        assert!((1..=max).contains(&hashes.len()));
                        assert_eq!(n, 8 + 12 * hashes.len(), "one entry per hash");
                    }
                    udp::ACTION_ERROR => {}
                    other => panic!("action {other} in reply to a scrape"),
                }
                if self.id_valid(id, client.ip()) == Some(true) && (1..=max).contains(&hashes.len())
                {
                    assert_eq!(action(&self.out), udp::ACTION_SCRAPE, "good scrape refused");
                }
            }
            Op::Http {
                from,
                hash: h,
                port,
                left,
                event: e,
                num_want,
            } => {
                let client = source(from);
                let ip = client.ip();
                let a = Announce {
                    info_hash: hash(h),
                    peer_id: [left; 20],
                    port: port.max(1),
                    left: u64::from(left % 3),
                    event: event(e).1,
                    num_want,
                };
                if a.event != AnnounceEvent::Stopped {
                    self.announced
                        .insert((a.info_hash, ip.to_canonical(), a.port));
                }
                let owner = hayate_tracker::mesh::shard_of(&a.info_hash, WORKERS);
                let (reply, mut answer) = tokio::sync::oneshot::channel();
                let work = HttpWork::Announce {
                    announce: a,
                    ip,
                    other: None,
                    query: Vec::new(),
                    reply,
                };
                self.handlers[owner].http_work(self.now, work);
                let Ok(r) = answer.try_recv().expect("the owner answers at once") else {
                    return; // refused: a limit
                };
                assert!(r.peers.len() <= numwant(num_want));
                // Dual stack (the default): peers of both families, each at most once.
                let distinct: HashSet<_> = r.peers.iter().map(|p| (p.ip, p.port)).collect();
                assert_eq!(distinct.len(), r.peers.len(), "a peer handed out twice");
                for p in &r.peers {
                    assert_eq!(p.ip.to_canonical(), p.ip);
                    assert_ne!((p.ip, p.port), (ip.to_canonical(), a.port), "itself");
                    assert!(self.announced.contains(&(a.info_hash, p.ip, p.port)));
                }
            }
            Op::Tick(secs) => self.now = self.now.saturating_add(u32::from(secs % 400)),
            Op::Sweep => {
                for h in &mut self.handlers {
                    h.shard.sweep(self.now);
                }
            }
            Op::Deliver => self.deliver(),
            Op::Crowd {
                from,
                hash: h,
                first_port,
                count,
                left,
                event,
                num_want,
            } => {
                let owner = hayate_tracker::mesh::shard_of(&hash(h), WORKERS);
                for i in 0..count % 64 {
                    self.announce(AnnounceOp {
                        worker: owner == 1,
                        from,
                        id: Id::Valid,
                        txid: u32::from(i),
                        hash: h,
                        port: first_port.wrapping_add(u16::from(i)),
                        left,
                        event,
                        num_want,
                        options: Vec::new(),
                        cut: None,
                    });
                }
            }
        }
        self.note_sizes();
        for h in &self.handlers {
            h.shard.check_invariants();
            let limits = &config().limits;
            let share = (limits.max_torrents as usize).div_ceil(WORKERS);
            assert!(h.shard.totals().torrents <= share, "max_torrents broken");
            for t in 0..8 {
                let c = h.shard.counts(&hash(t));
                let peers = u64::from(c.seeders) + u64::from(c.leechers);
                assert!(
                    peers <= u64::from(limits.max_peers_per_torrent),
                    "torrent overfull"
                );
            }
        }
    }
}

fn action(d: &[u8]) -> u32 {
    be32(d, 0)
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

/// Runs one fuzz input: the bytes decoded as libFuzzer's typed targets decode them
/// (`arbitrary_take_rest`, inputs shorter than the size hint skipped); says how far it reached.
pub fn run(data: &[u8]) -> Reach {
    if data.len() < <Vec<Op> as Arbitrary>::size_hint(0).0 {
        return Reach::default();
    }
    match <Vec<Op>>::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        Ok(ops) => run_ops(ops),
        Err(_) => Reach::default(),
    }
}

/// Runs a sequence of steps (the first 256) through a fresh world, checking every reply and the
/// shards after each; says how far it reached.
pub fn run_ops(ops: Vec<Op>) -> Reach {
    let mut world = World::new();
    for op in ops.into_iter().take(256) {
        world.step(op);
    }
    world.deliver();
    for h in &world.handlers {
        h.shard.check_invariants();
    }
    world.reach
}
