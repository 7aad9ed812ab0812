//! One shard of the swarm table: the torrents whose info hash routes to this worker, and the
//! rules of who is handed to whom. Only the owning worker touches a shard, so nothing here
//! locks. The shard sees parsed announces and hands out peers through a callback; it never
//! sees bytes or sockets.

mod inspect;
mod packed;
mod peers;
mod persist;
mod sources;
mod subnet;
mod table;
mod walk;

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;

pub use inspect::{Census, PeerView, TorrentView, TOP_TORRENTS};
use packed::Packed;
pub use peers::{Peer, PeerIp, PeerSet, Previous, Spread, Store};
pub use sources::{Held, Quotas, Sources};
pub use subnet::SubnetIndex;
use table::Torrents;
pub use walk::{Walk, WalkedPeer};

use crate::protocol::{Announce, AnnounceEvent, InfoHash, SwarmCounts};

/// A torrent's peers, by family, and its completed count: 20 bytes, so with its info hash a
/// table slot is 40. The IPv4 store also carries the rarer IPv6 set (see [`packed`]).
#[derive(Debug, Default)]
pub struct Torrent {
    pub v4: PeerSet<[u8; 4], Packed>,
    pub downloaded: u32,
}

const _: () = assert!(std::mem::size_of::<Option<(InfoHash, Torrent)>>() == 40);

impl Torrent {
    fn counts(&self) -> SwarmCounts {
        let v6 = self.v6();
        SwarmCounts {
            seeders: (self.v4.seeders() + v6.map_or(0, PeerSet::seeders)) as u32,
            leechers: (self.v4.leechers() + v6.map_or(0, PeerSet::leechers)) as u32,
            downloaded: self.downloaded,
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6().map_or(0, PeerSet::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The IPv6 peers, if the torrent has any set for them.
    pub fn v6(&self) -> Option<&PeerSet<[u8; 16]>> {
        self.v4.store.v6()
    }

    /// While the torrent has no peers: the second (process clock) until which it is kept for
    /// its `downloaded` count. Zero while it has peers.
    pub fn keep_until(&self) -> u32 {
        self.v4.store.keep_until()
    }

    /// Sets the keeping time of a torrent without peers (ignored while it has some).
    pub fn set_keep_until(&mut self, keep_until: u32) {
        self.v4.store.set_keep_until(keep_until);
    }

    /// Whether the peer at `key` may be stored under a limit of `max` peers: only a peer the
    /// torrent does not hold yet can break it, so the lookup is paid only when it is full.
    fn has_room_for<I: Family>(&mut self, key: (I, u16), max: usize, hs: &RandomState) -> bool {
        self.len() < max || I::existing(self).is_some_and(|set| set.contains(key, hs))
    }

    /// Drops the IPv6 set once it is empty.
    fn tidy(&mut self) {
        self.v4.store.drop_empty_v6();
    }
}

/// An address family's peer set within a torrent.
pub trait Family: PeerIp {
    /// The unspecified address: with port 0 (never stored) a key that matches no peer.
    const NONE: Self;
    /// The address as the rest of the tracker names it.
    fn addr(&self) -> IpAddr;
    /// The address with all but its first `prefix` bits cleared: its subnet.
    fn masked(&self, prefix: u8) -> Self;
    /// The shard's subnet index of this family, when subnet preference is on.
    fn subnets(s: &mut Subnets) -> Option<&mut SubnetIndex<Self>>;
    /// How a torrent stores this family's peers.
    type Store: Store<Self>;
    /// The set, made if the torrent has none yet.
    fn set(t: &mut Torrent) -> &mut PeerSet<Self, Self::Store>;
    /// The set, if the torrent has one.
    fn existing(t: &mut Torrent) -> Option<&mut PeerSet<Self, Self::Store>>;
    /// The source the address belongs to, for quotas: the address itself, or an IPv6 /64.
    fn source(&self) -> Self;
    /// This family's holdings by source, with the quotas they are held to.
    fn held(s: &mut Sources) -> (&mut HashMap<Self, Held, RandomState>, &Quotas);
}

impl Family for [u8; 4] {
    const NONE: Self = [0; 4];
    fn addr(&self) -> IpAddr {
        IpAddr::from(*self)
    }
    fn masked(&self, prefix: u8) -> Self {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        (u32::from_be_bytes(*self) & mask).to_be_bytes()
    }
    fn subnets(s: &mut Subnets) -> Option<&mut SubnetIndex<Self>> {
        s.v4.as_deref_mut()
    }
    type Store = Packed;
    fn set(t: &mut Torrent) -> &mut PeerSet<Self, Packed> {
        &mut t.v4
    }
    fn existing(t: &mut Torrent) -> Option<&mut PeerSet<Self, Packed>> {
        Some(&mut t.v4)
    }
    fn source(&self) -> Self {
        *self
    }
    fn held(s: &mut Sources) -> (&mut HashMap<Self, Held, RandomState>, &Quotas) {
        (&mut s.v4, &s.quotas)
    }
}

impl Family for [u8; 16] {
    const NONE: Self = [0; 16];
    fn addr(&self) -> IpAddr {
        IpAddr::from(*self)
    }
    fn masked(&self, prefix: u8) -> Self {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(prefix.min(128)))
            .unwrap_or(0);
        (u128::from_be_bytes(*self) & mask).to_be_bytes()
    }
    fn subnets(s: &mut Subnets) -> Option<&mut SubnetIndex<Self>> {
        s.v6.as_deref_mut()
    }
    type Store = Spread<Self>;
    fn set(t: &mut Torrent) -> &mut PeerSet<Self> {
        t.v4.store.v6_or_insert()
    }
    fn existing(t: &mut Torrent) -> Option<&mut PeerSet<Self>> {
        t.v4.store.v6_mut()
    }
    fn source(&self) -> Self {
        self.masked(64)
    }
    fn held(s: &mut Sources) -> (&mut HashMap<Self, Held, RandomState>, &Quotas) {
        (&mut s.v6, &s.quotas)
    }
}

/// Takes a peer at `ip` that left off its source's count.
fn left<I: Family>(sources: Option<&mut Sources>, ip: I) {
    if let Some(h) = sources.and_then(|s| I::held(s).0.get_mut(&ip.source())) {
        h.peers = h.peers.saturating_sub(1);
    }
}

/// What an announce did, beside the counts it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The swarm's counts after the announce.
    pub counts: SwarmCounts,
    /// What the peer was before: absent (a new peer, or a stop for one never seen), a
    /// leecher or a seeder.
    pub previous: Previous,
    /// The announce counted a download.
    pub downloaded: bool,
    /// When the stored peer expires (0 after a stop).
    pub expires: u32,
}

impl Default for Announced {
    fn default() -> Self {
        Self {
            counts: SwarmCounts::default(),
            previous: Previous::Absent,
            downloaded: false,
            expires: 0,
        }
    }
}

/// The subnet indexes of a shard whose announcers prefer their own subnet's peers; a family
/// without preference has none.
#[derive(Default)]
pub struct Subnets {
    v4: Option<Box<SubnetIndex<[u8; 4]>>>,
    v6: Option<Box<SubnetIndex<[u8; 16]>>>,
}

/// Totals over a shard, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardTotals {
    pub torrents: usize,
    pub seeders: usize,
    pub leechers: usize,
}

/// Bounds on what one shard holds, so a flood of fake torrents or peers costs a refusal, never
/// memory without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Torrents the shard holds at most; an announce that would add one more is refused,
    /// unless a torrent kept only for its download count can make room.
    pub max_torrents: usize,
    /// Peers (both families together) one torrent holds at most; a new peer past it is refused.
    /// Never more than [`MAX_PEERS_PER_TORRENT`], whatever is set here.
    pub max_peers_per_torrent: usize,
    /// Peers the shard holds at most, over all torrents.
    pub max_peers: usize,
}

impl Limits {
    pub const NONE: Limits = Limits {
        max_torrents: usize::MAX,
        max_peers_per_torrent: MAX_PEERS_PER_TORRENT,
        max_peers: usize::MAX,
    };

    /// The peer limit of one torrent in force: as set, within what a torrent can hold.
    fn per_torrent(&self) -> usize {
        self.max_peers_per_torrent.min(MAX_PEERS_PER_TORRENT)
    }
}

/// Peers one torrent can hold at all: what the packed store's length field counts.
pub const MAX_PEERS_PER_TORRENT: usize = packed::MAX_LEN;

/// Buckets looked at for a torrent kept only for its count when the shard is full, each time
/// from where the last look stopped: enough to find one soon when such torrents fill a good
/// part of the table, few enough that a full table of live torrents costs a refused announce
/// little.
const EVICTION_PROBES: usize = 16;

/// Why an announce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The announce would add a torrent to a shard at `max_torrents`, or a peer to one at
    /// `max_peers`.
    TrackerFull,
    /// The announce would add a peer to a torrent at `max_peers_per_torrent`.
    TorrentFull,
    /// The announce would add a peer past its source's quota.
    SourcePeers,
    /// The announce would add a torrent past its source's hourly quota.
    SourceTorrents,
}

impl Refused {
    /// What the client is told (short: a BEP 15 error reply is cut to the request's length).
    pub fn message(self) -> &'static str {
        match self {
            Refused::TrackerFull => "tracker is full",
            Refused::TorrentFull => "torrent is full",
            Refused::SourcePeers => "too many peers from your address",
            Refused::SourceTorrents => "too many new torrents from your address",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Refused {}

pub struct Shard {
    torrents: Torrents,
    limits: Limits,
    hasher: RandomState,
    rng: fastrand::Rng,
    peer_lifetime_secs: u32,
    /// Seconds a torrent left without peers is kept for its `downloaded` count (0: dropped
    /// with its last peer, as is a torrent that never counted a download).
    keep_downloaded_secs: u32,
    /// Seeders and leechers over every torrent, kept as peers come and go so the gauges cost
    /// nothing to read (a walk over a million torrents would stall the worker).
    seeders: usize,
    leechers: usize,
    subnets: Subnets,
    /// What each source holds, when per-source quotas are on.
    sources: Option<Box<Sources>>,
}

impl Shard {
    /// A shard without limits (tests, benches); see [`Shard::with_limits`].
    pub fn new(peer_lifetime_secs: u32) -> Self {
        Self::with_limits(peer_lifetime_secs, Limits::NONE)
    }

    pub fn with_limits(peer_lifetime_secs: u32, limits: Limits) -> Self {
        Self {
            torrents: Torrents::new(),
            limits,
            hasher: RandomState::new(),
            rng: fastrand::Rng::new(),
            peer_lifetime_secs,
            keep_downloaded_secs: 0,
            seeders: 0,
            leechers: 0,
            subnets: Subnets::default(),
            sources: None,
        }
    }

    /// Holds each source (IPv4 address, IPv6 /64) to `quotas` from now on (0: no such quota;
    /// both 0: sources are not tracked at all). Set before the first announce.
    pub fn limit_sources(&mut self, quotas: Quotas) {
        self.sources =
            (quotas.peers > 0 || quotas.new_torrents > 0).then(|| Box::new(Sources::new(quotas)));
    }

    /// What a source holds, if quotas are on and it holds anything.
    pub fn held(&self, ip: IpAddr) -> Option<Held> {
        let s = self.sources.as_deref()?;
        match ip.to_canonical() {
            IpAddr::V4(v4) => s.v4.get(&v4.octets().source()).copied(),
            IpAddr::V6(v6) => s.v6.get(&v6.octets().source()).copied(),
        }
    }

    /// Keeps a torrent whose last peer left for `secs` more, for its `downloaded` count, if it
    /// counted any.
    pub fn keep_downloaded(&mut self, secs: u32) {
        self.keep_downloaded_secs = secs;
    }

    /// Whether an empty torrent stays: it counted downloads and its keeping time is not up.
    fn kept(t: &Torrent, now: u32) -> bool {
        t.downloaded > 0 && now < t.keep_until()
    }

    /// Hands announcers the peers of their own subnet first: IPv4 addresses sharing their
    /// first `v4` bits, IPv6 their first `v6` (0: no preference for that family).
    pub fn prefer_subnets(&mut self, v4: u8, v6: u8) {
        self.subnets = Subnets {
            v4: (v4 > 0).then(|| Box::new(SubnetIndex::new(v4))),
            v6: (v6 > 0).then(|| Box::new(SubnetIndex::new(v6))),
        };
    }

    /// Applies an announce from `ip` (already canonical: IPv4-mapped is IPv4) and hands `out`
    /// up to `want` peers of the announcer's own family, chosen before the announcer is stored
    /// so it never gets itself back. Returns the swarm's counts after the announce, or why it
    /// was refused (a limit; nothing was handed out or stored). A stop is never refused.
    pub fn announce<I: Family>(
        &mut self,
        ip: I,
        a: &Announce,
        want: usize,
        now: u32,
        out: impl FnMut(&Peer<I>),
    ) -> Result<SwarmCounts, Refused> {
        self.announce_change(ip, a, want, now, out)
            .map(|a| a.counts)
    }

    /// [`Shard::announce`], also saying what changed, for the pipeline's post-hooks.
    pub fn announce_change<I: Family>(
        &mut self,
        ip: I,
        a: &Announce,
        want: usize,
        now: u32,
        out: impl FnMut(&Peer<I>),
    ) -> Result<Announced, Refused> {
        let key = (ip, a.port);
        if a.event == AnnounceEvent::Stopped {
            let Some(t) = self.torrents.get_mut(&a.info_hash) else {
                return Ok(Announced::default());
            };
            let before = t.counts();
            let previous = match I::existing(t) {
                Some(set) => set.remove(key, &self.hasher),
                None => Previous::Absent,
            };
            if previous != Previous::Absent {
                left(self.sources.as_deref_mut(), ip);
            }
            if let Some(index) = I::subnets(&mut self.subnets) {
                index.removed(&a.info_hash, I::existing(t).map(|s| &*s), key, &self.hasher);
            }
            t.tidy();
            let counts = t.counts();
            self.seeders = self.seeders - before.seeders as usize + counts.seeders as usize;
            self.leechers = self.leechers - before.leechers as usize + counts.leechers as usize;
            if t.is_empty() {
                if previous != Previous::Absent {
                    t.set_keep_until(now.saturating_add(self.keep_downloaded_secs));
                }
                if !Self::kept(t, now) {
                    self.torrents.remove(&a.info_hash);
                }
            }
            return Ok(Announced {
                counts,
                previous,
                downloaded: false,
                expires: 0,
            });
        }
        let seeder = a.seeds();
        // The announcer's holdings, when quotas are on: one lookup, kept for the updates below.
        let mut source = self.sources.as_deref_mut().map(|s| {
            let (held, quotas) = I::held(s);
            (held.entry(ip.source()).or_default(), quotas)
        });
        let may_add = match &mut source {
            Some((held, q)) => {
                q.new_torrents == 0
                    || held.added_by(now) < q.new_torrents
                    || q.exempt.contains(ip.addr())
            }
            None => true,
        };
        let mut room = self.torrents.len() < self.limits.max_torrents;
        if !room && may_add && self.torrents.get(&a.info_hash).is_none() {
            // History must not lock new swarms out: a torrent kept only for its count goes.
            room = self.torrents.evict_empty(EVICTION_PROBES);
        }
        let Some((t, added)) = self.torrents.get_or_add(&a.info_hash, room && may_add) else {
            return Err(if room {
                Refused::SourceTorrents
            } else {
                Refused::TrackerFull
            });
        };
        // Only a peer the torrent does not hold yet can break a peer limit, so the lookup
        // is paid only at one.
        let over_torrent = t.len() >= self.limits.per_torrent();
        let over_tracker = self.seeders + self.leechers >= self.limits.max_peers;
        let over_source = source
            .as_ref()
            .is_some_and(|(held, q)| q.peers > 0 && held.peers >= q.peers);
        if over_torrent || over_tracker || over_source {
            let known = I::existing(t).is_some_and(|set| set.contains(key, &self.hasher));
            let refused = match () {
                _ if known => None,
                _ if over_torrent => Some(Refused::TorrentFull),
                _ if over_tracker => Some(Refused::TrackerFull),
                _ if source
                    .as_ref()
                    .is_some_and(|(_, q)| q.exempt.contains(ip.addr())) =>
                {
                    None
                }
                _ => Some(Refused::SourcePeers),
            };
            if let Some(refused) = refused {
                if added {
                    self.torrents.remove(&a.info_hash);
                }
                return Err(refused);
            }
        }
        let before = t.counts();
        let set = I::set(t);
        let mut out = out;
        match I::subnets(&mut self.subnets) {
            None => {
                set.select(key, seeder, want, &mut self.rng, out);
            }
            Some(index) => {
                // The announcer's subnet first, then the usual run without them.
                let h = &self.hasher;
                let near = index.same_subnet(&a.info_hash, set, ip, key, seeder, want, h, &mut out);
                let mut rest = want - near;
                let index = &*index;
                set.select(key, seeder, want, &mut self.rng, |p| {
                    // The subnet's peers were all offered above.
                    if rest > 0 && !index.same(p.ip, ip) {
                        out(p);
                        rest -= 1;
                    }
                });
            }
        }
        let expires = now.saturating_add(self.peer_lifetime_secs);
        let peer = Peer {
            expires,
            ip,
            port: a.port,
            counted: false,
            client: crate::protocol::peer_client::classify(&a.peer_id),
        };
        let previous = set.upsert(peer, seeder, &self.hasher);
        if let Some((held, q)) = source {
            held.peers += u32::from(previous == Previous::Absent);
            // Counted only under a quota, so an entry outlives its peers only then.
            held.added += u32::from(added && q.new_torrents > 0);
        }
        if previous == Previous::Absent {
            if let Some(index) = I::subnets(&mut self.subnets) {
                index.added(&a.info_hash, set, key, &self.hasher);
            }
        }
        // A client repeating `completed` while already a seeder is not a new download, nor is
        // a second `completed` in one stay in the swarm (left > 0 and completed, alternating).
        let downloaded = a.event == AnnounceEvent::Completed
            && previous != Previous::Seeder
            && set.count_download(key, &self.hasher);
        if downloaded {
            t.downloaded = t.downloaded.saturating_add(1);
        }
        let after = t.counts();
        self.seeders = self.seeders - before.seeders as usize + after.seeders as usize;
        self.leechers = self.leechers - before.leechers as usize + after.leechers as usize;
        Ok(Announced {
            counts: after,
            previous,
            downloaded,
            expires,
        })
    }

    /// How many peers of family `I` a torrent could hand an announcer: its leechers for a
    /// seeder, everyone for a leecher (the announcer itself included, if it is there).
    pub fn candidates<I: Family>(&mut self, info_hash: &InfoHash, for_seeder: bool) -> usize {
        match self.torrents.get_mut(info_hash).and_then(I::existing) {
            Some(set) if for_seeder => set.leechers(),
            Some(set) => set.len(),
            None => 0,
        }
    }

    /// Hands `out` up to `want` peers of family `I` of a torrent without announcing to it
    /// (the other family's peers for a dual-stack reply): leechers only `for_seeder`.
    pub fn sample<I: Family>(
        &mut self,
        info_hash: &InfoHash,
        for_seeder: bool,
        want: usize,
        skip: (I, u16),
        out: impl FnMut(&Peer<I>),
    ) -> usize {
        let Some(set) = self.torrents.get_mut(info_hash).and_then(I::existing) else {
            return 0;
        };
        set.select(skip, for_seeder, want, &mut self.rng, out)
    }

    /// The same, for an address of either family.
    pub fn announce_ip(
        &mut self,
        ip: IpAddr,
        a: &Announce,
        want: usize,
        now: u32,
        out: impl FnMut(IpAddr, u16),
    ) -> Result<SwarmCounts, Refused> {
        let mut out = out;
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                self.announce(v4.octets(), a, want, now, |p| out(p.ip.addr(), p.port))
            }
            IpAddr::V6(v6) => {
                self.announce(v6.octets(), a, want, now, |p| out(p.ip.addr(), p.port))
            }
        }
    }

    /// Starts loading the swarm of `info_hash` into cache ahead of an announce for it.
    pub fn prefetch(&self, info_hash: &InfoHash) {
        self.torrents.prefetch(info_hash);
    }

    /// A torrent's counts; zeros for one never seen.
    pub fn counts(&self, info_hash: &InfoHash) -> SwarmCounts {
        self.torrents
            .get(info_hash)
            .map_or_else(SwarmCounts::default, Torrent::counts)
    }

    /// Drops peers whose lifetime ran out and torrents left empty. Returns peers dropped.
    pub fn sweep(&mut self, now: u32) -> usize {
        let mut dropped = 0;
        let hs = &self.hasher;
        let (seeders, leechers) = (&mut self.seeders, &mut self.leechers);
        let subnets = &mut self.subnets;
        let keep_secs = self.keep_downloaded_secs;
        let mut sources = self.sources.as_deref_mut();
        self.torrents.retain(|hash, t| {
            let was_empty = t.is_empty();
            let before = t.counts();
            let gone = t.v4.expire(now, hs, |p| left(sources.as_deref_mut(), p.ip));
            if let (true, Some(index)) = (gone > 0, subnets.v4.as_deref_mut()) {
                index.rebuild(hash, &t.v4, hs);
            }
            dropped += gone;
            if let Some(v6) = t.v4.store.v6_mut() {
                let gone = v6.expire(now, hs, |p| left(sources.as_deref_mut(), p.ip));
                if let (true, Some(index)) = (gone > 0, subnets.v6.as_deref_mut()) {
                    index.rebuild(hash, v6, hs);
                }
                dropped += gone;
            }
            t.tidy();
            let after = t.counts();
            *seeders = *seeders - before.seeders as usize + after.seeders as usize;
            *leechers = *leechers - before.leechers as usize + after.leechers as usize;
            if !t.is_empty() {
                return true;
            }
            if !was_empty {
                t.set_keep_until(now.saturating_add(keep_secs));
            }
            Self::kept(t, now)
        });
        if self.torrents.capacity() > 4 * self.torrents.len().max(1024) {
            self.torrents.shrink_to(2 * self.torrents.len());
        }
        if let Some(s) = self.sources.as_deref_mut() {
            s.tidy(now);
        }
        dropped
    }

    /// Torrents, seeders and leechers in the shard, in constant time.
    pub fn totals(&self) -> ShardTotals {
        ShardTotals {
            torrents: self.torrents.len(),
            seeders: self.seeders,
            leechers: self.leechers,
        }
    }

    /// The same, counted the slow way (to check the running counts).
    fn walk_totals(&self) -> ShardTotals {
        let mut totals = ShardTotals {
            torrents: self.torrents.len(),
            ..ShardTotals::default()
        };
        for (_, t) in self.torrents.iter() {
            let counts = t.counts();
            totals.seeders += counts.seeders as usize;
            totals.leechers += counts.leechers as usize;
        }
        totals
    }

    /// Checks every torrent's invariants (tests and fuzzing).
    pub fn check_invariants(&self) {
        for (hash, t) in self.torrents.iter() {
            if let Some(index) = self.subnets.v4.as_deref() {
                index.check(hash, Some(&t.v4));
            }
            if let Some(index) = self.subnets.v6.as_deref() {
                index.check(hash, t.v6());
            }
            assert!(
                !t.is_empty() || t.downloaded > 0,
                "empty torrent kept without a download count"
            );
            t.v4.check_invariants(&self.hasher);
            if let Some(v6) = t.v6() {
                assert!(!v6.is_empty(), "empty IPv6 set kept");
                v6.check_invariants(&self.hasher);
            }
        }
        assert_eq!(self.totals(), self.walk_totals(), "running totals drifted");
        if let Some(s) = self.sources.as_deref() {
            let (mut v4, mut v6) = (HashMap::new(), HashMap::new());
            for (_, t) in self.torrents.iter() {
                for p in t.v4.peers() {
                    *v4.entry(p.ip.source()).or_insert(0u32) += 1;
                }
                for p in t.v6().map_or(&[][..], PeerSet::peers) {
                    *v6.entry(p.ip.source()).or_insert(0u32) += 1;
                }
            }
            fn held<K: Copy + Eq + std::hash::Hash>(
                m: &HashMap<K, Held, RandomState>,
            ) -> HashMap<K, u32> {
                m.iter()
                    .filter(|(_, h)| h.peers > 0)
                    .map(|(k, h)| (*k, h.peers))
                    .collect()
            }
            assert_eq!(held(&s.v4), v4, "IPv4 sources' holdings drifted");
            assert_eq!(held(&s.v6), v6, "IPv6 sources' holdings drifted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn announce(hash: u8, port: u16, left: u64, event: AnnounceEvent) -> Announce {
        Announce {
            info_hash: [hash; 20],
            peer_id: [port as u8; 20],
            port,
            left,
            event,
            num_want: -1,
        }
    }

    /// Announces from `ip` (numwant 50, time 0), ignoring the peers handed out.
    fn put(s: &mut Shard, ip: [u8; 4], a: Announce) -> SwarmCounts {
        s.announce(ip, &a, 50, 0, |_| {}).unwrap()
    }

    fn peers_of(shard: &mut Shard, ip: [u8; 4], a: &Announce, want: usize) -> Vec<(u16, bool)> {
        let mut got = Vec::new();
        shard
            .announce(ip, a, want, 0, |p| got.push((p.port, p.ip == ip)))
            .unwrap();
        got
    }

    #[test]
    fn second_peer_gets_the_first_and_never_itself() {
        let mut s = Shard::new(100);
        let ip = [10, 0, 0, 1];
        assert!(peers_of(
            &mut s,
            ip,
            &announce(1, 1000, 5, AnnounceEvent::Started),
            50
        )
        .is_empty());
        let got = peers_of(
            &mut s,
            ip,
            &announce(1, 2000, 5, AnnounceEvent::Started),
            50,
        );
        assert_eq!(got, vec![(1000, true)]);
        // Re-announcing: still not itself.
        let got = peers_of(&mut s, ip, &announce(1, 2000, 5, AnnounceEvent::None), 50);
        assert_eq!(got, vec![(1000, true)]);
        assert_eq!(s.counts(&[1; 20]).leechers, 2);
    }

    #[test]
    fn seeders_get_leechers_only() {
        let mut s = Shard::new(100);
        put(
            &mut s,
            [1, 1, 1, 1],
            announce(1, 1, 0, AnnounceEvent::Started),
        );
        put(
            &mut s,
            [2, 2, 2, 2],
            announce(1, 2, 9, AnnounceEvent::Started),
        );
        let mut got = Vec::new();
        let counts = s
            .announce(
                [3, 3, 3, 3],
                &announce(1, 3, 0, AnnounceEvent::None),
                50,
                0,
                |p| got.push(p.ip),
            )
            .unwrap();
        assert_eq!(got, vec![[2, 2, 2, 2]]);
        assert_eq!((counts.seeders, counts.leechers), (2, 1));
        // A leecher gets both.
        let mut n = 0;
        s.announce(
            [4, 4, 4, 4],
            &announce(1, 4, 9, AnnounceEvent::None),
            50,
            0,
            |_| n += 1,
        )
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn stopped_removes_and_unknown_stop_is_harmless() {
        let mut s = Shard::new(100);
        let c = s
            .announce(
                [9, 9, 9, 9],
                &announce(7, 1, 0, AnnounceEvent::Stopped),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!(c, SwarmCounts::default());
        assert_eq!(s.totals().torrents, 0);
        put(
            &mut s,
            [1, 1, 1, 1],
            announce(7, 1, 5, AnnounceEvent::Started),
        );
        put(
            &mut s,
            [1, 1, 1, 1],
            announce(7, 2, 5, AnnounceEvent::Started),
        );
        let c = s
            .announce(
                [1, 1, 1, 1],
                &announce(7, 1, 5, AnnounceEvent::Stopped),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!((c.seeders, c.leechers), (0, 1));
        // Stopping a peer the torrent never saw changes nothing.
        let c = s
            .announce(
                [8, 8, 8, 8],
                &announce(7, 1, 5, AnnounceEvent::Stopped),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!((c.seeders, c.leechers), (0, 1));
        put(
            &mut s,
            [1, 1, 1, 1],
            announce(7, 2, 5, AnnounceEvent::Stopped),
        );
        assert_eq!(s.totals().torrents, 0, "empty torrent dropped");
    }

    /// Announces `event` with `left` for peer `port` of torrent 3 at `now`; the counts after.
    fn at(s: &mut Shard, port: u16, left: u64, event: AnnounceEvent, now: u32) -> SwarmCounts {
        s.announce(
            [1, 2, 3, 4],
            &announce(3, port, left, event),
            50,
            now,
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn a_peer_counts_one_download_per_stay_however_it_alternates() {
        let mut s = Shard::new(100);
        at(&mut s, 1, 10, AnnounceEvent::Started, 0);
        assert_eq!(at(&mut s, 1, 0, AnnounceEvent::Completed, 0).downloaded, 1);
        // Back to leeching and completing again: the same download, not a new one.
        for _ in 0..3 {
            assert_eq!(at(&mut s, 1, 10, AnnounceEvent::None, 0).leechers, 1);
            assert_eq!(at(&mut s, 1, 0, AnnounceEvent::Completed, 0).downloaded, 1);
        }
        // Another peer's completion counts.
        assert_eq!(at(&mut s, 2, 0, AnnounceEvent::Completed, 0).downloaded, 2);
        // Gone and back: a new stay, so its next completion counts again.
        at(&mut s, 1, 0, AnnounceEvent::Stopped, 0);
        at(&mut s, 1, 10, AnnounceEvent::Started, 0);
        assert_eq!(at(&mut s, 1, 0, AnnounceEvent::Completed, 0).downloaded, 3);
        s.check_invariants();
    }

    #[test]
    fn downloads_outlive_an_empty_swarm_for_the_keeping_time() {
        let mut s = Shard::new(100);
        s.keep_downloaded(50);
        at(&mut s, 1, 0, AnnounceEvent::Completed, 0);
        // The last peer stops at 10: kept until 60, with its count.
        at(&mut s, 1, 0, AnnounceEvent::Stopped, 10);
        assert_eq!(s.totals().torrents, 1);
        assert_eq!(s.counts(&[3; 20]), counts(0, 0, 1));
        s.check_invariants();
        s.sweep(59);
        assert_eq!(s.counts(&[3; 20]).downloaded, 1, "kept through second 59");
        // A peer arriving meanwhile finds the count, and leaving again restarts the time.
        at(&mut s, 2, 10, AnnounceEvent::Started, 59);
        at(&mut s, 2, 10, AnnounceEvent::Stopped, 59);
        s.sweep(108);
        assert_eq!(s.counts(&[3; 20]), counts(0, 0, 1));
        s.sweep(109);
        assert_eq!(s.totals().torrents, 0, "dropped once its time is up");
        assert_eq!(s.counts(&[3; 20]), counts(0, 0, 0));
        s.check_invariants();
    }

    #[test]
    fn a_swarm_emptied_by_expiry_keeps_its_count_too_and_none_is_kept_without_one() {
        let mut s = Shard::new(100);
        s.keep_downloaded(50);
        at(&mut s, 1, 0, AnnounceEvent::Completed, 0);
        s.announce(
            [1, 2, 3, 4],
            &announce(4, 1, 10, AnnounceEvent::Started),
            50,
            0,
            |_| {},
        )
        .unwrap();
        // Both peers expire at 100: torrent 3 counted a download, torrent 4 none.
        s.sweep(100);
        assert_eq!(s.totals().torrents, 1);
        assert_eq!(s.counts(&[3; 20]).downloaded, 1);
        s.sweep(149);
        assert_eq!(s.totals().torrents, 1);
        s.sweep(150);
        assert_eq!(s.totals().torrents, 0);
        // Keeping off: dropped with the last peer.
        let mut s = Shard::new(100);
        at(&mut s, 1, 0, AnnounceEvent::Completed, 0);
        at(&mut s, 1, 0, AnnounceEvent::Stopped, 1);
        assert_eq!(s.totals().torrents, 0);
    }

    #[test]
    fn completed_counts_once_per_download() {
        let mut s = Shard::new(100);
        let ip = [1, 2, 3, 4];
        s.announce(
            ip,
            &announce(3, 1, 10, AnnounceEvent::Started),
            50,
            0,
            |_| {},
        )
        .unwrap();
        let c = s
            .announce(
                ip,
                &announce(3, 1, 0, AnnounceEvent::Completed),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!((c.seeders, c.leechers, c.downloaded), (1, 0, 1));
        let c = s
            .announce(
                ip,
                &announce(3, 1, 0, AnnounceEvent::Completed),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!(c.downloaded, 1);
    }

    #[test]
    fn same_ip_new_source_port_same_announced_port_is_one_peer() {
        // A peer is its IP and announced port: the source port is not part of it.
        let mut s = Shard::new(100);
        for _ in 0..3 {
            put(
                &mut s,
                [5, 5, 5, 5],
                announce(4, 6881, 5, AnnounceEvent::None),
            );
        }
        assert_eq!(s.counts(&[4; 20]).leechers, 1);
    }

    #[test]
    fn masks_keep_the_subnet_bits_only() {
        let v4 = [10u8, 1, 2, 3];
        assert_eq!(v4.masked(24), [10, 1, 2, 0]);
        assert_eq!(v4.masked(12), [10, 0, 0, 0]);
        assert_eq!(v4.masked(32), v4);
        assert_eq!(v4.masked(0), [0; 4]);
        let v6: [u8; 16] =
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xabcd, 0x12, 0, 0, 0, 1).octets();
        let want: [u8; 16] = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xabcd, 0, 0, 0, 0, 0).octets();
        assert_eq!(v6.masked(48), want);
        assert_eq!(v6.masked(128), v6);
        assert_eq!(v6.masked(0), [0; 16]);
    }

    /// Announces a leecher at `ip` to torrent 5 (numwant `want`); the peers handed back.
    fn near<I: Family>(s: &mut Shard, ip: I, port: u16, want: usize) -> Vec<(I, u16)> {
        let mut got = Vec::new();
        s.announce(
            ip,
            &announce(5, port, 10, AnnounceEvent::Started),
            want,
            0,
            |p| got.push((p.ip, p.port)),
        )
        .unwrap();
        got
    }

    /// Checks a reply of `want` peers: distinct, the `same` ones of the announcer's subnet
    /// first, then none of them again.
    fn check_near<I: Family + std::fmt::Debug>(
        got: &[(I, u16)],
        want: usize,
        same: usize,
        subnet: impl Fn(&I) -> bool,
    ) {
        assert_eq!(got.len(), want, "exactly numwant: {got:?}");
        let mut seen = got.to_vec();
        seen.sort_by_key(|(ip, port)| (ip.octets().to_vec(), *port));
        seen.dedup();
        assert_eq!(seen.len(), got.len(), "no peer twice: {got:?}");
        assert!(
            got[..same].iter().all(|(ip, _)| subnet(ip)),
            "own subnet first: {got:?}"
        );
        assert_eq!(
            got.iter().filter(|(ip, _)| subnet(ip)).count(),
            same,
            "{got:?}"
        );
    }

    #[test]
    fn subnet_preference_hands_the_announcers_subnet_first_in_both_families() {
        let mut s = Shard::new(100);
        s.prefer_subnets(24, 48);
        // 60 IPv4 peers over six other /24s of 10/8, and 5 in the announcer's 10.1.2.0/24.
        for i in 0..60u16 {
            near(&mut s, [10, 3 + (i % 6) as u8, 9, i as u8], 1000 + i, 0);
        }
        for i in 0..5u16 {
            near(&mut s, [10, 1, 2, 1 + i as u8], 2000 + i, 0);
        }
        let got = near(&mut s, [10, 1, 2, 200], 3000, 8);
        check_near(&got, 8, 5, |ip| ip[..3] == [10, 1, 2]);
        // Asking for fewer than the subnet holds: only subnet peers.
        let got = near(&mut s, [10, 1, 2, 201], 3001, 3);
        check_near(&got, 3, 3, |ip| ip[..3] == [10, 1, 2]);
        // IPv6: the same by /48.
        let v6 = |a: u16, b: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, 0, 0, b).octets();
        for i in 0..40u16 {
            near(&mut s, v6(100 + i % 4, i + 1), 4000 + i, 0);
        }
        for i in 0..4u16 {
            near(&mut s, v6(7, i + 1), 5000 + i, 0);
        }
        let got = near(&mut s, v6(7, 999), 6000, 10);
        check_near(&got, 10, 4, |ip| ip[..6] == v6(7, 0)[..6]);
        s.check_invariants();
        // A stop leaves the index: that peer is not handed out any more.
        s.announce(
            [10, 1, 2, 1],
            &announce(5, 2000, 10, AnnounceEvent::Stopped),
            0,
            0,
            |_| {},
        )
        .unwrap();
        let got = near(&mut s, [10, 1, 2, 202], 3002, 8);
        check_near(&got, 8, 6, |ip| ip[..3] == [10, 1, 2]);
        assert!(!got.contains(&([10, 1, 2, 1], 2000)));
    }

    #[test]
    fn a_big_swarm_gets_a_subnet_index_that_re_announces_leave_alone() {
        let mut s = Shard::new(100);
        s.prefer_subnets(24, 0);
        let ip = |i: u16| [10, 7, (i / 8) as u8, i as u8];
        for i in 0..40u16 {
            near(&mut s, ip(i), 1000 + i, 0);
        }
        // Past INDEX_AT peers the announces themselves build the index, not only a sweep.
        let index = <[u8; 4]>::subnets(&mut s.subnets).unwrap();
        assert!(index.is_indexed(&[5; 20]));
        for i in 0..40u16 {
            near(&mut s, ip(i), 1000 + i, 0);
        }
        // A re-announce is no new peer: the index still names each peer once.
        s.check_invariants();
    }

    #[test]
    fn stops_drop_the_subnet_index_below_half_its_size_not_before() {
        let mut s = Shard::new(100);
        s.prefer_subnets(24, 0);
        let ip = |i: u16| [10, 7, (i / 8) as u8, i as u8];
        for i in 0..40u16 {
            near(&mut s, ip(i), 1000 + i, 0);
        }
        let stop = |s: &mut Shard, i: u16| {
            let a = announce(5, 1000 + i, 10, AnnounceEvent::Stopped);
            s.announce(ip(i), &a, 0, 0, |_| {}).unwrap();
        };
        let indexed = |s: &mut Shard| {
            <[u8; 4]>::subnets(&mut s.subnets)
                .unwrap()
                .is_indexed(&[5; 20])
        };
        // Down to 16 (INDEX_AT / 2) peers the index stays, so a set hovering near the size
        // does not rebuild it on every announce; at 15 it goes.
        for i in 0..24u16 {
            stop(&mut s, i);
            assert!(indexed(&mut s), "index dropped at {} peers", 39 - i);
            s.check_invariants();
        }
        stop(&mut s, 24);
        assert!(!indexed(&mut s), "index kept at 15 peers");
        // Back past INDEX_AT by announces: indexed again, and still true to the set.
        for i in 0..20u16 {
            near(&mut s, ip(i), 1000 + i, 0);
        }
        assert!(indexed(&mut s));
        s.check_invariants();
        let got = near(&mut s, [10, 7, 0, 200], 3000, 8);
        check_near(&got, 8, 8, |ip| ip[..3] == [10, 7, 0]);
    }

    #[test]
    #[should_panic(expected = "subnet index size")]
    fn the_invariant_check_sees_an_index_out_of_step_with_its_set() {
        let mut s = Shard::new(100);
        s.prefer_subnets(24, 0);
        for i in 0..40u16 {
            near(&mut s, [10, 7, 0, i as u8], 1000 + i, 0);
        }
        // Remove a peer from the set behind the index's back.
        let t = s.torrents.get_mut(&[5; 20]).unwrap();
        t.v4.remove(([10, 7, 0, 3], 1003), &s.hasher);
        s.check_invariants();
    }

    #[test]
    fn candidates_and_samples_follow_the_announcers_role() {
        let mut s = Shard::new(100);
        put(
            &mut s,
            [1, 1, 1, 1],
            announce(1, 1, 0, AnnounceEvent::Started),
        );
        put(
            &mut s,
            [2, 2, 2, 2],
            announce(1, 2, 9, AnnounceEvent::Started),
        );
        put(
            &mut s,
            [3, 3, 3, 3],
            announce(1, 3, 9, AnnounceEvent::Started),
        );
        let hash = [1; 20];
        assert_eq!(
            s.candidates::<[u8; 4]>(&hash, true),
            2,
            "a seeder gets leechers"
        );
        assert_eq!(
            s.candidates::<[u8; 4]>(&hash, false),
            3,
            "a leecher gets everyone"
        );
        assert_eq!(s.candidates::<[u8; 16]>(&hash, false), 0, "no IPv6 peers");
        assert_eq!(
            s.candidates::<[u8; 4]>(&[9; 20], false),
            0,
            "no such torrent"
        );
        let mut got = Vec::new();
        let n = s.sample::<[u8; 4]>(&hash, true, 10, ([2, 2, 2, 2], 2), |p| got.push(p.port));
        assert_eq!(
            (n, got.clone()),
            (1, vec![3]),
            "leechers only, the skipped one left out"
        );
        got.clear();
        let n = s.sample::<[u8; 4]>(&hash, false, 10, ([9, 9, 9, 9], 9), |p| got.push(p.port));
        got.sort();
        assert_eq!((n, got), (3, vec![1, 2, 3]));
        let n = s.sample::<[u8; 4]>(&hash, false, 2, ([9, 9, 9, 9], 9), |_| {});
        assert_eq!(n, 2, "at most want");
        assert_eq!(
            s.sample::<[u8; 4]>(&[9; 20], false, 5, ([9, 9, 9, 9], 9), |_| {}),
            0
        );
    }

    #[test]
    fn without_preference_no_subnet_index_is_kept() {
        let mut s = Shard::new(100);
        s.prefer_subnets(0, 0);
        assert!(<[u8; 4]>::subnets(&mut s.subnets).is_none());
        assert!(<[u8; 16]>::subnets(&mut s.subnets).is_none());
        s.prefer_subnets(24, 0);
        assert!(<[u8; 4]>::subnets(&mut s.subnets).is_some());
        assert!(<[u8; 16]>::subnets(&mut s.subnets).is_none());
        s.prefer_subnets(0, 48);
        assert!(<[u8; 4]>::subnets(&mut s.subnets).is_none());
        assert!(<[u8; 16]>::subnets(&mut s.subnets).is_some());
    }

    #[test]
    fn families_are_apart() {
        let mut s = Shard::new(100);
        let a = announce(1, 1, 5, AnnounceEvent::Started);
        s.announce([1, 1, 1, 1], &a, 50, 0, |_| {}).unwrap();
        let mut got = 0;
        let c = s
            .announce(
                [0u8; 16],
                &announce(1, 2, 5, AnnounceEvent::None),
                50,
                0,
                |_| got += 1,
            )
            .unwrap();
        assert_eq!(got, 0, "an IPv6 announcer gets no IPv4 peers");
        assert_eq!(c.leechers, 2, "counts span both families");
        // Seeders too: two IPv4 and three IPv6 ones.
        for port in 10..12 {
            put(&mut s, [1; 4], announce(1, port, 0, AnnounceEvent::None));
        }
        for port in 10..13 {
            let c = s
                .announce(
                    [7; 16],
                    &announce(1, port, 0, AnnounceEvent::None),
                    0,
                    0,
                    |_| {},
                )
                .unwrap();
            assert_eq!(c.seeders, 2 + u32::from(port - 9));
        }
        assert_eq!(s.counts(&[1; 20]), counts(5, 2, 0));
        s.check_invariants();
        // The IPv6 set goes once its last peer stops; the torrent stays for its IPv4 peers.
        for (ip, port) in [([0u8; 16], 2), ([7; 16], 10), ([7; 16], 11), ([7; 16], 12)] {
            s.announce(
                ip,
                &announce(1, port, 0, AnnounceEvent::Stopped),
                0,
                0,
                |_| {},
            )
            .unwrap();
        }
        let t = s.torrents.get(&[1u8; 20]).unwrap();
        assert!(t.v6().is_none(), "an empty IPv6 set is kept");
        assert_eq!(s.counts(&[1; 20]), counts(2, 1, 0));
        s.check_invariants();
    }

    fn counts(seeders: u32, leechers: u32, downloaded: u32) -> SwarmCounts {
        SwarmCounts {
            seeders,
            leechers,
            downloaded,
        }
    }

    #[test]
    fn refusals_say_why_and_fit_an_error_reply() {
        // What a refused client reads: over UDP the error text is cut to the request's
        // length, so it must fit whole after the 8-byte error header of a 98-byte announce.
        for (refused, text) in [
            (Refused::TrackerFull, "tracker is full"),
            (Refused::TorrentFull, "torrent is full"),
        ] {
            assert_eq!(refused.message(), text);
            assert_eq!(refused.to_string(), text);
            assert!(text.len() <= crate::protocol::udp::ANNOUNCE_LEN - 8);
        }
    }

    #[test]
    fn sweep_counts_peers_of_both_families() {
        let mut s = Shard::new(100);
        put(&mut s, [1; 4], announce(1, 1, 0, AnnounceEvent::None));
        for port in 1..=3 {
            s.announce(
                [2; 16],
                &announce(1, port, 5, AnnounceEvent::None),
                0,
                0,
                |_| {},
            )
            .unwrap();
        }
        s.announce(
            [3; 16],
            &announce(2, 1, 5, AnnounceEvent::None),
            0,
            0,
            |_| {},
        )
        .unwrap();
        assert_eq!(s.totals(), totals(2, 1, 4));
        assert_eq!(s.sweep(99), 0);
        assert_eq!(s.sweep(100), 5, "one IPv4 and four IPv6 peers went");
        assert_eq!(s.totals(), ShardTotals::default());
        s.check_invariants();
    }

    #[test]
    fn sweep_keeps_running_totals_when_part_of_a_swarm_expires() {
        let mut s = Shard::new(100);
        // Torrent 1: two leechers and a seeder due at 100, a leecher and a seeder due at 150.
        for (port, left, now) in [(1, 5, 0), (2, 5, 0), (3, 5, 50), (4, 0, 0), (5, 0, 50)] {
            s.announce(
                [1; 4],
                &announce(1, port, left, AnnounceEvent::None),
                0,
                now,
                |_| {},
            )
            .unwrap();
        }
        // Torrent 2: a leecher and a seeder due at 150.
        for (port, left) in [(1, 5), (2, 0)] {
            s.announce(
                [2; 4],
                &announce(2, port, left, AnnounceEvent::None),
                0,
                50,
                |_| {},
            )
            .unwrap();
        }
        assert_eq!(s.totals(), totals(2, 3, 4));
        assert_eq!(s.sweep(100), 3);
        assert_eq!(s.totals(), totals(2, 2, 2));
        assert_eq!(s.counts(&[1; 20]), counts(1, 1, 0));
        s.check_invariants();
    }

    #[test]
    fn check_invariants_notices_a_corrupt_shard() {
        // The proptests and fuzz targets lean on this check: it must fail on a broken shard.
        let panics = |s: &Shard| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.check_invariants())).is_err()
        };
        let sound = || {
            let mut s = Shard::new(100);
            put(&mut s, [1; 4], announce(1, 1, 0, AnnounceEvent::None));
            s.announce(
                [2; 16],
                &announce(1, 2, 5, AnnounceEvent::None),
                0,
                0,
                |_| {},
            )
            .unwrap();
            s
        };
        assert!(!panics(&sound()));
        let mut s = sound();
        s.leechers += 1;
        assert!(panics(&s), "a drifted running total passed");
        let mut s = sound();
        s.torrents.get_or_add(&[9; 20], true);
        assert!(panics(&s), "an empty torrent passed");
        let mut s = sound();
        *s.torrents
            .get_mut(&[1; 20])
            .unwrap()
            .v4
            .store
            .v6_or_insert() = PeerSet::default();
        assert!(panics(&s), "an empty IPv6 set passed");
    }

    fn totals(torrents: usize, seeders: usize, leechers: usize) -> ShardTotals {
        ShardTotals {
            torrents,
            seeders,
            leechers,
        }
    }

    #[test]
    fn ipv4_mapped_announces_as_ipv4() {
        let mut s = Shard::new(100);
        put(
            &mut s,
            [1, 2, 3, 4],
            announce(1, 1, 5, AnnounceEvent::Started),
        );
        let mut got = Vec::new();
        let mapped: IpAddr = "::ffff:9.9.9.9".parse().unwrap();
        s.announce_ip(
            mapped,
            &announce(1, 2, 5, AnnounceEvent::None),
            50,
            0,
            |ip, port| got.push((ip, port)),
        )
        .unwrap();
        assert_eq!(got, vec![("1.2.3.4".parse().unwrap(), 1)]);
    }

    #[test]
    fn numwant_caps_reply() {
        let mut s = Shard::new(100);
        for port in 1..=100 {
            put(
                &mut s,
                [1, 1, 1, 1],
                announce(1, port, 5, AnnounceEvent::None),
            );
        }
        let mut n = 0;
        s.announce(
            [2, 2, 2, 2],
            &announce(1, 1, 5, AnnounceEvent::None),
            30,
            0,
            |_| n += 1,
        )
        .unwrap();
        assert_eq!(n, 30);
    }

    #[test]
    fn sweep_expires_peers_and_drops_empty_torrents() {
        let mut s = Shard::new(100);
        put(&mut s, [1, 1, 1, 1], announce(1, 1, 5, AnnounceEvent::None));
        s.announce(
            [1, 1, 1, 1],
            &announce(2, 1, 5, AnnounceEvent::None),
            50,
            50,
            |_| {},
        )
        .unwrap();
        assert_eq!(s.sweep(99), 0);
        assert_eq!(s.sweep(100), 1);
        assert_eq!(s.totals().torrents, 1);
        assert_eq!(s.sweep(150), 1);
        assert_eq!(s.totals(), ShardTotals::default());
        s.check_invariants();
    }

    #[test]
    fn running_totals_follow_every_change() {
        let mut s = Shard::new(100);
        let t = |s: &Shard| {
            let t = s.totals();
            (t.torrents, t.seeders, t.leechers)
        };
        put(&mut s, [1; 4], announce(1, 1, 5, AnnounceEvent::Started));
        put(&mut s, [2; 4], announce(1, 2, 0, AnnounceEvent::Started));
        s.announce(
            [3; 16],
            &announce(2, 3, 5, AnnounceEvent::None),
            50,
            10,
            |_| {},
        )
        .unwrap();
        assert_eq!(t(&s), (2, 1, 2));
        // A leecher finishing becomes a seeder; a repeat changes nothing.
        put(&mut s, [1; 4], announce(1, 1, 0, AnnounceEvent::Completed));
        put(&mut s, [1; 4], announce(1, 1, 0, AnnounceEvent::None));
        assert_eq!(t(&s), (2, 2, 1));
        put(&mut s, [2; 4], announce(1, 2, 0, AnnounceEvent::Stopped));
        put(&mut s, [9; 4], announce(1, 9, 0, AnnounceEvent::Stopped));
        assert_eq!(t(&s), (2, 1, 1));
        s.check_invariants();
        assert_eq!(s.sweep(100), 1);
        assert_eq!(t(&s), (1, 0, 1));
        s.check_invariants();
    }

    #[test]
    fn limits_refuse_new_torrents_and_peers_but_not_known_ones() {
        let limits = Limits {
            max_torrents: 2,
            max_peers_per_torrent: 3,
            ..Limits::NONE
        };
        let mut s = Shard::with_limits(100, limits);
        let a = |hash, port| announce(hash, port, 5, AnnounceEvent::Started);
        s.announce([1; 4], &a(1, 1), 50, 0, |_| {}).unwrap();
        s.announce([1; 4], &a(2, 1), 50, 0, |_| {}).unwrap();
        let mut handed = 0;
        assert_eq!(
            s.announce([1; 4], &a(3, 1), 50, 0, |_| handed += 1),
            Err(Refused::TrackerFull)
        );
        assert_eq!(s.totals().torrents, 2, "a refused torrent is not stored");
        // Two more peers fill torrent 1 (one of them IPv6: the limit spans families).
        s.announce([2; 4], &a(1, 1), 50, 0, |_| {}).unwrap();
        s.announce([2; 16], &a(1, 1), 50, 0, |_| {}).unwrap();
        assert_eq!(
            s.announce([3; 4], &a(1, 1), 50, 0, |_| handed += 1),
            Err(Refused::TorrentFull)
        );
        assert_eq!(handed, 0, "a refused announce is handed no peers");
        // Peers already held may announce again, finish and stop; a stop is never refused.
        let c = s
            .announce(
                [2; 4],
                &announce(1, 1, 0, AnnounceEvent::Completed),
                50,
                0,
                |_| {},
            )
            .unwrap();
        assert_eq!((c.seeders, c.leechers, c.downloaded), (1, 2, 1));
        put(&mut s, [3; 4], announce(3, 1, 5, AnnounceEvent::Stopped));
        put(&mut s, [2; 4], announce(1, 1, 0, AnnounceEvent::Stopped));
        s.announce([3; 4], &a(1, 1), 50, 0, |_| {}).unwrap();
        // Once a torrent empties, there is room for a new one.
        put(&mut s, [1; 4], announce(2, 1, 5, AnnounceEvent::Stopped));
        s.announce([1; 4], &a(3, 1), 50, 0, |_| {}).unwrap();
        assert_eq!(s.totals().torrents, 2);
        s.check_invariants();
    }

    fn quotas(peers: u32, new_torrents: u32) -> Quotas {
        Quotas {
            peers,
            new_torrents,
            exempt: crate::cidr::Networks::new(["127.0.0.0/8".parse().unwrap()]),
        }
    }

    #[test]
    fn sources_are_tracked_only_under_a_quota() {
        // Either quota alone turns tracking on; both 0 leave sources untracked, costing nothing.
        for (peers, new_torrents, tracked) in [(0, 0, false), (1, 0, true), (0, 1, true)] {
            let mut s = Shard::new(100);
            s.limit_sources(quotas(peers, new_torrents));
            let a = announce(1, 1, 5, AnnounceEvent::Started);
            s.announce([10, 0, 0, 1], &a, 50, 0, |_| {}).unwrap();
            let held = s.held(IpAddr::from([10, 0, 0, 1]));
            assert_eq!(held.is_some(), tracked, "quotas {peers} / {new_torrents}");
            if peers > 0 {
                assert_eq!(held.map(|h| h.peers), Some(1));
            }
        }
    }

    #[test]
    fn a_source_holds_at_most_its_peers_and_gets_them_back_as_they_leave() {
        let mut s = Shard::new(100);
        s.limit_sources(quotas(3, 0));
        let a = |hash, port| announce(hash, port, 5, AnnounceEvent::Started);
        for hash in 1..=3 {
            s.announce([10, 0, 0, 1], &a(hash, 1), 50, 0, |_| {})
                .unwrap();
        }
        let mut handed = 0;
        assert_eq!(
            s.announce([10, 0, 0, 1], &a(1, 2), 50, 0, |_| handed += 1),
            Err(Refused::SourcePeers)
        );
        assert_eq!(handed, 0, "a refused announce is handed no peers");
        assert_eq!(
            s.announce([10, 0, 0, 1], &a(4, 1), 50, 0, |_| {}),
            Err(Refused::SourcePeers)
        );
        assert_eq!(
            s.totals().torrents,
            3,
            "the refused new torrent is not left behind"
        );
        // Its peers re-announce and complete as before; other sources are not affected.
        s.announce(
            [10, 0, 0, 1],
            &announce(2, 1, 0, AnnounceEvent::Completed),
            50,
            0,
            |_| {},
        )
        .unwrap();
        s.announce([10, 0, 0, 2], &a(4, 1), 50, 0, |_| {}).unwrap();
        // A stop gives one place back, an expiry the rest.
        put(
            &mut s,
            [10, 0, 0, 1],
            announce(1, 1, 5, AnnounceEvent::Stopped),
        );
        assert_eq!(s.held("10.0.0.1".parse().unwrap()).unwrap().peers, 2);
        s.announce([10, 0, 0, 1], &a(5, 1), 50, 0, |_| {}).unwrap();
        s.check_invariants();
        s.sweep(100);
        assert_eq!(
            s.held("10.0.0.1".parse().unwrap()),
            None,
            "forgotten once empty"
        );
        for hash in 6..=8 {
            s.announce([10, 0, 0, 1], &a(hash, 1), 50, 100, |_| {})
                .unwrap();
        }
        // Loopback is exempt.
        for port in 1..=10 {
            s.announce([127, 0, 0, 1], &a(9, port), 50, 100, |_| {})
                .unwrap();
        }
        s.check_invariants();
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let mut s = Shard::new(100);
        s.limit_sources(quotas(2, 0));
        let a = |hash, port| announce(hash, port, 5, AnnounceEvent::Started);
        let mut ip = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        s.announce(ip, &a(1, 1), 50, 0, |_| {}).unwrap();
        ip[15] = 2;
        s.announce(ip, &a(1, 1), 50, 0, |_| {}).unwrap();
        ip[8] = 0xff;
        assert_eq!(
            s.announce(ip, &a(2, 1), 50, 0, |_| {}),
            Err(Refused::SourcePeers)
        );
        ip[7] = 2;
        s.announce(ip, &a(2, 1), 50, 0, |_| {}).unwrap();
        s.check_invariants();
    }

    #[test]
    fn a_source_adds_at_most_its_new_torrents_an_hour() {
        let mut s = Shard::new(10_000);
        s.limit_sources(quotas(0, 2));
        let a = |hash, port| announce(hash, port, 5, AnnounceEvent::Started);
        s.announce([10, 0, 0, 1], &a(1, 1), 50, 0, |_| {}).unwrap();
        s.announce([10, 0, 0, 1], &a(2, 1), 50, 10, |_| {}).unwrap();
        assert_eq!(
            s.announce([10, 0, 0, 1], &a(3, 1), 50, 20, |_| {}),
            Err(Refused::SourceTorrents)
        );
        // Torrents that exist are not new: joining them is fine, as is another source adding.
        s.announce([10, 0, 0, 2], &a(3, 1), 50, 20, |_| {}).unwrap();
        s.announce([10, 0, 0, 1], &a(3, 1), 50, 20, |_| {}).unwrap();
        // Leaving does not give the hour back; the next hour does.
        put(
            &mut s,
            [10, 0, 0, 1],
            announce(1, 1, 5, AnnounceEvent::Stopped),
        );
        assert_eq!(
            s.announce([10, 0, 0, 1], &a(4, 1), 50, sources::HOUR - 1, |_| {}),
            Err(Refused::SourceTorrents)
        );
        s.announce([10, 0, 0, 1], &a(4, 1), 50, sources::HOUR, |_| {})
            .unwrap();
        for hash in 10..20 {
            s.announce([127, 0, 0, 1], &a(hash, 1), 50, 0, |_| {})
                .unwrap();
        }
        s.check_invariants();
    }

    #[test]
    fn max_peers_bounds_the_shard_but_not_peers_it_holds() {
        let limits = Limits {
            max_peers: 3,
            ..Limits::NONE
        };
        let mut s = Shard::with_limits(100, limits);
        let a = |hash, port| announce(hash, port, 5, AnnounceEvent::Started);
        s.announce([1; 4], &a(1, 1), 50, 0, |_| {}).unwrap();
        s.announce([1; 4], &a(1, 2), 50, 0, |_| {}).unwrap();
        s.announce([1; 16], &a(2, 1), 50, 0, |_| {}).unwrap();
        assert_eq!(
            s.announce([1; 4], &a(1, 3), 50, 0, |_| {}),
            Err(Refused::TrackerFull)
        );
        assert_eq!(
            s.announce([2; 4], &a(3, 1), 50, 0, |_| {}),
            Err(Refused::TrackerFull)
        );
        assert_eq!(s.totals().torrents, 2);
        s.announce([1; 4], &a(1, 2), 50, 0, |_| {}).unwrap();
        put(&mut s, [1; 4], announce(1, 1, 5, AnnounceEvent::Stopped));
        s.announce([2; 4], &a(3, 1), 50, 0, |_| {}).unwrap();
        s.check_invariants();
    }

    #[test]
    fn a_full_shard_makes_room_by_dropping_torrents_kept_only_for_their_count() {
        let limits = Limits {
            max_torrents: 4,
            ..Limits::NONE
        };
        let mut s = Shard::with_limits(100, limits);
        s.keep_downloaded(1000);
        // Two live torrents, two kept for their downloads.
        for hash in 1..=4 {
            put(
                &mut s,
                [1; 4],
                announce(hash, 1, 0, AnnounceEvent::Completed),
            );
        }
        put(&mut s, [1; 4], announce(3, 1, 0, AnnounceEvent::Stopped));
        put(&mut s, [1; 4], announce(4, 1, 0, AnnounceEvent::Stopped));
        assert_eq!(s.totals().torrents, 4);
        s.announce(
            [2; 4],
            &announce(5, 1, 5, AnnounceEvent::Started),
            50,
            0,
            |_| {},
        )
        .unwrap();
        s.announce(
            [2; 4],
            &announce(6, 1, 5, AnnounceEvent::Started),
            50,
            0,
            |_| {},
        )
        .unwrap();
        assert_eq!(s.totals().torrents, 4);
        assert_eq!(
            (s.counts(&[3; 20]).downloaded, s.counts(&[4; 20]).downloaded),
            (0, 0)
        );
        // Now every torrent has peers: a new one is refused, and no live swarm is touched.
        assert_eq!(
            s.announce(
                [2; 4],
                &announce(7, 1, 5, AnnounceEvent::Started),
                50,
                0,
                |_| {}
            ),
            Err(Refused::TrackerFull)
        );
        for hash in [1, 2, 5, 6] {
            assert_eq!(
                s.counts(&[hash; 20]).seeders + s.counts(&[hash; 20]).leechers,
                1
            );
        }
        s.check_invariants();
    }
}
