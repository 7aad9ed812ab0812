//! The shard's map from info hash to torrent: torrents sit densely in slots, and a hashbrown
//! `HashTable` of 4-byte slot numbers finds them. A hash table of the torrents themselves keeps
//! an eighth of its buckets empty at best and half at worst, each as large as a torrent; here
//! the empty buckets cost 5 bytes and the torrents none (issue 14: bytes per peer). Slots come
//! in chunks of [`CHUNK`] that never move: the table grows a chunk at a time instead of copying
//! itself into a vector twice its size, so at most one chunk's room is held unused and no
//! announce waits while the whole table is copied.
//!
//! A removed torrent leaves its slot on a free list for the next one added, so slots never move
//! while the table is in use: a snapshot walks the slots a slice at a time between batches of
//! requests. Only `shrink_to`, which packs the slots after a large sweep, moves them; `layout`
//! counts those moments, so a walk that sees it change starts over instead of skipping or
//! repeating torrents.

use ahash::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use super::Torrent;
use crate::protocol::InfoHash;

type Slot = Option<(InfoHash, Torrent)>;

/// Slots per chunk: 40 KiB of them, so a million torrents take a thousand chunk pointers, few
/// enough to stay in cache beside the slots they lead to.
pub const CHUNK: usize = 1024;

type Chunk = Box<[Slot; CHUNK]>;

pub struct Torrents {
    index: HashTable<u32>,
    chunks: Vec<Chunk>,
    /// Slots handed out so far (in use or free): a walk covers `0..used`.
    used: usize,
    /// Slots emptied by removals, reused before a new one is handed out.
    free: Vec<u32>,
    hasher: RandomState,
    layout: u64,
    /// Where the next look for a torrent to evict starts: a cursor going round the slots,
    /// so repeated looks cover the whole table instead of leaving it to chance.
    evict_at: usize,
}

fn at(chunks: &[Chunk], slot: usize) -> &Slot {
    &chunks[slot / CHUNK][slot % CHUNK]
}

fn at_mut(chunks: &mut [Chunk], slot: usize) -> &mut Slot {
    &mut chunks[slot / CHUNK][slot % CHUNK]
}

fn key(chunks: &[Chunk], slot: u32) -> &InfoHash {
    &at(chunks, slot as usize)
        .as_ref()
        .expect("the index names only full slots")
        .0
}

fn new_chunk() -> Chunk {
    Box::new([const { None }; CHUNK])
}

impl Torrents {
    pub fn new() -> Self {
        Self {
            index: HashTable::new(),
            chunks: Vec::new(),
            used: 0,
            free: Vec::new(),
            hasher: RandomState::new(),
            layout: 0,
            evict_at: 0,
        }
    }

    fn hash(&self, info_hash: &InfoHash) -> u64 {
        self.hasher.hash_one(info_hash)
    }

    fn find(&self, info_hash: &InfoHash) -> Option<usize> {
        let chunks = &self.chunks;
        self.index
            .find(self.hash(info_hash), |&s| key(chunks, s) == info_hash)
            .map(|&s| s as usize)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Torrents the table has room for before it must grow: the larger of the index's and the
    /// slots' room, since either may hold memory a sweep should give back.
    pub fn capacity(&self) -> usize {
        self.index.capacity().max(self.chunks.len() * CHUNK)
    }

    pub fn get(&self, info_hash: &InfoHash) -> Option<&Torrent> {
        let s = self.find(info_hash)?;
        at(&self.chunks, s).as_ref().map(|(_, t)| t)
    }

    /// Looks the torrent up and starts loading its peers, so that a batch of lookups done
    /// back to back waits on memory for all of them at once rather than one after another.
    pub fn prefetch(&self, info_hash: &InfoHash) {
        if let Some(t) = self.get(info_hash) {
            t.v4.store.prefetch();
        }
    }

    pub fn get_mut(&mut self, info_hash: &InfoHash) -> Option<&mut Torrent> {
        let s = self.find(info_hash)?;
        at_mut(&mut self.chunks, s).as_mut().map(|(_, t)| t)
    }

    /// The torrent, added empty if absent and `may_add` (then with `true`); `None` if absent
    /// and not.
    pub fn get_or_add(
        &mut self,
        info_hash: &InfoHash,
        may_add: bool,
    ) -> Option<(&mut Torrent, bool)> {
        let hash = self.hash(info_hash);
        let (chunks, hs) = (&self.chunks, &self.hasher);
        let slot = match self.index.entry(
            hash,
            |&s| key(chunks, s) == info_hash,
            |&s| hs.hash_one(key(chunks, s)),
        ) {
            Entry::Occupied(e) => {
                let s = *e.get() as usize;
                let (_, t) = at_mut(&mut self.chunks, s).as_mut().expect("full slot");
                return Some((t, false));
            }
            Entry::Vacant(_) if !may_add => return None,
            Entry::Vacant(e) => {
                let s = self.free.pop().unwrap_or(self.used as u32);
                e.insert(s);
                s as usize
            }
        };
        if slot == self.used {
            if slot == self.chunks.len() * CHUNK {
                self.chunks.push(new_chunk());
            }
            self.used += 1;
        }
        let full = at_mut(&mut self.chunks, slot).insert((*info_hash, Torrent::default()));
        Some((&mut full.1, true))
    }

    /// Empties the slot and takes its torrent out of the index.
    fn free_slot(&mut self, slot: usize) {
        if let Some((info_hash, _)) = at_mut(&mut self.chunks, slot).take() {
            let hash = self.hash(&info_hash);
            if let Ok(e) = self.index.find_entry(hash, |&s| s as usize == slot) {
                e.remove();
            }
            self.free.push(slot as u32);
        }
    }

    /// Drops one torrent without peers (one kept only for its download count), looked for in
    /// the next `probes` slots from where the last look stopped; whether one was dropped.
    /// No other torrent moves, so a snapshot walk goes on undisturbed.
    pub fn evict_empty(&mut self, probes: usize) -> bool {
        let slots = self.used.max(1);
        for _ in 0..probes.min(slots) {
            let s = self.evict_at % slots;
            self.evict_at = s + 1;
            if self.slot(s).is_some_and(|(_, t)| t.is_empty()) {
                self.free_slot(s);
                return true;
            }
        }
        false
    }

    pub fn remove(&mut self, info_hash: &InfoHash) {
        if let Some(s) = self.find(info_hash) {
            self.free_slot(s);
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&InfoHash, &mut Torrent) -> bool) {
        let (chunks, free) = (&mut self.chunks, &mut self.free);
        self.index.retain(|s| {
            let slot = at_mut(chunks, *s as usize);
            let (info_hash, t) = slot.as_mut().expect("the index names only full slots");
            if keep(info_hash, t) {
                return true;
            }
            *slot = None;
            free.push(*s);
            false
        });
    }

    /// Packs the torrents into the first slots and gives back the chunks and index room beyond
    /// them, keeping the index's room for at least `min_capacity` torrents. Every slot may
    /// move.
    pub fn shrink_to(&mut self, min_capacity: usize) {
        self.layout += 1;
        let mut packed = 0;
        for s in 0..self.used {
            if let Some(full) = at_mut(&mut self.chunks, s).take() {
                *at_mut(&mut self.chunks, packed) = Some(full);
                packed += 1;
            }
        }
        self.used = packed;
        self.chunks.truncate(packed.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
        self.free = Vec::new();
        self.index = HashTable::with_capacity(packed.max(min_capacity));
        let (chunks, hs) = (&self.chunks, &self.hasher);
        for s in 0..packed as u32 {
            self.index
                .insert_unique(hs.hash_one(key(chunks, s)), s, |&s| {
                    hs.hash_one(key(chunks, s))
                });
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&InfoHash, &Torrent)> {
        (0..self.used).filter_map(|s| self.slot(s))
    }

    /// Changes whenever slots may have moved.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// Slots in use or free: a walk covers `0..slots()`.
    pub fn slots(&self) -> usize {
        self.used
    }

    /// The torrent in slot `index`, if the slot is full.
    pub fn slot(&self, index: usize) -> Option<(&InfoHash, &Torrent)> {
        if index >= self.used {
            return None;
        }
        at(&self.chunks, index).as_ref().map(|(k, t)| (k, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u32) -> InfoHash {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&n.to_le_bytes());
        h
    }

    /// Every torrent a full walk by slot finds, in slot order.
    fn walk(t: &Torrents) -> Vec<InfoHash> {
        (0..t.slots())
            .filter_map(|i| t.slot(i).map(|(k, _)| *k))
            .collect()
    }

    #[test]
    fn a_walk_finds_every_torrent_once() {
        let mut t = Torrents::new();
        for n in 0..1000 {
            t.get_or_add(&hash(n), true).unwrap().0.downloaded = n;
        }
        let mut found = walk(&t);
        found.sort();
        let mut want: Vec<_> = (0..1000).map(hash).collect();
        want.sort();
        assert_eq!(found, want);
        assert_eq!(t.get(&hash(7)).unwrap().downloaded, 7);
    }

    #[test]
    fn slots_hold_until_the_layout_changes() {
        let mut t = Torrents::new();
        for n in 0..100 {
            t.get_or_add(&hash(n), true);
        }
        let layout = t.layout();
        let before: Vec<(usize, InfoHash)> = (0..t.slots())
            .filter_map(|b| t.slot(b).map(|(h, _)| (b, *h)))
            .collect();
        assert_eq!(before.len(), 100);
        // Removals, reuse of the freed slots, and growth of both the slots and the index
        // leave every other torrent in its slot.
        for n in (0..100).step_by(3) {
            t.remove(&hash(n));
        }
        for n in 1000..21000 {
            t.get_or_add(&hash(n), true);
        }
        assert_eq!(t.layout(), layout, "no slot moved");
        for (b, k) in &before {
            let n = u32::from_le_bytes(k[..4].try_into().unwrap());
            let now = t.slot(*b).map(|(h, _)| *h);
            if n % 3 != 0 {
                assert_eq!(now, Some(*k), "torrent {n} left slot {b}");
            }
        }
        assert_eq!(
            t.slots(),
            20000 + 100 - 34,
            "the 34 freed slots were reused"
        );
        // A shrink packs the slots and says so; every torrent is still found.
        for n in 1000..21000 {
            t.remove(&hash(n));
        }
        let capacity = t.capacity();
        t.shrink_to(0);
        assert_ne!(t.layout(), layout, "a shrink moves slots");
        assert_eq!((t.len(), t.slots()), (66, 66));
        assert!(t.capacity() < capacity / 4, "memory given back");
        for n in 0..100 {
            assert_eq!(t.get(&hash(n)).is_some(), n % 3 != 0, "torrent {n}");
        }
        assert_eq!(walk(&t).len(), 66);
        t.get_or_add(&hash(7000), true);
        assert!(
            t.get(&hash(7000)).is_some(),
            "the packed table takes new torrents"
        );
    }

    #[test]
    fn get_or_add_adds_only_when_allowed() {
        let mut t = Torrents::new();
        assert!(t.get_or_add(&hash(1), false).is_none());
        assert_eq!(t.len(), 0);
        assert!(t.get_or_add(&hash(1), true).unwrap().1, "added");
        assert!(
            !t.get_or_add(&hash(1), false).unwrap().1,
            "present: returned"
        );
        assert!(
            !t.get_or_add(&hash(1), true).unwrap().1,
            "present: not added again"
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn eviction_drops_only_a_torrent_without_peers() {
        let mut t = Torrents::new();
        for n in 0..100 {
            let (torrent, _) = t.get_or_add(&hash(n), true).unwrap();
            torrent.v4.upsert(
                crate::swarm::Peer {
                    expires: 10,
                    ip: [1, 2, 3, 4],
                    port: 1,
                    counted: false,
                    client: 0,
                },
                false,
                &ahash::RandomState::new(),
            );
        }
        assert!(!t.evict_empty(1000), "every torrent has a peer");
        assert_eq!(t.len(), 100);
        t.get_or_add(&hash(500), true).unwrap().0.downloaded = 1;
        let layout = t.layout();
        assert!(t.evict_empty(1000));
        assert_eq!(t.len(), 100);
        assert!(t.get(&hash(500)).is_none(), "the empty one went");
        assert_eq!(t.layout(), layout, "nothing else moved");
        assert!(
            !Torrents::new().evict_empty(4),
            "an empty table has nothing to drop"
        );
    }
}
