//! Subnet preference (chihaya's, from a deployment where peers in one data centre should find
//! each other first): with a prefix length set, an announcer is handed the peers in its own
//! subnet before any other. Finding them must not cost a scan of a big swarm on every
//! announce, so torrents past [`INDEX_AT`] peers get a side index from subnet to peers, kept
//! beside the shard (not in every torrent: a feature that is off costs no memory), holding
//! keys (IP, port) rather than positions so the peer set's reordering never touches it.
//! Smaller sets are scanned, which is bounded by that same size.

use std::hash::BuildHasher;

use ahash::RandomState;
use hashbrown::{HashMap, HashTable};

use super::peers::{PeerSet, Store, INDEX_AT};
use super::{Family, Peer};
use crate::protocol::InfoHash;

/// One family's subnet indexes over a shard's big torrents.
pub struct SubnetIndex<I> {
    /// Bits of the address that make its subnet.
    prefix: u8,
    by_torrent: HashMap<InfoHash, HashTable<(I, u16)>, RandomState>,
}

impl<I: Family> SubnetIndex<I> {
    pub fn new(prefix: u8) -> Self {
        Self {
            prefix,
            by_torrent: HashMap::with_hasher(RandomState::new()),
        }
    }

    fn subnet_hash(&self, ip: I, hs: &impl BuildHasher) -> u64 {
        hs.hash_one(ip.masked(self.prefix))
    }

    /// Keeps the index true after a peer joined `set` (already stored in it).
    pub fn added(
        &mut self,
        info_hash: &InfoHash,
        set: &PeerSet<I, impl Store<I>>,
        key: (I, u16),
        hs: &impl BuildHasher,
    ) {
        match self.by_torrent.get_mut(info_hash) {
            Some(table) => {
                let h = hs.hash_one(key.0.masked(self.prefix));
                let prefix = self.prefix;
                table.insert_unique(h, key, |k| hs.hash_one(k.0.masked(prefix)));
            }
            None if set.len() > INDEX_AT => self.rebuild(info_hash, set, hs),
            None => {}
        }
    }

    /// Keeps the index true after a peer left `set`; drops it once the set is small.
    pub fn removed(
        &mut self,
        info_hash: &InfoHash,
        set: Option<&PeerSet<I, impl Store<I>>>,
        key: (I, u16),
        hs: &impl BuildHasher,
    ) {
        let h = self.subnet_hash(key.0, hs);
        let Some(table) = self.by_torrent.get_mut(info_hash) else {
            return;
        };
        if let Ok(e) = table.find_entry(h, |k| *k == key) {
            e.remove();
        }
        if set.is_none_or(|s| s.len() < INDEX_AT / 2) {
            self.by_torrent.remove(info_hash);
        }
    }

    /// Builds a torrent's index anew from its set (after a sweep dropped peers).
    pub fn rebuild(
        &mut self,
        info_hash: &InfoHash,
        set: &PeerSet<I, impl Store<I>>,
        hs: &impl BuildHasher,
    ) {
        if set.len() <= INDEX_AT {
            self.by_torrent.remove(info_hash);
            return;
        }
        let prefix = self.prefix;
        let mut table = HashTable::with_capacity(set.len());
        for p in set.peers() {
            table.insert_unique(hs.hash_one(p.ip.masked(prefix)), p.key(), |k: &(I, u16)| {
                hs.hash_one(k.0.masked(prefix))
            });
        }
        self.by_torrent.insert(*info_hash, table);
    }

    /// Whether a torrent has an index (it is past `INDEX_AT` peers).
    #[cfg(test)]
    pub fn is_indexed(&self, info_hash: &InfoHash) -> bool {
        self.by_torrent.contains_key(info_hash)
    }

    /// Whether two addresses share a subnet.
    #[inline]
    pub fn same(&self, a: I, b: I) -> bool {
        a.masked(self.prefix) == b.masked(self.prefix)
    }

    /// Hands `out` up to `want` peers of `set` in `ip`'s subnet, other than `skip` (leechers
    /// only `for_seeder`); returns how many.
    #[allow(clippy::too_many_arguments)]
    pub fn same_subnet(
        &self,
        info_hash: &InfoHash,
        set: &PeerSet<I, impl Store<I>>,
        ip: I,
        skip: (I, u16),
        for_seeder: bool,
        want: usize,
        hs: &impl BuildHasher,
        mut out: impl FnMut(&Peer<I>),
    ) -> usize {
        let seeders = set.seeders();
        let mut take = |p: &Peer<I>, pos: usize| {
            let wanted = p.key() != skip && self.same(p.ip, ip) && !(for_seeder && pos < seeders);
            if wanted {
                out(p);
            }
            wanted
        };
        let mut given = 0;
        match self.by_torrent.get(info_hash) {
            Some(table) => {
                for key in table.iter_hash(self.subnet_hash(ip, hs)) {
                    if given == want {
                        break;
                    }
                    if let Some(pos) = set.position(*key, hs) {
                        given += usize::from(take(&set.peers()[pos], pos));
                    }
                }
            }
            // Small (or not yet indexed) sets: a scan of at most INDEX_AT peers.
            None => {
                for (pos, p) in set.peers().iter().enumerate() {
                    if given == want {
                        break;
                    }
                    given += usize::from(take(p, pos));
                }
            }
        }
        given
    }

    /// Checks that every big set's index names exactly its peers (tests, fuzzing).
    pub fn check(&self, info_hash: &InfoHash, set: Option<&PeerSet<I, impl Store<I>>>) {
        if let Some(table) = self.by_torrent.get(info_hash) {
            let set = set.expect("an index for a torrent without this family's set");
            assert_eq!(table.len(), set.len(), "subnet index size");
        }
    }
}
