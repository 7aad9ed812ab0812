//! A shard to and from a snapshot: walking the torrent table into a snapshot section a slice at
//! a time (so a worker answers requests between slices instead of stalling for the whole
//! shard), and filling a shard from a restored snapshot before it serves. Times are stored as
//! seconds left, so they survive the process clock starting over.

use super::{Family, Peer, PeerSet, Shard, Torrent};
use crate::state::snapshot::{PeerRecord, SectionWriter, TorrentRecord};

/// Where a walk of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    next_bucket: usize,
    layout: u64,
    /// Times the table reorganised under the walk, making it start over.
    pub restarts: u32,
}

impl Shard {
    /// A walk from the start of the table, for an empty `out`.
    pub fn start_walk(&self) -> Walk {
        Walk {
            next_bucket: 0,
            layout: self.torrents.layout(),
            restarts: 0,
        }
    }

    /// Writes torrents into `out` from where `walk` is, until at least `budget` peers and
    /// torrents were written or the table ends; true once the whole table is in `out`. If the
    /// table reorganised since the walk began (torrents moved between buckets), `out` is
    /// cleared and the walk starts over, so no torrent is missed or written twice.
    pub fn walk_slice(
        &self,
        walk: &mut Walk,
        now: u32,
        budget: usize,
        out: &mut SectionWriter,
    ) -> bool {
        if walk.layout != self.torrents.layout() {
            out.clear();
            *walk = Walk {
                restarts: walk.restarts + 1,
                ..self.start_walk()
            };
        }
        let buckets = self.torrents.buckets();
        let mut spent = 0;
        while walk.next_bucket < buckets && spent < budget {
            if let Some((hash, t)) = self.torrents.bucket(walk.next_bucket) {
                spent += 1 + write_torrent(hash, t, now, out);
            }
            walk.next_bucket += 1;
        }
        walk.next_bucket >= buckets
    }

    /// The whole shard into `out` at once (at shutdown, when nothing else runs).
    pub fn write_all(&self, now: u32, out: &mut SectionWriter) {
        let mut walk = self.start_walk();
        while !self.walk_slice(&mut walk, now, usize::MAX, out) {}
    }

    /// Adds a restored torrent: peers whose time is up are dropped, the rest live the seconds
    /// they had left. Limits hold as for announces; returns the peers stored.
    pub fn restore(&mut self, r: &TorrentRecord, now: u32) -> usize {
        let room = self.torrents.len() < self.limits.max_torrents;
        let max_peers = self.limits.max_peers_per_torrent;
        let Some(t) = self.torrents.get_or_add(&r.info_hash, room) else {
            return 0;
        };
        let before = t.counts();
        t.downloaded = t.downloaded.saturating_add(r.downloaded);
        t.keep_until = now.saturating_add(r.keep_secs);
        let mut stored = 0;
        for p in &r.v4 {
            stored += usize::from(restore_peer(t, &mut self.subnets, &self.hasher, &r.info_hash, p, now, max_peers));
        }
        for p in &r.v6 {
            stored += usize::from(restore_peer(t, &mut self.subnets, &self.hasher, &r.info_hash, p, now, max_peers));
        }
        t.tidy();
        let after = t.counts();
        self.seeders = self.seeders - before.seeders as usize + after.seeders as usize;
        self.leechers = self.leechers - before.leechers as usize + after.leechers as usize;
        if t.is_empty() && !Self::kept(t, now) {
            self.torrents.remove(&r.info_hash);
        }
        stored
    }
}

/// Writes one torrent (with its live peers); returns the peers written.
fn write_torrent(hash: &crate::protocol::InfoHash, t: &Torrent, now: u32, out: &mut SectionWriter) -> usize {
    let v4 = live(&t.v4, now);
    let v6 = t.v6.as_deref().map_or(0, |s| live(s, now));
    let keep_secs = if t.is_empty() { t.keep_until.saturating_sub(now) } else { 0 };
    if v4 + v6 == 0 && (t.downloaded == 0 || keep_secs == 0) {
        return 0;
    }
    out.torrent(hash, t.downloaded, keep_secs, v4 as u32, v6 as u32);
    write_peers(&t.v4, now, |r| out.peer_v4(r));
    if let Some(v6) = t.v6.as_deref() {
        write_peers(v6, now, |r| out.peer_v6(r));
    }
    v4 + v6
}

/// Peers of `set` not yet expired (a sweep may not have run since).
fn live<I: Family>(set: &PeerSet<I>, now: u32) -> usize {
    set.peers().iter().filter(|p| p.expires > now).count()
}

fn write_peers<I: Family>(set: &PeerSet<I>, now: u32, mut out: impl FnMut(&PeerRecord<I>)) {
    let seeders = set.seeders();
    for (i, p) in set.peers().iter().enumerate() {
        if p.expires > now {
            out(&PeerRecord {
                ip: p.ip,
                port: p.port,
                peer_id: p.peer_id,
                seeder: i < seeders,
                counted: p.counted,
                ttl_secs: p.expires - now,
            });
        }
    }
}

/// Stores one restored peer unless its time is up, the torrent is full or its port is 0.
fn restore_peer<I: Family>(
    t: &mut Torrent,
    subnets: &mut super::Subnets,
    hs: &ahash::RandomState,
    hash: &crate::protocol::InfoHash,
    p: &PeerRecord<I>,
    now: u32,
    max_peers: usize,
) -> bool {
    let key = (p.ip, p.port);
    if p.ttl_secs == 0 || p.port == 0 {
        return false;
    }
    if t.len() >= max_peers && !I::existing(t).is_some_and(|s| s.contains(key, hs)) {
        return false;
    }
    let set = I::set(t);
    let peer = Peer {
        expires: now.saturating_add(p.ttl_secs),
        ip: p.ip,
        port: p.port,
        peer_id: p.peer_id,
        counted: p.counted,
    };
    if set.upsert(peer, p.seeder, hs) == super::Previous::Absent {
        if let Some(index) = I::subnets(subnets) {
            index.added(hash, set, key, hs);
        }
    }
    true
}
