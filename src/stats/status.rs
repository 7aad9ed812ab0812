//! The figures of the status page, in one structure that `/status.json` serialises and the
//! HTML page (`status_page`) lays out, so the two can never disagree. Totals come from the
//! latest snapshot, the same one `/metrics` serves; rates are the change over the history's
//! window (about ten seconds); latency percentiles are over that window too.

use serde::Serialize;

use super::census::Gathered;
use super::counters::{Action, ErrorReason, IpVersion, TrafficSnapshot, LATENCY_BOUNDS_US};
use super::history::History;
use super::process::ProcessFigures;
use crate::protocol::{peer_client, to_hex};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// The UDP I/O backend ("io_uring" or "epoll").
    pub io: &'static str,
    pub uptime_secs: u64,
    /// Seconds the rates are measured over.
    pub rate_window_secs: f64,
    pub swarm: Swarm,
    pub protocols: Vec<Protocol>,
    /// Every reason with a count, both protocols, most frequent first.
    pub errors: Vec<ErrorCount>,
    pub workers: Vec<Worker>,
    pub process: Process,
    /// The last hour, a point a minute: requests/s, errors/s and peers held.
    pub history: Vec<HistoryPoint>,
    /// The last census of the swarm; `None` before the first, or with `census_secs = 0`.
    pub census: Option<CensusFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CensusFigures {
    /// Seconds between the census and the latest snapshot.
    pub age_secs: u64,
    /// The torrents with most peers, largest first.
    pub top_torrents: Vec<TopTorrent>,
    /// Peers by client (from the peer_id prefix), most first; clients with none left out.
    pub clients: Vec<ClientPeers>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopTorrent {
    pub info_hash: String,
    pub seeders: u32,
    pub leechers: u32,
    pub downloaded: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientPeers {
    pub client: &'static str,
    pub peers: u64,
    /// Of all peers counted (0 to 1).
    pub share: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Swarm {
    pub torrents: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub peers: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Protocol {
    pub protocol: &'static str,
    pub requests_total: u64,
    pub requests_per_sec: f64,
    pub responses_per_sec: f64,
    pub ipv4_requests_total: u64,
    pub ipv6_requests_total: u64,
    pub bytes_received_per_sec: f64,
    pub bytes_sent_per_sec: f64,
    pub actions: Vec<ActionFigures>,
    /// Request-to-reply time over the window, as the upper bound of the bucket each
    /// percentile falls in (`None`: nothing answered in the window).
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionFigures {
    pub action: &'static str,
    pub requests_total: u64,
    pub requests_per_sec: f64,
    pub responses_per_sec: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub protocol: &'static str,
    pub reason: &'static str,
    pub total: u64,
    pub per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    pub worker: usize,
    pub torrents: u64,
    pub peers: u64,
    pub requests_per_sec: f64,
    /// Share of its requests in the window it handed to another worker (0 to 1).
    pub forwarded_share: f64,
    pub inbox_dropped_total: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct HistoryPoint {
    /// Seconds before the latest snapshot.
    pub ago_secs: u64,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub peers: u64,
}

/// Change per second from `from` to `to` over `secs`.
pub(super) fn rate(from: u64, to: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        to.saturating_sub(from) as f64 / secs
    } else {
        0.0
    }
}

/// The smallest bucket bound at or under which a share `q` of the window's replies fell.
fn percentile(from: &TrafficSnapshot, to: &TrafficSnapshot, q: f64) -> Option<u64> {
    let counts: Vec<u64> = (to.latency_us.buckets.iter())
        .zip(from.latency_us.buckets)
        .map(|(t, f)| t.saturating_sub(f))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            // The last bucket has no bound: say the largest one, as "over" it.
            return Some(LATENCY_BOUNDS_US[i.min(LATENCY_BOUNDS_US.len() - 1)]);
        }
    }
    None
}

fn protocol(
    name: &'static str,
    from: &TrafficSnapshot,
    to: &TrafficSnapshot,
    secs: f64,
) -> Protocol {
    let actions = Action::ALL
        .into_iter()
        // HTTP has no connect, and nothing is ever asked as "error".
        .filter(|&a| a != Action::Error && !(name == "http" && a == Action::Connect))
        .map(|a| {
            let both = |g: &[[u64; 2]; 4]| g[a as usize].iter().sum::<u64>();
            ActionFigures {
                action: a.as_str(),
                requests_total: both(&to.requests),
                requests_per_sec: rate(both(&from.requests), both(&to.requests), secs),
                responses_per_sec: rate(both(&from.responses), both(&to.responses), secs),
            }
        })
        .collect();
    let by_version = |v: IpVersion| -> u64 { to.requests.iter().map(|r| r[v as usize]).sum() };
    Protocol {
        protocol: name,
        requests_total: to.requests_total(),
        requests_per_sec: rate(from.requests_total(), to.requests_total(), secs),
        responses_per_sec: rate(from.responses_total(), to.responses_total(), secs),
        ipv4_requests_total: by_version(IpVersion::V4),
        ipv6_requests_total: by_version(IpVersion::V6),
        bytes_received_per_sec: rate(from.bytes_received, to.bytes_received, secs),
        bytes_sent_per_sec: rate(from.bytes_sent, to.bytes_sent, secs),
        actions,
        latency_us: Latency {
            p50: percentile(from, to, 0.50),
            p90: percentile(from, to, 0.90),
            p99: percentile(from, to, 0.99),
        },
    }
}

fn census_figures(g: &Gathered, latest_ms: u64) -> CensusFigures {
    let c = &g.census;
    let all: u64 = c.clients.iter().sum();
    let mut clients: Vec<ClientPeers> = (c.clients.iter().enumerate())
        .filter(|(_, &n)| n > 0)
        .map(|(class, &peers)| ClientPeers {
            client: peer_client::name(class as u8),
            peers,
            share: peers as f64 / all as f64,
        })
        .collect();
    clients.sort_by(|a, b| b.peers.cmp(&a.peers).then(a.client.cmp(b.client)));
    CensusFigures {
        age_secs: latest_ms.saturating_sub(g.taken_ms) / 1000,
        top_torrents: (c.top.iter())
            .map(|(hash, counts)| TopTorrent {
                info_hash: to_hex(hash),
                seeders: counts.seeders,
                leechers: counts.leechers,
                downloaded: counts.downloaded,
            })
            .collect(),
        clients,
    }
}

impl Status {
    /// The figures from `history`'s latest snapshot and window; `None` before the first one.
    pub fn build(
        history: &History,
        process: ProcessFigures,
        io: &'static str,
        census: Option<&Gathered>,
    ) -> Option<Status> {
        let (from, to) = history.window()?;
        let secs = to.taken_ms.saturating_sub(from.taken_ms) as f64 / 1000.0;
        let t = to.totals();
        let mut errors = Vec::new();
        for (name, f, t) in [("udp", &from.udp, &to.udp), ("http", &from.http, &to.http)] {
            for r in ErrorReason::ALL {
                let total = t.errors(r);
                if total > 0 {
                    errors.push(ErrorCount {
                        protocol: name,
                        reason: r.as_str(),
                        total,
                        per_sec: rate(f.errors(r), total, secs),
                    });
                }
            }
        }
        errors.sort_by_key(|e| std::cmp::Reverse(e.total));
        let workers = (to.workers.iter().enumerate())
            .map(|(i, w)| {
                let before = from.workers.get(i).copied().unwrap_or_default();
                let asked = w.requests.saturating_sub(before.requests);
                let forwarded = w.forwarded.saturating_sub(before.forwarded);
                Worker {
                    worker: i,
                    torrents: w.torrents,
                    peers: w.seeders + w.leechers,
                    requests_per_sec: rate(before.requests, w.requests, secs),
                    forwarded_share: if asked > 0 {
                        forwarded as f64 / asked as f64
                    } else {
                        0.0
                    },
                    inbox_dropped_total: w.inbox_dropped,
                }
            })
            .collect();
        let points = history.points();
        let latest = points.last().map_or(to.taken_ms, |p| p.at_ms);
        let history = points
            .windows(2)
            .map(|w| {
                let secs = (w[1].at_ms - w[0].at_ms) as f64 / 1000.0;
                HistoryPoint {
                    ago_secs: (latest - w[1].at_ms) / 1000,
                    requests_per_sec: rate(w[0].requests, w[1].requests, secs),
                    errors_per_sec: rate(w[0].errors, w[1].errors, secs),
                    peers: w[1].peers,
                }
            })
            .collect();
        Some(Status {
            version: env!("CARGO_PKG_VERSION"),
            io,
            uptime_secs: to.taken_ms / 1000,
            rate_window_secs: secs,
            swarm: Swarm {
                torrents: t.torrents,
                seeders: t.seeders,
                leechers: t.leechers,
                peers: t.seeders + t.leechers,
            },
            protocols: vec![
                protocol("udp", &from.udp, &to.udp, secs),
                protocol("http", &from.http, &to.http, secs),
            ],
            errors,
            workers,
            process: Process {
                resident_bytes: process.resident_bytes,
                cpu_seconds: process.cpu_seconds,
                threads: process.threads,
                open_fds: process.open_fds,
            },
            history,
            census: census.map(|g| census_figures(g, to.taken_ms)),
        })
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain numbers and strings serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::Sources;
    use crate::stats::snapshot::Snapshot;
    use std::sync::Arc;

    #[test]
    fn rates_are_the_change_over_the_window_and_totals_the_latest() {
        let sources = Sources::new(2, std::time::Instant::now());
        let mut h = History::default();
        let snap = |ms| {
            let mut s = Snapshot::take(&sources);
            s.taken_ms = ms;
            Arc::new(s)
        };
        h.record(snap(0));
        for _ in 0..50 {
            sources.workers[0]
                .udp
                .request(Action::Announce, IpVersion::V4);
            sources.workers[0].udp.latency(30);
        }
        for _ in 0..50 {
            sources.workers[1]
                .udp
                .request(Action::Announce, IpVersion::V6);
            sources.workers[1]
                .udp
                .forwarded(crate::stats::Forward::Announce);
            sources.workers[1].udp.latency(400);
        }
        sources.workers[1].udp.error(ErrorReason::Malformed);
        sources.workers[1].seeders.set(3);
        h.record(snap(5_000));
        let s = Status::build(&h, ProcessFigures::default(), "io_uring", None).unwrap();
        assert_eq!(s.rate_window_secs, 5.0);
        let udp = &s.protocols[0];
        assert_eq!((udp.requests_total, udp.requests_per_sec), (100, 20.0));
        assert_eq!((udp.ipv4_requests_total, udp.ipv6_requests_total), (50, 50));
        let announce = udp.actions.iter().find(|a| a.action == "announce").unwrap();
        assert_eq!(announce.requests_per_sec, 20.0);
        // Half the replies took at most 50 us, the rest at most 500 us.
        assert_eq!(udp.latency_us.p50, Some(50));
        assert_eq!(udp.latency_us.p99, Some(500));
        assert_eq!(s.protocols[1].latency_us.p50, None);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(
            (s.errors[0].reason, s.errors[0].per_sec),
            ("malformed", 0.2)
        );
        assert_eq!(s.workers[1].forwarded_share, 1.0);
        assert_eq!(s.workers[0].forwarded_share, 0.0);
        assert_eq!((s.swarm.seeders, s.swarm.peers), (3, 3));
        let json: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(json["protocols"][0]["requests_total"], 100);
    }
}
