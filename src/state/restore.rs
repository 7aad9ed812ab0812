//! Start-up from a snapshot: reads the file, routes every torrent to the worker that owns it
//! under this run's worker count (so changing the count between runs re-shards), and decides
//! whether the connection-id key and clock carry over. A file that cannot be used never stops
//! the tracker: `files::load` has moved it aside and this run starts empty.

use std::path::Path;

use super::files::{load, Loaded};
use super::keeper::{unix_now, Identity};
use super::snapshot::TorrentRecord;
use crate::mesh::shard_of;

pub struct Restored {
    /// The torrents each worker restores into its shard.
    pub per_worker: Vec<Vec<TorrentRecord>>,
    /// The writing run's clock and key, when recent enough that ids made with them may still
    /// be held by clients.
    pub identity: Option<Identity>,
    /// Seconds since the file was written (0 without a file): every remaining lifetime in it
    /// is shortened by this much.
    pub age_secs: u32,
}

/// Reads `dir`'s snapshot for `workers` workers; ids live `id_lifetime_secs`.
pub fn restore(dir: &Path, workers: usize, id_lifetime_secs: u32) -> Restored {
    let mut r = Restored {
        per_worker: (0..workers.max(1)).map(|_| Vec::new()).collect(),
        identity: None,
        age_secs: 0,
    };
    let snapshot = match load(dir) {
        Loaded::Missing => {
            tracing::info!(dir = %dir.display(), "no snapshot yet: starting with an empty swarm");
            return r;
        }
        Loaded::MovedAside { reason, to } => {
            tracing::error!(
                moved_to = %to.display(),
                "snapshot unusable ({reason}); moved aside, starting with an empty swarm"
            );
            return r;
        }
        Loaded::Restored(s) => s,
    };
    let now = unix_now();
    let elapsed = now.saturating_sub(snapshot.header.written_unix);
    r.age_secs = elapsed.min(u64::from(u32::MAX)) as u32;
    if elapsed <= u64::from(id_lifetime_secs) && snapshot.header.clock_origin_unix <= now {
        r.identity = Some(Identity {
            clock_origin_unix: snapshot.header.clock_origin_unix,
            connection_key: snapshot.header.connection_key,
        });
    }
    for mut t in snapshot.torrents {
        age(&mut t, r.age_secs);
        let w = shard_of(&t.info_hash, r.per_worker.len());
        r.per_worker[w].push(t);
    }
    r
}

/// Shortens every lifetime in `t` by `age` seconds (the time the tracker was down); peers
/// whose time ran out meanwhile get 0 and are dropped by the restore.
fn age(t: &mut TorrentRecord, age: u32) {
    for p in &mut t.v4 {
        p.ttl_secs = p.ttl_secs.saturating_sub(age);
    }
    for p in &mut t.v6 {
        p.ttl_secs = p.ttl_secs.saturating_sub(age);
    }
    t.keep_secs = t.keep_secs.saturating_sub(age);
}
