//! A worker's inbox: what other threads hand to the shard it owns. Three bounded channels (small
//! announces, large scrape chains, kept apart so an announce never moves a scrape-sized slot,
//! and work from the HTTP frontend, which carries its own reply slot) and one eventfd that the owner's ring reads, so an idle owner wakes at once. Senders never
//! block: a full inbox refuses and the sender counts the drop. Wakes are coalesced with a flag,
//! so a busy owner costs its senders no syscall per message.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::MAX_UDP_SCRAPE_HASHES;
use crate::protocol::{Announce, InfoHash, SwarmCounts};

/// A UDP announce parsed by one worker for the shard of another, which answers it from its own
/// socket on the same local address.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedAnnounce {
    pub client: SocketAddr,
    /// Index of the local address the request came in on.
    pub socket: u8,
    pub transaction_id: u32,
    pub announce: Announce,
    /// When the request was received, in microseconds since the tracker's epoch (latency).
    pub received_us: u64,
}

pub const SCRAPE_CHAIN_MAX: usize = MAX_UDP_SCRAPE_HASHES as usize;

/// A UDP scrape whose hashes span shards. It travels from owner to owner in ascending worker
/// order (skipping the worker it arrived at, which filled its own part first); each fills the
/// counts of the hashes it owns, and the last one sends the reply. No worker waits for another.
#[derive(Debug, Clone)]
pub struct ScrapeChain {
    pub client: SocketAddr,
    pub socket: u8,
    pub transaction_id: u32,
    /// The worker the request arrived at.
    pub origin: u16,
    /// When the request was received, in microseconds since the tracker's epoch (latency).
    pub received_us: u64,
    pub len: u8,
    pub hashes: [InfoHash; SCRAPE_CHAIN_MAX],
    pub counts: [SwarmCounts; SCRAPE_CHAIN_MAX],
}

impl ScrapeChain {
    pub fn hashes(&self) -> &[InfoHash] {
        &self.hashes[..self.len as usize]
    }
}

/// Work from the HTTP side for the torrents this worker owns: the HTTP frontend's requests, and
/// the metrics endpoint's questions (a torrent lookup, a census). The owner answers through
/// the oneshot, which never blocks it; the asking thread waits for the answer, boundedly, and
/// drops the receiver if it gives up, which the owner sees and skips the work.
#[derive(Debug)]
pub enum HttpWork {
    Announce {
        announce: Announce,
        /// The address to list the peer under (the client's, or one it may name itself).
        ip: IpAddr,
        /// The client's address of the other family, when it named one and may (listed too).
        other: Option<IpAddr>,
        /// The raw query string, for the pipeline's hooks (a token, a passkey).
        query: Vec<u8>,
        /// The peers, counts and intervals, or why the pipeline refused the announce.
        reply: tokio::sync::oneshot::Sender<Result<HttpAnnounced, crate::policy::Refusal>>,
    },
    /// The hashes of one scrape that this worker owns, in the order the reply wants them.
    Scrape {
        hashes: Vec<InfoHash>,
        reply: tokio::sync::oneshot::Sender<Vec<SwarmCounts>>,
    },
    /// One torrent as the owner holds it (`None`: not held), its peers listed if `peers`.
    Lookup {
        info_hash: InfoHash,
        peers: bool,
        reply: tokio::sync::oneshot::Sender<Option<crate::swarm::TorrentView>>,
    },
    /// A census of the owner's whole shard, walked a slice at a time between requests;
    /// every torrent's counts listed too if `list`.
    Census {
        list: bool,
        reply: tokio::sync::oneshot::Sender<crate::swarm::Census>,
    },
    /// From the cluster sync thread: other nodes' peers, or a request to publish the shard.
    Cluster(crate::cluster::ClusterWork),
}

/// A peer handed to an HTTP announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPeer {
    pub ip: IpAddr,
    pub port: u16,
}

/// The owner's answer to an HTTP announce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAnnounced {
    pub counts: SwarmCounts,
    pub peers: Vec<HttpPeer>,
    /// `interval` and `min interval`, as the pipeline shaped them.
    pub interval: u32,
    pub min_interval: u32,
}

/// The wake side, shared by the owner and every sender.
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
    pending: AtomicBool,
    /// HTTP work handed over since the last wake (written by the HTTP thread only).
    deferred: AtomicU32,
}

/// HTTP work the HTTP thread hands to one owner before it wakes it, even if not yet idle.
const DEFER_AT_MOST: u32 = 32;

impl Wake {
    fn new() -> std::io::Result<Self> {
        // Blocking on purpose: the owner reads it through io_uring, which waits for it.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
            deferred: AtomicU32::new(0),
        })
    }

    /// Wakes the owner unless a wake is already on its way.
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.force();
        }
    }

    /// Counts HTTP work handed over without a wake; wakes once `DEFER_AT_MOST` piled up.
    fn defer(&self) {
        let n = self.deferred.load(Ordering::Relaxed) + 1;
        self.deferred.store(n, Ordering::Relaxed);
        if n >= DEFER_AT_MOST {
            self.flush();
        }
    }

    /// Wakes the owner if HTTP work was handed over since the last wake. The HTTP thread calls
    /// this when it goes idle, so a burst of requests costs the owner one wake, not one each.
    pub fn flush(&self) {
        if self.deferred.swap(0, Ordering::AcqRel) > 0 {
            self.wake();
        }
    }

    /// Wakes the owner whatever the flag says (shutdown).
    pub fn force(&self) {
        let one: u64 = 1;
        // Cannot block: the counter would have to reach 2^64-1 first.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The owner calls this when its read of the eventfd completes, before draining.
    pub fn rearm(&self) {
        self.pending.store(false, Ordering::Release);
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The sending side of one worker's inbox. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Mailbox {
    announces: Sender<ForwardedAnnounce>,
    scrapes: Sender<ScrapeChain>,
    http: Sender<HttpWork>,
    wake: Arc<Wake>,
}

/// The receiving side, owned by the worker.
pub struct Inbox {
    pub announces: Receiver<ForwardedAnnounce>,
    pub scrapes: Receiver<ScrapeChain>,
    pub http: Receiver<HttpWork>,
    pub wake: Arc<Wake>,
}

/// A message the owner's inbox had no room for.
#[derive(Debug)]
pub struct InboxFull;

pub fn inbox(capacity: usize) -> std::io::Result<(Mailbox, Inbox)> {
    let (at, ar) = crossbeam_channel::bounded(capacity);
    // Scrapes are about 1% of traffic and each holds a 2.4 KB chain.
    let (st, sr) = crossbeam_channel::bounded((capacity / 16).max(16));
    // HTTP work in flight is bounded by the frontend's open connections (one request each at a
    // time, a scrape one message per owner), so an eighth of the UDP capacity is plenty.
    let (ht, hr) = crossbeam_channel::bounded((capacity / 8).max(16));
    let wake = Arc::new(Wake::new()?);
    Ok((
        Mailbox {
            announces: at,
            scrapes: st,
            http: ht,
            wake: wake.clone(),
        },
        Inbox {
            announces: ar,
            scrapes: sr,
            http: hr,
            wake,
        },
    ))
}

/// Puts `m` in a channel without blocking; a full one (or one whose owner is gone) refuses.
fn offer<T>(channel: &Sender<T>, m: T) -> Result<(), InboxFull> {
    channel.try_send(m).map_err(|e| match e {
        TrySendError::Full(_) | TrySendError::Disconnected(_) => InboxFull,
    })
}

impl Mailbox {
    pub fn send_announce(&self, m: ForwardedAnnounce) -> Result<(), InboxFull> {
        offer(&self.announces, m)?;
        self.wake.wake();
        Ok(())
    }

    pub fn send_scrape(&self, m: ScrapeChain) -> Result<(), InboxFull> {
        offer(&self.scrapes, m)?;
        self.wake.wake();
        Ok(())
    }

    /// Hands HTTP work to the owner; never blocks. A full inbox refuses, and the frontend
    /// answers "tracker busy, retry".
    pub fn send_http(&self, m: HttpWork) -> Result<(), InboxFull> {
        offer(&self.http, m)?;
        // The HTTP thread flushes before it parks (see `http::spawn`).
        self.wake.defer();
        Ok(())
    }

    /// Hands a question from the metrics endpoint to the owner and wakes it at once (the
    /// deferred wakes are the HTTP frontend's alone); never blocks.
    pub fn send_query(&self, m: HttpWork) -> Result<(), InboxFull> {
        offer(&self.http, m)?;
        self.wake.wake();
        Ok(())
    }

    pub fn wake(&self) -> &Wake {
        &self.wake
    }
}

impl Mailbox {
    /// A handle that can wake the owner, for shutdown.
    pub fn wake_handle(&self) -> Arc<Wake> {
        self.wake.clone()
    }
}
