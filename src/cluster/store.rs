//! The connection to Redis, standalone or Redis Cluster, behind one call: run a pipeline of
//! commands and get their replies in order. Blocking, on the sync thread only, with connect
//! and response timeouts so a Redis that hangs is a Redis that is down.

use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use super::config::{ClusterConfig, RedisAddress};

pub enum Store {
    One(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
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

    /// Runs `commands` as one pipeline; their replies, in order.
    pub fn run(&mut self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::One(c) => {
                let mut p = redis::pipe();
                for cmd in commands {
                    p.add_command(cmd);
                }
                p.query(c)
            }
            Store::Cluster(c) => {
                let mut p = redis::cluster::cluster_pipe();
                for cmd in commands {
                    p.add_command(cmd);
                }
                p.query(c.as_mut())
            }
        }
    }
}
