//! Property tests of the swarm shard against a model simple enough to be obviously right: a map
//! from (torrent, IP, port) to the peer's role and expiry, plus each torrent's completed count.
//! Random sequences of IPv4, IPv6 and IPv4-mapped announces (every event, seeders and
//! leechers), clock steps and sweeps, with and without limits, must keep the shard and the
//! model in step:
//! - seeders + leechers = peers held, per torrent and over the shard, and counts never
//!   underflow (a drift would show as a huge number);
//! - a reply never holds the announcer, never more than `want` peers, exactly as many as there
//!   are to give, only peers of the announcer's family, only leechers to a seeder;
//! - past a limit (torrents, peers per torrent, peers in all, a source's peers) the announce is
//!   refused with that limit's reason, hands out nothing and changes nothing;
//! - with subnet preference, a reply leads with every eligible peer of the announcer's subnet
//!   it has room for, and holds none of them after the first peer from elsewhere.
//!
//! Peer sets are indexed past `INDEX_AT` (32) peers and the index is dropped when stops take a
//! set below 16. The wave generator grows one set past 32, churns it (role changes, stops,
//! clock steps, sweeps), stops it down below 16 and grows it past 32 again; the test counts
//! the cases that made that round trip and fails if too few did.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hayate_tracker::protocol::{Announce, AnnounceEvent, SwarmCounts};
use hayate_tracker::swarm::{Limits, Quotas, Refused, Shard};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const LIFETIME: u32 = 100;

/// `INDEX_AT` of src/swarm/peers.rs (private there): a peer set past this many peers is indexed,
/// and its index dropped when stops take it below half.
const INDEX_AT: usize = 32;

/// Sources: IPv4, IPv6, and IPv4-mapped IPv6 (the same peers as IPv4 ones).
const IPS: [&str; 6] = [
    "10.0.0.1",
    "10.0.0.2",
    "2001:db8::1",
    "2001:db8::2",
    "::ffff:10.0.0.1",
    "::ffff:10.0.0.3",
];

#[derive(Debug, Clone)]
enum Op {
    Announce {
        hash: u8,
        ip: usize,
        port: u16,
        seeder: bool,
        event: AnnounceEvent,
        want: usize,
    },
    Advance(u32),
    Sweep,
}

fn event() -> impl Strategy<Value = AnnounceEvent> {
    prop_oneof![
        3 => Just(AnnounceEvent::None),
        2 => Just(AnnounceEvent::Started),
        1 => Just(AnnounceEvent::Completed),
        2 => Just(AnnounceEvent::Stopped),
    ]
}

/// Operations over `hashes` torrents and `ports` ports per address.
fn ops(hashes: u8, ports: u16) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(hashes, ports), 1..150)
}

/// One operation over `hashes` torrents and `ports` ports per address.
fn op(hashes: u8, ports: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..hashes, 0..IPS.len(), 1..=ports, any::<bool>(), event(), 0usize..12).prop_map(
            |(hash, ip, port, seeder, event, want)| Op::Announce {
                hash,
                ip,
                port,
                seeder,
                event,
                want,
            }
        ),
        2 => (0u32..80).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// Ports the waves use per address: a grown set holds up to 65 of them.
const WAVE_PORTS: u16 = 70;

/// The addresses of a family, one per distinct peer IP (an IPv4-mapped one stands for its IPv4).
fn family(v6: bool) -> &'static [usize] {
    if v6 {
        &[2, 3]
    } else {
        &[0, 1, 5]
    }
}

/// 33 to 45 new peers from one address of the family, each a seeder or a leecher: past the
/// index size in one go.
fn grow(hash: u8, v6: bool) -> impl Strategy<Value = Vec<Op>> {
    let arrivals = prop::collection::vec(
        (
            any::<bool>(),
            prop_oneof![
                Just(AnnounceEvent::Started),
                Just(AnnounceEvent::None),
                Just(AnnounceEvent::Completed)
            ],
            0usize..50,
        ),
        INDEX_AT + 1..=INDEX_AT + 13,
    );
    (prop::sample::select(family(v6)), 1u16..=20, arrivals).prop_map(
        move |(ip, first, arrivals)| {
            (first..)
                .zip(arrivals)
                .map(|(port, (seeder, event, want))| Op::Announce {
                    hash,
                    ip,
                    port,
                    seeder,
                    event,
                    want,
                })
                .collect()
        },
    )
}

/// Stops every peer of the family in the torrent but up to 12 (address, port) pairs: below half
/// of the index size, whatever the churn added.
fn shrink(hash: u8, v6: bool) -> impl Strategy<Value = Vec<Op>> {
    let kept =
        prop::collection::btree_set((prop::sample::select(family(v6)), 1..=WAVE_PORTS), 0..12);
    kept.prop_map(move |kept| {
        let mut stops = Vec::new();
        for &ip in family(v6) {
            for port in 1..=WAVE_PORTS {
                if !kept.contains(&(ip, port)) {
                    stops.push(Op::Announce {
                        hash,
                        ip,
                        port,
                        seeder: false,
                        event: AnnounceEvent::Stopped,
                        want: 0,
                    });
                }
            }
        }
        stops
    })
}

/// Role changes, stops, re-announces, clock steps and sweeps over the waves' torrents.
fn churn() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(2, WAVE_PORTS), 0..30)
}

/// Grow, churn, shrink, churn, grow, churn: one torrent's set of one family indexed, dropped
/// and indexed again.
fn waves() -> impl Strategy<Value = Vec<Op>> {
    (0u8..2, any::<bool>()).prop_flat_map(|(hash, v6)| {
        (
            grow(hash, v6),
            churn(),
            shrink(hash, v6),
            churn(),
            grow(hash, v6),
            churn(),
        )
            .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].concat())
    })
}

#[derive(Debug, Clone, Copy)]
struct ModelPeer {
    seeder: bool,
    expires: u32,
    /// Its download is counted: one per stay in the swarm.
    counted: bool,
}

/// The obviously right swarm.
#[derive(Default)]
struct Model {
    peers: BTreeMap<(u8, IpAddr, u16), ModelPeer>,
    downloaded: BTreeMap<u8, u32>,
}

impl Model {
    fn torrent(&self, hash: u8) -> impl Iterator<Item = ((IpAddr, u16), ModelPeer)> + '_ {
        self.peers
            .range((hash, IpAddr::from([0u8; 4]), 0)..)
            .take_while(move |((h, _, _), _)| *h == hash)
            .map(|(&(_, ip, port), &p)| ((ip, port), p))
    }

    /// A torrent's counts; an empty torrent is dropped, and its completed count with it.
    fn counts(&self, hash: u8) -> SwarmCounts {
        let mut c = self.counts_kept(hash);
        if c.seeders + c.leechers == 0 {
            c.downloaded = 0;
        }
        c
    }

    /// The same, with the completed count still held (what a stop that empties a torrent is
    /// answered with: the torrent goes right after).
    fn counts_kept(&self, hash: u8) -> SwarmCounts {
        let (mut seeders, mut leechers) = (0, 0);
        for (_, p) in self.torrent(hash) {
            if p.seeder {
                seeders += 1;
            } else {
                leechers += 1;
            }
        }
        SwarmCounts {
            seeders,
            leechers,
            downloaded: self.downloaded.get(&hash).copied().unwrap_or(0),
        }
    }

    fn torrents(&self) -> usize {
        let mut hashes: Vec<u8> = self.peers.keys().map(|k| k.0).collect();
        hashes.dedup();
        hashes.len()
    }

    fn forget_empty(&mut self) {
        let live: Vec<u8> = self.peers.keys().map(|k| k.0).collect();
        self.downloaded.retain(|h, _| live.contains(h));
    }
}

/// The source an address counts under: itself, or its IPv6 /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(
            u128::from(v6) & !(u64::MAX as u128),
        )),
    }
}

/// The subnet subnet preference groups an address in: IPv4 /31 (10.0.0.2 and 10.0.0.3 share
/// one, 10.0.0.1 is alone), IPv6 /127 (each test address alone).
fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & !1)),
        IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & !1)),
    }
}

fn info_hash(h: u8) -> [u8; 20] {
    let mut x = [h; 20];
    x[19] = 0xaa;
    x
}

/// Where a peer set (torrent, family) stands on the way indexed → dropped → indexed again.
#[derive(Debug, Default, Clone, Copy)]
struct SetTrip {
    /// 0: never past 32 peers; 1: was; 2: then stopped from 16 or more to below 16; 3: then
    /// past 32 again.
    phase: u8,
    len: usize,
}

/// Runs `ops` against the shard and the model; returns how many peer sets made the round trip
/// past the index size, below 16 by stops, and past it again.
fn run(ops: Vec<Op>, limits: Limits) -> Result<usize, TestCaseError> {
    run_with(ops, limits, 0, false)
}

/// The same with each source (IPv4 address, IPv6 /64) held to `quota` peers (0: none), and
/// with `prefer`, announcers handed their own subnet's peers first (IPv4 /31, IPv6 /127: see
/// [`subnet`]).
fn run_with(
    ops: Vec<Op>,
    limits: Limits,
    quota: u32,
    prefer: bool,
) -> Result<usize, TestCaseError> {
    let mut shard = Shard::with_limits(LIFETIME, limits);
    if prefer {
        shard.prefer_subnets(31, 127);
    }
    shard.limit_sources(Quotas {
        peers: quota,
        ..Quotas::default()
    });
    let mut model = Model::default();
    let mut now = 1_000u32;
    let mut hashes_seen = Vec::new();
    let mut trips: BTreeMap<(u8, bool), SetTrip> = BTreeMap::new();
    for op in ops {
        let stop = matches!(
            op,
            Op::Announce {
                event: AnnounceEvent::Stopped,
                ..
            }
        );
        match op {
            Op::Announce {
                hash,
                ip,
                port,
                seeder,
                event,
                want,
            } => {
                if !hashes_seen.contains(&hash) {
                    hashes_seen.push(hash);
                }
                let raw: IpAddr = IPS[ip].parse().unwrap();
                let ip = raw.to_canonical();
                let a = Announce {
                    info_hash: info_hash(hash),
                    peer_id: [port as u8; 20],
                    port,
                    left: if seeder { 0 } else { 1 + u64::from(port) },
                    event,
                    num_want: want as i32,
                };
                let mut got = Vec::new();
                let result =
                    shard.announce_ip(raw, &a, want, now, |pip, pport| got.push((pip, pport)));
                // What the model expects.
                let key = (hash, ip, port);
                let as_seeder = seeder || event == AnnounceEvent::Completed;
                let before: Vec<_> = model.torrent(hash).collect();
                let known = model.peers.contains_key(&key);
                let expected = if event == AnnounceEvent::Stopped {
                    Ok(())
                } else if before.is_empty() && model.torrents() >= limits.max_torrents {
                    Err(Refused::TrackerFull)
                } else if !known && before.len() >= limits.max_peers_per_torrent {
                    Err(Refused::TorrentFull)
                } else if !known && model.peers.len() >= limits.max_peers {
                    Err(Refused::TrackerFull)
                } else if !known
                    && quota > 0
                    && model
                        .peers
                        .keys()
                        .filter(|k| source(k.1) == source(ip))
                        .count()
                        >= quota as usize
                {
                    Err(Refused::SourcePeers)
                } else {
                    Ok(())
                };
                match (&result, expected) {
                    (Err(r), Err(e)) => {
                        prop_assert_eq!(*r, e);
                        prop_assert!(got.is_empty(), "a refused announce handed out peers");
                    }
                    (Ok(_), Ok(())) => {}
                    (r, e) => prop_assert!(false, "shard {:?}, model {:?}", r, e),
                }
                if let Ok(counts) = result {
                    // The reply, checked against the swarm as it was before the announce.
                    let eligible: Vec<IpAddr> = before
                        .iter()
                        .filter(|((pip, pport), p)| {
                            pip.is_ipv4() == ip.is_ipv4()
                                && (*pip, *pport) != (ip, port)
                                && !(as_seeder && p.seeder)
                        })
                        .map(|((pip, _), _)| *pip)
                        .collect();
                    if event == AnnounceEvent::Stopped {
                        prop_assert!(got.is_empty(), "a stopping peer was handed peers");
                    } else {
                        prop_assert_eq!(got.len(), want.min(eligible.len()), "peers handed out");
                    }
                    if prefer {
                        // The announcer's subnet first, as many as it has to give, then no more
                        // of it.
                        let near = eligible
                            .iter()
                            .filter(|p| subnet(**p) == subnet(ip))
                            .count();
                        let first = want.min(near).min(got.len());
                        for (i, &(pip, _)) in got.iter().enumerate() {
                            prop_assert_eq!(
                                subnet(pip) == subnet(ip),
                                i < first,
                                "peer {} of {:?} for {} ({} near)",
                                i,
                                got,
                                ip,
                                near
                            );
                        }
                    }
                    let mut distinct = got.clone();
                    distinct.sort();
                    distinct.dedup();
                    prop_assert_eq!(distinct.len(), got.len(), "a peer handed out twice");
                    for &(pip, pport) in &got {
                        prop_assert!((pip, pport) != (ip, port), "announcer handed itself");
                        prop_assert_eq!(pip.is_ipv4(), ip.is_ipv4(), "wrong family");
                        let p = model.peers.get(&(hash, pip, pport));
                        prop_assert!(p.is_some(), "{}:{} is not in the torrent", pip, pport);
                        prop_assert!(!(as_seeder && p.unwrap().seeder), "seeder to a seeder");
                    }
                    // Apply it to the model.
                    let expected = if event == AnnounceEvent::Stopped {
                        model.peers.remove(&key);
                        let c = model.counts_kept(hash);
                        model.forget_empty();
                        c
                    } else {
                        let previous = model.peers.get(&key).copied();
                        let downloaded = event == AnnounceEvent::Completed
                            && !previous.is_some_and(|p| p.seeder || p.counted);
                        model.peers.insert(
                            key,
                            ModelPeer {
                                seeder: as_seeder,
                                expires: now + LIFETIME,
                                counted: downloaded || previous.is_some_and(|p| p.counted),
                            },
                        );
                        if downloaded {
                            *model.downloaded.entry(hash).or_default() += 1;
                        }
                        model.counts(hash)
                    };
                    prop_assert_eq!(counts, expected, "counts after announce");
                }
            }
            Op::Advance(secs) => now += secs,
            Op::Sweep => {
                let before = model.peers.len();
                model.peers.retain(|_, p| p.expires > now);
                model.forget_empty();
                prop_assert_eq!(shard.sweep(now), before - model.peers.len(), "peers swept");
            }
        }
        // The shard as a whole matches the model.
        shard.check_invariants();
        let totals = shard.totals();
        let seeders = model.peers.values().filter(|p| p.seeder).count();
        prop_assert_eq!(totals.torrents, model.torrents());
        prop_assert_eq!(totals.seeders, seeders);
        prop_assert_eq!(totals.leechers, model.peers.len() - seeders);
        prop_assert!(totals.torrents <= limits.max_torrents);
        for &h in &hashes_seen {
            let c = shard.counts(&info_hash(h));
            prop_assert_eq!(c, model.counts(h), "counts of torrent {}", h);
            prop_assert!((c.seeders + c.leechers) as usize <= limits.max_peers_per_torrent);
            for v6 in [false, true] {
                let len = model
                    .torrent(h)
                    .filter(|((ip, _), _)| ip.is_ipv6() == v6)
                    .count();
                let t = trips.entry((h, v6)).or_default();
                t.phase = match t.phase {
                    0 | 2 if len > INDEX_AT => t.phase + 1,
                    1 if stop && t.len >= INDEX_AT / 2 && len < INDEX_AT / 2 => 2,
                    phase => phase,
                };
                t.len = len;
            }
        }
    }
    Ok(trips.values().filter(|t| t.phase == 3).count())
}

proptest! {
    /// Many small torrents, no limits.
    #[test]
    fn shard_matches_model(ops in ops(6, 4)) {
        run(ops, Limits::NONE)?;
    }

    /// The same with subnet preference: each reply leads with the announcer's subnet.
    #[test]
    fn subnet_preference_matches_model(ops in ops(6, 4)) {
        run_with(ops, Limits::NONE, 0, true)?;
    }

    /// Small limits and quotas: refusals are exact and leave nothing behind.
    #[test]
    fn limits_match_model(
        ops in ops(6, 4),
        max_torrents in 1usize..4,
        max_peers_per_torrent in 1usize..6,
        max_peers in 1usize..12,
        quota in 0u32..5,
    ) {
        run_with(ops, Limits { max_torrents, max_peers_per_torrent, max_peers }, quota, false)?;
    }
}

/// Waves over indexed peer sets, with and without a per-torrent limit they run into, with and
/// without subnet preference (whose index follows the set's size): the shard matches the model,
/// and most cases take a set past the index size, below 16 by stops and past it again (counted,
/// so a generator that stops reaching there fails).
#[test]
fn indexed_swarms_match_model() {
    let limits = prop_oneof![
        Just(Limits::NONE),
        (INDEX_AT + 2..3 * INDEX_AT).prop_map(|max_peers_per_torrent| Limits {
            max_torrents: 2,
            max_peers_per_torrent,
            ..Limits::NONE
        }),
    ];
    let mut runner = TestRunner::new(Config::default());
    let cases = runner.config().cases as usize;
    let round_trips = std::cell::Cell::new(0);
    let result = runner.run(
        &(waves(), limits, any::<bool>()),
        |(ops, limits, prefer)| {
            if run_with(ops, limits, 0, prefer)? > 0 {
                round_trips.set(round_trips.get() + 1);
            }
            Ok(())
        },
    );
    let round_trips = round_trips.get();
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        round_trips * 2 >= cases,
        "only {round_trips} of {cases} cases took a peer set past {INDEX_AT} peers, below {} \
         by stops and past {INDEX_AT} again",
        INDEX_AT / 2
    );
}

/// One spelled-out round trip over an IPv4 set: 40 leechers, a dozen turned seeders, stops down
/// to 10, 40 more, then most of the first ones expire in a sweep.
#[test]
fn a_set_is_indexed_dropped_and_indexed_again() {
    let announce = |port: u16, seeder: bool, event: AnnounceEvent| Op::Announce {
        hash: 0,
        ip: 0,
        port,
        seeder,
        event,
        want: 20,
    };
    let mut ops: Vec<Op> = (1..=40)
        .map(|p| announce(p, false, AnnounceEvent::Started))
        .collect();
    ops.extend((1..=12).map(|p| announce(p, true, AnnounceEvent::Completed)));
    ops.push(Op::Advance(50));
    ops.extend((5..=34).map(|p| announce(p, p % 2 == 0, AnnounceEvent::Stopped)));
    ops.extend((41..=80).map(|p| announce(p, p % 3 == 0, AnnounceEvent::None)));
    ops.push(Op::Advance(60));
    ops.push(Op::Sweep);
    ops.extend((41..=70).map(|p| announce(p, false, AnnounceEvent::Stopped)));
    let round_trips = run(ops, Limits::NONE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(round_trips, 1);
}
