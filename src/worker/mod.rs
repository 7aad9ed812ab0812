//! Worker threads: one per shard, each pinned to a core when asked, each running its own
//! io_uring loop over its own SO_REUSEPORT sockets. The worker only moves data between the
//! sockets, its inbox and the request handler; the handler holds the shard.

mod buf_ring;
pub mod handler;
pub mod inbox;
mod ring;
mod sockaddr;

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use crossbeam_utils::CachePadded;

use crate::config::Config;
use crate::connection_id::ConnectionIds;
use crate::stats::WorkerStats;
use handler::Handler;
use inbox::{Inbox, Mailbox};

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
}

/// Starts a worker thread. Returns once its ring is set up (or failed to be), so a tracker
/// that starts is a tracker that serves.
pub fn spawn(w: WorkerStart) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let index = w.index;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<anyhow::Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("hayate-w{index}"))
        .spawn(move || -> anyhow::Result<()> {
            let setup = || -> anyhow::Result<ring::RingLoop> {
                if let Some(core) = w.core {
                    pin_to_core(core).with_context(|| format!("pinning to core {core}"))?;
                }
                let c = &w.config;
                let handler = Handler::new(index, c, w.ids, w.mailboxes, w.stats);
                ring::RingLoop::new(ring::RingSetup {
                    handler,
                    inbox: w.inbox,
                    sockets: w.sockets,
                    recv_depth: c.udp.recv_depth as usize,
                    send_depth: c.udp.send_depth as usize,
                    send_buf_len: Handler::max_reply_len(c),
                    epoch: w.epoch,
                    shutdown: w.shutdown,
                    sweep_every_secs: c.cleaning.sweep_interval_secs,
                })
                .context("setting up io_uring")
            };
            match setup() {
                Ok(ring) => {
                    let _ = ready_tx.send(Ok(()));
                    ring.run()
                        .with_context(|| format!("worker {index} io_uring loop"))
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
        Ok(Ok(())) => Ok(thread),
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
