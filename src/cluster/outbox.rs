//! What the workers hand the sync thread: every change the swarm made (from the pipeline's
//! post-hooks) and every torrent asked about, through one bounded lock-free queue. A worker
//! never waits on it: when it is full the change is dropped and counted, and the peer's next
//! announce sends its state again.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::policy::{Change, PeerChange, PostHook};
use crate::protocol::InfoHash;

/// One thing the sync thread must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A peer's state now: stored until `expires_unix`, or gone (`removed`).
    Peer {
        info_hash: InfoHash,
        ip: IpAddr,
        port: u16,
        seeder: bool,
        /// It was in the other role before (so it must leave that set).
        moved: bool,
        removed: bool,
        expires_unix: u64,
        /// The torrent's downloads as this node counts them, when the change counted one
        /// (or when the whole swarm is re-published).
        downloads: Option<u32>,
        /// When the change was made, for the sync lag.
        at: Instant,
    },
    /// A torrent was scraped: its remote counts are wanted.
    Asked { info_hash: InfoHash },
}

impl Delta {
    pub fn info_hash(&self) -> &InfoHash {
        match self {
            Delta::Peer { info_hash, .. } | Delta::Asked { info_hash } => info_hash,
        }
    }
}

/// A worker's sending end; cloned per worker (and once more into its pipeline).
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Delta>,
    /// Changes dropped because the queue was full (any worker; only written when it is).
    dropped: Arc<AtomicU64>,
    /// Unix second of the worker's process clock zero.
    clock_origin_unix: u64,
}

/// The queue: the workers' end and the sync thread's.
pub fn queue(capacity: usize, clock_origin_unix: u64) -> (Outbox, Receiver<Delta>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let outbox = Outbox {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        clock_origin_unix,
    };
    (outbox, rx)
}

impl Outbox {
    /// Queues `delta`; false (and counted) when the queue is full.
    pub fn push(&self, delta: Delta) -> bool {
        match self.tx.try_send(delta) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            // The sync thread is gone: the tracker is stopping.
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Room left in the queue.
    pub fn room(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX) - self.tx.len()
    }

    /// The Unix second of process-clock second `t`.
    pub fn unix(&self, t: u32) -> u64 {
        self.clock_origin_unix + u64::from(t)
    }

    /// Changes dropped so far.
    pub fn dropped(&self) -> &Arc<AtomicU64> {
        &self.dropped
    }
}

impl PostHook for Outbox {
    fn changed(&mut self, c: &Change<'_>) {
        let removed = c.kind == PeerChange::Removed;
        self.push(Delta::Peer {
            info_hash: *c.info_hash,
            ip: c.ip,
            port: c.port,
            seeder: c.seeder,
            moved: c.kind == PeerChange::Updated && c.was_seeder != c.seeder,
            removed,
            expires_unix: if removed { 0 } else { self.unix(c.expires) },
            downloads: c.downloaded.then_some(c.total_downloaded),
            at: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (outbox, rx) = queue(2, 1000);
        let d = Delta::Asked { info_hash: [1; 20] };
        assert!(outbox.push(d));
        assert!(outbox.push(d));
        assert_eq!(outbox.room(), 0);
        assert!(!outbox.push(d));
        assert_eq!(outbox.dropped().load(Ordering::Relaxed), 1);
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(outbox.room(), 2);
        assert_eq!(outbox.unix(5), 1005);
    }

    #[test]
    fn post_hook_turns_a_change_into_a_delta_on_the_unix_clock() {
        let (mut outbox, rx) = queue(8, 1_000_000);
        let peer_id = [0; 20];
        let change = Change {
            info_hash: &[9; 20],
            ip: "10.0.0.1".parse().unwrap(),
            port: 7,
            peer_id: &peer_id,
            kind: PeerChange::Updated,
            seeder: true,
            was_seeder: false,
            downloaded: true,
            total_downloaded: 4,
            expires: 60,
        };
        outbox.changed(&change);
        outbox.changed(&Change {
            kind: PeerChange::Removed,
            downloaded: false,
            ..change
        });
        let got: Vec<_> = rx.try_iter().collect();
        match got[0] {
            Delta::Peer {
                removed,
                expires_unix,
                downloads,
                seeder,
                moved,
                ..
            } => {
                assert!(!removed && seeder && moved);
                assert_eq!(expires_unix, 1_000_060);
                assert_eq!(downloads, Some(4));
            }
            _ => panic!("{got:?}"),
        }
        match got[1] {
            Delta::Peer {
                removed, downloads, ..
            } => assert!(removed && downloads.is_none()),
            _ => panic!("{got:?}"),
        }
    }
}
