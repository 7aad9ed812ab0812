//! The connection to Redis, standalone or Redis Cluster, behind one shape: a [`Batch`] of
//! commands built in place (no command is built twice) and run as one pipeline, its replies in
//! order. Blocking, on the sync thread only, with connect and response timeouts so a Redis
//! that hangs is a Redis that is down.

use std::time::Duration;

use redis::{RedisResult, ToRedisArgs, Value};

use super::config::{ClusterConfig, RedisAddress};

pub enum Store {
    One(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// Commands waiting to be sent as one pipeline.
pub struct Batch {
    inner: Inner,
    len: usize,
}

enum Inner {
    One(redis::Pipeline),
    Cluster(redis::cluster::ClusterPipeline),
}

impl Batch {
    /// Starts a command; `arg` adds to it.
    pub fn cmd(&mut self, name: &str) -> &mut Self {
        match &mut self.inner {
            Inner::One(p) => {
                p.cmd(name);
            }
            Inner::Cluster(p) => {
                p.cmd(name);
            }
        }
        self.len += 1;
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        match &mut self.inner {
            Inner::One(p) => {
                p.arg(arg);
            }
            Inner::Cluster(p) => {
                p.arg(arg);
            }
        }
        self
    }

    /// Commands in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        match &mut self.inner {
            Inner::One(p) => p.clear(),
            Inner::Cluster(p) => p.clear(),
        }
        self.len = 0;
    }
}

impl Store {
    pub fn connect(config: &ClusterConfig) -> RedisResult<Store> {
        let connect = Duration::from_millis(config.connect_timeout_ms.into());
        let response = Duration::from_millis(config.command_timeout_ms.into());
        match &config.redis {
            RedisAddress::One(url) => {
                let client = redis::Client::open(url.as_str())?;
                let c = client.get_connection_with_timeout(connect)?;
                c.set_read_timeout(Some(response))?;
                c.set_write_timeout(Some(response))?;
                Ok(Store::One(c))
            }
            RedisAddress::Cluster(seeds) => {
                let client = redis::cluster::ClusterClient::builder(seeds.clone())
                    .connection_timeout(connect)
                    .response_timeout(response)
                    // A moved slot is followed at once; anything longer is the next sync's.
                    .retries(2)
                    .build()?;
                Ok(Store::Cluster(Box::new(client.get_connection()?)))
            }
        }
    }

    /// An empty batch of the kind this connection runs.
    pub fn batch(&self) -> Batch {
        let inner = match self {
            Store::One(_) => Inner::One(redis::pipe()),
            Store::Cluster(_) => Inner::Cluster(redis::cluster::cluster_pipe()),
        };
        Batch { inner, len: 0 }
    }

    /// Runs `batch` as one pipeline; its replies, in order.
    pub fn run(&mut self, batch: &Batch) -> RedisResult<Vec<Value>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match (self, &batch.inner) {
            (Store::One(c), Inner::One(p)) => p.query(c),
            (Store::Cluster(c), Inner::Cluster(p)) => p.query(c.as_mut()),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a batch built for another kind of connection",
            ))),
        }
    }
}
