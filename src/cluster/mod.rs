//! Many nodes, one swarm: each node keeps its in-memory shards as the only place announces are
//! answered from, and a sync thread exchanges swarms with the other nodes through Redis or a
//! Redis Cluster (`[cluster]`). The workers' post-hooks queue what changed ([`outbox`]); the
//! sync thread writes it and reads back the other nodes' peers of the torrents being asked
//! about ([`sync`]), which each owning worker caches and merges into replies ([`remote`]).
//! Nothing on a worker ever waits on Redis.

pub mod config;
pub mod keys;
pub mod outbox;
pub mod remote;
pub mod stats;
pub mod store;
pub mod sync;

pub use config::{ClusterConfig, RedisAddress};
pub use outbox::{Delta, Outbox};
pub use remote::{RemoteCache, RemoteSwarm, RemoteUpdate};
pub use stats::{ClusterSnapshot, ClusterStats};
pub use sync::{ClusterWork, SyncSettings, SyncThread};

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This node's name: `node_id`, or `<hostname>-<port>`.
pub fn node_name(config: &ClusterConfig, first_udp_port: Option<u16>) -> String {
    if !config.node_id.is_empty() {
        return config.node_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace([':', '{', '}'], "_"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hayate".into());
    match first_udp_port {
        Some(port) => format!("{host}-{port}"),
        None => host,
    }
}
