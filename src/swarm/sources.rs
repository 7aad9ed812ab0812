//! What each source holds in one shard, for the per-source quotas: the peers it has stored and
//! the torrents it added this hour. A source is an IPv4 address or an IPv6 /64 (what one
//! subscriber is given), so one host cannot dodge a quota by rotating through its own
//! addresses. Entries live while the source holds a peer or its hour of added torrents runs;
//! the sweep drops the rest, so the map never outgrows the peers and recent torrents it counts.

use std::collections::HashMap;

use ahash::RandomState;

use crate::cidr::Networks;

/// Seconds over which a source's added torrents are counted.
pub const HOUR: u32 = 3600;

/// One source's holdings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub peers: u32,
    /// Torrents added since `since`.
    pub added: u32,
    /// Start (process clock) of the hour `added` counts.
    pub since: u32,
}

impl Held {
    /// Torrents added in the hour that holds `now`, starting a new hour when the last is over.
    pub fn added_by(&mut self, now: u32) -> u32 {
        if now >= self.since.saturating_add(HOUR) || self.added == 0 {
            self.added = 0;
            self.since = now;
        }
        self.added
    }
}

/// A shard's share of each quota (0 is no limit), and who is exempt.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    pub peers: u32,
    pub new_torrents: u32,
    pub exempt: Networks,
}

/// The holdings of every source with peers or recent torrents in the shard.
#[derive(Default)]
pub struct Sources {
    pub v4: HashMap<[u8; 4], Held, RandomState>,
    pub v6: HashMap<[u8; 16], Held, RandomState>,
    pub quotas: Quotas,
}

impl Sources {
    pub fn new(quotas: Quotas) -> Self {
        Sources {
            quotas,
            ..Sources::default()
        }
    }

    /// Forgets sources that hold nothing any more: no peers, and no hour of added torrents
    /// still running at `now`. Gives memory back once the map is mostly empty.
    pub fn tidy(&mut self, now: u32) {
        fn tidy_map<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Held, RandomState>, now: u32) {
            m.retain(|_, h| h.peers > 0 || (h.added > 0 && now < h.since.saturating_add(HOUR)));
            if m.capacity() > 4 * m.len().max(256) {
                m.shrink_to(2 * m.len());
            }
        }
        tidy_map(&mut self.v4, now);
        tidy_map(&mut self.v6, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_torrents_count_per_hour() {
        let mut h = Held::default();
        assert_eq!(h.added_by(100), 0);
        h.added += 3;
        assert_eq!(h.added_by(100 + HOUR - 1), 3, "still the same hour");
        assert_eq!(h.added_by(100 + HOUR), 0, "a new hour");
        assert_eq!(h.since, 100 + HOUR);
    }

    #[test]
    fn tidy_keeps_only_sources_holding_something() {
        let mut s = Sources::default();
        s.v4.insert([1; 4], Held::default());
        s.v4.insert(
            [2; 4],
            Held {
                peers: 1,
                ..Held::default()
            },
        );
        s.v4.insert(
            [3; 4],
            Held {
                peers: 0,
                added: 2,
                since: 10,
            },
        );
        s.v6.insert([4; 16], Held::default());
        s.tidy(10 + HOUR - 1);
        assert_eq!(s.v4.len(), 2);
        assert!(s.v6.is_empty());
        s.tidy(10 + HOUR);
        assert_eq!(s.v4.keys().collect::<Vec<_>>(), vec![&[2; 4]]);
    }
}
