//! A worker's part in a cluster of nodes: the other nodes' peers of the torrents it owns (the
//! sync thread hands them over; replies and scrapes merge them), the queue its changes go out
//! on, and a re-publish of its whole shard when the sync thread asks: walked a slice at a time
//! between batches, as for a snapshot, and paused while the queue has no room for a slice.

use crate::cluster::{ClusterWork, Delta, Outbox, RemoteCache};
use crate::protocol::InfoHash;
use crate::swarm::{Shard, Walk};

/// Torrents plus peers one slice publishes at most.
const SLICE: usize = 4096;

pub struct ClusterDuty {
    pub remote: RemoteCache,
    outbox: Outbox,
    republish: Option<Walk>,
}

impl ClusterDuty {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            remote: RemoteCache::default(),
            outbox,
            republish: None,
        }
    }

    /// The sync thread's request.
    pub fn work(&mut self, work: ClusterWork, shard: &Shard) {
        match work {
            ClusterWork::Remote(update) => self.remote.apply(update),
            // A walk under way starts over: what it already sent may predate the loss.
            ClusterWork::Republish => self.republish = Some(shard.start_walk()),
        }
    }

    /// A torrent was scraped: the sync thread should read its remote counts.
    #[inline]
    pub fn asked(&self, info_hash: &InfoHash) {
        self.outbox.push(Delta::Asked {
            info_hash: *info_hash,
        });
    }

    /// One slice of a re-publish, if one is under way and the queue has room. True while one
    /// is under way (the worker should come back soon).
    pub fn step(&mut self, shard: &Shard, now: u32) -> bool {
        let Some(walk) = &mut self.republish else {
            return false;
        };
        if self.outbox.room() < SLICE {
            return true;
        }
        let at = std::time::Instant::now();
        let outbox = &self.outbox;
        let done = shard.peers_slice(walk, now, SLICE, |hash, downloads, p| {
            outbox.push(Delta::Peer {
                info_hash: *hash,
                ip: p.ip,
                port: p.port,
                seeder: p.seeder,
                // Its old role's set may hold it (Redis kept some of our state): clear it.
                moved: true,
                removed: false,
                expires_unix: outbox.unix(p.expires),
                downloads: Some(downloads),
                at,
            });
        });
        if done {
            self.republish = None;
        }
        !done
    }
}
