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
