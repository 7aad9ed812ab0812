//! The IPv4 store of a torrent, in 16 bytes (issue 14: bytes per peer). Most torrents of a
//! public tracker hold one to a few peers, and every byte of a torrent's slot is paid by all of
//! them, so the store takes the cheapest of four shapes for what it holds:
//!
//! - **empty**: no peers; the 12 bytes keep the second until which the torrent is kept for its
//!   download count;
//! - **one**: a single peer inline, its role in a flag: nothing allocated;
//! - **small**: 2 to [`SMALL_MAX`] peers in an allocation of exactly that many, no header;
//! - **big**: an allocation led by a [`Prefix`] (its capacity, the set's index, the torrent's
//!   IPv6 set), then room growing by half each time it fills.
//!
//! The IPv6 set hangs off the prefix because a slot has no room for another pointer, and a
//! torrent with IPv6 peers is rare enough to pay the prefix. After every change the store takes
//! the smallest shape that holds what it has; nothing else decides memory.

use std::alloc::{self, Layout};
use std::fmt;
use std::mem::size_of;
use std::num::NonZeroU32;
use std::ptr::{self, NonNull};

use hashbrown::HashTable;

use super::peers::{Peer, PeerSet, Store};

type P = Peer<[u8; 4]>;

/// Peers held without a prefix, in an allocation of exactly their number.
pub const SMALL_MAX: usize = 8;

/// What leads a big allocation.
#[repr(C)]
pub struct Prefix {
    cap: u32,
    index: Option<Box<HashTable<u32>>>,
    v6: Option<Box<PeerSet<[u8; 16]>>>,
}

/// Where the peers start in a big allocation.
const PEERS_AT: usize = size_of::<Prefix>();
const _: () = assert!(PEERS_AT % std::mem::align_of::<P>() == 0);

/// The meta word: never zero (so a free table slot costs nothing), then the shape, the role of
/// a lone peer, and the number of peers.
const LIVE: u32 = 1 << 31;
const SHAPE_SHIFT: u32 = 29;
const SHAPE: u32 = 3 << SHAPE_SHIFT;
const EMPTY: u32 = 0;
const ONE: u32 = 1 << SHAPE_SHIFT;
const SMALL: u32 = 2 << SHAPE_SHIFT;
const BIG: u32 = 3 << SHAPE_SHIFT;
const ONE_SEEDS: u32 = 1 << 28;
const LEN: u32 = (1 << 28) - 1;
/// IPv4 peers a store can count (the shard's limits keep torrents below it).
pub const MAX_LEN: usize = LEN as usize;

/// A pointer and the seeder count, packed to 4-byte alignment so the store is 16 bytes.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Block {
    ptr: NonNull<u8>,
    seeders: u32,
}

#[derive(Clone, Copy)]
#[repr(C)]
union Body {
    keep_until: u32,
    one: P,
    block: Block,
}

#[repr(C)]
pub struct Packed {
    body: Body,
    meta: NonZeroU32,
}

const _: () = assert!(size_of::<Packed>() == 16);
const _: () = assert!(size_of::<Option<Packed>>() == 16);

// SAFETY: a `Packed` owns its allocation outright and has no interior mutability; moving it to
// another thread moves that ownership with it.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

fn small_layout(len: usize) -> Layout {
    Layout::array::<P>(len).expect("a small block is a few peers")
}

fn big_layout(cap: usize) -> Layout {
    let (layout, at) = Layout::new::<Prefix>()
        .extend(Layout::array::<P>(cap).expect("peer count fits memory"))
        .expect("peer count fits memory");
    debug_assert_eq!(at, PEERS_AT);
    layout
}

fn allocate(layout: Layout) -> NonNull<u8> {
    // SAFETY: both layouts have a non-zero size (a prefix, or two peers at least).
    NonNull::new(unsafe { alloc::alloc(layout) })
        .unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// A hint to the CPU to load the cache line at `p`; it never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Default for Packed {
    fn default() -> Self {
        Self::empty(0)
    }
}

impl Packed {
    fn empty(keep_until: u32) -> Self {
        Self {
            body: Body { keep_until },
            meta: NonZeroU32::new(LIVE | EMPTY).expect("live bit set"),
        }
    }

    fn shape(&self) -> u32 {
        self.meta.get() & SHAPE
    }

    fn len(&self) -> usize {
        (self.meta.get() & LEN) as usize
    }

    fn set_meta(&mut self, shape: u32, len: usize, one_seeds: bool) {
        assert!(
            len <= LEN as usize,
            "a torrent holds at most {LEN} IPv4 peers"
        );
        let flag = if one_seeds { ONE_SEEDS } else { 0 };
        self.meta = NonZeroU32::new(LIVE | shape | flag | len as u32).expect("live bit set");
    }

    fn block(&self) -> Block {
        // SAFETY: called only in the small and big shapes, where the body is a block.
        debug_assert!(matches!(self.shape(), SMALL | BIG));
        unsafe { self.body.block }
    }

    fn prefix(&self) -> Option<&Prefix> {
        // SAFETY: a big block starts with an initialised prefix, owned by `self`.
        (self.shape() == BIG).then(|| unsafe { &*self.block().ptr.as_ptr().cast::<Prefix>() })
    }

    fn prefix_mut(&mut self) -> Option<&mut Prefix> {
        // SAFETY: as in `prefix`, and `&mut self` makes the access unique.
        (self.shape() == BIG).then(|| unsafe { &mut *self.block().ptr.as_ptr().cast::<Prefix>() })
    }

    /// Starts loading the store's block (its prefix and first peers) into cache without
    /// waiting for it; a store that holds its peer inline has nothing to load.
    pub fn prefetch(&self) {
        if matches!(self.shape(), SMALL | BIG) {
            prefetch(self.block().ptr.as_ptr());
        }
    }

    fn peers_ptr(&self) -> *mut P {
        match self.shape() {
            SMALL => self.block().ptr.as_ptr().cast(),
            // SAFETY: the peers of a big block start PEERS_AT bytes in, inside the allocation.
            BIG => unsafe { self.block().ptr.as_ptr().add(PEERS_AT).cast() },
            _ => unreachable!("only a block has a peers pointer"),
        }
    }

    /// Rebuilds the store around the first `keep` peers (and `push`, if given), with the
    /// prefix's index and IPv6 set carried over, in a big block of room `big` when asked or
    /// when the prefix must stay, else in the smallest shape that holds them. The one place
    /// memory is taken or given back.
    fn reshape(&mut self, keep: usize, push: Option<P>, big: Option<usize>) {
        let seeders = (self.seeders() as usize).min(keep);
        let (index, v6) = match self.prefix_mut() {
            Some(p) => (p.index.take(), p.v6.take()),
            None => (None, None),
        };
        let len = keep + usize::from(push.is_some());
        let big = big.or((index.is_some() || v6.is_some()).then_some(len));
        let mut next = match big {
            Some(cap) => {
                let cap = cap.max(len);
                let ptr = allocate(big_layout(cap));
                let prefix = Prefix {
                    cap: u32::try_from(cap).expect("capacity fits the meta word"),
                    index,
                    v6,
                };
                // SAFETY: a fresh allocation with room for the prefix at its start.
                unsafe { ptr.as_ptr().cast::<Prefix>().write(prefix) };
                let mut next = Self {
                    body: Body {
                        block: Block {
                            ptr,
                            seeders: seeders as u32,
                        },
                    },
                    meta: self.meta,
                };
                next.set_meta(BIG, len, false);
                next
            }
            None if len == 0 => Self::empty(0),
            None if len == 1 => {
                let one = push.unwrap_or_else(|| self.peers()[0]);
                let mut next = Self {
                    body: Body { one },
                    meta: self.meta,
                };
                next.set_meta(ONE, 1, seeders == 1);
                next
            }
            None => {
                let block = Block {
                    ptr: allocate(small_layout(len)),
                    seeders: seeders as u32,
                };
                let mut next = Self {
                    body: Body { block },
                    meta: self.meta,
                };
                next.set_meta(SMALL, len, false);
                next
            }
        };
        if matches!(next.shape(), SMALL | BIG) {
            let to = next.peers_ptr();
            // SAFETY: `to` has room for `len` peers; the source is this store's own first
            // `keep` peers, in another allocation (or inline), so the two do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(self.peers().as_ptr(), to, keep);
                if let Some(p) = push {
                    to.add(keep).write(p);
                }
            }
        }
        std::mem::swap(self, &mut next);
        // `next` now holds the old store, its prefix emptied: dropping it frees the old block.
    }

    /// Makes the store big, for a prefix to hold an index or an IPv6 set.
    fn make_big(&mut self) -> &mut Prefix {
        if self.shape() != BIG {
            let len = self.len();
            self.reshape(len, None, Some(len + len / 2));
        }
        self.prefix_mut().expect("just made big")
    }

    /// Takes the smallest shape again when the prefix may no longer be needed.
    fn settle(&mut self) {
        let Some(p) = self.prefix() else {
            return;
        };
        let (len, cap) = (self.len(), p.cap as usize);
        if p.index.is_none() && p.v6.is_none() && len <= SMALL_MAX {
            self.reshape(len, None, None);
        } else if cap >= 2 * len + SMALL_MAX {
            self.reshape(len, None, Some(len + len / 2));
        }
    }

    /// The torrent's IPv6 set, if it has one.
    pub fn v6(&self) -> Option<&PeerSet<[u8; 16]>> {
        self.prefix()?.v6.as_deref()
    }

    pub fn v6_mut(&mut self) -> Option<&mut PeerSet<[u8; 16]>> {
        self.prefix_mut()?.v6.as_deref_mut()
    }

    pub fn v6_or_insert(&mut self) -> &mut PeerSet<[u8; 16]> {
        self.make_big().v6.get_or_insert_with(Box::default)
    }

    /// Drops the IPv6 set once it is empty.
    pub fn drop_empty_v6(&mut self) {
        if let Some(p) = self.prefix_mut() {
            if p.v6.as_deref().is_some_and(PeerSet::is_empty) {
                p.v6 = None;
                self.settle();
            }
        }
    }

    /// While the torrent holds no peers at all: the second until which it is kept.
    pub fn keep_until(&self) -> u32 {
        if self.shape() == EMPTY {
            // SAFETY: the empty shape's body is its keeping time.
            unsafe { self.body.keep_until }
        } else {
            0
        }
    }

    /// Sets the keeping time; meaningless (and not kept) while the torrent holds peers.
    pub fn set_keep_until(&mut self, keep_until: u32) {
        if self.shape() == EMPTY {
            self.body.keep_until = keep_until;
        }
    }

    /// Bytes allocated outside the 16 (tests).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        match self.shape() {
            SMALL => small_layout(self.len()).size(),
            BIG => big_layout(self.capacity()).size(),
            _ => 0,
        }
    }
}

impl Store<[u8; 4]> for Packed {
    fn peers(&self) -> &[P] {
        match self.shape() {
            EMPTY => &[],
            // SAFETY: the one shape's body is an initialised peer.
            ONE => std::slice::from_ref(unsafe { &self.body.one }),
            // SAFETY: a block holds `len` initialised peers from `peers_ptr`.
            _ => unsafe { std::slice::from_raw_parts(self.peers_ptr(), self.len()) },
        }
    }

    fn parts_mut(&mut self) -> (&mut [P], Option<&mut HashTable<u32>>) {
        match self.shape() {
            EMPTY => (&mut [], None),
            // SAFETY: as in `peers`.
            ONE => (std::slice::from_mut(unsafe { &mut self.body.one }), None),
            shape => {
                let len = self.len();
                let at = self.peers_ptr();
                // SAFETY: the peers and the prefix are disjoint parts of the block, both owned
                // by `self`, so handing out both mutably does not alias.
                let peers = unsafe { std::slice::from_raw_parts_mut(at, len) };
                let index = if shape == BIG {
                    let prefix = self.block().ptr.as_ptr().cast::<Prefix>();
                    unsafe { (*prefix).index.as_deref_mut() }
                } else {
                    None
                };
                (peers, index)
            }
        }
    }

    fn index(&self) -> Option<&HashTable<u32>> {
        self.prefix()?.index.as_deref()
    }

    fn set_index(&mut self, index: Option<HashTable<u32>>) {
        match index {
            Some(index) => self.make_big().index = Some(Box::new(index)),
            None => {
                if let Some(p) = self.prefix_mut() {
                    if p.index.take().is_some() {
                        self.settle();
                    }
                }
            }
        }
    }

    fn seeders(&self) -> u32 {
        match self.shape() {
            EMPTY => 0,
            ONE => u32::from(self.meta.get() & ONE_SEEDS != 0),
            _ => self.block().seeders,
        }
    }

    fn set_seeders(&mut self, seeders: u32) {
        match self.shape() {
            EMPTY => {}
            ONE => self.set_meta(ONE, 1, seeders == 1),
            _ => {
                let block = Block {
                    seeders,
                    ..self.block()
                };
                self.body.block = block;
            }
        }
    }

    fn push(&mut self, peer: P) {
        let len = self.len();
        if let Some(p) = self.prefix() {
            if len < p.cap as usize {
                // SAFETY: room for `cap` peers; slot `len` is the first free one.
                unsafe { self.peers_ptr().add(len).write(peer) };
                self.set_meta(BIG, len + 1, false);
                return;
            }
        }
        let big = (self.shape() == BIG || len + 1 > SMALL_MAX).then_some((len + 1) * 3 / 2);
        self.reshape(len, Some(peer), big);
    }

    fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        match self.shape() {
            BIG => {
                let seeders = (self.seeders() as usize).min(len) as u32;
                self.set_meta(BIG, len, false);
                self.set_seeders(seeders);
                self.settle();
            }
            _ => self.reshape(len, None, None),
        }
    }

    fn capacity(&self) -> usize {
        match self.shape() {
            ONE => 1,
            SMALL => self.len(),
            // An empty store has no prefix: no room.
            _ => self.prefix().map_or(0, |p| p.cap as usize),
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        match self.shape() {
            SMALL => {
                // SAFETY: a small block was allocated with exactly this layout.
                unsafe { alloc::dealloc(self.block().ptr.as_ptr(), small_layout(self.len())) }
            }
            BIG => {
                let ptr = self.block().ptr.as_ptr();
                let cap = self.capacity();
                // SAFETY: the prefix is initialised and dropped once, here; the block was
                // allocated with the big layout of its capacity. Peers need no drop.
                unsafe {
                    ptr::drop_in_place(ptr.cast::<Prefix>());
                    alloc::dealloc(ptr, big_layout(cap));
                }
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("peers", &self.peers())
            .field("seeders", &self.seeders())
            .field("indexed", &self.index().is_some())
            .field("v6", &self.v6())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::peers::{Previous, Spread};

    fn peer(n: u32) -> P {
        Peer {
            expires: 100 + n,
            ip: n.to_be_bytes(),
            port: 6881,
            counted: false,
            client: 0,
        }
    }

    fn v6_peer(n: u32) -> Peer<[u8; 16]> {
        Peer {
            expires: 100,
            ip: u128::from(n).to_be_bytes(),
            port: 1,
            counted: false,
            client: 0,
        }
    }

    /// The shape's name and the bytes it holds outside the 16.
    fn shape(set: &PeerSet<[u8; 4], Packed>) -> (&'static str, usize) {
        let name = match set.store.shape() {
            EMPTY => "empty",
            ONE => "one",
            SMALL => "small",
            _ => "big",
        };
        (name, set.store.allocated())
    }

    #[test]
    fn each_size_takes_the_smallest_shape_both_ways() {
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], Packed>::default();
        assert_eq!(shape(&set), ("empty", 0));
        let big = |n: usize| {
            let cap = set_cap_after_growth(n);
            ("big", big_layout(cap).size())
        };
        for n in 1..=40u32 {
            set.upsert(peer(n), n % 2 == 0, &hs);
            let len = n as usize;
            let want = match len {
                1 => ("one", 0),
                2..=SMALL_MAX => ("small", len * 12),
                _ => big(len),
            };
            assert_eq!(shape(&set), want, "{n} peers");
            set.check_invariants(&hs);
        }
        assert!(set.indexed(), "past INDEX_AT the index sits in the prefix");
        for n in (1..=40u32).rev() {
            set.remove(peer(n).key(), &hs);
            set.check_invariants(&hs);
            let len = n as usize - 1;
            let name = shape(&set).0;
            let want = match len {
                0 => "empty",
                1 => "one",
                2..=SMALL_MAX => "small",
                _ => "big",
            };
            assert_eq!(name, want, "{len} peers left");
            if want == "small" {
                assert_eq!(shape(&set).1, len * 12, "a small block is exact");
            }
            assert_eq!(set.len(), len);
            assert_eq!(set.seeders(), len / 2, "roles kept through every reshape");
        }
    }

    /// The room a big store has after growing one peer at a time to `n`: half again each time
    /// it fills, from the first big size.
    fn set_cap_after_growth(n: usize) -> usize {
        let mut cap = (SMALL_MAX + 1) * 3 / 2;
        while cap < n {
            cap = (cap + 1) * 3 / 2;
        }
        cap
    }

    #[test]
    fn a_lone_peer_keeps_its_role_and_place_inline() {
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], Packed>::default();
        set.upsert(peer(1), true, &hs);
        assert_eq!((set.seeders(), set.leechers()), (1, 0));
        assert!(set.count_download(peer(1).key(), &hs));
        assert!(!set.count_download(peer(1).key(), &hs), "counted once");
        assert_eq!(set.upsert(peer(1), false, &hs), Previous::Seeder);
        assert_eq!((set.seeders(), set.leechers()), (0, 1));
        assert!(set.peers()[0].counted, "a refresh keeps the counted mark");
        // A second peer moves both to a block, roles intact; its removal brings the first home.
        set.upsert(peer(2), true, &hs);
        assert_eq!(shape(&set).0, "small");
        assert_eq!(set.peers()[0].key(), peer(2).key(), "seeders first");
        assert_eq!(set.remove(peer(2).key(), &hs), Previous::Seeder);
        assert_eq!(shape(&set).0, "one");
        assert_eq!((set.seeders(), set.leechers()), (0, 1));
        assert!(set.peers()[0].counted);
    }

    #[test]
    fn the_keeping_time_lives_only_while_empty() {
        let hs = ahash::RandomState::new();
        let mut set = PeerSet::<[u8; 4], Packed>::default();
        set.store.set_keep_until(777);
        assert_eq!(set.store.keep_until(), 777);
        set.upsert(peer(1), false, &hs);
        assert_eq!(
            set.store.keep_until(),
            0,
            "no keeping time while holding peers"
        );
        set.store.set_keep_until(5);
        assert_eq!(
            set.peers()[0],
            peer(1),
            "setting it then does not touch the peer"
        );
        set.remove(peer(1).key(), &hs);
        assert_eq!(set.store.keep_until(), 0);
        set.store.set_keep_until(9);
        assert_eq!(set.store.keep_until(), 9);
        // Told it has no seeders (as a set is after its last one leaves), an empty store keeps
        // its keeping time: the body holds no block to count them in.
        Store::<[u8; 4]>::set_seeders(&mut set.store, 0);
        assert_eq!(set.store.keep_until(), 9);
        assert_eq!(set.seeders(), 0);
    }

    #[test]
    fn the_ipv6_set_hangs_off_the_prefix_and_goes_with_its_last_peer() {
        let hs = ahash::RandomState::new();
        for v4 in [0u32, 1, 5, 20, 40] {
            let mut set = PeerSet::<[u8; 4], Packed>::default();
            for n in 0..v4 {
                set.upsert(peer(n), n == 0, &hs);
            }
            let before: Vec<P> = set.peers().to_vec();
            let was = shape(&set).0;
            set.store.v6_or_insert().upsert(v6_peer(1), true, &hs);
            set.store.v6_or_insert().upsert(v6_peer(2), false, &hs);
            assert_eq!(shape(&set).0, "big", "{v4} IPv4 peers");
            assert_eq!(set.peers(), &before[..], "the IPv4 peers stay as they were");
            let v6 = set.store.v6().expect("set made");
            assert_eq!((v6.seeders(), v6.leechers()), (1, 1));
            // IPv4 changes leave the IPv6 set alone.
            set.upsert(peer(1000), false, &hs);
            set.remove(peer(1000).key(), &hs);
            assert_eq!(set.store.v6().map(PeerSet::len), Some(2));
            set.store.drop_empty_v6();
            assert!(set.store.v6().is_some(), "a set with peers stays");
            let v6 = set.store.v6_mut().unwrap();
            v6.remove(v6_peer(1).key(), &hs);
            v6.remove(v6_peer(2).key(), &hs);
            set.store.drop_empty_v6();
            assert!(set.store.v6().is_none());
            assert_eq!(shape(&set).0, was, "back to the shape of {v4} IPv4 peers");
            assert_eq!(set.peers(), &before[..]);
            set.check_invariants(&hs);
        }
    }

    #[test]
    fn expiry_gives_big_rooms_back_and_rebuilds_the_smallest_shape() {
        let hs = ahash::RandomState::new();
        for (kept, want) in [(0usize, "empty"), (1, "one"), (6, "small"), (30, "big")] {
            let mut set = PeerSet::<[u8; 4], Packed>::default();
            for n in 0..200u32 {
                let expires = if (n as usize) < kept { 10 } else { 1 };
                set.upsert(Peer { expires, ..peer(n) }, n % 3 == 0, &hs);
            }
            assert_eq!(set.expire(5, &hs, |_| {}), 200 - kept);
            assert_eq!(shape(&set).0, want, "{kept} kept");
            assert!(
                set.store.capacity() <= 2 * kept + SMALL_MAX,
                "room given back"
            );
            assert_eq!(set.seeders(), kept.div_ceil(3));
            set.check_invariants(&hs);
        }
    }

    #[test]
    fn random_changes_leave_it_holding_what_the_plain_store_holds() {
        // The packed store against the plain one under the same changes: the same peers, in
        // the same places, with the same roles, at every step.
        let hs = ahash::RandomState::new();
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut packed = PeerSet::<[u8; 4], Packed>::default();
            let mut plain = PeerSet::<[u8; 4], Spread<[u8; 4]>>::default();
            let span = [3, 12, 60][seed as usize % 3];
            for step in 0..3000u32 {
                let n = rng.u32(..span);
                let p = Peer {
                    expires: step + rng.u32(..50),
                    ..peer(n)
                };
                match rng.u8(..10) {
                    0..=5 => {
                        let seeder = rng.bool();
                        assert_eq!(packed.upsert(p, seeder, &hs), plain.upsert(p, seeder, &hs));
                    }
                    6 | 7 => assert_eq!(packed.remove(p.key(), &hs), plain.remove(p.key(), &hs)),
                    8 => assert_eq!(
                        packed.count_download(p.key(), &hs),
                        plain.count_download(p.key(), &hs)
                    ),
                    _ => assert_eq!(
                        packed.expire(step, &hs, |_| {}),
                        plain.expire(step, &hs, |_| {})
                    ),
                }
                assert_eq!(packed.peers(), plain.peers(), "seed {seed} step {step}");
                assert_eq!(packed.seeders(), plain.seeders());
                packed.check_invariants(&hs);
            }
        }
    }
}
