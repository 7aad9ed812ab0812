//! The periodic line in the log that says the tracker is alive and what it does
//! (`[log] summary_secs`): requests per second since the last line, swarm sizes, and what was
//! refused or lost, so `journalctl -u hayate` answers "is it working?" without a scraper.

use super::snapshot::Snapshot;
use super::status::rate;

/// The figures of one summary line: the change from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub secs: f64,
    pub udp_per_sec: f64,
    pub http_per_sec: f64,
    pub torrents: u64,
    pub peers: u64,
    /// Requests refused or lost, both protocols.
    pub errors: u64,
    /// Work a full inbox refused.
    pub drops: u64,
}

impl Summary {
    pub fn between(from: &Snapshot, to: &Snapshot) -> Summary {
        let secs = to.taken_ms.saturating_sub(from.taken_ms) as f64 / 1000.0;
        let drops = |s: &Snapshot| -> u64 { s.totals().inbox_dropped };
        let t = to.totals();
        Summary {
            secs,
            udp_per_sec: rate(from.udp.requests_total(), to.udp.requests_total(), secs),
            http_per_sec: rate(from.http.requests_total(), to.http.requests_total(), secs),
            torrents: t.torrents,
            peers: t.seeders + t.leechers,
            errors: to.errors_total().saturating_sub(from.errors_total()),
            drops: drops(to).saturating_sub(drops(from)),
        }
    }

    pub fn log(&self) {
        tracing::info!(
            udp_per_sec = format_args!("{:.1}", self.udp_per_sec),
            http_per_sec = format_args!("{:.1}", self.http_per_sec),
            torrents = self.torrents,
            peers = self.peers,
            errors = self.errors,
            inbox_drops = self.drops,
            over_secs = self.secs.round() as u64,
            "serving"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::{Action, ErrorReason, IpVersion, Sources};

    #[test]
    fn a_summary_is_the_change_since_the_last_one() {
        let sources = Sources::new(1, std::time::Instant::now());
        let w = &sources.workers[0];
        w.udp.request(Action::Announce, IpVersion::V4);
        w.udp.error(ErrorReason::Malformed);
        let mut from = Snapshot::take(&sources);
        from.taken_ms = 1_000;
        for _ in 0..600 {
            w.udp.request(Action::Announce, IpVersion::V4);
        }
        sources.http.request(Action::Announce, IpVersion::V6);
        w.udp.inbox_dropped(crate::stats::Forward::Announce);
        w.torrents.set(7);
        w.leechers.set(9);
        let mut to = Snapshot::take(&sources);
        to.taken_ms = 301_000;
        let s = Summary::between(&from, &to);
        assert_eq!(s.secs, 300.0);
        assert_eq!(s.udp_per_sec, 2.0);
        assert_eq!(s.http_per_sec, 1.0 / 300.0);
        assert_eq!((s.torrents, s.peers), (7, 9));
        // The malformed request came before `from`; a drop is also an error (inbox_full).
        assert_eq!((s.errors, s.drops), (1, 1));
    }
}
