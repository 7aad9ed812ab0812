//! Walking a shard's table a slice at a time, for whatever reads the whole shard (a snapshot,
//! a census for the status page and the full scrape): a worker answers requests between
//! slices instead of stalling for a million torrents at once. Requests between slices may pack
//! the table (moving torrents between slots); the walk notices and starts over, so no torrent
//! is missed or seen twice.

use super::{Shard, Torrent};
use crate::protocol::InfoHash;

/// Where a walk of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    next_slot: usize,
    layout: u64,
    /// Times the table was packed under the walk (torrents moved), making it start over.
    pub restarts: u32,
}

impl Shard {
    /// A walk from the start of the table.
    pub fn start_walk(&self) -> Walk {
        Walk {
            next_slot: 0,
            layout: self.torrents.layout(),
            restarts: 0,
        }
    }

    /// Visits torrents from where `walk` is until the visits reported `budget` units of work
    /// or the table ends; true once the whole table was visited. If the table was packed
    /// since the walk began, `restart` empties what `into` gathered and the walk starts over.
    pub(super) fn visit_slice<S: ?Sized>(
        &self,
        walk: &mut Walk,
        budget: usize,
        into: &mut S,
        restart: impl FnOnce(&mut S),
        mut visit: impl FnMut(&mut S, &InfoHash, &Torrent) -> usize,
    ) -> bool {
        if walk.layout != self.torrents.layout() {
            restart(into);
            *walk = Walk {
                restarts: walk.restarts + 1,
                ..self.start_walk()
            };
        }
        let slots = self.torrents.slots();
        let mut spent = 0;
        for index in walk.next_slot..slots {
            if spent >= budget {
                break;
            }
            if let Some((hash, t)) = self.torrents.slot(index) {
                spent += visit(into, hash, t);
            }
            walk.next_slot = index + 1;
        }
        walk.next_slot >= slots
    }
}

/// One live peer as a walk hands it out (for a re-publish to other nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkedPeer {
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub seeder: bool,
    /// Process-clock second it expires.
    pub expires: u32,
}

impl Shard {
    /// Hands `each` every live peer of the torrents from where `walk` is, with the torrent's
    /// downloads, until `budget` torrents plus peers were handed out; true once the table ends.
    /// A walk restarted by packing hands some peers out twice, which a re-publish tolerates.
    pub fn peers_slice(
        &self,
        walk: &mut Walk,
        now: u32,
        budget: usize,
        mut each: impl FnMut(&InfoHash, u32, WalkedPeer),
    ) -> bool {
        self.visit_slice(
            walk,
            budget,
            &mut (),
            |_| {},
            |_, hash, t| {
                let mut n = 1;
                n += walked(&t.v4, now, |p| each(hash, t.downloaded, p));
                if let Some(v6) = t.v6() {
                    n += walked(v6, now, |p| each(hash, t.downloaded, p));
                }
                n
            },
        )
    }
}

fn walked<I: super::Family>(
    set: &super::PeerSet<I, impl super::Store<I>>,
    now: u32,
    mut each: impl FnMut(WalkedPeer),
) -> usize {
    let seeders = set.seeders();
    let mut n = 0;
    for (i, p) in set.peers().iter().enumerate() {
        if p.expires > now {
            each(WalkedPeer {
                ip: p.ip.addr(),
                port: p.port,
                seeder: i < seeders,
                expires: p.expires,
            });
            n += 1;
        }
    }
    n
}
