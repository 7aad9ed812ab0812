//! What the status page needs from the past: the stats thread's snapshots of the last
//! [`RATE_WINDOW_MS`] (rates are the change across them, so a page shows what the tracker does
//! now, not its average since start) and one point a minute over the last hour (the charts).
//! Only the stats thread writes it, once per aggregation; its size is fixed by those two
//! bounds, whatever the traffic.

use std::collections::VecDeque;
use std::sync::Arc;

use super::snapshot::Snapshot;

/// Rates are taken over about this much time (or since start, when younger).
pub const RATE_WINDOW_MS: u64 = 10_000;
/// One chart point per this much time.
pub const MINUTE_MS: u64 = 60_000;
/// Chart points kept: an hour of minutes, plus the one each rate starts from.
pub const MINUTES: usize = 61;

/// The whole tracker at one chart point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub at_ms: u64,
    /// Requests received so far, both protocols.
    pub requests: u64,
    /// Requests refused or dropped so far, both protocols.
    pub errors: u64,
    /// Peers held at that moment.
    pub peers: u64,
}

impl Point {
    fn of(s: &Snapshot) -> Point {
        let t = s.totals();
        Point {
            at_ms: s.taken_ms,
            requests: s.requests_total(),
            errors: s.errors_total(),
            peers: t.seeders + t.leechers,
        }
    }
}

#[derive(Debug, Default)]
pub struct History {
    recent: VecDeque<Arc<Snapshot>>,
    minutes: VecDeque<Point>,
}

impl History {
    /// Takes in the stats thread's latest snapshot.
    pub fn record(&mut self, s: Arc<Snapshot>) {
        let at = s.taken_ms;
        if self
            .minutes
            .back()
            .is_none_or(|p| at >= p.at_ms + MINUTE_MS)
        {
            if self.minutes.len() == MINUTES {
                self.minutes.pop_front();
            }
            self.minutes.push_back(Point::of(&s));
        }
        self.recent.push_back(s);
        // Keep the newest snapshot that is at least a window old, as the rates' start.
        while self.recent.len() > 2 && self.recent[1].taken_ms + RATE_WINDOW_MS <= at {
            self.recent.pop_front();
        }
    }

    /// The latest snapshot and the one the rates start from (the same one until a second
    /// snapshot comes).
    pub fn window(&self) -> Option<(&Snapshot, &Snapshot)> {
        Some((self.recent.front()?, self.recent.back()?))
    }

    /// The chart points, oldest first, with the latest snapshot as the last (so the last
    /// minute's rate is never more than a minute old).
    pub fn points(&self) -> Vec<Point> {
        let mut points: Vec<Point> = self.minutes.iter().copied().collect();
        if let Some(latest) = self.recent.back() {
            if points.last().is_some_and(|p| p.at_ms < latest.taken_ms) {
                points.push(Point::of(latest));
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::{Action, IpVersion, Sources};

    fn at(ms: u64, requests: u64) -> Arc<Snapshot> {
        let sources = Sources::new(1, std::time::Instant::now());
        for _ in 0..requests {
            sources.workers[0]
                .udp
                .request(Action::Announce, IpVersion::V4);
        }
        let mut s = Snapshot::take(&sources);
        s.taken_ms = ms;
        Arc::new(s)
    }

    #[test]
    fn rates_span_the_window_and_charts_a_point_a_minute_for_an_hour() {
        let mut h = History::default();
        assert!(h.window().is_none());
        // A snapshot a second for two hours, one request more each time.
        for sec in 0..7200u64 {
            h.record(at(sec * 1000, sec));
            let (from, to) = h.window().unwrap();
            assert_eq!(to.taken_ms, sec * 1000);
            let span = to.taken_ms - from.taken_ms;
            assert_eq!(span, (sec * 1000).min(RATE_WINDOW_MS), "at {sec} s");
        }
        let points = h.points();
        assert_eq!(points.len(), MINUTES + 1);
        // An hour of points a minute apart, the last at 7140 s, then the latest itself.
        assert_eq!(points[0].at_ms, 7_140_000 - 60 * MINUTE_MS);
        for w in points[..MINUTES].windows(2) {
            assert_eq!(w[1].at_ms - w[0].at_ms, MINUTE_MS);
            assert_eq!(w[1].requests - w[0].requests, 60);
        }
        assert_eq!(points[MINUTES].at_ms, 7_199_000);
        assert_eq!(points[MINUTES].requests, 7199);
    }
}
