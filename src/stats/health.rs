//! The health check `/health` answers and the systemd watchdog pings on: every thread that
//! serves (each UDP worker, the HTTP thread when HTTP is on, the stats thread itself) must have
//! shown a heartbeat within `metrics.stale_after_secs`. One check for both, so the watchdog
//! never pings while `/health` says 503.

use std::time::Duration;

use super::counters::Sources;

/// `Ok` with a line per thread while every heartbeat is fresh; `Err` naming each stuck thread
/// otherwise (how long it has been silent, and the limit).
pub fn health(sources: &Sources, stale_after: Duration) -> Result<String, String> {
    let now = sources.epoch.elapsed().as_millis() as u64;
    let limit = stale_after.as_millis() as u64;
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut stuck = Vec::new();
    let mut report = String::new();
    for (i, w) in sources.workers.iter().enumerate() {
        let age = now.saturating_sub(w.heartbeat_ms.get());
        if age > limit {
            stuck.push(format!(
                "worker {i} has not checked in for {:.1} s (limit {:.1} s)",
                secs(age),
                secs(limit)
            ));
        } else {
            report.push_str(&format!(
                "worker {i} ok, last tick {:.1} s ago\n",
                secs(age)
            ));
        }
    }
    let threads = [
        ("http", sources.http_heartbeat.as_ref()),
        ("stats", Some(&sources.stats_heartbeat)),
    ];
    for (name, beat) in threads {
        let Some(beat) = beat else { continue };
        let age = now.saturating_sub(beat.last_ms());
        if age > limit {
            stuck.push(format!(
                "{name} thread stuck for {:.1} s (limit {:.1} s)",
                secs(age),
                secs(limit)
            ));
        } else {
            report.push_str(&format!(
                "{name} thread ok, last beat {:.1} s ago\n",
                secs(age)
            ));
        }
    }
    if stuck.is_empty() {
        Ok(format!("ok\n{report}"))
    } else {
        Err(format!("unhealthy: {}\n", stuck.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::heartbeat::Heartbeat;
    use std::time::Instant;

    /// Sources whose epoch was 10 s ago.
    fn sources(workers: usize, http: bool) -> Sources {
        let epoch = Instant::now() - Duration::from_secs(10);
        let mut s = Sources::new(workers, epoch);
        if http {
            s = s.with_http();
        }
        s
    }

    #[test]
    fn names_the_stuck_worker() {
        let sources = sources(3, false);
        for w in &sources.workers {
            w.heartbeat_ms.set(10_000);
        }
        assert!(health(&sources, Duration::from_secs(5)).is_ok());
        sources.workers[1].heartbeat_ms.set(2_000);
        let e = health(&sources, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("worker 1 has not checked in"), "{e}");
        assert!(!e.contains("worker 0") && !e.contains("worker 2"), "{e}");
    }

    #[test]
    fn covers_the_http_and_stats_threads() {
        let sources = sources(1, true);
        sources.workers[0].heartbeat_ms.set(10_000);
        let ok = health(&sources, Duration::from_secs(5)).unwrap();
        assert!(ok.contains("http thread ok"), "{ok}");
        assert!(ok.contains("stats thread ok"), "{ok}");
        // Stamped at creation, 10 s after the epoch: fresh. A heartbeat counting from 6 s after
        // the epoch, stamped now, reads 4 s: 6 s old on the sources' clock.
        let stale = Heartbeat::new(sources.epoch + Duration::from_secs(6));
        let stuck = Sources {
            http_heartbeat: Some(stale.clone()),
            ..sources.clone()
        };
        let e = health(&stuck, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.starts_with("unhealthy: http thread stuck for 6.0 s"),
            "{e}"
        );
        assert!(!e.contains("stats") && !e.contains("worker"), "{e}");
        let stuck = Sources {
            stats_heartbeat: stale,
            ..sources.clone()
        };
        let e = health(&stuck, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.starts_with("unhealthy: stats thread stuck for 6.0 s"),
            "{e}"
        );
        assert!(!e.contains("http"), "{e}");
    }

    #[test]
    fn without_http_there_is_no_http_line() {
        let sources = sources(1, false);
        sources.workers[0].heartbeat_ms.set(10_000);
        let ok = health(&sources, Duration::from_secs(5)).unwrap();
        assert!(!ok.contains("http"), "{ok}");
        assert!(ok.contains("stats thread ok"), "{ok}");
    }
}
