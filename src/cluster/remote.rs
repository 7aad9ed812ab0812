//! Other nodes' peers, as one worker holds them for the torrents it owns: built by the sync
//! thread from Redis and handed over whole (the worker only swaps entries in and reads them),
//! so merging them into a reply costs a hash lookup and a copy, and never waits on Redis.

use std::collections::HashMap;

use crate::protocol::{InfoHash, SwarmCounts};

/// One family's remote peers of a torrent: seeders first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePeers<I> {
    pub peers: Vec<(I, u16)>,
    pub seeders: usize,
}

/// What the other nodes hold of one torrent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteSwarm {
    /// Their live seeders and leechers (all of them, not only those cached) and downloads.
    pub counts: SwarmCounts,
    pub v4: RemotePeers<[u8; 4]>,
    pub v6: RemotePeers<[u8; 16]>,
}

impl RemoteSwarm {
    pub fn peers(&self) -> usize {
        self.v4.peers.len() + self.v6.peers.len()
    }
}

/// New remote state for some torrents; `None` drops a torrent nobody asks about any more.
pub type RemoteUpdate = Vec<(InfoHash, Option<RemoteSwarm>)>;

/// An address family's remote peers within a [`RemoteSwarm`].
pub trait RemoteFamily: Copy + Eq + Sized {
    fn of(r: &RemoteSwarm) -> &RemotePeers<Self>;
}

impl RemoteFamily for [u8; 4] {
    fn of(r: &RemoteSwarm) -> &RemotePeers<Self> {
        &r.v4
    }
}

impl RemoteFamily for [u8; 16] {
    fn of(r: &RemoteSwarm) -> &RemotePeers<Self> {
        &r.v6
    }
}

/// One worker's cache.
#[derive(Debug, Default)]
pub struct RemoteCache {
    swarms: HashMap<InfoHash, RemoteSwarm, ahash::RandomState>,
    peers: usize,
}

impl RemoteCache {
    /// Swaps in what the sync thread read.
    pub fn apply(&mut self, update: RemoteUpdate) {
        for (hash, swarm) in update {
            let old = match swarm {
                Some(s) => {
                    self.peers += s.peers();
                    self.swarms.insert(hash, s)
                }
                None => self.swarms.remove(&hash),
            };
            if let Some(old) = old {
                self.peers -= old.peers();
            }
        }
    }

    /// The other nodes' counts of a torrent (zeros when none are cached).
    #[inline]
    pub fn counts(&self, info_hash: &InfoHash) -> SwarmCounts {
        self.swarms
            .get(info_hash)
            .map_or(SwarmCounts::default(), |s| s.counts)
    }

    /// `local` counts with the other nodes' added.
    #[inline]
    pub fn merged(&self, info_hash: &InfoHash, local: SwarmCounts) -> SwarmCounts {
        let r = self.counts(info_hash);
        SwarmCounts {
            seeders: local.seeders.saturating_add(r.seeders),
            leechers: local.leechers.saturating_add(r.leechers),
            downloaded: local.downloaded.saturating_add(r.downloaded),
        }
    }

    /// Whether anything of the torrent is cached.
    pub fn holds(&self, info_hash: &InfoHash) -> bool {
        self.swarms.contains_key(info_hash)
    }

    /// Hands `out` up to `max` remote peers of family `I`, starting at a random one: only
    /// leechers to a seeder, never `skip` (the announcer itself). Returns how many.
    pub fn give<I: RemoteFamily>(
        &self,
        info_hash: &InfoHash,
        for_seeder: bool,
        skip: (I, u16),
        max: usize,
        mut out: impl FnMut(I, u16),
    ) -> usize {
        let Some(s) = self.swarms.get(info_hash) else {
            return 0;
        };
        let set = I::of(s);
        let candidates = if for_seeder {
            &set.peers[set.seeders.min(set.peers.len())..]
        } else {
            &set.peers[..]
        };
        if max == 0 || candidates.is_empty() {
            return 0;
        }
        let start = fastrand::usize(..candidates.len());
        let mut given = 0;
        for &(ip, port) in candidates[start..].iter().chain(&candidates[..start]) {
            if given == max {
                break;
            }
            if (ip, port) != skip {
                out(ip, port);
                given += 1;
            }
        }
        given
    }

    /// Torrents and peers cached.
    pub fn size(&self) -> (usize, usize) {
        (self.swarms.len(), self.peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm() -> RemoteSwarm {
        RemoteSwarm {
            counts: SwarmCounts {
                seeders: 10,
                leechers: 20,
                downloaded: 3,
            },
            v4: RemotePeers {
                peers: vec![([1, 1, 1, 1], 1), ([2, 2, 2, 2], 2), ([3, 3, 3, 3], 3)],
                seeders: 1,
            },
            v6: RemotePeers::default(),
        }
    }

    #[test]
    fn gives_leechers_to_seeders_everyone_to_leechers_never_the_announcer() {
        let mut c = RemoteCache::default();
        let h = [5; 20];
        c.apply(vec![(h, Some(swarm()))]);
        assert_eq!(c.size(), (1, 3));
        assert_eq!(c.counts(&h).leechers, 20);
        assert_eq!(c.counts(&[6; 20]), SwarmCounts::default());
        for _ in 0..20 {
            let mut got = Vec::new();
            let n = c.give(&h, true, ([0; 4], 0), 10, |ip, p| got.push((ip, p)));
            got.sort();
            assert_eq!(n, 2);
            assert_eq!(got, vec![([2, 2, 2, 2], 2), ([3, 3, 3, 3], 3)]);
            let mut got = Vec::new();
            c.give(&h, false, ([2, 2, 2, 2], 2), 10, |ip, p| got.push((ip, p)));
            got.sort();
            assert_eq!(got, vec![([1, 1, 1, 1], 1), ([3, 3, 3, 3], 3)]);
            assert_eq!(c.give(&h, false, ([0; 4], 0), 1, |_, _| {}), 1);
            assert_eq!(c.give::<[u8; 16]>(&h, false, ([0; 16], 0), 5, |_, _| {}), 0);
        }
        c.apply(vec![(h, None)]);
        assert_eq!(c.size(), (0, 0));
        assert!(!c.holds(&h));
    }

    #[test]
    fn a_random_start_reaches_every_peer() {
        let mut c = RemoteCache::default();
        let h = [5; 20];
        c.apply(vec![(h, Some(swarm()))]);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            c.give(&h, false, ([0; 4], 0), 1, |ip, _| {
                firsts.insert(ip);
            });
        }
        assert_eq!(firsts.len(), 3);
    }
}
