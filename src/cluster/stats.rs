//! The sync thread's figures, for `/metrics` and the Grafana row: written by the sync thread
//! (and, for dropped changes, by a worker whose change found the queue full), read by the
//! stats thread. Plain relaxed atomics: each is one figure, none needs to agree with another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Pipelines sent to Redis.
    pub batches: AtomicU64,
    /// Commands in them.
    pub commands: AtomicU64,
    /// Failed connects and batches (Redis down, slow, failing over, or answering garbage).
    pub errors: AtomicU64,
    /// Times the whole local swarm was published again (Redis new, emptied, or changes lost).
    pub republishes: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
    /// Milliseconds the oldest change of the last batch waited to be written (or, while Redis
    /// cannot be written, has waited so far).
    pub lag_ms: AtomicU64,
    /// Torrents and peers of other nodes cached for replies.
    pub remote_torrents: AtomicU64,
    pub remote_peers: AtomicU64,
    /// Changes dropped because the queue to the sync thread was full.
    pub dropped: Arc<AtomicU64>,
}

/// The figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub batches: u64,
    pub commands: u64,
    pub errors: u64,
    pub republishes: u64,
    pub connected: bool,
    pub lag_ms: u64,
    pub remote_torrents: u64,
    pub remote_peers: u64,
    pub dropped: u64,
}

impl ClusterStats {
    pub fn snapshot(&self) -> ClusterSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterSnapshot {
            batches: get(&self.batches),
            commands: get(&self.commands),
            errors: get(&self.errors),
            republishes: get(&self.republishes),
            connected: get(&self.connected) == 1,
            lag_ms: get(&self.lag_ms),
            remote_torrents: get(&self.remote_torrents),
            remote_peers: get(&self.remote_peers),
            dropped: get(&self.dropped),
        }
    }

    pub(super) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set(a: &AtomicU64, n: u64) {
        a.store(n, Ordering::Relaxed);
    }
}
