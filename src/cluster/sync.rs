//! The sync thread: every `sync_interval_ms` it drains what the workers changed, writes it to
//! Redis in pipelined commands, reads the other nodes' peers of the torrents asked about since
//! the last sync, and hands them to the owning workers. Redis down, slow or answering garbage
//! only ever costs this thread: it logs once per change of state, counts the error, retries
//! with backoff, and when Redis is back (or came back empty) has the workers publish their
//! whole swarm again. Memory is bounded: the queue by `max_queued_changes`, what waits here by
//! the same figure, the cache by `max_remote_torrents` × `max_remote_peers`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{FromRedisValue, RedisResult, Value};

use super::config::ClusterConfig;
use super::keys::{self, Keys, Role};
use super::outbox::Delta;
use super::remote::{RemoteSwarm, RemoteUpdate};
use super::stats::ClusterStats;
use super::store::{Batch, Store};
use crate::mesh::{HttpWork, Mesh};
use crate::protocol::InfoHash;

/// Commands per pipeline: large enough to amortise round trips, small enough that one batch
/// stays well inside the response timeout.
const BATCH: usize = 8192;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the queue is drained between syncs, so it never needs room for a whole interval.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// The queue between the workers and this thread holds at most this many changes (fewer if
/// `max_queued_changes` says so); what waits longer waits here.
pub const QUEUE_CAPACITY: usize = 65_536;
/// One touched set in this many also has its expired members removed (the readers skip them
/// anyway; this only keeps the sets from growing with peers that left without a stop).
const CLEAN_ONE_IN: u32 = 16;

/// What the sync thread asks a worker to do.
#[derive(Debug)]
pub enum ClusterWork {
    /// New remote state for torrents the worker owns.
    Remote(RemoteUpdate),
    /// Publish the whole shard again (Redis is new, was emptied, or changes were lost).
    Republish,
}

/// A peer's newest state, waiting to be written.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seeder: bool,
    /// Its other role's set must lose it.
    moved: bool,
    removed: bool,
    expires_unix: u64,
}

pub struct SyncSettings {
    pub config: ClusterConfig,
    pub node: String,
    pub peer_lifetime_secs: u32,
    pub keep_downloaded_secs: u32,
}

pub struct SyncThread {
    thread: Option<JoinHandle<()>>,
    stop: Sender<()>,
}

impl SyncThread {
    pub fn spawn(
        settings: SyncSettings,
        deltas: Receiver<Delta>,
        mesh: Mesh,
        stats: Arc<ClusterStats>,
    ) -> anyhow::Result<SyncThread> {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let mut sync = Sync::new(settings, deltas, mesh, stats);
        let thread = std::thread::Builder::new()
            .name("hayate-cluster".into())
            .spawn(move || sync.run(&stopped))?;
        Ok(SyncThread {
            thread: Some(thread),
            stop,
        })
    }

    /// Stops the thread after its current batch.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Sync {
    config: ClusterConfig,
    keys: Keys,
    lifetime: u64,
    keep_downloads: u64,
    deltas: Receiver<Delta>,
    mesh: Mesh,
    stats: Arc<ClusterStats>,
    store: Option<Store>,
    /// Whether Redis was reachable at the last try (logged when it changes).
    up: Option<bool>,
    backoff: Duration,
    next_attempt: Instant,
    pending: HashMap<(InfoHash, IpAddr, u16), Pending, ahash::RandomState>,
    downloads: HashMap<InfoHash, u32, ahash::RandomState>,
    /// When the oldest change waiting here was made.
    oldest: Option<Instant>,
    /// Other nodes were live at the last heartbeat: only then are torrents read back.
    others_live: bool,
    /// Torrents asked about since the last read.
    asked: HashSet<InfoHash, ahash::RandomState>,
    /// Torrents whose remote state the workers cache, with when each was last asked about.
    /// With each, the peers last handed to the worker for it.
    interest: HashMap<InfoHash, (Instant, u64), ahash::RandomState>,
    /// The sum of those peers: what the workers cache.
    cached_peers: u64,
    /// Changes were lost (dropped on a full queue or here): publish everything again.
    lost: bool,
    dropped_seen: u64,
    /// Reused for key names.
    key: String,
    rng: fastrand::Rng,
}

impl Sync {
    fn new(
        settings: SyncSettings,
        deltas: Receiver<Delta>,
        mesh: Mesh,
        stats: Arc<ClusterStats>,
    ) -> Self {
        let c = settings.config;
        let lifetime = u64::from(settings.peer_lifetime_secs);
        Self {
            keys: Keys::new(&c.key_prefix, &settings.node),
            lifetime,
            keep_downloads: u64::from(settings.keep_downloaded_secs).max(lifetime),
            config: c,
            deltas,
            mesh,
            stats,
            store: None,
            up: None,
            backoff: Duration::from_millis(100),
            next_attempt: Instant::now(),
            pending: HashMap::default(),
            downloads: HashMap::default(),
            oldest: None,
            others_live: false,
            asked: HashSet::default(),
            interest: HashMap::default(),
            cached_peers: 0,
            lost: false,
            dropped_seen: 0,
            key: String::with_capacity(128),
            rng: fastrand::Rng::new(),
        }
    }

    fn run(&mut self, stop: &Receiver<()>) {
        let interval = Duration::from_millis(self.config.sync_interval_ms.into());
        let mut next = Instant::now();
        loop {
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(DRAIN_EVERY);
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                // Stopping: whatever is still queued goes with the node (its peers age out of
                // the others' replies after their lifetime).
                _ => return,
            }
            self.drain();
            if Instant::now() >= next {
                next = Instant::now() + interval;
                self.sync();
            }
        }
    }

    /// Takes everything queued into the pending changes and the asked-about torrents.
    fn drain(&mut self) {
        let bound = self.config.max_queued_changes as usize;
        while let Ok(d) = self.deltas.try_recv() {
            if self.others_live {
                self.asked.insert(*d.info_hash());
            }
            let Delta::Peer {
                info_hash,
                ip,
                port,
                seeder,
                moved,
                removed,
                expires_unix,
                downloads,
                at,
            } = d
            else {
                continue;
            };
            if let Some(n) = downloads {
                self.downloads.insert(info_hash, n);
            }
            let key = (info_hash, ip.to_canonical(), port);
            let p = Pending {
                seeder,
                moved,
                removed,
                expires_unix,
            };
            let full = self.pending.len() >= bound;
            match self.pending.get_mut(&key) {
                // Whatever was written before the changes now merged, the other set may hold it.
                Some(old) => *old = Pending { moved: true, ..p },
                None if full => {
                    ClusterStats::add(&self.stats.dropped, 1);
                    continue;
                }
                None => {
                    self.pending.insert(key, p);
                }
            }
            self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
        }
        let dropped = self
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        if dropped != self.dropped_seen {
            self.dropped_seen = dropped;
            self.lost = true;
        }
    }

    fn sync(&mut self) {
        if let Some(oldest) = self.oldest {
            ClusterStats::set(&self.stats.lag_ms, oldest.elapsed().as_millis() as u64);
        }
        if self.store.is_none() {
            if Instant::now() < self.next_attempt {
                return;
            }
            match Store::connect(&self.config) {
                Ok(store) => self.store = Some(store),
                Err(e) => return self.failed(&e, "connecting"),
            }
        }
        match self.round() {
            Ok(()) => {
                if self.up != Some(true) {
                    tracing::info!(node = %self.keys.node, "cluster sync: Redis is reachable");
                }
                self.up = Some(true);
                self.backoff = Duration::from_millis(100);
                ClusterStats::set(&self.stats.connected, 1);
            }
            Err(e) => {
                self.store = None;
                self.failed(&e, "syncing");
            }
        }
    }

    fn failed(&mut self, e: &redis::RedisError, doing: &str) {
        ClusterStats::add(&self.stats.errors, 1);
        ClusterStats::set(&self.stats.connected, 0);
        if self.up != Some(false) {
            tracing::warn!(
                node = %self.keys.node,
                error = %e,
                "cluster sync: Redis is unreachable while {doing}; serving local peers only \
                 and retrying"
            );
        }
        self.up = Some(false);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// One sync against a connected Redis: the node's heartbeat, the writes, the reads.
    fn round(&mut self) -> RedisResult<()> {
        let now = super::unix_now();
        let others = self.heartbeat(now)?;
        self.write(now)?;
        self.read(now, &others)
    }

    fn batch(&self) -> RedisResult<Batch> {
        match &self.store {
            Some(s) => Ok(s.batch()),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            ))),
        }
    }

    /// Runs `batch`, counting it, and empties it for reuse.
    fn send(&mut self, batch: &mut Batch) -> RedisResult<Vec<Value>> {
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "not connected")))?;
        let sent = batch.len();
        let replies = store.run(batch)?;
        batch.clear();
        ClusterStats::add(&self.stats.batches, 1);
        ClusterStats::add(&self.stats.commands, sent as u64);
        if replies.len() != sent {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "Redis answered a different number of replies than commands sent",
            )));
        }
        Ok(replies)
    }

    /// Announces this node alive until its newest peer expires; returns the other live nodes.
    /// A Redis that does not know this node (new, restarted empty, failed over without its
    /// data) gets the whole swarm again.
    fn heartbeat(&mut self, now: u64) -> RedisResult<Vec<String>> {
        let nodes = self.keys.nodes();
        let me = self.keys.node.clone();
        let mut b = self.batch()?;
        b.cmd("ZSCORE").arg(&nodes).arg(&me);
        b.cmd("ZADD").arg(&nodes).arg(now + self.lifetime).arg(&me);
        b.cmd("ZREMRANGEBYSCORE").arg(&nodes).arg("-inf").arg(now);
        b.cmd("ZRANGEBYSCORE").arg(&nodes).arg(now + 1).arg("+inf");
        let mut replies = self.send(&mut b)?.into_iter();
        let known = replies.next().is_some_and(|v| v != Value::Nil);
        let live: Vec<String> = parse(replies.nth(2))?;
        if !known || self.lost {
            if !known {
                tracing::info!(node = %me, "cluster sync: Redis does not know this node; publishing the whole swarm");
            }
            self.lost = false;
            ClusterStats::add(&self.stats.republishes, 1);
            for m in self.mesh.mailboxes() {
                if m.send_query(HttpWork::Cluster(ClusterWork::Republish))
                    .is_err()
                {
                    // That worker's inbox is full: try again next sync.
                    self.lost = true;
                }
            }
        }
        let others: Vec<String> = live.into_iter().filter(|n| *n != me).collect();
        self.others_live = !others.is_empty();
        Ok(others)
    }

    /// Writes every pending change, in batches. On a failure what was not confirmed is kept.
    fn write(&mut self, now: u64) -> RedisResult<()> {
        if self.pending.is_empty() && self.downloads.is_empty() {
            ClusterStats::set(&self.stats.lag_ms, 0);
            return Ok(());
        }
        let pending: Vec<_> = self.pending.drain().collect();
        let downloads: Vec<_> = self.downloads.drain().collect();
        let oldest = self.oldest.take();
        match self.write_all(now, &pending, &downloads) {
            Ok(()) => {
                if let Some(oldest) = oldest {
                    ClusterStats::set(&self.stats.lag_ms, oldest.elapsed().as_millis() as u64);
                }
                Ok(())
            }
            Err(e) => {
                // Nothing is known to be written: keep it all, unless newer changes replaced it.
                for (key, p) in pending {
                    self.pending.entry(key).or_insert(p);
                }
                for (hash, n) in downloads {
                    self.downloads.entry(hash).or_insert(n);
                }
                self.oldest = match (oldest, self.oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Err(e)
            }
        }
    }

    fn write_all(
        &mut self,
        now: u64,
        pending: &[((InfoHash, IpAddr, u16), Pending)],
        downloads: &[(InfoHash, u32)],
    ) -> RedisResult<()> {
        let key_ttl = self.lifetime + 60;
        let mut key = std::mem::take(&mut self.key);
        let mut b = self.batch()?;
        let mut result = Ok(());
        for &((hash, ip, port), p) in pending {
            let member = keys::member(ip, port);
            let member = member.as_bytes();
            let (role, other) = if p.seeder {
                (Role::Seeders, Role::Leechers)
            } else {
                (Role::Leechers, Role::Seeders)
            };
            let node = &self.keys.node;
            if p.removed || p.moved {
                self.keys.write_peers(&mut key, &hash, node, other);
                b.cmd("ZREM").arg(key.as_str()).arg(member);
            }
            self.keys.write_peers(&mut key, &hash, node, role);
            if p.removed {
                b.cmd("ZREM").arg(key.as_str()).arg(member);
            } else {
                b.cmd("ZADD")
                    .arg(key.as_str())
                    .arg(p.expires_unix)
                    .arg(member);
                b.cmd("EXPIRE").arg(key.as_str()).arg(key_ttl);
                if self.rng.u32(..CLEAN_ONE_IN) == 0 {
                    b.cmd("ZREMRANGEBYSCORE")
                        .arg(key.as_str())
                        .arg("-inf")
                        .arg(now);
                }
            }
            if b.len() >= BATCH {
                if let Err(e) = self.send(&mut b) {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            for &(hash, n) in downloads {
                self.keys.write_downloads(&mut key, &hash);
                b.cmd("HSET").arg(key.as_str()).arg(&self.keys.node).arg(n);
                b.cmd("EXPIRE")
                    .arg(key.as_str())
                    .arg(self.keep_downloads + key_ttl);
            }
            result = self.send(&mut b).map(|_| ());
        }
        self.key = key;
        result
    }

    /// Reads the other nodes' state of every torrent asked about since the last read, and
    /// forgets torrents nobody asked about for a peer lifetime (or all of them, once no other
    /// node is live).
    fn read(&mut self, now: u64, others: &[String]) -> RedisResult<()> {
        let at = Instant::now();
        let idle = Duration::from_secs(self.lifetime);
        let cap = self.config.max_remote_torrents as usize;
        let workers = self.mesh.workers();
        let mut updates: Vec<RemoteUpdate> = vec![Vec::new(); workers];
        let alone = others.is_empty();
        let cached = &mut self.cached_peers;
        self.interest.retain(|hash, (last, peers)| {
            let keep = !alone && at.duration_since(*last) < idle;
            if !keep {
                *cached -= *peers;
                updates[crate::mesh::shard_of(hash, workers)].push((*hash, None));
            }
            keep
        });
        let mut asked: Vec<InfoHash> = Vec::with_capacity(self.asked.len());
        for hash in self.asked.drain() {
            if !alone && (self.interest.len() < cap || self.interest.contains_key(&hash)) {
                self.interest.entry(hash).or_insert((at, 0)).0 = at;
                asked.push(hash);
            }
        }
        let limit = self.config.max_remote_peers;
        let per_torrent = 1 + 4 * others.len();
        let mut key = std::mem::take(&mut self.key);
        let mut b = self.batch()?;
        let mut result = Ok(());
        for chunk in asked.chunks((BATCH / per_torrent).max(1)) {
            for hash in chunk {
                self.keys.write_downloads(&mut key, hash);
                b.cmd("HGETALL").arg(key.as_str());
                for node in others {
                    for role in [Role::Seeders, Role::Leechers] {
                        self.keys.write_peers(&mut key, hash, node, role);
                        b.cmd("ZCOUNT").arg(key.as_str()).arg(now + 1).arg("+inf");
                        b.cmd("ZREVRANGEBYSCORE")
                            .arg(key.as_str())
                            .arg("+inf")
                            .arg(now + 1)
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit);
                    }
                }
            }
            let replies = match self.send(&mut b) {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mut replies = replies.into_iter();
            for hash in chunk {
                match self.remote_swarm(&mut replies, others.len()) {
                    Ok(swarm) => {
                        if let Some((_, peers)) = self.interest.get_mut(hash) {
                            self.cached_peers = self.cached_peers - *peers + swarm.peers() as u64;
                            *peers = swarm.peers() as u64;
                        }
                        updates[crate::mesh::shard_of(hash, workers)].push((*hash, Some(swarm)))
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_err() {
                break;
            }
        }
        self.key = key;
        for (worker, update) in updates.into_iter().enumerate() {
            if !update.is_empty() {
                // A full inbox loses this update; the next sync reads the torrents again.
                let work = HttpWork::Cluster(ClusterWork::Remote(update));
                let _ = self.mesh.to(worker).send_query(work);
            }
        }
        ClusterStats::set(&self.stats.remote_torrents, self.interest.len() as u64);
        ClusterStats::set(&self.stats.remote_peers, self.cached_peers);
        result
    }

    /// One torrent's replies: its downloads by node, then per other node the seeders' and
    /// leechers' counts and freshest members.
    fn remote_swarm(
        &self,
        replies: &mut impl Iterator<Item = Value>,
        others: usize,
    ) -> RedisResult<RemoteSwarm> {
        let mut s = RemoteSwarm::default();
        let by_node: HashMap<String, u64> = parse(replies.next())?;
        s.counts.downloaded = (by_node.iter())
            .filter(|(n, _)| **n != self.keys.node)
            .map(|(_, &d)| d)
            .sum::<u64>()
            .min(u64::from(u32::MAX)) as u32;
        let mut v4 = [Vec::new(), Vec::new()];
        let mut v6 = [Vec::new(), Vec::new()];
        for _ in 0..others {
            for (r, count) in [&mut s.counts.seeders, &mut s.counts.leechers]
                .into_iter()
                .enumerate()
            {
                let n: u64 = parse(replies.next())?;
                *count = count.saturating_add(n.min(u64::from(u32::MAX)) as u32);
                let members: Vec<Vec<u8>> = parse(replies.next())?;
                for m in members {
                    match keys::parse_member(&m) {
                        Some((IpAddr::V4(ip), port)) => v4[r].push((ip.octets(), port)),
                        Some((IpAddr::V6(ip), port)) => v6[r].push((ip.octets(), port)),
                        // Garbage in our keys is skipped, never handed to a client.
                        None => {}
                    }
                }
            }
        }
        let [s4, l4] = v4;
        let [s6, l6] = v6;
        s.v4.seeders = s4.len();
        s.v4.peers = s4.into_iter().chain(l4).collect();
        s.v6.seeders = s6.len();
        s.v6.peers = s6.into_iter().chain(l6).collect();
        Ok(s)
    }
}

/// One reply as `T`; a missing or mistyped one is an error (Redis answering garbage).
fn parse<T: FromRedisValue>(v: Option<Value>) -> RedisResult<T> {
    let v = v.ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "reply missing")))?;
    if let Value::ServerError(e) = v {
        return Err(e.into());
    }
    Ok(T::from_redis_value(v)?)
}
