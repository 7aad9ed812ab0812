//! The stats side: what every thread counts (`counters`, one writer per block), how the stats
//! thread gathers it (`snapshot`, on an interval), the process's own figures (`process`), the
//! Prometheus page (`exposition`) and the endpoint that serves it and `/health` (`server`).
//! Workers never wait for this thread and this thread never locks anything a worker holds.

pub mod counters;
mod exposition;
mod process;
mod server;
mod snapshot;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use counters::{Action, ErrorReason, Forward, IpVersion, Sources, Traffic, WorkerStats};
pub use exposition::openmetrics_to_prometheus;
pub use process::ProcessFigures;
pub use snapshot::{Snapshot, WorkerSnapshot};

/// How the stats thread runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between aggregations of the workers' counters.
    pub interval: Duration,
    /// A worker whose heartbeat is older than this fails `/health`.
    pub stale_after: Duration,
    /// The UDP I/O backend the workers run ("io_uring" or "epoll"), for `hayate_build_info`.
    pub io: &'static str,
}

/// The running stats thread.
pub struct StatsThread {
    address: SocketAddr,
    wake: UnixStream,
    thread: JoinHandle<()>,
}

impl StatsThread {
    /// Serves on `listener` (non-blocking; bound by `sockets`, so a bad address fails before
    /// anything runs).
    pub fn start(
        listener: TcpListener,
        sources: Sources,
        settings: Settings,
    ) -> anyhow::Result<StatsThread> {
        let address = listener.local_addr()?;
        let (wake, wake_rx) = UnixStream::pair().context("creating the stats wake socket")?;
        let server = server::Server {
            listener,
            wake: wake_rx,
            sources,
            settings,
        };
        let thread = std::thread::Builder::new()
            .name("hayate-stats".into())
            .spawn(move || server.run())
            .context("spawning the stats thread")?;
        Ok(StatsThread {
            address,
            wake,
            thread,
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Wakes the thread and waits for it; it ends within one client deadline (500 ms).
    pub fn stop(mut self) {
        let _ = self.wake.write_all(&[1]);
        if self.thread.join().is_err() {
            tracing::error!("the stats thread panicked");
        }
    }
}

/// `Ok` with a line per worker while every worker has ticked within `stale_after`; `Err`
/// naming each stuck worker otherwise.
pub fn health(sources: &Sources, stale_after: Duration) -> Result<String, String> {
    let now = sources.epoch.elapsed().as_millis() as u64;
    let limit = stale_after.as_millis() as u64;
    let mut stuck = Vec::new();
    let mut report = String::new();
    for (i, w) in sources.workers.iter().enumerate() {
        let age = now.saturating_sub(w.heartbeat_ms.get());
        if age > limit {
            stuck.push(format!(
                "worker {i} has not checked in for {:.1} s (limit {:.1} s)",
                age as f64 / 1000.0,
                limit as f64 / 1000.0
            ));
        } else {
            report.push_str(&format!(
                "worker {i} ok, last tick {:.1} s ago\n",
                age as f64 / 1000.0
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
    use std::time::Instant;

    #[test]
    fn health_names_the_stuck_worker() {
        let epoch = Instant::now() - Duration::from_secs(10);
        let sources = Sources::new(3, epoch);
        for w in &sources.workers {
            w.heartbeat_ms.set(10_000);
        }
        assert!(health(&sources, Duration::from_secs(5)).is_ok());
        sources.workers[1].heartbeat_ms.set(2_000);
        let e = health(&sources, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("worker 1 has not checked in"), "{e}");
        assert!(!e.contains("worker 0") && !e.contains("worker 2"), "{e}");
    }
}
