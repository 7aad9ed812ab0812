//! The stats side: what every thread counts (`counters`, one writer per block), the heartbeats
//! of the threads that are not workers (`heartbeat`), how the stats thread gathers it all
//! (`snapshot`, on an interval), what the status page keeps of the past (`history`), the
//! process's own figures (`process`), the Prometheus page (`exposition`), the status page and
//! its JSON (`status`, `status_page`), the health check (`health`), the endpoint that serves the page and
//! `/health` (`server`) and the systemd watchdog fed from the same check (`watchdog`). The
//! stats thread runs a single-threaded tokio runtime: aggregation, each connection and the
//! watchdog are tasks, so no client delays another or the aggregation. Workers never wait for
//! this thread and this thread never locks anything a worker holds.

mod census;
pub mod counters;
mod exposition;
mod health;
pub mod heartbeat;
mod history;
mod process;
mod server;
mod snapshot;
mod status;
mod status_page;
mod summary;
mod watchdog;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{oneshot, watch};

pub use census::{CensusSettings, FullScrapeOut};
pub use counters::{Action, ErrorReason, Forward, IpVersion, Sources, Traffic, WorkerStats};
pub use exposition::openmetrics_to_prometheus;
pub use health::health;
pub use heartbeat::Heartbeat;
use history::History;
pub use process::ProcessFigures;
pub use server::MAX_CONNECTIONS;
pub use snapshot::{Snapshot, WorkerSnapshot};

/// How the stats thread runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between aggregations of the workers' counters.
    pub interval: Duration,
    /// A thread (worker, HTTP, stats) whose heartbeat is older than this fails `/health` and
    /// stops the watchdog pings.
    pub stale_after: Duration,
    /// The UDP I/O backend the workers run ("io_uring" or "epoll"), for `hayate_build_info`.
    pub io: &'static str,
    /// Between the summary lines in the log (`[log] summary_secs`); `None`: no summary.
    pub summary: Option<Duration>,
}

/// The way to the workers' shards: torrent lookups and censuses go to their owners' inboxes.
pub struct SwarmAccess {
    pub mesh: crate::mesh::Mesh,
    pub census: CensusSettings,
}

/// The running stats thread.
pub struct StatsThread {
    address: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl StatsThread {
    /// Serves the endpoint on `listener` when there is one (bound by `sockets`, so a bad address
    /// fails before anything runs), pings systemd's watchdog every `watchdog` when set, and
    /// runs censuses of `swarm` when it is given. Returns once the runtime is built and the
    /// listener registered.
    pub fn start(
        listener: Option<TcpListener>,
        sources: Sources,
        settings: Settings,
        watchdog: Option<Duration>,
        swarm: Option<SwarmAccess>,
    ) -> anyhow::Result<StatsThread> {
        let address = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("building the stats runtime")?;
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                let _inside = runtime.enter();
                Some(
                    tokio::net::TcpListener::from_std(l)
                        .context("registering the metrics listener")?,
                )
            }
            None => None,
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("hayate-stats".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let first = Arc::new(Snapshot::take(&sources));
                    let history = Arc::new(Mutex::new(History::default()));
                    history
                        .lock()
                        .expect("not shared yet")
                        .record(first.clone());
                    let (latest, snapshots) = watch::channel(first);
                    tokio::spawn(aggregate(
                        sources.clone(),
                        settings,
                        latest,
                        history.clone(),
                    ));
                    let gathered = census::Latest::default();
                    let mesh = swarm.as_ref().map(|s| s.mesh.clone());
                    if let Some(SwarmAccess { mesh, census }) = swarm {
                        tokio::spawn(census::run(mesh, census, gathered.clone(), sources.epoch));
                    }
                    if let Some(listener) = listener {
                        let endpoint = server::Endpoint {
                            sources: sources.clone(),
                            settings,
                            latest: snapshots,
                            history,
                            census: gathered,
                            mesh,
                        };
                        tokio::spawn(server::serve(listener, Arc::new(endpoint)));
                    }
                    if let Some(period) = watchdog {
                        tokio::spawn(watchdog::keep(period, sources, settings.stale_after));
                    }
                    // An error means the handle is gone, which is a stop too.
                    let _ = stopped.await;
                });
                // Dropping the runtime drops every task and closes every connection.
                drop(runtime);
            })
            .context("spawning the stats thread")?;
        Ok(StatsThread {
            address,
            stop,
            thread,
        })
    }

    /// The endpoint's address actually bound; `None` when it is off.
    pub fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    /// Stops the thread and waits for it: at once, whatever clients are connected.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the stats thread panicked");
        }
    }
}

/// Takes a snapshot every `interval` (logging a summary line every `summary`) and beats the stats thread's heartbeat every
/// `heartbeat::PERIOD` (or every interval, when shorter), whatever the endpoint's clients do.
async fn aggregate(
    sources: Sources,
    settings: Settings,
    latest: watch::Sender<Arc<Snapshot>>,
    history: Arc<Mutex<History>>,
) {
    let interval = settings.interval;
    let beat = heartbeat::PERIOD.min(interval);
    // The snapshot the next summary line counts from.
    let mut summarised = latest.borrow().clone();
    let mut next = Instant::now() + interval;
    loop {
        let now = Instant::now();
        tokio::time::sleep_until((next.min(now + beat)).into()).await;
        sources.stats_heartbeat.beat();
        if Instant::now() >= next {
            let snapshot = Arc::new(Snapshot::take(&sources));
            history
                .lock()
                .expect("only this thread locks it")
                .record(snapshot.clone());
            if let Some(every) = settings.summary {
                if snapshot.taken_ms >= summarised.taken_ms + every.as_millis() as u64 {
                    summary::Summary::between(&summarised, &snapshot).log();
                    summarised = snapshot.clone();
                }
            }
            latest.send_replace(snapshot);
            next += interval;
            // After a stall, the next one is an interval from now, not a burst of catch-ups.
            if next < Instant::now() {
                next = Instant::now() + interval;
            }
        }
    }
}
