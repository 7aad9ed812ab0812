//! A worker's part in a census (the metrics endpoint's status page and full scrape): it walks
//! its own shard a slice at a time between batches of requests, as for a snapshot, and answers
//! every census asked for before the walk began. One asked for during a walk waits for the
//! next, so what it gets was counted after it asked.

use tokio::sync::oneshot;

use crate::swarm::{Census, Shard, Walk};

/// Torrents plus peers one slice counts at most.
const SLICE: usize = 8192;

type Reply = oneshot::Sender<Census>;

#[derive(Default)]
pub struct CensusDuty {
    /// Asked for since the walk under way began.
    waiting: Vec<(bool, Reply)>,
    /// The walk under way, what it has counted, and whom it answers.
    walking: Option<(Walk, Census, Vec<Reply>)>,
}

impl CensusDuty {
    /// A census asked for; `list`: with every torrent's counts.
    pub fn ask(&mut self, list: bool, reply: Reply) {
        self.waiting.push((list, reply));
    }

    /// Does one slice of a census when one is asked for. True while a walk is under way (the
    /// worker should come back soon).
    pub fn step(&mut self, shard: &Shard) -> bool {
        if self.walking.is_none() {
            // Those who gave up waiting need no walk.
            self.waiting.retain(|(_, r)| !r.is_closed());
            if self.waiting.is_empty() {
                return false;
            }
            let list = self.waiting.iter().any(|(list, _)| *list);
            let replies = self.waiting.drain(..).map(|(_, r)| r).collect();
            self.walking = Some((shard.start_walk(), Census::new(list), replies));
        }
        let Some((walk, census, _)) = &mut self.walking else {
            return false;
        };
        if !shard.census_slice(walk, SLICE, census) {
            return true;
        }
        let (_, census, mut replies) = self.walking.take().expect("a walk under way");
        let last = replies.pop();
        for reply in replies {
            let _ = reply.send(census.clone());
        }
        if let Some(reply) = last {
            let _ = reply.send(census);
        }
        !self.waiting.is_empty()
    }
}
