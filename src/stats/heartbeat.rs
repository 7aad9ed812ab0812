//! A thread's heartbeat: the moment it last proved it runs, for `/health` and the systemd
//! watchdog. Workers stamp theirs on their one-second tick (`WorkerStats::heartbeat_ms`); the
//! HTTP thread and the stats thread each own a `Heartbeat` stamped by a task on their own
//! runtime, so a runtime that stops being polled (a blocking call, a thread descheduled) stops
//! its heartbeat, which is what makes the check honest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::counters::Counter;

/// How often a runtime's heartbeat task stamps: far below any `stale_after_secs` (2 s at least),
/// cheap (one store every quarter second).
pub const PERIOD: Duration = Duration::from_millis(250);

/// One thread's last sign of life, in milliseconds since the tracker's epoch. One writer (the
/// thread it describes, see `counters`); anyone may read it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    at_ms: Arc<CachePadded<Counter>>,
    epoch: Instant,
}

impl Heartbeat {
    /// A heartbeat stamped now: the thread gets `stale_after` from its creation to beat, not
    /// from the epoch (which a restored swarm carries over from the previous run).
    pub fn new(epoch: Instant) -> Heartbeat {
        let h = Heartbeat {
            at_ms: Default::default(),
            epoch,
        };
        h.beat();
        h
    }

    /// Stamps now. Only the owning thread may call this.
    pub fn beat(&self) {
        self.at_ms.set(self.epoch.elapsed().as_millis() as u64);
    }

    /// Milliseconds since the epoch at the last beat.
    pub fn last_ms(&self) -> u64 {
        self.at_ms.get()
    }

    /// Beats every `PERIOD` for as long as the tokio runtime it is spawned on polls it.
    pub async fn keep(self) {
        let mut every = tokio::time::interval(PERIOD);
        // After a stall, one beat says "running again"; a burst of catch-up beats says nothing.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            self.beat();
        }
    }
}
