//! The metrics page: a snapshot and the process figures encoded with prometheus-client as
//! OpenMetrics text, and the same page rewritten in the Prometheus text format (0.0.4) for
//! scrapers and tools that do not ask for OpenMetrics (curl, `promtool check metrics`).
//! Every name starts `hayate_`; counters end `_total`, units are in the names.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::counters::{
    Action, ErrorReason, Forward, IpVersion, TrafficSnapshot, LATENCY_BOUNDS_US, PEERS_BOUNDS,
};
use super::process::ProcessFigures;
use super::snapshot::Snapshot;

/// Everything one page shows.
#[derive(Debug, Clone)]
pub struct Page {
    pub snapshot: Snapshot,
    /// Milliseconds since the epoch now, for heartbeat ages.
    pub now_ms: u64,
    /// Each figure `None` when it could not be read.
    pub process: ProcessFigures,
    /// The UDP I/O backend in use.
    pub io: &'static str,
}

impl Page {
    /// The page in OpenMetrics text, `# EOF` included.
    pub fn openmetrics(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The page in the Prometheus text format 0.0.4.
    pub fn prometheus_text(self) -> String {
        openmetrics_to_prometheus(&self.openmetrics())
    }
}

const PROTOCOLS: [&str; 2] = ["udp", "http"];

impl Page {
    /// One counter family over protocol, action and client IP version (HTTP has no connect).
    fn by_action(
        &self,
        m: &mut prometheus_client::encoding::MetricEncoder<'_>,
        value: impl Fn(&TrafficSnapshot, Action, IpVersion) -> u64,
    ) -> Result<(), std::fmt::Error> {
        for (protocol, t) in self.traffic() {
            for action in Action::ALL {
                if protocol == "http" && action == Action::Connect {
                    continue;
                }
                for ip in IpVersion::ALL {
                    let labels = [
                        ("protocol", protocol),
                        ("action", action.as_str()),
                        ("ip_version", ip.as_str()),
                    ];
                    ConstCounter::new(value(t, action, ip)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    fn traffic(&self) -> [(&'static str, &TrafficSnapshot); 2] {
        [
            (PROTOCOLS[0], &self.snapshot.udp),
            (PROTOCOLS[1], &self.snapshot.http),
        ]
    }
}

fn counter<'a>(
    e: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    e.encode_descriptor(name, help, unit, MetricType::Counter)
}

fn gauge<'a>(
    e: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    e.encode_descriptor(name, help, unit, MetricType::Gauge)
}

/// A histogram's per-bucket counts as (upper bound, count) pairs, the last one +Inf.
fn buckets(bounds: &[u64], counts: &[u64], scale: f64) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .map(|&b| b as f64 / scale)
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect()
}

impl Collector for Page {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = e.encode_descriptor(
            "hayate_build",
            "Build information; the value is always 1.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION")), ("io", self.io)])?;

        let mut m = counter(
            &mut e,
            "hayate_requests",
            "Requests received, by protocol, the action they name (served or refused) and client IP version; `error` stays 0 (see hayate_responses_total).",
            None,
        )?;
        self.by_action(&mut m, TrafficSnapshot::requests)?;

        let mut m = counter(
            &mut e,
            "hayate_responses",
            "Replies sent, by protocol, action and client IP version. Action `error`: error replies.",
            None,
        )?;
        self.by_action(&mut m, TrafficSnapshot::responses)?;

        let mut m = counter(
            &mut e,
            "hayate_errors",
            "Failed requests and lost packets, by protocol and reason.",
            None,
        )?;
        for (protocol, t) in self.traffic() {
            for reason in ErrorReason::ALL {
                let labels = [("protocol", protocol), ("reason", reason.as_str())];
                ConstCounter::new(t.errors(reason)).encode(m.encode_family(&labels)?)?;
            }
        }

        for (name, help, get) in [
            (
                "hayate_received",
                "Request bytes received (UDP payloads; HTTP request heads).",
                (|t: &TrafficSnapshot| t.bytes_received) as fn(&TrafficSnapshot) -> u64,
            ),
            (
                "hayate_sent",
                "Reply bytes sent (UDP payloads; HTTP bodies).",
                |t: &TrafficSnapshot| t.bytes_sent,
            ),
        ] {
            let mut m = counter(&mut e, name, help, Some(&Unit::Bytes))?;
            for (protocol, t) in self.traffic() {
                ConstCounter::new(get(t)).encode(m.encode_family(&[("protocol", protocol)])?)?;
            }
        }

        for (name, help, get) in [
            (
                "hayate_forwarded",
                "Requests handed to the inbox of the worker that owns the torrent, by protocol and kind.",
                (|t: &TrafficSnapshot, k: Forward| t.forwarded[k as usize])
                    as fn(&TrafficSnapshot, Forward) -> u64,
            ),
            (
                "hayate_inbox_dropped",
                "Forwards dropped because the owner's inbox was full, by protocol and kind.",
                |t: &TrafficSnapshot, k: Forward| t.inbox_dropped[k as usize],
            ),
        ] {
            let mut m = counter(&mut e, name, help, None)?;
            for (protocol, t) in self.traffic() {
                for kind in Forward::ALL {
                    let labels = [("protocol", protocol), ("kind", kind.as_str())];
                    ConstCounter::new(get(t, kind)).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        let totals = self.snapshot.totals();
        let m = gauge(&mut e, "hayate_workers", "Worker threads.", None)?;
        ConstGauge::new(self.snapshot.workers.len() as i64).encode(m)?;
        for (name, help, total) in [
            (
                "hayate_torrents",
                "Torrents with at least one peer.",
                totals.torrents,
            ),
            (
                "hayate_seeders",
                "Peers that have the whole torrent.",
                totals.seeders,
            ),
            (
                "hayate_leechers",
                "Peers still downloading.",
                totals.leechers,
            ),
        ] {
            let m = gauge(&mut e, name, help, None)?;
            ConstGauge::new(total as i64).encode(m)?;
        }
        for (name, help, get) in [
            (
                "hayate_worker_torrents",
                "Torrents in each worker's shard.",
                (|w: &super::snapshot::WorkerSnapshot| w.torrents)
                    as fn(&super::snapshot::WorkerSnapshot) -> u64,
            ),
            (
                "hayate_worker_seeders",
                "Seeders in each worker's shard.",
                |w| w.seeders,
            ),
            (
                "hayate_worker_leechers",
                "Leechers in each worker's shard.",
                |w| w.leechers,
            ),
        ] {
            let mut m = gauge(&mut e, name, help, None)?;
            for (i, w) in self.snapshot.workers.iter().enumerate() {
                let labels = [("worker", i.to_string())];
                ConstGauge::new(get(w) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = gauge(
            &mut e,
            "hayate_worker_heartbeat_age",
            "Seconds since each worker last ticked; workers tick every second.",
            Some(&Unit::Seconds),
        )?;
        for (i, w) in self.snapshot.workers.iter().enumerate() {
            let age = self.now_ms.saturating_sub(w.heartbeat_ms) as f64 / 1000.0;
            let labels = [("worker", i.to_string())];
            ConstGauge::new(age).encode(m.encode_family(&labels)?)?;
        }

        if let Some(c) = &self.snapshot.cluster {
            for (name, help, v) in [
                ("hayate_cluster_sync_batches", "Pipelines of commands the cluster sync thread sent to Redis.", c.batches),
                ("hayate_cluster_sync_commands", "Redis commands in them.", c.commands),
                ("hayate_cluster_sync_errors", "Failed Redis connects and batches (down, slow, failing over, or garbage); the node serves its local peers meanwhile.", c.errors),
                ("hayate_cluster_republishes", "Times the whole local swarm was published to Redis again (Redis new, emptied, or changes lost).", c.republishes),
                ("hayate_cluster_changes_dropped", "Swarm changes dropped because the queue to the sync thread was full ([cluster] max_queued_changes).", c.dropped),
            ] {
                ConstCounter::new(v).encode(counter(&mut e, name, help, None)?)?;
            }
            for (name, help, v) in [
                (
                    "hayate_cluster_connected",
                    "1 while Redis is reachable.",
                    u64::from(c.connected),
                ),
                (
                    "hayate_cluster_remote_torrents",
                    "Torrents whose other nodes' peers are cached here.",
                    c.remote_torrents,
                ),
                (
                    "hayate_cluster_remote_peers",
                    "Other nodes' peers cached here.",
                    c.remote_peers,
                ),
            ] {
                ConstGauge::new(v as i64).encode(gauge(&mut e, name, help, None)?)?;
            }
            let m = gauge(
                &mut e,
                "hayate_cluster_sync_lag",
                "How long the oldest change of the last batch waited to be written to Redis (or, while Redis cannot be written, has waited so far).",
                Some(&Unit::Seconds),
            )?;
            ConstGauge::new(c.lag_ms as f64 / 1000.0).encode(m)?;
        }
        let mut m = e.encode_descriptor(
            "hayate_request_duration",
            "Time from receiving a request to its reply's send completing (UDP) or being written (HTTP), microsecond resolution.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (protocol, t) in self.traffic() {
            let h = &t.latency_us;
            m.encode_family(&[("protocol", protocol)])?
                .encode_histogram::<NoLabelSet>(
                    h.sum as f64 / 1e6,
                    h.count(),
                    &buckets(&LATENCY_BOUNDS_US, &h.buckets, 1e6),
                    None,
                )?;
        }
        let mut m = e.encode_descriptor(
            "hayate_announce_reply_peers",
            "Peers handed out per announce reply.",
            None,
            MetricType::Histogram,
        )?;
        for (protocol, t) in self.traffic() {
            let h = &t.peers;
            m.encode_family(&[("protocol", protocol)])?
                .encode_histogram::<NoLabelSet>(
                    h.sum as f64,
                    h.count(),
                    &buckets(&PEERS_BOUNDS, &h.buckets, 1.0),
                    None,
                )?;
        }

        let mut m = gauge(
            &mut e,
            "hayate_thread_heartbeat_age",
            "Seconds since the HTTP thread (when HTTP is on) and the stats thread last beat; both beat every 250 ms while their loop runs.",
            Some(&Unit::Seconds),
        )?;
        for &(thread, at_ms) in &self.snapshot.threads {
            let age = self.now_ms.saturating_sub(at_ms) as f64 / 1000.0;
            ConstGauge::new(age).encode(m.encode_family(&[("thread", thread)])?)?;
        }

        // Each process figure on its own: one the sandbox hides leaves the others.
        let p = &self.process;
        if let Some(v) = p.resident_bytes {
            let m = gauge(
                &mut e,
                "hayate_process_resident_memory",
                "Resident memory.",
                Some(&Unit::Bytes),
            )?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = p.cpu_seconds {
            let m = counter(
                &mut e,
                "hayate_process_cpu",
                "User and system CPU time.",
                Some(&Unit::Seconds),
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        if let Some(v) = p.threads {
            let m = gauge(&mut e, "hayate_process_threads", "OS threads.", None)?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = p.open_fds {
            let m = gauge(
                &mut e,
                "hayate_process_open_fds",
                "Open file descriptors.",
                None,
            )?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = p.max_fds {
            let m = gauge(
                &mut e,
                "hayate_process_max_fds",
                "File descriptor limit (RLIMIT_NOFILE).",
                None,
            )?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = p.start_time_seconds {
            let m = gauge(
                &mut e,
                "hayate_process_start_time",
                "Unix time the process started.",
                Some(&Unit::Seconds),
            )?;
            ConstGauge::new(v).encode(m)?;
        }
        Ok(())
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are named with their
/// `_total` suffix, info families become gauges named `_info`, and `# UNIT` and `# EOF` lines
/// go. Sample lines are the same in both formats.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                pending_help = Some((name, help));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" | "gaugehistogram" | "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            if let Some((_, help)) = pending_help.take() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::Sources;

    fn page() -> Page {
        let sources = Sources::new(2, std::time::Instant::now()).with_http();
        sources.workers[1]
            .udp
            .request(Action::Scrape, IpVersion::V6);
        sources.workers[0].udp.latency(30);
        sources.workers[0].torrents.set(4);
        Page {
            snapshot: Snapshot::take(&sources),
            now_ms: 1500,
            process: ProcessFigures::read(),
            io: "io_uring",
        }
    }

    #[test]
    fn openmetrics_has_families_and_eof() {
        let text = page().openmetrics();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE hayate_requests counter\n"), "{text}");
        assert!(text.contains(
            "hayate_requests_total{protocol=\"udp\",action=\"scrape\",ip_version=\"6\"} 1\n"
        ));
        assert!(text.contains("hayate_build_info{version=\""), "{text}");
        assert!(
            text.contains("hayate_worker_torrents{worker=\"0\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("hayate_torrents 4\n"), "{text}");
        assert!(text.contains("hayate_worker_heartbeat_age_seconds{worker=\"1\"} 1.5\n"));
        // The HTTP and stats threads were stamped when the sources were made (epoch + ~0 ms).
        for thread in ["http", "stats"] {
            let line = format!("hayate_thread_heartbeat_age_seconds{{thread=\"{thread}\"}} ");
            let age: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .unwrap_or_else(|| panic!("no {line} in {text}"))
                .parse()
                .unwrap();
            assert!((1.4..=1.5).contains(&age), "{thread}: {age}");
        }
        assert!(
            text.contains(
                "hayate_request_duration_seconds_bucket{le=\"0.00005\",protocol=\"udp\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let text = page().prometheus_text();
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hayate_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP hayate_requests_total Requests received"));
        assert!(text.contains("# TYPE hayate_received_bytes_total counter\n"));
        assert!(text.contains("# TYPE hayate_build_info gauge\n"), "{text}");
        assert!(text.contains("# TYPE hayate_process_cpu_seconds_total counter\n"));
        // Every sample belongs to the family declared before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| *b == family)
                    .unwrap_or(name);
                assert_eq!(base, family, "{line}");
            }
        }
    }
}
