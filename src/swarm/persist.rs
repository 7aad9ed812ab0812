//! A shard to and from a snapshot: walking the torrent table into a snapshot section a slice at
//! a time (so a worker answers requests between slices instead of stalling for the whole
//! shard), and filling a shard from a restored snapshot before it serves. Times are stored as
//! seconds left, so they survive the process clock starting over.

use super::{Family, Peer, PeerSet, Shard, Store, Torrent, Walk};
use crate::state::snapshot::{PeerRecord, SectionWriter, TorrentRecord};

impl Shard {
    /// Writes torrents into `out` from where `walk` is, until at least `budget` peers and
    /// torrents were written or the table ends; true once the whole table is in `out`. If the
    /// table was packed since the walk began (torrents moved between slots), `out` is
    /// cleared and the walk starts over, so no torrent is missed or written twice.
    pub fn walk_slice(
        &self,
        walk: &mut Walk,
        now: u32,
        budget: usize,
        out: &mut SectionWriter,
    ) -> bool {
        let keep_secs = self.keep_downloaded_secs;
        self.visit_slice(walk, budget, out, SectionWriter::clear, |out, hash, t| {
            1 + write_torrent(hash, t, now, keep_secs, out)
        })
    }

    /// The whole shard into `out` at once (at shutdown, when nothing else runs).
    pub fn write_all(&self, now: u32, out: &mut SectionWriter) {
        let mut walk = self.start_walk();
        while !self.walk_slice(&mut walk, now, usize::MAX, out) {}
    }

    /// Adds a restored torrent: peers whose time is up are dropped, the rest live the seconds
    /// they had left. Limits hold as for announces; returns the peers it added. A record of a
    /// torrent already held merges into it (peers it already has are updated, not added).
    pub fn restore(&mut self, r: &TorrentRecord, now: u32) -> usize {
        let room = self.torrents.len() < self.limits.max_torrents;
        let max_peers = self.limits.per_torrent();
        let mut shard_room = self
            .limits
            .max_peers
            .saturating_sub(self.seeders + self.leechers);
        let Some((t, _)) = self.torrents.get_or_add(&r.info_hash, room) else {
            return 0;
        };
        let before = t.counts();
        t.downloaded = t.downloaded.saturating_add(r.downloaded);
        t.set_keep_until(now.saturating_add(r.keep_secs));
        let mut to = Into {
            subnets: &mut self.subnets,
            sources: self.sources.as_deref_mut(),
            hs: &self.hasher,
            hash: &r.info_hash,
            now,
            max_peers,
            shard_room: &mut shard_room,
        };
        let stored = restore_peers(t, &mut to, &r.v4) + restore_peers(t, &mut to, &r.v6);
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

/// Writes one torrent (with its live peers); returns the peers written. A torrent whose peers
/// all ran out since the last sweep is written as that sweep would leave it: kept
/// `keep_downloaded_secs` for its download count.
fn write_torrent(
    hash: &crate::protocol::InfoHash,
    t: &Torrent,
    now: u32,
    keep_downloaded_secs: u32,
    out: &mut SectionWriter,
) -> usize {
    let v4 = live(&t.v4, now);
    let v6 = t.v6().map_or(0, |s| live(s, now));
    if v4 + v6 == 0 {
        // Kept only for its download count, if at all.
        let keep_secs = if t.is_empty() {
            t.keep_until().saturating_sub(now)
        } else {
            keep_downloaded_secs
        };
        if t.downloaded > 0 && keep_secs > 0 {
            out.torrent(hash, t.downloaded, keep_secs, 0, 0);
        }
        return 0;
    }
    // A torrent with peers is kept once they are gone, from then: no time of its own to keep.
    out.torrent(hash, t.downloaded, 0, v4 as u32, v6 as u32);
    write_peers(&t.v4, now, |r| out.peer_v4(r));
    if let Some(v6) = t.v6() {
        write_peers(v6, now, |r| out.peer_v6(r));
    }
    v4 + v6
}

/// Peers of `set` not yet expired (a sweep may not have run since).
fn live<I: Family>(set: &PeerSet<I, impl Store<I>>, now: u32) -> usize {
    set.peers().iter().filter(|p| p.expires > now).count()
}

fn write_peers<I: Family>(
    set: &PeerSet<I, impl Store<I>>,
    now: u32,
    mut out: impl FnMut(&PeerRecord<I>),
) {
    let seeders = set.seeders();
    for (i, p) in set.peers().iter().enumerate() {
        if p.expires > now {
            out(&PeerRecord {
                ip: p.ip,
                port: p.port,
                seeder: i < seeders,
                counted: p.counted,
                ttl_secs: p.expires - now,
            });
        }
    }
}

/// Where restored peers of one torrent go, and the room left for them.
struct Into<'a> {
    subnets: &'a mut super::Subnets,
    sources: Option<&'a mut super::Sources>,
    hs: &'a ahash::RandomState,
    hash: &'a crate::protocol::InfoHash,
    now: u32,
    max_peers: usize,
    /// Peers the shard may still take (`max_peers`).
    shard_room: &'a mut usize,
}

/// Stores the restored peers of one family, except those whose time is up, with port 0, or
/// past the torrent's or the shard's limit; returns how many it added. Each counts towards
/// its source's holdings (a restore is not refused by quotas: the peers were admitted once).
fn restore_peers<I: Family>(t: &mut Torrent, to: &mut Into<'_>, peers: &[PeerRecord<I>]) -> usize {
    let (hs, now, hash) = (to.hs, to.now, to.hash);
    let mut stored = 0;
    for p in peers {
        let key = (p.ip, p.port);
        if p.ttl_secs == 0 || p.port == 0 || !t.has_room_for(key, to.max_peers, hs) {
            continue;
        }
        if *to.shard_room == 0 && !I::existing(t).is_some_and(|s| s.contains(key, hs)) {
            continue;
        }
        let set = I::set(t);
        let peer = Peer {
            expires: now.saturating_add(p.ttl_secs),
            ip: p.ip,
            port: p.port,
            counted: p.counted,
            // A snapshot does not keep it; the peer's next announce sets it.
            client: crate::protocol::peer_client::UNKNOWN,
        };
        if set.upsert(peer, p.seeder, hs) == super::Previous::Absent {
            *to.shard_room -= 1;
            if let Some(index) = I::subnets(to.subnets) {
                index.added(hash, set, key, hs);
            }
            if let Some(s) = to.sources.as_deref_mut() {
                I::held(s).0.entry(p.ip.source()).or_default().peers += 1;
            }
            stored += 1;
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AnnounceEvent;
    use crate::state::snapshot::{decode, encode_file, Header};
    use crate::swarm::tests::announce;

    /// Every torrent as (hash, counts, sorted (ip, port, seeder, counted, expires)).
    type Peers = Vec<(std::net::IpAddr, u16, bool, bool, u32)>;
    fn contents(s: &Shard) -> Vec<(InfoHashKey, crate::protocol::SwarmCounts, Peers)> {
        let mut all: Vec<_> = s
            .torrents
            .iter()
            .map(|(h, t)| {
                let mut peers: Peers = Vec::new();
                for (i, p) in t.v4.peers().iter().enumerate() {
                    peers.push((
                        p.ip.addr(),
                        p.port,
                        i < t.v4.seeders(),
                        p.counted,
                        p.expires,
                    ));
                }
                if let Some(v6) = t.v6() {
                    for (i, p) in v6.peers().iter().enumerate() {
                        peers.push((p.ip.addr(), p.port, i < v6.seeders(), p.counted, p.expires));
                    }
                }
                peers.sort();
                (*h, t.counts(), peers)
            })
            .collect();
        all.sort_by_key(|(h, _, _)| *h);
        all
    }
    type InfoHashKey = crate::protocol::InfoHash;

    fn sample_shard(keep: u32) -> Shard {
        let mut s = Shard::new(100);
        s.keep_downloaded(keep);
        for t in 0..40u8 {
            for p in 0..(u16::from(t) * 3) {
                let left = if p % 3 == 0 { 0 } else { 10 };
                let event = if p % 5 == 0 {
                    AnnounceEvent::Completed
                } else {
                    AnnounceEvent::Started
                };
                let a = announce(t, 1000 + p, left, event);
                if p % 2 == 0 {
                    s.announce(
                        [10, t, (p >> 8) as u8, p as u8],
                        &a,
                        0,
                        u32::from(p % 7),
                        |_| {},
                    )
                    .unwrap();
                } else {
                    let mut ip = [0u8; 16];
                    ip[0] = 0x20;
                    ip[15] = p as u8;
                    s.announce(ip, &a, 0, u32::from(p % 7), |_| {}).unwrap();
                }
            }
        }
        // One swarm emptied with a download counted: kept for its count.
        s.announce(
            [1, 1, 1, 1],
            &announce(99, 1, 0, AnnounceEvent::Completed),
            0,
            0,
            |_| {},
        )
        .unwrap();
        s.announce(
            [1, 1, 1, 1],
            &announce(99, 1, 0, AnnounceEvent::Stopped),
            0,
            3,
            |_| {},
        )
        .unwrap();
        s
    }

    /// The shard through a snapshot file and back, `later` seconds on (the restart's clock
    /// starting at `restart_now`).
    fn round_trip(s: &Shard, now: u32, restart_now: u32, slice: usize) -> Shard {
        let mut out = SectionWriter::new();
        let mut walk = s.start_walk();
        let mut slices = 0;
        while !s.walk_slice(&mut walk, now, slice, &mut out) {
            slices += 1;
            assert!(slices < 10_000, "the walk ends");
        }
        let mut file = Vec::new();
        let header = Header {
            written_unix: 0,
            clock_origin_unix: 0,
            connection_key: [0; 16],
        };
        encode_file(&header, &[out.as_bytes()], &mut file);
        let snap = decode(&file).unwrap();
        let mut back = Shard::new(100);
        back.keep_downloaded(s.keep_downloaded_secs);
        for t in &snap.torrents {
            back.restore(t, restart_now);
        }
        back.check_invariants();
        back
    }

    #[test]
    fn a_slice_writes_no_more_records_than_its_budget_when_torrents_fit() {
        let mut s = Shard::new(100);
        for t in 0..20u8 {
            s.announce(
                [10, 0, 0, 1],
                &announce(t, 1000, 5, AnnounceEvent::Started),
                0,
                0,
                |_| {},
            )
            .unwrap();
        }
        // Each torrent is two records (itself and its peer): a budget of 4 takes two a slice.
        assert!(slices_of(&s, 4, (20, 20)) >= 10);
        // One IPv4 peer and two IPv6 ones: four records, one torrent a slice.
        let mut s = Shard::new(100);
        for t in 0..20u8 {
            let a = |port| announce(t, port, 5, AnnounceEvent::Started);
            s.announce([10, 0, 0, 1], &a(1000), 0, 0, |_| {}).unwrap();
            for port in [1000, 1001] {
                let v6 = std::net::Ipv6Addr::LOCALHOST.octets();
                s.announce(v6, &a(port), 0, 0, |_| {}).unwrap();
            }
        }
        // (A last slice may only find the table's end.)
        assert!((20..=21).contains(&slices_of(&s, 4, (20, 60))));
    }

    /// Walks `s` in slices of `budget` records, checking each keeps to it and the whole holds
    /// `records` (torrents, peers); returns the slices taken.
    fn slices_of(s: &Shard, budget: usize, records: (u64, u64)) -> usize {
        let mut out = SectionWriter::new();
        let mut walk = s.start_walk();
        let mut slices = 0;
        loop {
            let before = out.torrents() + out.peers();
            let done = s.walk_slice(&mut walk, 0, budget, &mut out);
            assert!(
                out.torrents() + out.peers() - before <= budget as u64,
                "slice {slices}"
            );
            slices += 1;
            if done {
                break;
            }
            assert!(slices < 1_000, "the walk ends");
        }
        assert_eq!((out.torrents(), out.peers()), records);
        slices
    }

    #[test]
    fn snapshot_then_restore_is_the_identity_whatever_the_slice() {
        let s = sample_shard(50);
        s.check_invariants();
        for slice in [1, 7, 100, usize::MAX] {
            let back = round_trip(&s, 5, 5, slice);
            assert_eq!(contents(&back), contents(&s), "slice {slice}");
            assert_eq!(back.totals(), s.totals());
        }
    }

    #[test]
    fn a_restore_on_a_new_clock_keeps_the_time_left_and_drops_the_expired() {
        let s = sample_shard(50);
        // Written at 50, restored on a clock that starts over at 0: each peer keeps what it had
        // left at 50, so one that expired by then is gone.
        let back = round_trip(&s, 50, 0, 64);
        let shifted: Vec<_> = contents(&s)
            .into_iter()
            .filter_map(|(h, c, peers)| {
                let peers: Peers = peers
                    .into_iter()
                    .filter(|p| p.4 > 50)
                    .map(|(ip, port, seeder, counted, expires)| {
                        (ip, port, seeder, counted, expires - 50)
                    })
                    .collect();
                let seeders = peers.iter().filter(|p| p.2).count() as u32;
                let leechers = peers.len() as u32 - seeders;
                let counts = crate::protocol::SwarmCounts {
                    seeders,
                    leechers,
                    downloaded: c.downloaded,
                };
                // The kept torrent (emptied at 3, kept 50) still has 3 s at 50.
                (!peers.is_empty() || h == [99; 20]).then_some((h, counts, peers))
            })
            .collect();
        assert_eq!(contents(&back), shifted);
        let mut back = back;
        back.sweep(2);
        assert_eq!(back.counts(&[99; 20]).downloaded, 1);
        back.sweep(3);
        assert_eq!(
            back.counts(&[99; 20]).downloaded,
            0,
            "its 3 s were kept, no more"
        );
    }

    fn peer<I: Family>(ip: I, port: u16, seeder: bool, ttl_secs: u32) -> PeerRecord<I> {
        PeerRecord {
            ip,
            port,
            seeder,
            counted: false,
            ttl_secs,
        }
    }

    fn record(
        hash: u8,
        v4: Vec<PeerRecord<[u8; 4]>>,
        v6: Vec<PeerRecord<[u8; 16]>>,
    ) -> TorrentRecord {
        TorrentRecord {
            info_hash: [hash; 20],
            downloaded: 0,
            keep_secs: 0,
            v4,
            v6,
        }
    }

    #[test]
    fn a_restore_adds_each_live_peer_once_and_says_how_many() {
        let mut s = Shard::new(100);
        s.limit_sources(crate::swarm::Quotas {
            peers: 100,
            ..Default::default()
        });
        s.prefer_subnets(24, 64);
        let v6 = |last: u8| {
            let mut ip = [0u8; 16];
            ip[0] = 0x20;
            ip[15] = last;
            ip
        };
        let r = record(
            1,
            vec![
                peer([10, 0, 0, 1], 1, false, 10),
                // The same peer again (a seeder now): one peer, the later record's role.
                peer([10, 0, 0, 1], 1, true, 10),
                // Time up, and a port no client listens on: left out.
                peer([10, 0, 0, 2], 2, false, 0),
                peer([10, 0, 0, 3], 0, false, 10),
                peer([10, 0, 0, 4], 4, false, 10),
            ],
            vec![peer(v6(1), 1, false, 10), peer(v6(2), 2, true, 10)],
        );
        assert_eq!(s.restore(&r, 0), 4, "two IPv4 peers and two IPv6 ones");
        let c = s.counts(&[1; 20]);
        assert_eq!((c.seeders, c.leechers), (2, 2));
        assert_eq!(
            s.held("10.0.0.1".parse().unwrap()).map(|h| h.peers),
            Some(1)
        );
        assert_eq!(s.held("10.0.0.2".parse().unwrap()), None);
        s.check_invariants();
        // The same record again merges into the torrent: nothing new, counts unchanged.
        assert_eq!(s.restore(&r, 0), 0);
        assert_eq!(s.counts(&[1; 20]), c);
        assert_eq!((s.totals().seeders, s.totals().leechers), (2, 2));
        s.check_invariants();
    }

    #[test]
    fn a_restore_holds_the_limits_as_announces_do() {
        let mut one = Shard::with_limits(
            100,
            crate::swarm::Limits {
                max_torrents: 1,
                ..crate::swarm::Limits::NONE
            },
        );
        let a = record(1, vec![peer([10, 0, 0, 1], 1, false, 10)], vec![]);
        assert_eq!(one.restore(&a, 0), 1);
        let b = record(2, vec![peer([10, 0, 0, 1], 1, false, 10)], vec![]);
        assert_eq!(one.restore(&b, 0), 0, "the torrent limit");
        assert_eq!(one.totals().torrents, 1);
        let mut s = Shard::with_limits(
            100,
            crate::swarm::Limits {
                max_torrents: 2,
                max_peers_per_torrent: 3,
                max_peers: 5,
            },
        );
        let v4 = |n: u8| {
            (1..=n)
                .map(|i| peer([10, 0, 0, i], 1000, false, 10))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            s.restore(&record(1, v4(4), vec![]), 0),
            3,
            "a torrent's limit"
        );
        assert_eq!(
            s.restore(&record(2, v4(4), vec![]), 0),
            2,
            "the shard's limit"
        );
        assert_eq!(
            s.restore(&record(3, v4(1), vec![]), 0),
            0,
            "no room for its peer"
        );
        let t = s.totals();
        assert_eq!((t.torrents, t.leechers), (2, 5));
        s.check_invariants();
    }

    #[test]
    fn a_peer_whose_time_is_up_at_the_snapshot_is_left_out() {
        let mut s = Shard::new(100);
        let a = |port| announce(1, port, 10, AnnounceEvent::Started);
        s.announce([10, 0, 0, 1], &a(1), 0, 0, |_| {}).unwrap();
        s.announce([10, 0, 0, 2], &a(2), 0, 10, |_| {}).unwrap();
        s.announce([10, 0, 0, 3], &a(3), 0, 20, |_| {}).unwrap();
        // At 100 the first peer's lifetime is over (a sweep has not run): the file holds the
        // other two, and the torrent's record says two.
        let back = round_trip(&s, 100, 0, usize::MAX);
        let ports: Vec<u16> = contents(&back)[0].2.iter().map(|p| p.1).collect();
        assert_eq!(ports, vec![2, 3]);
    }

    #[test]
    fn a_torrent_whose_peers_ran_out_since_the_sweep_keeps_its_downloads() {
        let mut s = Shard::new(100);
        s.keep_downloaded(600);
        let done = announce(1, 1, 0, AnnounceEvent::Completed);
        s.announce([10, 0, 0, 1], &done, 0, 0, |_| {}).unwrap();
        // Never downloaded: nothing to keep once its peer is gone.
        let idle = announce(2, 1, 10, AnnounceEvent::Started);
        s.announce([10, 0, 0, 1], &idle, 0, 0, |_| {}).unwrap();
        // Downloaded and left at 0: kept until 600, when its time is up.
        for event in [AnnounceEvent::Completed, AnnounceEvent::Stopped] {
            let a = announce(3, 1, 0, event);
            s.announce([10, 0, 0, 1], &a, 0, 0, |_| {}).unwrap();
        }
        let mut out = SectionWriter::new();
        s.write_all(600, &mut out);
        assert_eq!(
            out.torrents(),
            1,
            "a kept torrent whose time is up is not written"
        );
        let mut out = SectionWriter::new();
        s.write_all(150, &mut out);
        let written = (out.torrents(), out.peers());
        assert_eq!(written, (2, 0), "only the downloaded torrents");
        let mut back = round_trip(&s, 150, 0, usize::MAX);
        assert_eq!(back.counts(&[1; 20]).downloaded, 1);
        assert_eq!(back.counts(&[3; 20]).downloaded, 1);
        assert_eq!(back.totals().torrents, 2);
        back.sweep(449);
        assert_eq!(back.counts(&[3; 20]).downloaded, 1, "its 450 s left");
        back.sweep(450);
        assert_eq!(back.counts(&[3; 20]).downloaded, 0);
        back.sweep(599);
        let kept = back.counts(&[1; 20]).downloaded;
        assert_eq!(kept, 1, "kept as a sweep would keep it");
        back.sweep(600);
        assert_eq!(back.totals().torrents, 0);
    }

    #[test]
    fn the_shutdown_snapshot_holds_the_whole_shard() {
        let s = sample_shard(50);
        let mut out = SectionWriter::new();
        s.write_all(5, &mut out);
        let mut walked = SectionWriter::new();
        let mut walk = s.start_walk();
        while !s.walk_slice(&mut walk, 5, 3, &mut walked) {}
        assert_eq!(
            out.torrents(),
            40,
            "39 swarms and the one kept for its count"
        );
        assert_eq!(out.as_bytes(), walked.as_bytes());
    }

    #[test]
    fn a_walk_goes_on_as_the_table_grows_and_starts_over_when_it_is_packed() {
        let mut s = sample_shard(0);
        let grow = |s: &mut Shard, from: u8| {
            for t in from..from + 100 {
                s.announce(
                    [9, 9, 9, 9],
                    &announce(t, 1, 10, AnnounceEvent::Started),
                    0,
                    0,
                    |_| {},
                )
                .unwrap();
            }
        };
        let mut out = SectionWriter::new();
        let mut walk = s.start_walk();
        assert!(!s.walk_slice(&mut walk, 0, 10, &mut out));
        // New torrents take new slots (the index grows under the walk): nothing moves.
        grow(&mut s, 100);
        while !s.walk_slice(&mut walk, 0, 10, &mut out) {}
        assert_eq!(walk.restarts, 0);
        assert_eq!(
            out.torrents() as usize,
            s.totals().torrents,
            "each torrent once"
        );

        // Packing the slots (a sweep that freed most of them) moves torrents: start over.
        let mut out = SectionWriter::new();
        let mut walk = s.start_walk();
        assert!(!s.walk_slice(&mut walk, 0, 10, &mut out));
        s.torrents.shrink_to(0);
        while !s.walk_slice(&mut walk, 0, 10, &mut out) {}
        assert_eq!(walk.restarts, 1);
        assert_eq!(
            out.torrents() as usize,
            s.totals().torrents,
            "each torrent once"
        );
    }
}
