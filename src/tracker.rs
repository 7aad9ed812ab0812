//! Start-up and shutdown of a whole tracker: binds every socket first, or takes it over from the
//! previous process (so a bad address fails before anything runs, and port 0 resolves to one
//! port shared by all workers), restores the swarm from the snapshot, wires the
//! workers' inboxes together, starts the workers and the HTTP frontend, and stops them on request.
//! The stats thread starts last and reads the counters every other thread owns. Started as
//! root with `[privileges] user` set, it drops root after binding and before any thread starts.
//! `reload` swaps in a new pipeline policy (lists, keys, intervals, numwant) while serving.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::connection_id::ConnectionIds;
use crate::handover::Inherited;
use crate::http;
use crate::mesh::{inbox, Mesh, Wake};
use crate::policy::{Policy, PolicyError, SharedPolicy};
use crate::sockets::Sockets;
use crate::state::keeper::{self, Identity, Keeper};
use crate::state::restore;
use crate::stats::{self, Sources, StatsThread};
use crate::worker::{self, WorkerStart};

/// Stops a running tracker from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    wakes: Vec<Arc<Wake>>,
    http: http::StopHandle,
}

impl ShutdownHandle {
    pub fn trigger(&self) {
        // HTTP first, so no new work reaches workers that are stopping.
        self.http.trigger();
        self.flag.store(true, Ordering::Release);
        for w in &self.wakes {
            w.force();
        }
    }
}

pub struct Tracker {
    config: Arc<Config>,
    udp_addresses: Vec<SocketAddr>,
    http_addresses: Vec<SocketAddr>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
    http: Option<JoinHandle<()>>,
    shutdown: ShutdownHandle,
    sources: Sources,
    stats: Option<StatsThread>,
    policy: SharedPolicy,
    backend: &'static str,
    /// The snapshot thread, when state is kept.
    keeper: Option<Keeper>,
    /// A duplicate of every socket, named by kind, for the next process.
    handover: Vec<(&'static str, OwnedFd)>,
    /// The certificates of the HTTPS listeners, in `[[http.tls]]` order, for reloads.
    certificates: Vec<http::tls::Certificate>,
    /// The cluster sync thread, when `[cluster]` is on.
    cluster: Option<crate::cluster::SyncThread>,
}

impl Tracker {
    pub fn start(config: Config) -> anyhow::Result<Tracker> {
        Self::start_with(config, Inherited::default())
    }

    /// `start`, serving on the sockets `inherited` hands over where they fit the configuration
    /// (see `sockets`). With a predecessor, it is told to stop once everything that can fail
    /// here has passed, and the swarm is restored from the snapshot it writes as it stops.
    pub fn start_with(config: Config, inherited: Inherited) -> anyhow::Result<Tracker> {
        let config = Arc::new(config);
        let count = config.worker_count();
        // A bad list or key file is fatal at start-up, before anything is bound.
        let policy = Policy::load(&config)?.shared();
        let certificates = (config.http.tls.iter())
            .map(http::tls::Certificate::new)
            .collect::<Result<Vec<_>, _>>()?;
        let from = inherited.from;
        let watchdog = inherited.watchdog;
        let sockets = Sockets::open(&config, count, inherited.fds)?;
        if sockets.inherited > 0 {
            tracing::info!(sockets = sockets.inherited, "took over sockets from {from}");
        }
        crate::resources::check(&config, count, sockets.udp.first().and_then(|w| w.first()));
        let handover = sockets
            .duplicates()
            .context("duplicating the sockets to hand on")?;
        let udp_addresses = match sockets.udp.first() {
            Some(first) => first
                .iter()
                .take(config.udp.addresses.len())
                .map(UdpSocket::local_addr)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let http_listeners = sockets.http;
        let http_addresses = http_listeners
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<Result<_, _>>()?;
        let (http_stop, http_stopped) = http::stop_channel();
        let metrics_listener = sockets.metrics;
        // Every socket is bound: nothing needs root any more. No thread of ours runs yet.
        crate::privileges::drop_privileges(&config.privileges)?;
        if let Some(predecessor) = inherited.predecessor {
            predecessor.take_over()?;
        }
        let state_dir = config.state.directory();
        let restored = match &state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "creating the state directory {} ([state] directory)",
                        dir.display()
                    )
                })?;
                Some(restore::restore(
                    dir,
                    count,
                    config.protocol.connection_id_lifetime_secs,
                ))
            }
            None => {
                tracing::info!("state is not kept across restarts ([state] directory is \"\" or names an unset variable)");
                None
            }
        };
        // The clock and key of the run that wrote the snapshot, if clients may still hold ids
        // made with them; otherwise new ones.
        let carried = restored.as_ref().and_then(|r| r.identity);
        let unix = keeper::unix_now();
        let (identity, epoch) = match carried.and_then(|id| {
            let uptime = Duration::from_secs(unix.saturating_sub(id.clock_origin_unix));
            Instant::now().checked_sub(uptime).map(|epoch| (id, epoch))
        }) {
            Some(carried) => carried,
            None => {
                let mut key = [0u8; 16];
                getrandom::fill(&mut key)
                    .map_err(|e| anyhow::anyhow!("drawing the connection-id key: {e}"))?;
                let id = Identity {
                    clock_origin_unix: unix,
                    connection_key: key,
                };
                (id, Instant::now())
            }
        };
        let ids = ConnectionIds::with_key(
            identity.connection_key,
            config.protocol.connection_id_lifetime_secs,
        );
        let (keeper, link) = match &state_dir {
            Some(dir) => {
                let interval = Duration::from_secs(config.state.snapshot_interval_secs.into());
                let (k, l) = keeper::spawn(dir.clone(), interval, count, identity)
                    .context("starting the snapshot thread")?;
                (Some(k), Some(l))
            }
            None => (None, None),
        };
        let mut restored = restored
            .map(|r| r.per_worker)
            .unwrap_or_default()
            .into_iter();
        let (mailboxes, inboxes): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| inbox::inbox(config.workers.inbox_capacity as usize))
            .collect::<Result<Vec<_>, _>>()
            .context("creating worker inboxes")?
            .into_iter()
            .unzip();
        let shutdown = ShutdownHandle {
            flag: Arc::new(AtomicBool::new(false)),
            wakes: mailboxes.iter().map(|m| m.wake_handle()).collect(),
            http: http_stop,
        };
        let cores = worker::allowed_cores();
        let mut sources = Sources::new(count, epoch);
        let cluster = config.cluster.enabled().then(|| {
            crate::cluster::outbox::queue(
                (config.cluster.max_queued_changes as usize)
                    .min(crate::cluster::sync::QUEUE_CAPACITY),
                identity.clock_origin_unix,
            )
        });
        if let Some((outbox, _)) = &cluster {
            sources.cluster = Some(Arc::new(crate::cluster::ClusterStats {
                dropped: outbox.dropped().clone(),
                ..Default::default()
            }));
        }
        if !http_listeners.is_empty() {
            sources = sources.with_http();
        }
        let mut sockets = sockets.udp.into_iter();
        let mut tracker = Tracker {
            config: config.clone(),
            udp_addresses,
            http_addresses,
            workers: Vec::with_capacity(count),
            http: None,
            shutdown: shutdown.clone(),
            sources: sources.clone(),
            stats: None,
            policy: policy.clone(),
            backend: "none",
            keeper,
            handover,
            certificates: Vec::new(),
            cluster: None,
        };
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let core =
                (config.workers.pin_cores && !cores.is_empty()).then(|| cores[index % cores.len()]);
            let started = worker::spawn(WorkerStart {
                index,
                config: config.clone(),
                ids: ids.clone(),
                mailboxes: mailboxes.clone(),
                inbox,
                sockets: sockets.next().unwrap_or_default(),
                epoch,
                shutdown: shutdown.flag.clone(),
                core,
                stats: sources.workers[index].clone(),
                policy: policy.clone(),
                state: link.clone(),
                restored: restored.next().unwrap_or_default(),
                cluster: cluster.as_ref().map(|(outbox, _)| outbox.clone()),
            });
            match started {
                Ok(started) => {
                    if let (Some(why), 0) = (&started.fallback, index) {
                        tracing::warn!("{why}; serving UDP with epoll (recvmmsg/sendmmsg) instead");
                    }
                    tracker.backend = started.backend;
                    tracker.workers.push(started.thread);
                }
                Err(e) => {
                    let _ = tracker.stop();
                    return Err(e);
                }
            }
        }
        // Built by the stats thread's census, served by the HTTP thread.
        let full_body = config
            .full_scrape
            .enabled
            .then(http::full_scrape::Shared::default);
        let full_interval = Duration::from_secs(config.full_scrape.interval_secs.into());
        let mesh = Mesh::new(mailboxes.clone());
        if let (Some((_, deltas)), Some(stats)) = (cluster, sources.cluster.clone()) {
            let node = crate::cluster::node_name(
                &config.cluster,
                tracker.udp_addresses.first().map(SocketAddr::port),
            );
            tracing::info!(node = %node, "cluster sync on: sharing swarms through Redis");
            let settings = crate::cluster::SyncSettings {
                config: config.cluster.clone(),
                node,
                peer_lifetime_secs: config.cleaning.peer_lifetime_secs,
                keep_downloaded_secs: config.cleaning.keep_downloaded_secs,
            };
            match crate::cluster::SyncThread::spawn(settings, deltas, mesh.clone(), stats) {
                Ok(t) => tracker.cluster = Some(t),
                Err(e) => {
                    let _ = tracker.stop();
                    return Err(e.context("starting the cluster sync thread"));
                }
            }
        }
        if !http_listeners.is_empty() {
            let served = http::Served {
                listeners: http_listeners,
                tls: certificates.clone(),
                full_scrape: (full_body.clone())
                    .map(|b| http::full_scrape::FullScrape::new(b, full_interval)),
            };
            match http::spawn(
                served,
                &config,
                mailboxes,
                sources.http.clone(),
                sources
                    .http_heartbeat
                    .clone()
                    .unwrap_or_else(|| stats::Heartbeat::new(epoch)),
                policy.clone(),
                http_stopped,
            ) {
                Ok(thread) => tracker.http = Some(thread),
                Err(e) => {
                    let _ = tracker.stop();
                    return Err(e);
                }
            }
        }
        // The stats thread also runs without the endpoint when systemd wants watchdog pings,
        // the log wants summary lines or the full scrape wants building.
        let summary = (config.log.summary_secs > 0)
            .then(|| Duration::from_secs(config.log.summary_secs.into()));
        let census = stats::CensusSettings {
            // Only the status page shows it.
            every: (metrics_listener.is_some() && config.metrics.census_secs > 0)
                .then(|| Duration::from_secs(config.metrics.census_secs.into())),
            full_scrape: full_body.map(|body| stats::FullScrapeOut {
                interval: full_interval,
                body,
                path: Some(config.full_scrape.path.trim())
                    .filter(|p| !p.is_empty())
                    .map(Into::into),
            }),
        };
        let census_runs = census.every.is_some() || census.full_scrape.is_some();
        if metrics_listener.is_some() || watchdog.is_some() || summary.is_some() || census_runs {
            let settings = stats::Settings {
                interval: Duration::from_millis(config.metrics.interval_ms.into()),
                stale_after: Duration::from_secs(config.metrics.stale_after_secs.into()),
                io: tracker.backend,
                summary,
            };
            if let Some(period) = watchdog {
                tracing::info!(
                    every_ms = period.as_millis() as u64,
                    "sending systemd watchdog pings while every thread is healthy"
                );
            }
            let swarm = stats::SwarmAccess { mesh, census };
            match StatsThread::start(metrics_listener, sources, settings, watchdog, Some(swarm)) {
                Ok(thread) => tracker.stats = Some(thread),
                Err(e) => {
                    let _ = tracker.stop();
                    return Err(e);
                }
            }
        }
        tracker.certificates = certificates;
        let metrics = tracker.metrics_address();
        tracing::info!(
            workers = count,
            udp = ?tracker.udp_addresses,
            http = ?tracker.http_addresses,
            metrics = ?metrics,
            io = tracker.backend,
            access_list = ?config.access_list.mode,
            pinned = config.workers.pin_cores,
            "hayate serving"
        );
        Ok(tracker)
    }

    /// The I/O loop the UDP workers run: "io_uring" or "epoll" ("none" without workers).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The configuration the tracker started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pipeline's policy as requests see it now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Applies the live-reloadable parts of `config` (the hooks' lists, keys and settings,
    /// intervals, numwant limits) at once, for every later request of either frontend. A file
    /// that cannot be read or parsed changes nothing and says why. Other keys take effect at
    /// the next start.
    pub fn reload(&self, config: &Config) -> Result<Arc<Policy>, PolicyError> {
        let new = Arc::new(Policy::load(config)?);
        self.policy.store(new.clone());
        Ok(new)
    }

    /// Re-reads the certificate and key of every HTTPS listener, from its entry (by address) in
    /// `config`: new connections get the new certificate, open ones keep theirs. A listener
    /// whose files do not load keeps the certificate in force; one `config` no longer lists
    /// keeps it too (listeners change at the next start). One result per listener.
    pub fn reload_tls(
        &self,
        config: &Config,
    ) -> Vec<(SocketAddr, Result<(), http::tls::TlsError>)> {
        (self.certificates.iter())
            .map(|c| {
                let address = c.config.address;
                let entry = config.http.tls.iter().find(|t| t.address == address);
                (address, c.reload(entry.unwrap_or(&c.config)))
            })
            .collect()
    }

    /// The UDP addresses actually bound (port 0 resolved), in config order.
    pub fn udp_addresses(&self) -> &[SocketAddr] {
        &self.udp_addresses
    }

    /// The HTTP addresses actually bound (port 0 resolved), in config order.
    pub fn http_addresses(&self) -> &[SocketAddr] {
        &self.http_addresses
    }

    /// The metrics endpoint's address actually bound (port 0 resolved); `None` when off.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.stats.as_ref().and_then(StatsThread::address)
    }

    /// Every thread's counters, as the stats thread reads them. The HTTP frontend counts into
    /// `sources().http`.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Every socket, named by kind ("udp", "http", "metrics"), to hand to the next process: the
    /// service manager's fd store, or a successor started by `SIGUSR2`.
    pub fn sockets_to_hand_on(&self) -> &[(&'static str, OwnedFd)] {
        &self.handover
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Signals every worker and waits for them; returns the first worker error.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.join()
    }

    /// Waits for the workers and the HTTP frontend to end (after a shutdown from elsewhere).
    pub fn join(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        if let Some(stats) = self.stats {
            stats.stop();
        }
        if let Some(sync) = self.cluster {
            sync.stop();
        }
        if let Some(http) = self.http {
            if http.join().is_err() {
                result = Err(anyhow::anyhow!("the HTTP frontend panicked"));
            }
        }
        for w in self.workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        // Every worker has handed in its shard: the final snapshot.
        if let Some(keeper) = self.keeper {
            keeper.finish();
        }
        result
    }
}
