//! The shard's map from info hash to torrent, on hashbrown's `HashTable` so a snapshot can walk
//! it by bucket in slices between batches of requests. A bucket position stays valid while
//! entries are only added into free buckets and removed; it is invalidated when the table
//! reorganises (grows, shrinks, or rehashes in place to clear tombstones), which only an insert
//! into a table with no room left or an explicit shrink can do. `layout` counts those moments,
//! so a walk that sees it change starts over instead of skipping or repeating torrents.

use ahash::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use super::Torrent;
use crate::protocol::InfoHash;

pub struct Torrents {
    table: HashTable<(InfoHash, Torrent)>,
    hasher: RandomState,
    layout: u64,
    /// Where the next look for a torrent to evict starts: a cursor going round the buckets,
    /// so repeated looks cover the whole table instead of leaving it to chance.
    evict_at: usize,
}

impl Torrents {
    pub fn new() -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
            layout: 0,
            evict_at: 0,
        }
    }

    fn hash(&self, info_hash: &InfoHash) -> u64 {
        self.hasher.hash_one(info_hash)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn get(&self, info_hash: &InfoHash) -> Option<&Torrent> {
        self.table
            .find(self.hash(info_hash), |(k, _)| k == info_hash)
            .map(|(_, t)| t)
    }

    pub fn get_mut(&mut self, info_hash: &InfoHash) -> Option<&mut Torrent> {
        let hash = self.hash(info_hash);
        self.table
            .find_mut(hash, |(k, _)| k == info_hash)
            .map(|(_, t)| t)
    }

    /// The torrent, added empty if absent and `may_add` (then with `true`); `None` if absent
    /// and not.
    pub fn get_or_add(
        &mut self,
        info_hash: &InfoHash,
        may_add: bool,
    ) -> Option<(&mut Torrent, bool)> {
        let hash = self.hash(info_hash);
        if self.table.len() == self.table.capacity() {
            // The insert below may reorganise the table.
            self.layout += 1;
        }
        let hs = &self.hasher;
        match self
            .table
            .entry(hash, |(k, _)| k == info_hash, |(k, _)| hs.hash_one(k))
        {
            Entry::Occupied(e) => Some((&mut e.into_mut().1, false)),
            Entry::Vacant(_) if !may_add => None,
            Entry::Vacant(e) => Some((
                &mut e.insert((*info_hash, Torrent::default())).into_mut().1,
                true,
            )),
        }
    }

    /// Drops one torrent without peers (one kept only for its download count), looked for in
    /// the next `probes` buckets from where the last look stopped; whether one was dropped.
    /// Removing leaves every other bucket where it was, so a snapshot walk goes on undisturbed.
    pub fn evict_empty(&mut self, probes: usize) -> bool {
        let buckets = self.table.num_buckets().max(1);
        for _ in 0..probes.min(buckets) {
            let at = self.evict_at % buckets;
            self.evict_at = at + 1;
            if let Ok(e) = self.table.get_bucket_entry(at) {
                if e.get().1.is_empty() {
                    e.remove();
                    return true;
                }
            }
        }
        false
    }

    pub fn remove(&mut self, info_hash: &InfoHash) {
        let hash = self.hash(info_hash);
        if let Ok(e) = self.table.find_entry(hash, |(k, _)| k == info_hash) {
            e.remove();
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&InfoHash, &mut Torrent) -> bool) {
        self.table.retain(|(k, t)| keep(k, t));
    }

    pub fn shrink_to(&mut self, min_capacity: usize) {
        self.layout += 1;
        let hs = &self.hasher;
        self.table.shrink_to(min_capacity, |(k, _)| hs.hash_one(k));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&InfoHash, &Torrent)> {
        self.table.iter().map(|(k, t)| (k, t))
    }

    /// Changes whenever bucket positions may have moved.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    pub fn buckets(&self) -> usize {
        self.table.num_buckets()
    }

    /// The torrent in bucket `index`, if the bucket is full.
    pub fn bucket(&self, index: usize) -> Option<(&InfoHash, &Torrent)> {
        self.table.get_bucket(index).map(|(k, t)| (k, t))
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

    /// Every torrent a full walk by bucket finds, in bucket order.
    fn walk(t: &Torrents) -> Vec<InfoHash> {
        (0..t.buckets())
            .filter_map(|i| t.bucket(i).map(|(k, _)| *k))
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
    fn positions_hold_until_the_layout_changes() {
        let mut t = Torrents::new();
        for n in 0..100 {
            t.get_or_add(&hash(n), true);
        }
        let layout = t.layout();
        let before = walk(&t);
        // Removals and inserts into free buckets leave every other torrent where it was.
        for n in (0..100).step_by(3) {
            t.remove(&hash(n));
        }
        while t.len() < t.capacity() {
            let n = 1000 + t.len() as u32;
            t.get_or_add(&hash(n), true);
        }
        assert_eq!(t.layout(), layout, "no reorganisation yet");
        for (i, k) in before.iter().enumerate() {
            let n = u32::from_le_bytes(k[..4].try_into().unwrap());
            if n % 3 != 0 {
                let at = (0..t.buckets()).find(|&b| t.bucket(b).map(|(h, _)| h) == Some(k));
                assert!(at.is_some(), "torrent {n} (walk position {i}) still there");
            }
        }
        let buckets = t.buckets();
        // The table is full: the next insert may move everything, and says so.
        t.get_or_add(&hash(5000), true);
        assert_ne!(t.layout(), layout);
        assert!(t.buckets() >= buckets);
        let layout = t.layout();
        t.shrink_to(0);
        assert_ne!(t.layout(), layout, "a shrink moves buckets");
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
