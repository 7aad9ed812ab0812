//! The figures a thread counts about its own traffic, readable by the stats thread while the
//! owner keeps counting. Every block has exactly one writer: a UDP worker owns one
//! `WorkerStats`, the HTTP frontend thread owns one `Traffic`. The writer bumps a counter with a
//! relaxed load and a relaxed store, never a read-modify-write, so the hot path carries no
//! lock-prefixed instruction (on x86-64 it compiles to one plain `add` to memory; on aarch64
//! to `ldr`/`add`/`str`), exactly what a plain `u64` field would cost. The stats thread reads
//! with relaxed loads; a 64-bit atomic never tears, and a reader at most sees a count one
//! packet old. A block is cache-padded so no other data shares its first or last line.
//!
//! Two writers on one block would lose counts (each store overwrites the other's); a thread
//! that needs counts must own its block.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::heartbeat::Heartbeat;

/// A count with one writer. See the module comment for why load + store, not `fetch_add`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the block's owner may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Overwrites the value (gauges, heartbeats). Only the owner may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Request kinds, in BEP 15 action order. HTTP announce and scrape use the same names; HTTP has
/// no connect. A request is counted under the action it names even when it is refused, so
/// `Error` only ever counts replies (error packets, `failure reason`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect = 0,
    Announce = 1,
    Scrape = 2,
    Error = 3,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Connect,
        Action::Announce,
        Action::Scrape,
        Action::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Announce => "announce",
            Action::Scrape => "scrape",
            Action::Error => "error",
        }
    }
}

/// The client's address family (IPv4-mapped IPv6 counts as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4 = 0,
    V6 = 1,
}

impl IpVersion {
    pub const ALL: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

    pub fn of(ip: std::net::IpAddr) -> IpVersion {
        if ip.to_canonical().is_ipv4() {
            IpVersion::V4
        } else {
            IpVersion::V6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpVersion::V4 => "4",
            IpVersion::V6 => "6",
        }
    }
}

/// Why a request failed or a packet was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// Not a tracker request at all, or a datagram longer than a receive buffer (2 KiB, more
    /// than any tracker request); dropped unanswered.
    NotTracker = 0,
    /// A tracker request that could not be parsed or broke a limit; answered with an error.
    Malformed = 1,
    /// A connection id this tracker never issued.
    ConnectionIdInvalid = 2,
    /// A connection id past its lifetime.
    ConnectionIdExpired = 3,
    /// The owning worker's inbox was full; the request went unanswered.
    InboxFull = 4,
    /// Every send buffer was in flight; the reply was dropped.
    SendBuffersFull = 5,
    /// The kernel refused a send.
    SendFailed = 6,
    /// The kernel failed a receive.
    ReceiveFailed = 7,
    /// An announce for a new torrent while the shard held `limits.max_torrents`, or of a new
    /// peer while it held `limits.max_peers`; refused.
    TrackerFull = 8,
    /// A new peer for a torrent at `limits.max_peers_per_torrent`; refused.
    TorrentFull = 9,
    /// Every receive buffer was waiting to be handled; datagrams queued in the socket meanwhile.
    ReceiveBuffersFull = 10,
    /// An announce of a torrent the access list refuses; answered "torrent not allowed".
    TorrentNotAllowed = 11,
    /// The owning worker did not answer an HTTP request within `http.worker_timeout_ms`.
    WorkerTimeout = 12,
    /// An announce from a client the client list refuses; answered "client not allowed".
    ClientNotAllowed = 13,
    /// An announce without a valid JWT while `[jwt] mode = "required"`.
    JwtRefused = 14,
    /// A datagram or connection from a source on the `[blocklist]`; ignored.
    Blocked = 15,
    /// A new peer or torrent past its source's quota (`limits.max_peers_per_source`,
    /// `max_new_torrents_per_source`); refused.
    SourceQuota = 16,
    /// A request past its source's rate (`limits.requests_per_source_per_sec`): a datagram
    /// dropped unanswered, an HTTP request answered 429.
    RateLimited = 17,
    /// An HTTP connection closed at accept because `http.max_connections` were open.
    ConnectionsFull = 18,
    /// An HTTP connection closed at accept because its address held
    /// `http.max_connections_per_ip`.
    ConnectionsPerIp = 19,
    /// An HTTPS connection whose TLS handshake failed or did not finish within
    /// `http.header_read_timeout_secs`; closed.
    TlsHandshake = 20,
}

impl ErrorReason {
    pub const COUNT: usize = 21;
    pub const ALL: [ErrorReason; Self::COUNT] = [
        ErrorReason::NotTracker,
        ErrorReason::Malformed,
        ErrorReason::ConnectionIdInvalid,
        ErrorReason::ConnectionIdExpired,
        ErrorReason::InboxFull,
        ErrorReason::SendBuffersFull,
        ErrorReason::SendFailed,
        ErrorReason::ReceiveFailed,
        ErrorReason::TrackerFull,
        ErrorReason::TorrentFull,
        ErrorReason::ReceiveBuffersFull,
        ErrorReason::TorrentNotAllowed,
        ErrorReason::WorkerTimeout,
        ErrorReason::ClientNotAllowed,
        ErrorReason::JwtRefused,
        ErrorReason::Blocked,
        ErrorReason::SourceQuota,
        ErrorReason::RateLimited,
        ErrorReason::ConnectionsFull,
        ErrorReason::ConnectionsPerIp,
        ErrorReason::TlsHandshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::NotTracker => "not_tracker",
            ErrorReason::Malformed => "malformed",
            ErrorReason::ConnectionIdInvalid => "connection_id_invalid",
            ErrorReason::ConnectionIdExpired => "connection_id_expired",
            ErrorReason::InboxFull => "inbox_full",
            ErrorReason::SendBuffersFull => "send_buffers_full",
            ErrorReason::SendFailed => "send_failed",
            ErrorReason::ReceiveFailed => "receive_failed",
            ErrorReason::TrackerFull => "tracker_full",
            ErrorReason::TorrentFull => "torrent_full",
            ErrorReason::ReceiveBuffersFull => "receive_buffers_full",
            ErrorReason::TorrentNotAllowed => "torrent_not_allowed",
            ErrorReason::WorkerTimeout => "worker_timeout",
            ErrorReason::ClientNotAllowed => "client_not_allowed",
            ErrorReason::JwtRefused => "jwt_refused",
            ErrorReason::Blocked => "blocked",
            ErrorReason::SourceQuota => "source_quota",
            ErrorReason::RateLimited => "rate_limited",
            ErrorReason::ConnectionsFull => "connections_full",
            ErrorReason::ConnectionsPerIp => "connections_per_ip",
            ErrorReason::TlsHandshake => "tls_handshake",
        }
    }
}

/// What was handed to another thread's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    Announce = 0,
    Scrape = 1,
}

impl Forward {
    pub const ALL: [Forward; 2] = [Forward::Announce, Forward::Scrape];

    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Announce => "announce",
            Forward::Scrape => "scrape",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds: 10 µs (a connect answered in the same
/// batch) to 1 s (something is badly wrong). Roughly 1-2.5-5 per decade.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// Upper bounds of the peers-per-reply buckets: empty swarms, small ones, and the numwant
/// steps clients use (50 default, 200 libtorrent, 1000 the configurable maximum).
pub const PEERS_BOUNDS: [u64; 10] = [0, 1, 5, 10, 25, 50, 100, 200, 500, 1_000];

/// A fixed-bucket histogram with one writer; `N` buckets, the last one unbounded (+Inf).
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    buckets: [Counter; N],
    sum: Counter,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum: Counter::default(),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Records `v` against `bounds` (N - 1 ascending upper bounds, inclusive).
    #[inline]
    fn observe(&self, bounds: &[u64], v: u64) {
        debug_assert_eq!(bounds.len() + 1, N);
        let i = bounds.partition_point(|&b| b < v);
        self.buckets[i].inc();
        self.sum.add(v);
    }

    pub fn snapshot(&self) -> HistogramSnapshot<N> {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's figures at one moment: per-bucket (not cumulative) counts and the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot<const N: usize> {
    pub buckets: [u64; N],
    pub sum: u64,
}

impl<const N: usize> Default for HistogramSnapshot<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            sum: 0,
        }
    }
}

impl<const N: usize> HistogramSnapshot<N> {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, o: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum += o.sum;
    }
}

pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;
pub const PEERS_BUCKETS: usize = PEERS_BOUNDS.len() + 1;

/// One protocol's traffic as counted by one thread.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests received, by action and IP version.
    requests: [[Counter; 2]; 4],
    /// Replies sent, by action and IP version.
    responses: [[Counter; 2]; 4],
    errors: [Counter; ErrorReason::COUNT],
    bytes_received: Counter,
    bytes_sent: Counter,
    /// Requests handed to another thread's inbox, by kind.
    forwarded: [Counter; 2],
    /// Forwards refused because that inbox was full, by kind.
    inbox_dropped: [Counter; 2],
    latency_us: Histogram<LATENCY_BUCKETS>,
    peers: Histogram<PEERS_BUCKETS>,
}

impl Traffic {
    #[inline]
    pub fn request(&self, action: Action, ip: IpVersion) {
        self.requests[action as usize][ip as usize].inc();
    }

    /// A reply of `bytes` bytes handed to the kernel (or the HTTP connection).
    #[inline]
    pub fn response(&self, action: Action, ip: IpVersion, bytes: usize) {
        self.responses[action as usize][ip as usize].inc();
        self.bytes_sent.add(bytes as u64);
    }

    #[inline]
    pub fn error(&self, reason: ErrorReason) {
        self.errors[reason as usize].inc();
    }

    #[inline]
    pub fn received(&self, bytes: usize) {
        self.bytes_received.add(bytes as u64);
    }

    #[inline]
    pub fn forwarded(&self, kind: Forward) {
        self.forwarded[kind as usize].inc();
    }

    /// A forward refused by a full inbox. Also counts as an `inbox_full` error.
    #[inline]
    pub fn inbox_dropped(&self, kind: Forward) {
        self.inbox_dropped[kind as usize].inc();
        self.error(ErrorReason::InboxFull);
    }

    /// Time from receiving a request to sending its reply.
    #[inline]
    pub fn latency(&self, micros: u64) {
        self.latency_us.observe(&LATENCY_BOUNDS_US, micros);
    }

    /// Peers handed out in one announce reply.
    #[inline]
    pub fn peers_in_reply(&self, peers: usize) {
        self.peers.observe(&PEERS_BOUNDS, peers as u64);
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        let grid = |g: &[[Counter; 2]; 4]| std::array::from_fn(|a| [g[a][0].get(), g[a][1].get()]);
        TrafficSnapshot {
            requests: grid(&self.requests),
            responses: grid(&self.responses),
            errors: std::array::from_fn(|i| self.errors[i].get()),
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
            forwarded: std::array::from_fn(|i| self.forwarded[i].get()),
            inbox_dropped: std::array::from_fn(|i| self.inbox_dropped[i].get()),
            latency_us: self.latency_us.snapshot(),
            peers: self.peers.snapshot(),
        }
    }
}

/// `Traffic` read at one moment, as plain numbers that can be summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    pub requests: [[u64; 2]; 4],
    pub responses: [[u64; 2]; 4],
    pub errors: [u64; ErrorReason::COUNT],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub forwarded: [u64; 2],
    pub inbox_dropped: [u64; 2],
    pub latency_us: HistogramSnapshot<LATENCY_BUCKETS>,
    pub peers: HistogramSnapshot<PEERS_BUCKETS>,
}

impl TrafficSnapshot {
    pub fn add(&mut self, o: &Self) {
        for a in 0..4 {
            for v in 0..2 {
                self.requests[a][v] += o.requests[a][v];
                self.responses[a][v] += o.responses[a][v];
            }
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        for k in 0..2 {
            self.forwarded[k] += o.forwarded[k];
            self.inbox_dropped[k] += o.inbox_dropped[k];
        }
        self.latency_us.add(&o.latency_us);
        self.peers.add(&o.peers);
    }

    pub fn requests(&self, action: Action, ip: IpVersion) -> u64 {
        self.requests[action as usize][ip as usize]
    }

    pub fn responses(&self, action: Action, ip: IpVersion) -> u64 {
        self.responses[action as usize][ip as usize]
    }

    pub fn errors(&self, reason: ErrorReason) -> u64 {
        self.errors[reason as usize]
    }

    /// Requests of every action and IP version.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Replies of every action and IP version.
    pub fn responses_total(&self) -> u64 {
        self.responses.iter().flatten().sum()
    }

    /// Refusals and losses of every reason.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// One UDP worker's block: its traffic, the size of its shard, and its heartbeat.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub udp: Traffic,
    /// Shard size, refreshed on the worker's one-second tick.
    pub torrents: Counter,
    pub seeders: Counter,
    pub leechers: Counter,
    /// Milliseconds since the tracker's epoch at the worker's last tick; 0 before the first.
    pub heartbeat_ms: Counter,
}

/// Where the stats thread finds every block: one per worker, one for the HTTP frontend, and
/// the heartbeats of the threads that are not workers. Each block is cache-padded: it is
/// written by one core and read by another.
#[derive(Debug, Clone)]
pub struct Sources {
    pub workers: Vec<std::sync::Arc<crossbeam_utils::CachePadded<WorkerStats>>>,
    pub http: std::sync::Arc<crossbeam_utils::CachePadded<Traffic>>,
    /// The HTTP thread's heartbeat; `None` when HTTP is off (no `http.addresses`).
    pub http_heartbeat: Option<Heartbeat>,
    /// The stats thread's heartbeat, stamped by its aggregation loop.
    pub stats_heartbeat: Heartbeat,
    /// The instant heartbeats count from.
    pub epoch: std::time::Instant,
    /// The cluster sync thread's figures, when `[cluster]` is on.
    pub cluster: Option<std::sync::Arc<crate::cluster::ClusterStats>>,
}

impl Sources {
    /// Blocks for `workers` workers and no HTTP thread (see `with_http`).
    pub fn new(workers: usize, epoch: std::time::Instant) -> Self {
        Self {
            workers: (0..workers).map(|_| Default::default()).collect(),
            http: Default::default(),
            http_heartbeat: None,
            stats_heartbeat: Heartbeat::new(epoch),
            epoch,
            cluster: None,
        }
    }

    /// The same, with an HTTP thread whose heartbeat `/health` checks.
    pub fn with_http(mut self) -> Self {
        self.http_heartbeat = Some(Heartbeat::new(self.epoch));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let t = Traffic::default();
        for v in [0, 10, 11, 1_000_000, 1_000_001] {
            t.latency(v);
        }
        let s = t.snapshot().latency_us;
        assert_eq!(s.buckets[0], 2, "0 and 10 are <= 10");
        assert_eq!(s.buckets[1], 1, "11 is <= 25");
        assert_eq!(s.buckets[LATENCY_BUCKETS - 2], 1, "1 s is the last bound");
        assert_eq!(s.buckets[LATENCY_BUCKETS - 1], 1, "past it is +Inf");
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum, 2_000_022);
    }

    #[test]
    fn snapshots_sum() {
        let a = Traffic::default();
        let b = Traffic::default();
        a.request(Action::Announce, IpVersion::V6);
        b.request(Action::Announce, IpVersion::V6);
        b.response(Action::Connect, IpVersion::V4, 16);
        b.inbox_dropped(Forward::Scrape);
        b.peers_in_reply(0);
        let mut s = a.snapshot();
        s.add(&b.snapshot());
        assert_eq!(s.requests(Action::Announce, IpVersion::V6), 2);
        assert_eq!(s.responses(Action::Connect, IpVersion::V4), 1);
        assert_eq!(s.bytes_sent, 16);
        assert_eq!(s.inbox_dropped, [0, 1]);
        assert_eq!(s.errors(ErrorReason::InboxFull), 1);
        assert_eq!(s.peers.buckets[0], 1);
    }

    #[test]
    fn counter_is_single_writer_add() {
        let c = Counter::default();
        c.add(5);
        c.inc();
        assert_eq!(c.get(), 6);
        c.set(2);
        assert_eq!(c.get(), 2);
    }
}
