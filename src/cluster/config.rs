//! The `[cluster]` section: where the shared Redis is, who this node is, and the bounds on what
//! the sync thread queues and caches. Validated here, so a bad value is a config error naming
//! its key before anything starts.

use serde::Deserialize;

/// Where the nodes exchange swarms: one Redis server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisAddress {
    /// `redis = "redis://host:port"`: a standalone server ("" is off).
    One(String),
    /// `redis = ["redis://a:7000", ...]`: seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl Default for RedisAddress {
    fn default() -> Self {
        RedisAddress::One(String::new())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub redis: RedisAddress,
    /// This node's name in Redis; "" is `<hostname>-<first UDP port>`.
    pub node_id: String,
    pub sync_interval_ms: u32,
    /// Put before every key, so several trackers can share one Redis.
    pub key_prefix: String,
    pub connect_timeout_ms: u32,
    pub command_timeout_ms: u32,
    /// Changes waiting for the sync thread, all workers together; past it a change is dropped
    /// (counted), and the peer's next announce sends it again.
    pub max_queued_changes: u32,
    /// Torrents whose remote peers this node caches.
    pub max_remote_torrents: u32,
    /// Remote peers cached per torrent, per other node and role.
    pub max_remote_peers: u32,
}

impl ClusterConfig {
    /// Whether cluster sync is on.
    pub fn enabled(&self) -> bool {
        match &self.redis {
            RedisAddress::One(url) => !url.trim().is_empty(),
            RedisAddress::Cluster(seeds) => !seeds.is_empty(),
        }
    }

    /// Checks values that parse but cannot work; the key and what is allowed.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |key: &'static str, v: u32, lo: u32, hi: u32| {
            if v < lo || v > hi {
                Err((key, format!("must be between {lo} and {hi}, got {v}")))
            } else {
                Ok(())
            }
        };
        let urls: Vec<&str> = match &self.redis {
            RedisAddress::One(url) if url.trim().is_empty() => Vec::new(),
            RedisAddress::One(url) => vec![url.as_str()],
            RedisAddress::Cluster(seeds) => seeds.iter().map(String::as_str).collect(),
        };
        for url in urls {
            if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
                return Err((
                    "cluster.redis",
                    format!(
                        "must be redis://host:port (or a list of them for a Redis Cluster), \
                         or \"\" for off; got {url:?}"
                    ),
                ));
            }
            redis::Client::open(url)
                .map_err(|e| ("cluster.redis", format!("{url:?} is not a Redis URL: {e}")))?;
        }
        range(
            "cluster.sync_interval_ms",
            self.sync_interval_ms,
            50,
            60_000,
        )?;
        range(
            "cluster.connect_timeout_ms",
            self.connect_timeout_ms,
            10,
            60_000,
        )?;
        range(
            "cluster.command_timeout_ms",
            self.command_timeout_ms,
            10,
            60_000,
        )?;
        range(
            "cluster.max_queued_changes",
            self.max_queued_changes,
            1_000,
            100_000_000,
        )?;
        range(
            "cluster.max_remote_torrents",
            self.max_remote_torrents,
            1,
            10_000_000,
        )?;
        range("cluster.max_remote_peers", self.max_remote_peers, 1, 10_000)?;
        // The torrent's hash tag must be the first `{...}` of every key (Redis Cluster slots).
        if self.key_prefix.contains(['{', '}']) {
            return Err((
                "cluster.key_prefix",
                "must not contain { or }: keys use {info hash} as their Redis Cluster hash tag"
                    .into(),
            ));
        }
        if self.node_id.contains(['{', '}', ':']) || self.node_id.len() > 64 {
            return Err((
                "cluster.node_id",
                "must be at most 64 characters, without { } or :".into(),
            ));
        }
        Ok(())
    }
}
