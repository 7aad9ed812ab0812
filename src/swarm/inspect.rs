//! What the operator's window reads of a shard: one torrent with its peers (the metrics
//! endpoint's torrent lookup), or a census of every torrent (the status page's largest
//! torrents and peers by client, and the counts a full scrape serves), gathered a slice at a
//! time. Both only read the shard.

use std::net::IpAddr;

use super::{Family, Peer, PeerSet, Shard, Store, Torrent, Walk};
use crate::protocol::peer_client::{ClientClass, CLASSES};
use crate::protocol::{InfoHash, SwarmCounts};

/// Torrents a census keeps as the largest (by peers).
pub const TOP_TORRENTS: usize = 10;

/// One peer as the torrent lookup shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    pub ip: IpAddr,
    pub port: u16,
    pub seeder: bool,
    /// Seconds until it is dropped unless it announces again (0: due at the next sweep).
    pub expires_in_secs: u32,
    pub client: ClientClass,
}

/// One torrent as the lookup shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorrentView {
    pub counts: SwarmCounts,
    /// Its peers, IPv4 then IPv6, seeders first in each; empty unless asked for.
    pub peers: Vec<PeerView>,
}

/// What a walk over a shard (or, merged, over every shard) counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    /// Every torrent with its counts, in table order; only when the census was asked for it.
    pub torrents: Option<Vec<(InfoHash, SwarmCounts)>>,
    /// The largest torrents by peers, largest first (ties: smaller info hash first).
    pub top: Vec<(InfoHash, SwarmCounts)>,
    /// Peers by client class.
    pub clients: [u64; CLASSES],
}

impl Census {
    /// An empty census; `list` keeps every torrent's counts too.
    pub fn new(list: bool) -> Self {
        Self {
            torrents: list.then(Vec::new),
            top: Vec::with_capacity(TOP_TORRENTS + 1),
            clients: [0; CLASSES],
        }
    }

    fn clear(&mut self) {
        *self = Self::new(self.torrents.is_some());
    }

    /// Counts one torrent in; returns the work it took (1 plus its peers).
    fn count(&mut self, hash: &InfoHash, t: &Torrent) -> usize {
        let counts = t.counts();
        if let Some(list) = &mut self.torrents {
            list.push((*hash, counts));
        }
        self.offer(*hash, counts);
        let v4 = tally(&mut self.clients, t.v4.peers());
        let v6 = t.v6().map_or(0, |v6| tally(&mut self.clients, v6.peers()));
        1 + v4 + v6
    }

    /// Keeps `(hash, counts)` if it is among the largest so far.
    fn offer(&mut self, hash: InfoHash, counts: SwarmCounts) {
        let size = |c: &SwarmCounts| u64::from(c.seeders) + u64::from(c.leechers);
        let larger = |a: &(InfoHash, SwarmCounts), b: &(InfoHash, SwarmCounts)| {
            size(&a.1).cmp(&size(&b.1)).reverse().then(a.0.cmp(&b.0))
        };
        let entry = (hash, counts);
        if size(&counts) == 0 {
            return;
        }
        if self.top.len() == TOP_TORRENTS
            && larger(&entry, self.top.last().expect("full")) != std::cmp::Ordering::Less
        {
            return;
        }
        let at = self
            .top
            .binary_search_by(|e| larger(e, &entry))
            .unwrap_or_else(|at| at);
        self.top.insert(at, entry);
        self.top.truncate(TOP_TORRENTS);
    }

    /// Adds another shard's census to this one (torrents are never in two shards).
    pub fn merge(&mut self, other: Census) {
        match (&mut self.torrents, other.torrents) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (mine @ None, Some(theirs)) => *mine = Some(theirs),
            _ => {}
        }
        for (hash, counts) in other.top {
            self.offer(hash, counts);
        }
        for (mine, theirs) in self.clients.iter_mut().zip(other.clients) {
            *mine += theirs;
        }
    }
}

impl Shard {
    /// Counts torrents into `census` from where `walk` is, about `budget` torrents and peers at
    /// a time; true once the whole shard is in it.
    pub fn census_slice(&self, walk: &mut Walk, budget: usize, census: &mut Census) -> bool {
        self.visit_slice(walk, budget, census, Census::clear, Census::count)
    }

    /// The torrent `hash`, with its peers when `peers` is set; `None` if the shard does not
    /// hold it.
    pub fn view(&self, hash: &InfoHash, peers: bool, now: u32) -> Option<TorrentView> {
        let t = self.torrents.get(hash)?;
        let mut view = TorrentView {
            counts: t.counts(),
            peers: Vec::new(),
        };
        if peers {
            view_peers(&t.v4, now, &mut view.peers);
            if let Some(v6) = t.v6() {
                view_peers(v6, now, &mut view.peers);
            }
        }
        Some(view)
    }
}

/// Counts `peers` by client; returns how many there were.
fn tally<I>(clients: &mut [u64; CLASSES], peers: &[Peer<I>]) -> usize {
    for p in peers {
        clients[usize::from(p.client) % CLASSES] += 1;
    }
    peers.len()
}

fn view_peers<I: Family>(set: &PeerSet<I, impl Store<I>>, now: u32, out: &mut Vec<PeerView>) {
    let seeders = set.seeders();
    out.extend(set.peers().iter().enumerate().map(|(i, p)| PeerView {
        ip: p.ip.addr(),
        port: p.port,
        seeder: i < seeders,
        expires_in_secs: p.expires.saturating_sub(now),
        client: p.client,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Announce, AnnounceEvent};

    fn announce(shard: &mut Shard, hash: u8, ip: [u8; 4], seeder: bool, peer_id: &[u8; 8]) {
        let mut id = [b'x'; 20];
        id[..8].copy_from_slice(peer_id);
        let a = Announce {
            info_hash: [hash; 20],
            peer_id: id,
            port: 6881,
            left: if seeder { 0 } else { 100 },
            event: AnnounceEvent::Started,
            num_want: 0,
        };
        shard.announce(ip, &a, 0, 10, |_| {}).expect("stored");
    }

    #[test]
    fn a_census_counts_every_torrent_the_largest_and_the_clients() {
        let mut shard = Shard::new(1800);
        // Torrent n has n peers, all qBittorrent but one Transmission peer on torrent 12.
        for n in 1..=12u8 {
            for i in 0..n {
                announce(&mut shard, n, [10, 0, n, i], i % 2 == 0, b"-qB4650-");
            }
        }
        announce(&mut shard, 12, [10, 1, 0, 1], false, b"-TR4060-");
        let mut census = Census::new(true);
        let mut walk = shard.start_walk();
        // A budget of 5 takes several slices.
        let mut slices = 1;
        while !shard.census_slice(&mut walk, 5, &mut census) {
            slices += 1;
        }
        assert!(slices > 5, "{slices}");
        let mut list = census.torrents.clone().expect("asked for");
        list.sort_by_key(|(hash, _)| *hash);
        assert_eq!(list.len(), 12);
        assert_eq!(list[11].0, [12; 20]);
        assert_eq!(list[11].1, shard.counts(&[12; 20]));
        let top: Vec<u8> = census.top.iter().map(|(h, _)| h[0]).collect();
        assert_eq!(top, [12, 11, 10, 9, 8, 7, 6, 5, 4, 3]);
        let qb = crate::protocol::peer_client::classify(b"-qB4650-xxxxxxxxxxxx");
        let tr = crate::protocol::peer_client::classify(b"-TR4060-xxxxxxxxxxxx");
        assert_eq!(census.clients[qb as usize], (1..=12).sum::<u64>());
        assert_eq!(census.clients[tr as usize], 1);
        assert_eq!(census.clients.iter().sum::<u64>(), 79);
    }

    #[test]
    fn a_census_the_table_is_packed_under_counts_each_torrent_and_peer_once() {
        let mut shard = Shard::new(1800);
        for n in 0..200u8 {
            announce(&mut shard, n, [10, 0, 0, n], false, b"-qB4650-");
            announce(&mut shard, n, [10, 0, 1, n], true, b"-TR4060-");
        }
        let mut census = Census::new(true);
        let mut walk = shard.start_walk();
        assert!(!shard.census_slice(&mut walk, 30, &mut census));
        // Packing moves torrents between slots: the walk starts over with an empty census.
        shard.torrents.shrink_to(0);
        while !shard.census_slice(&mut walk, 30, &mut census) {}
        assert_eq!(walk.restarts, 1);
        let mut hashes: Vec<InfoHash> = census.torrents.unwrap().iter().map(|t| t.0).collect();
        assert_eq!(hashes.len(), 200, "each torrent once");
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 200, "every torrent");
        assert_eq!(census.clients.iter().sum::<u64>(), 400);
        assert_eq!(census.top.len(), TOP_TORRENTS);
    }

    #[test]
    fn a_slice_counts_a_torrent_and_each_of_its_peers_of_both_families_as_work() {
        // Five torrents of 10 IPv4 and 10 IPv6 peers: 21 units of work each.
        let mut shard = Shard::new(1800);
        for n in 0..5u8 {
            for i in 0..10u8 {
                announce(&mut shard, n, [10, n, 0, i], false, b"-qB4650-");
                let mut a = Announce {
                    info_hash: [n; 20],
                    peer_id: [b'x'; 20],
                    port: 6881,
                    left: 1,
                    event: AnnounceEvent::Started,
                    num_want: 0,
                };
                a.peer_id[..8].copy_from_slice(b"-TR4060-");
                let mut ip = [0x20u8; 16];
                ip[14] = n;
                ip[15] = i;
                shard.announce(ip, &a, 0, 10, |_| {}).expect("stored");
            }
        }
        // A budget of exactly one torrent's work: one torrent a slice.
        let mut census = Census::new(true);
        let mut walk = shard.start_walk();
        let mut slices = 1;
        while !shard.census_slice(&mut walk, 21, &mut census) {
            let counted = census.torrents.as_ref().map_or(0, Vec::len);
            assert_eq!(counted, slices, "one torrent in each slice of 21");
            slices += 1;
        }
        assert_eq!(census.torrents.map(|t| t.len()), Some(5));
        assert_eq!(census.clients.iter().sum::<u64>(), 100);
        // A unit more: two torrents a slice.
        let mut census = Census::new(true);
        let mut walk = shard.start_walk();
        assert!(!shard.census_slice(&mut walk, 22, &mut census));
        assert_eq!(census.torrents.map(|t| t.len()), Some(2));
    }

    #[test]
    fn merged_censuses_keep_the_largest_of_both() {
        let mut a = Census::new(false);
        let mut b = Census::new(true);
        let counts = |n: u32| SwarmCounts {
            seeders: n,
            leechers: 0,
            downloaded: 0,
        };
        for n in 1..=8u8 {
            a.offer([n; 20], counts(u32::from(n) * 2));
            b.offer([100 + n; 20], counts(u32::from(n) * 2 + 1));
        }
        b.torrents = Some(vec![([1; 20], counts(1))]);
        b.clients[3] = 5;
        a.merge(b);
        let sizes: Vec<u32> = a.top.iter().map(|(_, c)| c.seeders).collect();
        assert_eq!(sizes, [17, 16, 15, 14, 13, 12, 11, 10, 9, 8]);
        assert_eq!(a.torrents.as_ref().map(Vec::len), Some(1));
        assert_eq!(a.clients[3], 5);
        // Two lists make one: the stats thread merges every worker's into its own.
        let mut c = Census::new(true);
        c.torrents = Some(vec![([2; 20], counts(2)), ([3; 20], counts(3))]);
        a.merge(c);
        let mut listed: Vec<u8> = a.torrents.unwrap().iter().map(|(h, _)| h[0]).collect();
        listed.sort();
        assert_eq!(listed, [1, 2, 3]);
    }

    #[test]
    fn a_lookup_shows_counts_and_peers_with_their_time_left() {
        let mut shard = Shard::new(1800);
        announce(&mut shard, 1, [10, 0, 0, 1], true, b"-qB4650-");
        announce(&mut shard, 1, [10, 0, 0, 2], false, b"-TR4060-");
        assert_eq!(shard.view(&[2; 20], true, 10), None);
        let bare = shard.view(&[1; 20], false, 10).expect("held");
        assert_eq!((bare.counts.seeders, bare.counts.leechers), (1, 1));
        assert!(bare.peers.is_empty());
        let full = shard.view(&[1; 20], true, 110).expect("held");
        assert_eq!(full.peers.len(), 2);
        assert_eq!(full.peers.iter().filter(|p| p.seeder).count(), 1);
        let seeder = full.peers.iter().find(|p| p.seeder).expect("a seeder");
        assert_eq!(seeder.ip, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(seeder.port, 6881);
        assert_eq!(seeder.expires_in_secs, 1800 - 100);
        assert_eq!(
            crate::protocol::peer_client::name(seeder.client),
            "qBittorrent"
        );
    }
}
