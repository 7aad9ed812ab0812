//! Worker threads: one per shard, each pinned to a core when asked, each running its own
//! io_uring loop (or, where io_uring cannot be set up, an epoll loop) over its own SO_REUSEPORT
//! sockets. The worker only moves data between the sockets, its inbox and the request handler;
//! the handler holds the shard.

mod buf_ring;
mod census_duty;
mod cluster_duty;
mod epoll;
pub mod handler;
mod ring;
mod snapshot_duty;
mod sockaddr;

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use crossbeam_utils::CachePadded;

use crate::config::{Backend, Config};
use crate::connection_id::ConnectionIds;
use crate::mesh::{Inbox, Mailbox};
use crate::policy::SharedPolicy;
use crate::stats::WorkerStats;
use handler::Handler;

/// Everything one worker starts with.
pub struct WorkerStart {
    pub index: usize,
    pub config: Arc<Config>,
    pub ids: ConnectionIds,
    pub mailboxes: Vec<Mailbox>,
    pub inbox: Inbox,
    pub sockets: Vec<UdpSocket>,
    pub epoch: Instant,
    pub shutdown: Arc<AtomicBool>,
    /// CPU to pin the thread to.
    pub core: Option<usize>,
    /// The counters this worker alone writes (see `stats::counters`).
    pub stats: Arc<CachePadded<WorkerStats>>,
    /// The pipeline's live-reloadable policy (access list, intervals, numwant, ...).
    pub policy: SharedPolicy,
    /// The link to the snapshot thread, when state is kept.
    pub state: Option<crate::state::keeper::WorkerLink>,
    /// The torrents of this worker's shard restored from the snapshot.
    pub restored: Vec<crate::state::snapshot::TorrentRecord>,
    /// Where changes go to the cluster sync thread, when `[cluster]` is on.
    pub cluster: Option<crate::cluster::Outbox>,
}

/// A running worker and the I/O loop it runs.
pub struct Started {
    pub thread: JoinHandle<anyhow::Result<()>>,
    /// "io_uring" or "epoll".
    pub backend: &'static str,
    /// Why io_uring was not used, when `udp.backend = "auto"` fell back to epoll.
    pub fallback: Option<String>,
}

enum IoLoop {
    Ring(Box<ring::RingLoop>),
    Epoll(Box<epoll::EpollLoop>),
}

impl IoLoop {
    fn name(&self) -> &'static str {
        match self {
            IoLoop::Ring(_) => "io_uring",
            IoLoop::Epoll(_) => "epoll",
        }
    }

    fn run(self) -> std::io::Result<()> {
        match self {
            IoLoop::Ring(r) => r.run(),
            IoLoop::Epoll(e) => e.run(),
        }
    }
}

/// What either I/O loop is given.
pub struct LoopSetup {
    pub handler: Handler,
    pub inbox: Inbox,
    /// One per configured UDP address, in config order.
    pub sockets: Vec<UdpSocket>,
    /// Receive buffers per socket (`udp.recv_depth`): the buffer ring's share, or one
    /// `recvmmsg` batch.
    pub recv_depth: usize,
    pub send_depth: usize,
    pub send_buf_len: usize,
    pub epoch: Instant,
    pub shutdown: Arc<AtomicBool>,
}

/// Sets up the I/O loop `udp.backend` asks for: io_uring, epoll, or io_uring falling back to
/// epoll (returning why).
fn io_loop(w: WorkerStart) -> anyhow::Result<(IoLoop, Option<String>)> {
    if let Some(core) = w.core {
        pin_to_core(core).with_context(|| format!("pinning to core {core}"))?;
    }
    let c = &w.config;
    let handler = || {
        let mut h = Handler::new(
            w.index,
            c,
            w.ids.clone(),
            w.mailboxes.clone(),
            w.stats.clone(),
        );
        h.share_policy(w.policy.clone());
        if let Some(link) = &w.state {
            h.keep_state(link.clone());
        }
        if let Some(outbox) = &w.cluster {
            h.join_cluster(outbox.clone());
        }
        if !w.restored.is_empty() {
            let started = Instant::now();
            let now = w.epoch.elapsed().as_secs() as u32;
            let peers: usize = w.restored.iter().map(|t| h.shard.restore(t, now)).sum();
            tracing::info!(
                worker = w.index,
                torrents = h.shard.totals().torrents,
                peers,
                ms = started.elapsed().as_millis() as u64,
                "shard restored from the snapshot"
            );
        }
        h
    };
    let setup = |inbox: Inbox, sockets: Vec<UdpSocket>| LoopSetup {
        handler: handler(),
        inbox,
        sockets,
        recv_depth: c.udp.recv_depth as usize,
        send_depth: c.udp.send_depth as usize,
        send_buf_len: Handler::max_reply_len(c),
        epoch: w.epoch,
        shutdown: w.shutdown.clone(),
    };
    let epoll = |inbox: Inbox, sockets: Vec<UdpSocket>| {
        epoll::EpollLoop::new(setup(inbox, sockets)).context("setting up epoll")
    };
    if c.udp.backend == Backend::Epoll {
        return Ok((IoLoop::Epoll(Box::new(epoll(w.inbox, w.sockets)?)), None));
    }
    // The ring takes duplicates of the sockets and inbox, so that if it cannot be set up the
    // originals are still here for epoll.
    let sockets = w
        .sockets
        .iter()
        .map(UdpSocket::try_clone)
        .collect::<std::io::Result<Vec<_>>>()
        .context("duplicating UDP sockets")?;
    let inbox = Inbox {
        announces: w.inbox.announces.clone(),
        scrapes: w.inbox.scrapes.clone(),
        http: w.inbox.http.clone(),
        wake: w.inbox.wake.clone(),
    };
    let ring = ring::RingLoop::new(setup(inbox, sockets));
    match ring {
        Ok(ring) => Ok((IoLoop::Ring(Box::new(ring)), None)),
        Err(e) if c.udp.backend == Backend::Auto => {
            let why = format!("io_uring cannot be set up: {e}");
            Ok((
                IoLoop::Epoll(Box::new(epoll(w.inbox, w.sockets)?)),
                Some(why),
            ))
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context("setting up io_uring (udp.backend = \"io_uring\")"))
        }
    }
}

/// Starts a worker thread. Returns once its I/O loop is set up (or failed to be), so a tracker
/// that starts is a tracker that serves.
pub fn spawn(w: WorkerStart) -> anyhow::Result<Started> {
    let index = w.index;
    let (ready_tx, ready_rx) =
        crossbeam_channel::bounded::<anyhow::Result<(&'static str, Option<String>)>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("hayate-w{index}"))
        .spawn(move || -> anyhow::Result<()> {
            match io_loop(w) {
                Ok((io, fallback)) => {
                    let name = io.name();
                    let _ = ready_tx.send(Ok((name, fallback)));
                    io.run()
                        .with_context(|| format!("worker {index} {name} loop"))
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    Err(anyhow::anyhow!(message))
                }
            }
        })
        .with_context(|| format!("spawning worker {index}"))?;
    match ready_rx.recv() {
        Ok(Ok((backend, fallback))) => Ok(Started {
            thread,
            backend,
            fallback,
        }),
        Ok(Err(e)) => Err(e.context(format!("worker {index}"))),
        Err(_) => Err(anyhow::anyhow!("worker {index} died while starting")),
    }
}

/// The CPUs this process may run on, in order.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to_core(core: usize) -> std::io::Result<()> {
    // SAFETY: as above; the set names one CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
