//! The stats thread's census of the swarm: every `[metrics] census_secs`, and every
//! `[full_scrape] interval_secs` when the full scrape is on, it asks each worker through its
//! inbox for a census of its shard (walked a slice at a time between requests: a worker never
//! stalls for it and nothing here waits on a worker's lock), merges them, and keeps what the
//! status page shows (the largest torrents, peers by client). A census due for the full scrape
//! also lists every torrent; its body is built off this thread's runtime, swapped in for the
//! HTTP thread to serve, and written to the configured file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::http::full_scrape::{self, Body};
use crate::mesh::{HttpWork, Mesh};
use crate::swarm::Census;

/// Longest a census may take before it is given up: a worker walks a million torrents in well
/// under a second, so one that takes this long is stuck (and `/health` says so).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// Tries at handing a worker the question while its inbox is full, a tenth of a second apart.
const SEND_TRIES: u32 = 50;

/// The full scrape's part: how often, and where the body goes.
pub struct FullScrapeOut {
    pub interval: Duration,
    pub body: full_scrape::Shared,
    /// A file the body is also written to; `None`: none.
    pub path: Option<PathBuf>,
}

/// When censuses run.
pub struct CensusSettings {
    /// Between censuses for the status page; `None`: only those the full scrape needs.
    pub every: Option<Duration>,
    pub full_scrape: Option<FullScrapeOut>,
}

/// What the status page shows of the last census.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// When it was asked for, in milliseconds of the stats clock (as `Snapshot::taken_ms`).
    pub taken_ms: u64,
    pub census: Census,
}

/// The last census, for the status page; only the stats thread locks it.
pub type Latest = Arc<Mutex<Option<Arc<Gathered>>>>;

/// Runs censuses as `settings` says, forever (the stats runtime drops it at shutdown).
pub async fn run(mesh: Mesh, settings: CensusSettings, latest: Latest, epoch: std::time::Instant) {
    let start = Instant::now();
    let (mut next_census, mut next_full) = (start, start);
    let full = settings.full_scrape.as_ref();
    loop {
        let asked = Instant::now();
        let census_due = settings.every.is_some() && asked >= next_census;
        let full_due = full.is_some() && asked >= next_full;
        if census_due || full_due {
            let taken_ms = epoch.elapsed().as_millis() as u64;
            match gather(&mesh, full_due).await {
                Ok(mut census) => {
                    let list = census.torrents.take();
                    *latest.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::new(Gathered { taken_ms, census }));
                    if let (Some(out), Some(list)) = (full, list) {
                        publish(out, list).await;
                    }
                }
                Err(why) => tracing::warn!("census of the swarm given up: {why}"),
            }
            if let Some(every) = settings.every.filter(|_| census_due) {
                next_census = asked + every;
            }
            if let Some(out) = full.filter(|_| full_due) {
                next_full = asked + out.interval;
            }
        }
        let next = match (settings.every.is_some(), full.is_some()) {
            (true, true) => next_census.min(next_full),
            (true, false) => next_census,
            (false, true) => next_full,
            (false, false) => return,
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Every worker's census, merged; `list`: with every torrent's counts.
async fn gather(mesh: &Mesh, list: bool) -> Result<Census, String> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut answers = Vec::with_capacity(mesh.workers());
    for worker in 0..mesh.workers() {
        let mut tries = 0;
        let answer = loop {
            let (reply, answer) = oneshot::channel();
            if mesh
                .to(worker)
                .send_query(HttpWork::Census { list, reply })
                .is_ok()
            {
                break answer;
            }
            tries += 1;
            if tries == SEND_TRIES {
                return Err(format!("worker {worker}'s inbox stayed full"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        answers.push(answer);
    }
    let mut all = Census::new(list);
    for (worker, answer) in answers.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(census)) => all.merge(census),
            Ok(Err(_)) => return Err(format!("worker {worker} stopped")),
            Err(_) => {
                return Err(format!(
                    "worker {worker} did not answer within {} s",
                    ANSWER_WITHIN.as_secs()
                ))
            }
        }
    }
    Ok(all)
}

/// Builds the full scrape's body from `list` (on a blocking thread: a million torrents take a
/// fraction of a second to encode and compress), swaps it in, and writes the file.
async fn publish(
    out: &FullScrapeOut,
    list: Vec<(crate::protocol::InfoHash, crate::protocol::SwarmCounts)>,
) {
    let path = out.path.clone();
    let built = tokio::task::spawn_blocking(move || {
        let body = Body::build(list);
        let written = path.map(|p| body.write_to(&p).map_err(|e| (p, e)));
        (body, written)
    })
    .await;
    match built {
        Ok((body, written)) => {
            tracing::debug!(
                torrents = body.torrents,
                bytes = body.plain.len(),
                "full scrape built"
            );
            out.body.store(Some(Arc::new(body)));
            if let Some(Err((path, e))) = written {
                tracing::warn!(
                    "writing the full scrape to {} failed: {e:#}",
                    path.display()
                );
            }
        }
        Err(e) => tracing::error!("building the full scrape failed: {e}"),
    }
}
