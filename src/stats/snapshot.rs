//! Aggregation: reads every thread's block into plain numbers at one moment. The stats thread
//! does this on its interval and serves the latest snapshot, so a scrape never touches the
//! workers' cache lines and every scraper of one interval sees the same figures.

use super::counters::{Sources, TrafficSnapshot};

/// One worker's shard size and liveness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub torrents: u64,
    pub seeders: u64,
    pub leechers: u64,
    /// Milliseconds since the epoch at its last tick (0: none yet).
    pub heartbeat_ms: u64,
    /// UDP requests it received, every action and IP version.
    pub requests: u64,
    /// Requests it handed to the worker owning their torrent.
    pub forwarded: u64,
    /// Work it could not hand over because the owner's inbox was full.
    pub inbox_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// All workers' UDP traffic, summed.
    pub udp: TrafficSnapshot,
    pub http: TrafficSnapshot,
    pub workers: Vec<WorkerSnapshot>,
    /// The heartbeats of the threads that are not workers, by name ("http" when HTTP is on,
    /// "stats"): milliseconds since the epoch at each one's last beat.
    pub threads: Vec<(&'static str, u64)>,
    /// Milliseconds since the epoch when it was taken.
    pub taken_ms: u64,
    /// The cluster sync thread's figures, when `[cluster]` is on.
    pub cluster: Option<crate::cluster::ClusterSnapshot>,
}

impl Snapshot {
    pub fn take(sources: &Sources) -> Snapshot {
        let mut s = Snapshot {
            http: sources.http.snapshot(),
            workers: Vec::with_capacity(sources.workers.len()),
            ..Snapshot::default()
        };
        for w in &sources.workers {
            let udp = w.udp.snapshot();
            s.udp.add(&udp);
            s.workers.push(WorkerSnapshot {
                torrents: w.torrents.get(),
                seeders: w.seeders.get(),
                leechers: w.leechers.get(),
                heartbeat_ms: w.heartbeat_ms.get(),
                requests: udp.requests_total(),
                forwarded: udp.forwarded.iter().sum(),
                inbox_dropped: udp.inbox_dropped.iter().sum(),
            });
        }
        if let Some(http) = &sources.http_heartbeat {
            s.threads.push(("http", http.last_ms()));
        }
        s.threads.push(("stats", sources.stats_heartbeat.last_ms()));
        s.taken_ms = sources.epoch.elapsed().as_millis() as u64;
        s.cluster = sources.cluster.as_ref().map(|c| c.snapshot());
        s
    }

    /// Requests of both protocols.
    pub fn requests_total(&self) -> u64 {
        self.udp.requests_total() + self.http.requests_total()
    }

    /// Refusals and losses of both protocols.
    pub fn errors_total(&self) -> u64 {
        self.udp.errors_total() + self.http.errors_total()
    }

    /// Totals over every worker.
    pub fn totals(&self) -> WorkerSnapshot {
        self.workers
            .iter()
            .fold(WorkerSnapshot::default(), |a, w| WorkerSnapshot {
                torrents: a.torrents + w.torrents,
                seeders: a.seeders + w.seeders,
                leechers: a.leechers + w.leechers,
                heartbeat_ms: a.heartbeat_ms.max(w.heartbeat_ms),
                requests: a.requests + w.requests,
                forwarded: a.forwarded + w.forwarded,
                inbox_dropped: a.inbox_dropped + w.inbox_dropped,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::{Action, IpVersion};

    #[test]
    fn sums_workers_and_keeps_http_apart() {
        let sources = Sources::new(2, std::time::Instant::now());
        sources.workers[0]
            .udp
            .request(Action::Connect, IpVersion::V4);
        sources.workers[1]
            .udp
            .request(Action::Connect, IpVersion::V4);
        sources.workers[1].torrents.set(3);
        sources.workers[0].seeders.set(2);
        sources.http.request(Action::Announce, IpVersion::V6);
        let s = Snapshot::take(&sources);
        assert_eq!(s.udp.requests(Action::Connect, IpVersion::V4), 2);
        assert_eq!(s.udp.requests(Action::Announce, IpVersion::V6), 0);
        assert_eq!(s.http.requests(Action::Announce, IpVersion::V6), 1);
        assert_eq!(s.workers[1].torrents, 3);
        let t = s.totals();
        assert_eq!((t.torrents, t.seeders, t.leechers), (3, 2, 0));
    }
}
