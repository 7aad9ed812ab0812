//! The peers of one torrent in one address family. Seeders sit at the front of one vector and
//! leechers behind them, so "leechers only" (the reply to a seeder) and "everyone" (the reply to
//! a leecher) are both one contiguous range to sample from. Small swarms, the great majority,
//! are searched linearly; past [`INDEX_AT`] peers a hash index from (IP, port) to position is
//! kept beside the vector.
//!
//! Memory is the point of the layout: most torrents of a public tracker hold one to a few peers,
//! so the per-torrent part must be small. The vector is a `ThinVec` (one pointer; its length and
//! capacity live in the allocation, and an empty one allocates nothing) that grows one peer at a
//! time up to four, then doubles.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use thin_vec::ThinVec;

/// Peers in a set before it is indexed; the index is dropped again below half of this.
pub const INDEX_AT: usize = 32;

/// An address family's IP as stored: 4 or 16 bytes.
pub trait PeerIp: Copy + Eq + Hash + 'static {
    fn octets(&self) -> &[u8];
}

impl PeerIp for [u8; 4] {
    fn octets(&self) -> &[u8] {
        self
    }
}

impl PeerIp for [u8; 16] {
    fn octets(&self) -> &[u8] {
        self
    }
}

/// One peer: identified by its IP and the port it announced (not its peer id, which anyone can
/// copy to evict somebody else). Its peer id is not kept at all: only a `compact=0` reply could
/// use it, and 20 of its bytes would be most of an IPv4 peer's 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer<I> {
    /// Second (process clock) from which the peer is gone: a sweep at `now >= expires` drops
    /// it, so a peer stored with `expires = t + lifetime` lives exactly `lifetime` seconds.
    pub expires: u32,
    pub ip: I,
    pub port: u16,
    /// Its completion is already in the torrent's `downloaded`: a peer counts one download
    /// per stay in the swarm, however often it says `completed`. Sits in padding: free.
    pub counted: bool,
    /// The client it runs, from its peer id ([`crate::protocol::peer_client`]), for the
    /// status page's count of peers by client. Also in padding.
    pub client: u8,
}

const _: () = assert!(std::mem::size_of::<Peer<[u8; 4]>>() == 12);
const _: () = assert!(std::mem::size_of::<Peer<[u8; 16]>>() == 24);

impl<I: PeerIp> Peer<I> {
    pub fn key(&self) -> (I, u16) {
        (self.ip, self.port)
    }
}

/// Whether the peer was in the set before an update, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    Absent,
    Leecher,
    Seeder,
}

/// Where a set keeps its peers, its seeder count and its index. The set's rules (roles,
/// positions, the index kept true) are written once in [`PeerSet`]; a store decides only how
/// the bytes are held and when memory is taken or given back.
pub trait Store<I>: Default {
    fn peers(&self) -> &[Peer<I>];
    /// The peers and the index at once, for updates that keep the two in step.
    fn parts_mut(&mut self) -> (&mut [Peer<I>], Option<&mut HashTable<u32>>);
    fn index(&self) -> Option<&HashTable<u32>>;
    fn set_index(&mut self, index: Option<HashTable<u32>>);
    fn seeders(&self) -> u32;
    fn set_seeders(&mut self, seeders: u32);
    /// Appends a peer, taking room as the store's growth rule says.
    fn push(&mut self, peer: Peer<I>);
    /// Keeps the first `len` peers, giving memory back as the store's rule says.
    fn truncate(&mut self, len: usize);
    /// Peers the store has room for without growing.
    fn capacity(&self) -> usize;
}

/// The plain store: a `ThinVec` (one pointer; its length and capacity live in the allocation,
/// and an empty one allocates nothing) growing one peer at a time up to four, then doubling,
/// and giving memory back once it holds more than four times what it needs.
#[derive(Debug)]
pub struct Spread<I> {
    peers: ThinVec<Peer<I>>,
    index: Option<Box<HashTable<u32>>>,
    seeders: u32,
}

impl<I> Default for Spread<I> {
    fn default() -> Self {
        Self {
            peers: ThinVec::new(),
            index: None,
            seeders: 0,
        }
    }
}

impl<I: PeerIp> Store<I> for Spread<I> {
    fn peers(&self) -> &[Peer<I>] {
        &self.peers
    }
    fn parts_mut(&mut self) -> (&mut [Peer<I>], Option<&mut HashTable<u32>>) {
        (&mut self.peers, self.index.as_deref_mut())
    }
    fn index(&self) -> Option<&HashTable<u32>> {
        self.index.as_deref()
    }
    fn set_index(&mut self, index: Option<HashTable<u32>>) {
        self.index = index.map(Box::new);
    }
    fn seeders(&self) -> u32 {
        self.seeders
    }
    fn set_seeders(&mut self, seeders: u32) {
        self.seeders = seeders;
    }
    fn push(&mut self, peer: Peer<I>) {
        let len = self.peers.len();
        if len == self.peers.capacity() {
            // Exact growth while small: most sets never pass a handful of peers.
            self.peers.reserve_exact(if len < 4 { 1 } else { len });
        }
        self.peers.push(peer);
    }
    fn truncate(&mut self, len: usize) {
        self.peers.truncate(len);
        if self.peers.capacity() > 4 * len.max(1) {
            self.peers.shrink_to_fit();
        }
    }
    fn capacity(&self) -> usize {
        self.peers.capacity()
    }
}

/// The peers of one torrent in one family, held in store `S`.
#[derive(Debug, Default)]
pub struct PeerSet<I, S = Spread<I>> {
    pub(super) store: S,
    _family: std::marker::PhantomData<I>,
}

const MOVING: u32 = u32::MAX;

impl<I: PeerIp, S: Store<I>> PeerSet<I, S> {
    pub fn len(&self) -> usize {
        self.store.peers().len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.peers().is_empty()
    }

    pub fn seeders(&self) -> usize {
        self.store.seeders() as usize
    }

    pub fn leechers(&self) -> usize {
        self.len() - self.seeders()
    }

    pub fn peers(&self) -> &[Peer<I>] {
        self.store.peers()
    }

    fn find(&self, key: (I, u16), hs: &impl BuildHasher) -> Option<usize> {
        let peers = self.store.peers();
        match self.store.index() {
            Some(index) => index
                .find(hs.hash_one(key), |&p| peers[p as usize].key() == key)
                .map(|&p| p as usize),
            None => peers.iter().position(|p| p.key() == key),
        }
    }

    /// Where the peer at `key` is (seeders first, then leechers).
    pub fn position(&self, key: (I, u16), hs: &impl BuildHasher) -> Option<usize> {
        self.find(key, hs)
    }

    /// Whether the peer at `key` is in the set.
    pub fn contains(&self, key: (I, u16), hs: &impl BuildHasher) -> bool {
        self.find(key, hs).is_some()
    }

    /// Hands `out` up to `want` peers other than `skip`: leechers only when `for_seeder`,
    /// everyone otherwise, as one contiguous run from a random start, wrapping.
    pub fn select(
        &self,
        skip: (I, u16),
        for_seeder: bool,
        want: usize,
        rng: &mut fastrand::Rng,
        mut out: impl FnMut(&Peer<I>),
    ) -> usize {
        let from = if for_seeder { self.seeders() } else { 0 };
        let range = &self.peers()[from..];
        if range.is_empty() || want == 0 {
            return 0;
        }
        let start = rng.usize(..range.len());
        let mut given = 0;
        for p in range[start..].iter().chain(&range[..start]) {
            if p.key() == skip {
                continue;
            }
            out(p);
            given += 1;
            if given == want {
                break;
            }
        }
        given
    }

    /// Adds or refreshes a peer, as a seeder or leecher.
    pub fn upsert(&mut self, peer: Peer<I>, seeder: bool, hs: &impl BuildHasher) -> Previous {
        let key = peer.key();
        let seeders = self.seeders();
        let Some(pos) = self.find(key, hs) else {
            let pos = self.len();
            self.store.push(peer);
            match self.store.parts_mut() {
                (peers, Some(index)) => {
                    index.insert_unique(hs.hash_one(key), pos as u32, |&p| {
                        hs.hash_one(peers[p as usize].key())
                    });
                }
                (peers, None) if peers.len() > INDEX_AT => self.rebuild_index(hs),
                _ => {}
            }
            if seeder {
                self.swap(pos, seeders, hs);
                self.store.set_seeders(seeders as u32 + 1);
            }
            return Previous::Absent;
        };
        let (peers, _) = self.store.parts_mut();
        let counted = peers[pos].counted || peer.counted;
        peers[pos] = Peer { counted, ..peer };
        let was_seeder = pos < seeders;
        if seeder && !was_seeder {
            self.swap(pos, seeders, hs);
            self.store.set_seeders(seeders as u32 + 1);
        } else if !seeder && was_seeder {
            self.swap(pos, seeders - 1, hs);
            self.store.set_seeders(seeders as u32 - 1);
        }
        if was_seeder {
            Previous::Seeder
        } else {
            Previous::Leecher
        }
    }

    /// Marks the peer at `key` as having its download counted; false if it already had (or
    /// is not in the set).
    pub fn count_download(&mut self, key: (I, u16), hs: &impl BuildHasher) -> bool {
        let Some(pos) = self.find(key, hs) else {
            return false;
        };
        let peer = &mut self.store.parts_mut().0[pos];
        !std::mem::replace(&mut peer.counted, true)
    }

    /// Removes a peer; says what it was.
    pub fn remove(&mut self, key: (I, u16), hs: &impl BuildHasher) -> Previous {
        let Some(mut pos) = self.find(key, hs) else {
            return Previous::Absent;
        };
        let seeders = self.seeders();
        let was_seeder = pos < seeders;
        if was_seeder {
            self.swap(pos, seeders - 1, hs);
            self.store.set_seeders(seeders as u32 - 1);
            pos = seeders - 1;
        }
        let last = self.len() - 1;
        self.swap(pos, last, hs);
        if let (_, Some(index)) = self.store.parts_mut() {
            if let Ok(e) = index.find_entry(hs.hash_one(key), |&p| p as usize == last) {
                e.remove();
            }
        }
        if self.store.index().is_some() && last < INDEX_AT / 2 {
            self.store.set_index(None);
        }
        self.store.truncate(last);
        if was_seeder {
            Previous::Seeder
        } else {
            Previous::Leecher
        }
    }

    /// Drops peers whose time is up, showing each to `gone`; returns how many went.
    pub fn expire(
        &mut self,
        now: u32,
        hs: &impl BuildHasher,
        mut gone: impl FnMut(&Peer<I>),
    ) -> usize {
        let before = self.len();
        let seeders = self.seeders();
        let (peers, _) = self.store.parts_mut();
        let mut kept = 0;
        let mut seeders_kept = 0;
        for read in 0..before {
            let p = peers[read];
            if p.expires > now {
                seeders_kept += u32::from(read < seeders);
                peers[kept] = p;
                kept += 1;
            } else {
                gone(&p);
            }
        }
        if kept == before {
            return 0;
        }
        self.store.set_index(None);
        self.store.set_seeders(seeders_kept);
        self.store.truncate(kept);
        if kept > INDEX_AT {
            self.rebuild_index(hs);
        }
        before - kept
    }

    fn rebuild_index(&mut self, hs: &impl BuildHasher) {
        let peers = self.store.peers();
        let mut index = HashTable::with_capacity(peers.len());
        for (pos, p) in peers.iter().enumerate() {
            index.insert_unique(hs.hash_one(p.key()), pos as u32, |&q| {
                hs.hash_one(peers[q as usize].key())
            });
        }
        self.store.set_index(Some(index));
    }

    /// Swaps two positions, keeping the index true. Entries are matched by position, not key,
    /// so the temporary MOVING mark keeps the two from being confused mid-swap.
    fn swap(&mut self, i: usize, j: usize, hs: &impl BuildHasher) {
        if i == j {
            return;
        }
        let (peers, index) = self.store.parts_mut();
        peers.swap(i, j);
        if let Some(index) = index {
            let (ki, kj) = (peers[j].key(), peers[i].key());
            let mut repoint = |key: (I, u16), from: u32, to: u32| {
                if let Some(p) = index.find_mut(hs.hash_one(key), |&p| p == from) {
                    *p = to;
                }
            };
            repoint(ki, i as u32, MOVING);
            repoint(kj, j as u32, i as u32);
            repoint(ki, MOVING, j as u32);
        }
    }

    /// Whether the set keeps an index (tests).
    pub fn indexed(&self) -> bool {
        self.store.index().is_some()
    }

    /// Checks the set's own invariants (tests and fuzzing).
    pub fn check_invariants(&self, hs: &impl BuildHasher) {
        assert!(self.seeders() <= self.len());
        assert!(self.store.capacity() >= self.len());
        for (pos, p) in self.peers().iter().enumerate() {
            assert_eq!(
                self.find(p.key(), hs),
                Some(pos),
                "peer {pos} not found at its place"
            );
        }
        if let Some(index) = self.store.index() {
            assert_eq!(index.len(), self.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::packed::Packed;

    fn peer(n: u32) -> Peer<[u8; 4]> {
        Peer {
            expires: 100 + n,
            ip: n.to_be_bytes(),
            port: 6881,
            counted: false,
            client: 0,
        }
    }

    #[test]
    fn upsert_remove_and_roles_with_and_without_index() {
        upsert_remove_and_roles_with_and_without_index_in::<Spread<[u8; 4]>>();
        upsert_remove_and_roles_with_and_without_index_in::<Packed>();
    }

    fn upsert_remove_and_roles_with_and_without_index_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        let hs = ahash::RandomState::new();
        for n in [5u32, 40, 300] {
            let mut set = PeerSet::<[u8; 4], S>::default();
            for i in 0..n {
                assert_eq!(set.upsert(peer(i), i % 3 == 0, &hs), Previous::Absent);
                set.check_invariants(&hs);
            }
            let seeders = (0..n).filter(|i| i % 3 == 0).count();
            assert_eq!(set.seeders(), seeders);
            assert_eq!(set.len(), n as usize);
            // Every leecher becomes a seeder, each saying what it was.
            for i in 0..n {
                let was = if i % 3 == 0 {
                    Previous::Seeder
                } else {
                    Previous::Leecher
                };
                assert_eq!(set.upsert(peer(i), true, &hs), was);
                set.check_invariants(&hs);
            }
            assert_eq!(set.seeders(), n as usize);
            // And back: the odd ones become leechers again.
            for i in (1..n).step_by(2) {
                assert_eq!(set.upsert(peer(i), false, &hs), Previous::Seeder);
                set.check_invariants(&hs);
            }
            assert_eq!(set.seeders(), n.div_ceil(2) as usize);
            assert_eq!(set.leechers(), (n / 2) as usize);
            for i in (0..n).step_by(2) {
                assert_eq!(set.remove(peer(i).key(), &hs), Previous::Seeder);
                assert_eq!(set.remove(peer(i).key(), &hs), Previous::Absent);
                set.check_invariants(&hs);
            }
            assert_eq!(set.len(), (n / 2) as usize);
            assert_eq!(set.seeders(), 0);
            for i in (1..n).step_by(2) {
                assert!(set.contains(peer(i).key(), &hs));
                assert_eq!(set.remove(peer(i).key(), &hs), Previous::Leecher);
                assert!(!set.contains(peer(i).key(), &hs));
                set.check_invariants(&hs);
            }
            assert!(set.is_empty());
        }
    }

    #[test]
    fn expire_keeps_roles_and_index() {
        expire_keeps_roles_and_index_in::<Spread<[u8; 4]>>();
        expire_keeps_roles_and_index_in::<Packed>();
    }

    fn expire_keeps_roles_and_index_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], S>::default();
        for i in 0..100 {
            set.upsert(peer(i), i % 2 == 0, &hs);
        }
        // expires = 100 + i, so at now=149 peers 0..=49 go.
        assert_eq!(set.expire(149, &hs, |_| {}), 50);
        set.check_invariants(&hs);
        assert_eq!(set.seeders(), 25);
        assert_eq!(set.leechers(), 25);
        assert!(set.peers().iter().all(|p| p.expires > 149));
    }

    #[test]
    fn select_skips_announcer_and_respects_roles() {
        select_skips_announcer_and_respects_roles_in::<Spread<[u8; 4]>>();
        select_skips_announcer_and_respects_roles_in::<Packed>();
    }

    fn select_skips_announcer_and_respects_roles_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        let hs = ahash::RandomState::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut set = PeerSet::<[u8; 4], S>::default();
        for i in 0..10 {
            set.upsert(peer(i), i < 4, &hs);
        }
        let mut got = Vec::new();
        let n = set.select(peer(5).key(), true, 100, &mut rng, |p| got.push(*p));
        assert_eq!(n, 5);
        assert!(got
            .iter()
            .all(|p| u32::from_be_bytes(p.ip) >= 4 && p.key() != peer(5).key()));
        got.clear();
        let n = set.select(peer(5).key(), false, 3, &mut rng, |p| got.push(*p));
        assert_eq!(n, 3);
        assert_eq!(got.len(), 3);
    }

    /// Peers `0..n`, every third a seeder.
    fn set_of<S: Store<[u8; 4]>>(n: u32, hs: &ahash::RandomState) -> PeerSet<[u8; 4], S> {
        let mut set = PeerSet::default();
        for i in 0..n {
            set.upsert(peer(i), i % 3 == 0, hs);
        }
        set
    }

    #[test]
    fn storage_grows_one_peer_at_a_time_up_to_four_then_doubles() {
        // The per-torrent memory promised in the module doc: nothing for an empty set, room
        // for exactly the peers held while small, doubling past four.
        let hs = ahash::RandomState::new();
        let mut set: PeerSet<[u8; 4]> = PeerSet::default();
        assert_eq!(set.store.capacity(), 0, "an empty set allocates nothing");
        for i in 0..70u32 {
            set.upsert(peer(i), i % 3 == 0, &hs);
            let n = i as usize + 1;
            let want = if n <= 4 { n } else { n.next_power_of_two() };
            assert_eq!(set.store.capacity(), want, "room for {n} peers");
            // A re-announce of a held peer never grows the set.
            set.upsert(peer(i / 2), false, &hs);
            assert_eq!(set.store.capacity(), want, "room after a re-announce");
        }
    }

    #[test]
    fn index_is_built_past_index_at_and_dropped_below_half() {
        index_is_built_past_index_at_and_dropped_below_half_in::<Spread<[u8; 4]>>();
        index_is_built_past_index_at_and_dropped_below_half_in::<Packed>();
    }

    fn index_is_built_past_index_at_and_dropped_below_half_in<
        S: Store<[u8; 4]> + std::fmt::Debug,
    >() {
        let hs = ahash::RandomState::new();
        let at = INDEX_AT as u32;
        let mut set = set_of::<S>(at, &hs);
        assert!(!set.indexed(), "{at} peers are searched linearly");
        set.upsert(peer(at), false, &hs);
        assert!(set.indexed(), "peer {} builds the index", at + 1);
        set.check_invariants(&hs);
        // Removals keep it down to half (no rebuild churn around the threshold)...
        let mut next = 0;
        while set.len() > INDEX_AT / 2 {
            set.remove(peer(next).key(), &hs);
            next += 1;
            assert!(set.indexed(), "index dropped at {} peers", set.len());
            set.check_invariants(&hs);
        }
        // ...and drop it below half.
        set.remove(peer(next).key(), &hs);
        assert_eq!(set.len(), INDEX_AT / 2 - 1);
        assert!(!set.indexed(), "index kept at {} peers", set.len());
        set.check_invariants(&hs);
        assert!(!set.contains(peer(next).key(), &hs));
        assert!(set.contains(peer(at).key(), &hs));
    }

    #[test]
    fn expiry_drops_a_peer_at_its_expiry_second_and_keeps_roles() {
        expiry_drops_a_peer_at_its_expiry_second_and_keeps_roles_in::<Spread<[u8; 4]>>();
        expiry_drops_a_peer_at_its_expiry_second_and_keeps_roles_in::<Packed>();
    }

    fn expiry_drops_a_peer_at_its_expiry_second_and_keeps_roles_in<
        S: Store<[u8; 4]> + std::fmt::Debug,
    >() {
        // A peer is gone from the second its `expires` names (see `Peer::expires`).
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], S>::default();
        for (i, expires) in [499u32, 500, 501].into_iter().enumerate() {
            let base = peer(i as u32);
            set.upsert(Peer { expires, ..base }, true, &hs);
            let leecher = peer(10 + i as u32);
            set.upsert(Peer { expires, ..leecher }, false, &hs);
        }
        assert_eq!(set.expire(498, &hs, |_| {}), 0, "nothing is due yet");
        assert_eq!((set.seeders(), set.leechers()), (3, 3));
        let mut gone = Vec::new();
        let n = set.expire(500, &hs, |p| gone.push(u32::from_be_bytes(p.ip)));
        assert_eq!(n, 4, "expires <= now goes");
        gone.sort_unstable();
        assert_eq!(gone, [0, 1, 10, 11], "each peer that went is shown once");
        assert_eq!((set.seeders(), set.leechers()), (1, 1));
        let mut left: Vec<(u32, u32)> = set
            .peers()
            .iter()
            .map(|p| (u32::from_be_bytes(p.ip), p.expires))
            .collect();
        left.sort_unstable();
        assert_eq!(left, [(2, 501), (12, 501)], "the peers due at 501 stay");
        assert!(set.contains(peer(2).key(), &hs) && set.contains(peer(12).key(), &hs));
        set.check_invariants(&hs);
        assert_eq!(
            set.expire(500, &hs, |_| {}),
            0,
            "a second sweep finds nothing"
        );
        assert_eq!(set.expire(501, &hs, |_| {}), 2);
        assert!(set.is_empty());
        assert_eq!(
            set.store.capacity(),
            0,
            "an emptied set gives its memory back"
        );
    }

    #[test]
    fn expiry_rebuilds_the_index_only_past_index_at() {
        expiry_rebuilds_the_index_only_past_index_at_in::<Spread<[u8; 4]>>();
        expiry_rebuilds_the_index_only_past_index_at_in::<Packed>();
    }

    fn expiry_rebuilds_the_index_only_past_index_at_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        // After an expiry the set is as if filled anew: indexed only past INDEX_AT peers.
        let hs = ahash::RandomState::new();
        let at = INDEX_AT as u32;
        for (kept, indexed) in [(at + 1, true), (at, false)] {
            let mut set = PeerSet::<[u8; 4], S>::default();
            for i in 0..at + 10 {
                // expires = 1 for the first `kept` peers, 0 for the rest.
                let expires = u32::from(i < kept);
                set.upsert(Peer { expires, ..peer(i) }, i % 2 == 0, &hs);
            }
            assert!(set.indexed());
            assert_eq!(set.expire(0, &hs, |_| {}), (at + 10 - kept) as usize);
            assert_eq!(set.indexed(), indexed, "index after expiry to {kept}");
            set.check_invariants(&hs);
        }
    }

    #[test]
    fn expiry_gives_memory_back_only_past_four_times_the_need() {
        // 64 slots (from 33..=64 peers); shrinking to fit happens only when more than four
        // times the survivors' room is held, so a set that shrinks a little keeps its room.
        let hs = ahash::RandomState::new();
        for (kept, capacity) in [(16u32, 64), (15, 15), (1, 1)] {
            let mut set: PeerSet<[u8; 4]> = PeerSet::default();
            for i in 0..64 {
                set.upsert(
                    Peer {
                        expires: u32::from(i < kept),
                        ..peer(i)
                    },
                    false,
                    &hs,
                );
            }
            assert_eq!(set.store.capacity(), 64);
            set.expire(0, &hs, |_| {});
            assert_eq!(set.len(), kept as usize);
            assert_eq!(set.store.capacity(), capacity, "room for {kept} survivors");
        }
    }

    #[test]
    fn select_hands_out_exactly_what_is_asked() {
        select_hands_out_exactly_what_is_asked_in::<Spread<[u8; 4]>>();
        select_hands_out_exactly_what_is_asked_in::<Packed>();
    }

    fn select_hands_out_exactly_what_is_asked_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], S>::default();
        for i in 0..10 {
            set.upsert(peer(i), i < 4, &hs);
        }
        let me = peer(5).key();
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut called = 0;
            assert_eq!(set.select(me, false, 0, &mut rng, |_| called += 1), 0);
            assert_eq!(called, 0, "numwant 0 hands out nothing");
            for (for_seeder, want, expect) in [(false, 100, 9), (true, 100, 5), (false, 4, 4)] {
                let mut got = Vec::new();
                let n = set.select(me, for_seeder, want, &mut rng, |p| got.push(p.key()));
                assert_eq!(
                    n, expect,
                    "seed {seed}, for seeder {for_seeder}, want {want}"
                );
                assert_eq!(got.len(), expect);
                assert!(!got.contains(&me), "the announcer got itself");
                got.sort_unstable();
                got.dedup();
                assert_eq!(got.len(), expect, "a peer handed out twice");
                if for_seeder {
                    assert!(
                        got.iter().all(|k| u32::from_be_bytes(k.0) >= 4),
                        "a seeder got a seeder"
                    );
                }
            }
        }
        // A seeder in a swarm of seeders gets nobody.
        let mut seeders = PeerSet::<[u8; 4], S>::default();
        for i in 0..3 {
            seeders.upsert(peer(i), true, &hs);
        }
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(seeders.select(me, true, 50, &mut rng, |_| {}), 0);
        assert_eq!(seeders.select(me, false, 50, &mut rng, |_| {}), 3);
    }

    #[test]
    fn check_invariants_notices_a_corrupt_set() {
        check_invariants_notices_a_corrupt_set_in::<Spread<[u8; 4]>>();
        check_invariants_notices_a_corrupt_set_in::<Packed>();
    }

    fn check_invariants_notices_a_corrupt_set_in<S: Store<[u8; 4]> + std::fmt::Debug>() {
        // The proptests and fuzz targets lean on this check: it must fail on a broken set.
        let hs = ahash::RandomState::new();
        let panics = |set: PeerSet<[u8; 4], S>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| set.check_invariants(&hs)))
                .is_err()
        };
        for n in [5, 40] {
            let mut set = set_of::<S>(n, &hs);
            set.store.set_seeders(n + 1);
            assert!(panics(set), "more seeders than peers passed ({n} peers)");
            // A peer moved without its index entry (or, unindexed, a key held twice).
            let mut set = set_of::<S>(n, &hs);
            let first = set.peers()[0];
            set.store.parts_mut().0[1] = first;
            assert!(panics(set), "a misplaced peer passed ({n} peers)");
            assert!(!panics(set_of::<S>(n, &hs)), "a sound set failed");
        }
    }

    #[test]
    fn octets_are_the_stored_address() {
        assert_eq!(PeerIp::octets(&[192u8, 0, 2, 1]), &[192, 0, 2, 1]);
        let v6: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(v6.octets(), &v6);
    }
}
