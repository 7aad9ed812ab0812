//! A worker's request handling, without I/O: one datagram in, at most one reply written into a
//! caller's buffer, or the request forwarded to the worker that owns its torrent; and the HTTP
//! frontend's work for this worker's torrents. Both frontends' announces go through the same
//! steps here: the pipeline's pre-hooks (`admit`), the swarm on the owner (`swarm_step`, which
//! also feeds the post-hooks), then reply shaping. A refusal from any step is a
//! [`Refusal`], rendered as a BEP 15 error or a bencoded failure by the frontend. The I/O
//! loops call this; tests and fuzz targets can drive it directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::config::Config;
use crate::connection_id::ConnectionIds;
use crate::mesh::{
    ForwardedAnnounce, HttpAnnounced, HttpPeer, HttpWork, Inbox, InboxFull, Mailbox, Mesh,
    ScrapeChain, SCRAPE_CHAIN_MAX,
};
use crate::policy::access_list::AccessList;
use crate::policy::{Change, PeerChange, Pipeline, Policy, Refusal, SharedPolicy};
use crate::protocol::bep41::{self, Url, URL_CAPACITY};
use crate::protocol::udp::{self, ParseError, Request};
use crate::protocol::{Announce, AnnounceEvent, AnnounceRequest, SwarmCounts, Transport};
use crate::rate_limit::RateLimiter;
use crate::state::keeper::WorkerLink;
use crate::stats::{Action, ErrorReason, Forward, IpVersion, WorkerStats};
use crate::swarm::{Family, Limits, Peer, Previous, Quotas, Shard};

use super::census_duty::CensusDuty;
use super::cluster_duty::ClusterDuty;
use super::snapshot_duty::SnapshotDuty;

/// Microseconds between ticks: once a second, or every millisecond while a snapshot is being
/// walked so it finishes in about a second however large the shard.
const TICK_US: u64 = 1_000_000;
const BUSY_TICK_US: u64 = 1_000;

/// Where a reply goes and on which local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub client: SocketAddr,
    pub socket: u8,
    pub len: usize,
}

pub struct Handler {
    pub me: usize,
    pub shard: Shard,
    /// This worker's counters; only this worker writes them, the stats thread reads them.
    pub stats: Arc<CachePadded<WorkerStats>>,
    /// When the batch being handled was received, in microseconds since the tracker's epoch.
    /// The ring sets it per batch; forwards carry it so the owner can time the whole trip.
    pub received_us: u64,
    ids: ConnectionIds,
    mesh: Mesh,
    /// The hooks and their live policy (access list, intervals, numwant, ...).
    pipeline: Pipeline,
    /// Where a UDP announce's BEP 41 URL data is gathered for the hooks.
    url: Box<[u8; URL_CAPACITY]>,
    max_scrape_hashes: usize,
    sweep_every: u32,
    /// When the next expiry sweep is due (process clock, seconds); set by the first tick.
    next_sweep: Option<u32>,
    /// This worker's part in snapshots, when state is kept.
    snapshots: Option<SnapshotDuty>,
    /// This worker's part in the metrics endpoint's censuses.
    census: CensusDuty,
    /// Each source's request budget for the datagrams this worker receives, when limited.
    rate: Option<RateLimiter>,
    /// This worker's part in a cluster of nodes, when `[cluster]` is on.
    cluster: Option<ClusterDuty>,
}

impl Handler {
    pub fn new(
        me: usize,
        config: &Config,
        ids: ConnectionIds,
        mailboxes: Vec<Mailbox>,
        stats: Arc<CachePadded<WorkerStats>>,
    ) -> Self {
        let p = &config.protocol;
        let shards = mailboxes.len();
        let l = &config.limits;
        let share = |max: u32| shard_share(max as usize, me, shards);
        let limits = Limits {
            max_torrents: share(l.max_torrents),
            max_peers_per_torrent: l.max_peers_per_torrent as usize,
            max_peers: share(l.max_peers),
        };
        let mut shard = Shard::with_limits(config.cleaning.peer_lifetime_secs, limits);
        // A quota's share is at least 1, as 0 would mean no quota at all.
        let quota = |max: u32| {
            if max == 0 {
                0
            } else {
                share(max).max(1) as u32
            }
        };
        shard.limit_sources(Quotas {
            peers: quota(l.max_peers_per_source),
            new_torrents: quota(l.max_new_torrents_per_source),
            exempt: l.exempt(),
        });
        shard.prefer_subnets(p.prefer_subnet_v4, p.prefer_subnet_v6);
        shard.keep_downloaded(config.cleaning.keep_downloaded_secs);
        Self {
            me,
            shard,
            stats,
            received_us: 0,
            ids,
            mesh: Mesh::new(mailboxes),
            // Serves every torrent until the tracker shares its live policy (`share_policy`).
            pipeline: Pipeline::new(Policy::new(config, AccessList::off()).shared()),
            url: Box::new([0; URL_CAPACITY]),
            max_scrape_hashes: p.max_scrape_hashes as usize,
            sweep_every: config.cleaning.sweep_interval_secs,
            next_sweep: None,
            snapshots: None,
            census: CensusDuty::default(),
            rate: RateLimiter::new(l.requests_per_source_per_sec, l.request_burst, l.exempt()),
            cluster: None,
        }
    }

    /// Takes part in a cluster of nodes from now on: changes go out on `outbox` (a post-hook),
    /// other nodes' peers come back into replies. After `share_policy`, which makes a new
    /// pipeline.
    pub fn join_cluster(&mut self, outbox: crate::cluster::Outbox) {
        self.pipeline.add_post_hook(Box::new(outbox.clone()));
        self.cluster = Some(ClusterDuty::new(outbox));
    }

    /// Takes part in the state thread's snapshots from now on.
    pub fn keep_state(&mut self, link: WorkerLink) {
        self.snapshots = Some(SnapshotDuty::new(self.me, link));
    }

    /// At shutdown, after the last request: hands the whole shard to the final snapshot.
    pub fn stop(&mut self, now: u32) {
        if let Some(duty) = &mut self.snapshots {
            duty.finish(&self.shard, now);
        }
    }

    /// The worker's duties besides requests, whichever I/O loop runs it, once a second: the
    /// expiry sweep when due, a slice of a snapshot when one is asked for, and what the stats
    /// thread reads (the heartbeat `/health` checks, and the shard's size, kept incrementally
    /// so it costs nothing to publish). Returns the microseconds until the next tick.
    pub fn tick(&mut self, batch_us: u64) -> u64 {
        let now = (batch_us / 1_000_000) as u32;
        match self.next_sweep {
            Some(due) if now >= due => {
                self.shard.sweep(now);
                self.next_sweep = Some(now + self.sweep_every);
            }
            Some(_) => {}
            None => self.next_sweep = Some(now + self.sweep_every),
        }
        let stats = &self.stats;
        let totals = self.shard.totals();
        stats.torrents.set(totals.torrents as u64);
        stats.seeders.set(totals.seeders as u64);
        stats.leechers.set(totals.leechers as u64);
        stats.heartbeat_ms.set(batch_us / 1000);
        let walking = match &mut self.snapshots {
            Some(duty) => duty.step(&self.shard, now),
            None => false,
        };
        let counting = self.census.step(&self.shard);
        let publishing = match &mut self.cluster {
            Some(duty) => duty.step(&self.shard, now),
            None => false,
        };
        if walking || counting || publishing {
            BUSY_TICK_US
        } else {
            TICK_US
        }
    }

    /// Reads the hooks' policy from `policy` from now on, so a reload swapped in there takes
    /// effect with the next request.
    pub fn share_policy(&mut self, policy: SharedPolicy) {
        self.pipeline = Pipeline::new(policy);
    }

    /// The pipeline, to add post-hooks.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// The largest reply this configuration can produce: an IPv6 announce with `max_numwant` peers.
    pub fn max_reply_len(config: &Config) -> usize {
        let announce = udp::ANNOUNCE_REPLY_HEADER_LEN
            + udp::PEER_V6_LEN * config.protocol.max_numwant as usize;
        let scrape = udp::SCRAPE_REPLY_HEADER_LEN + udp::SCRAPE_ENTRY_LEN * SCRAPE_CHAIN_MAX;
        announce.max(scrape).max(256)
    }

    /// Handles one datagram from `client` that came in on local address `socket`. Returns the
    /// length of the reply written to `out` (0: nothing to send now).
    pub fn handle_datagram(
        &mut self,
        now: u32,
        client: SocketAddr,
        socket: u8,
        packet: &[u8],
        out: &mut [u8],
    ) -> usize {
        let ip = client.ip().to_canonical();
        if self.pipeline.policy().blocklist.blocks(ip) {
            self.stats.udp.error(ErrorReason::Blocked);
            return 0;
        }
        if let Some(rate) = &mut self.rate {
            if !rate.allow(ip, self.received_us / 1000) {
                self.stats.udp.error(ErrorReason::RateLimited);
                return 0;
            }
        }
        let c = &self.stats.udp;
        c.received(packet.len());
        let v = IpVersion::of(ip);
        let request = match udp::parse_request(packet, self.max_scrape_hashes) {
            Ok(r) => r,
            Err(ParseError::NotTracker) => {
                c.error(ErrorReason::NotTracker);
                return 0;
            }
            Err(ParseError::Invalid {
                transaction_id,
                message,
            }) => {
                // Counted under the action it names, as over HTTP a malformed request counts
                // under its route: requests say what was asked, errors why it was refused.
                c.request(named_action(packet), v);
                let refusal = Refusal::Malformed(message.into());
                return self.refuse(out, v, transaction_id, &refusal, packet.len());
            }
        };
        match request {
            Request::Connect { transaction_id } => {
                c.request(Action::Connect, v);
                let id = self.ids.make(ip, now);
                self.sent(
                    Action::Connect,
                    v,
                    udp::write_connect(out, transaction_id, id),
                )
            }
            Request::Announce {
                connection_id,
                transaction_id,
                announce,
                options,
            } => {
                c.request(Action::Announce, v);
                if let Err(e) = self.ids.check(connection_id, ip, now) {
                    return self.refuse(out, v, transaction_id, &e.into(), packet.len());
                }
                let url = match bep41::url_data(options, &mut self.url[..]) {
                    Ok(url) => Url::split(url),
                    Err(_) => {
                        let refusal = Refusal::Malformed("malformed BEP 41 options".into());
                        return self.refuse(out, v, transaction_id, &refusal, packet.len());
                    }
                };
                let request = AnnounceRequest {
                    announce,
                    ip,
                    transport: Transport::Udp,
                    path: url.path,
                    query: url.query,
                };
                // The pre-hooks run where the datagram landed: a refusal costs no forward,
                // and the request's URL data never has to cross threads.
                if let Err(refusal) = self.pipeline.admit(&request) {
                    return self.refuse(out, v, transaction_id, &refusal, packet.len());
                }
                let owner = self.mesh.owner(&announce.info_hash);
                if owner == self.me {
                    return self.announce(now, ip, transaction_id, &announce, out);
                }
                let forwarded = ForwardedAnnounce {
                    client,
                    socket,
                    transaction_id,
                    announce,
                    received_us: self.received_us,
                };
                self.forward(Forward::Announce, |m| m[owner].send_announce(forwarded));
                0
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                c.request(Action::Scrape, v);
                if let Err(e) = self.ids.check(connection_id, ip, now) {
                    return self.refuse(out, v, transaction_id, &e.into(), packet.len());
                }
                if info_hashes.iter().all(|h| self.mesh.owner(h) == self.me) {
                    let mut n = udp::write_scrape_header(out, transaction_id);
                    for h in info_hashes {
                        let counts = self.scrape_counts(h);
                        n += udp::write_scrape_entry(&mut out[n..], counts);
                    }
                    return self.sent(Action::Scrape, v, n);
                }
                let mut chain = ScrapeChain {
                    client,
                    socket,
                    transaction_id,
                    origin: self.me as u16,
                    received_us: self.received_us,
                    len: info_hashes.len() as u8,
                    hashes: [[0; 20]; SCRAPE_CHAIN_MAX],
                    counts: [SwarmCounts::default(); SCRAPE_CHAIN_MAX],
                };
                chain.hashes[..info_hashes.len()].copy_from_slice(info_hashes);
                self.scrape_leg(chain, out).map_or(0, |r| r.len)
            }
        }
    }

    /// Starts loading the swarm a datagram announces to, if it is an announce this worker
    /// owns: the I/O loop calls it over a whole batch before handling any, so the batch's
    /// cache misses overlap instead of each announce waiting on its own.
    pub fn prefetch(&self, packet: &[u8]) {
        if let Some(h) = udp::announce_hash(packet) {
            if self.mesh.owner(h) == self.me {
                self.shard.prefetch(h);
            }
        }
    }

    /// Answers a UDP announce, already admitted, for a torrent this worker owns.
    pub fn announce(
        &mut self,
        now: u32,
        ip: IpAddr,
        transaction_id: u32,
        a: &Announce,
        out: &mut [u8],
    ) -> usize {
        let ip = ip.to_canonical();
        let peer_len = if ip.is_ipv4() {
            udp::PEER_V4_LEN
        } else {
            udp::PEER_V6_LEN
        };
        let room = (out.len() - udp::ANNOUNCE_REPLY_HEADER_LEN) / peer_len;
        let want = self.pipeline.numwant(a.num_want).min(room);
        let mut n = udp::ANNOUNCE_REPLY_HEADER_LEN;
        let counts = match ip {
            IpAddr::V4(v4) => self.swarm_step(v4.octets(), a, want, now, |p| {
                n += udp::write_peer(&mut out[n..], &p.ip, p.port);
            }),
            IpAddr::V6(v6) => self.swarm_step(v6.octets(), a, want, now, |p| {
                n += udp::write_peer(&mut out[n..], &p.ip, p.port);
            }),
        };
        let v = IpVersion::of(ip);
        let counts = match counts {
            Ok(counts) => counts,
            // Every announce is at least ANNOUNCE_LEN long, so this never amplifies.
            Err(refusal) => {
                return self.refuse(out, v, transaction_id, &refusal, udp::ANNOUNCE_LEN)
            }
        };
        let counts = match &self.cluster {
            Some(c) => {
                if a.event != AnnounceEvent::Stopped {
                    let left = want - (n - udp::ANNOUNCE_REPLY_HEADER_LEN) / peer_len;
                    let (h, seeds) = (&a.info_hash, a.seeds());
                    match ip {
                        IpAddr::V4(v4) => {
                            c.remote
                                .give(h, seeds, (v4.octets(), a.port), left, |ip, p| {
                                    n += udp::write_peer(&mut out[n..], &ip, p)
                                })
                        }
                        IpAddr::V6(v6) => {
                            c.remote
                                .give(h, seeds, (v6.octets(), a.port), left, |ip, p| {
                                    n += udp::write_peer(&mut out[n..], &ip, p)
                                })
                        }
                    };
                }
                c.remote.merged(&a.info_hash, counts)
            }
            None => counts,
        };
        let (interval, _) = self.pipeline.intervals();
        udp::write_announce_header(out, transaction_id, interval, counts);
        let udp_stats = &self.stats.udp;
        udp_stats.peers_in_reply((n - udp::ANNOUNCE_REPLY_HEADER_LEN) / peer_len);
        self.sent(Action::Announce, v, n)
    }

    /// The owner's part of every announce, UDP or HTTP: the swarm applies it and hands `out`
    /// the peers chosen for the announcer, then the post-hooks see what changed.
    fn swarm_step<I: Family>(
        &mut self,
        ip: I,
        a: &Announce,
        want: usize,
        now: u32,
        out: impl FnMut(&Peer<I>),
    ) -> Result<SwarmCounts, Refusal> {
        let done = self.shard.announce_change(ip, a, want, now, out)?;
        if self.pipeline.has_post_hooks() {
            let kind = match (a.event, done.previous) {
                (AnnounceEvent::Stopped, Previous::Absent) => None,
                (AnnounceEvent::Stopped, _) => Some(PeerChange::Removed),
                (_, Previous::Absent) => Some(PeerChange::Added),
                _ => Some(PeerChange::Updated),
            };
            if let Some(kind) = kind {
                let seeder = match kind {
                    PeerChange::Removed => done.previous == Previous::Seeder,
                    _ => a.seeds(),
                };
                self.pipeline.changed(&Change {
                    info_hash: &a.info_hash,
                    ip: ip.addr(),
                    port: a.port,
                    peer_id: &a.peer_id,
                    kind,
                    seeder,
                    was_seeder: done.previous == Previous::Seeder,
                    downloaded: done.downloaded,
                    total_downloaded: done.counts.downloaded,
                    expires: done.expires,
                });
            }
        }
        Ok(done.counts)
    }

    /// Answers an announce another worker forwarded here.
    pub fn forwarded_announce(&mut self, now: u32, m: &ForwardedAnnounce, out: &mut [u8]) -> Reply {
        let len = self.announce(now, m.client.ip(), m.transaction_id, &m.announce, out);
        Reply {
            client: m.client,
            socket: m.socket,
            len,
        }
    }

    /// Fills this worker's part of a scrape chain, then passes it on, or, if no owner is left,
    /// writes the whole reply to `out` and returns where it goes.
    pub fn scrape_leg(&mut self, mut chain: ScrapeChain, out: &mut [u8]) -> Option<Reply> {
        let mut next = None;
        for i in 0..chain.len as usize {
            let owner = self.mesh.owner(&chain.hashes[i]);
            if owner == self.me {
                chain.counts[i] = self.scrape_counts(&chain.hashes[i]);
            } else if owner > self.me
                && owner != chain.origin as usize
                && next.is_none_or(|n| owner < n)
            {
                next = Some(owner);
            }
        }
        // The origin filled its part first; the chain then climbs from the lowest other owner.
        if self.me == chain.origin as usize {
            next = chain
                .hashes()
                .iter()
                .map(|h| self.mesh.owner(h))
                .filter(|&o| o != self.me)
                .min();
        }
        if let Some(next) = next {
            self.forward(Forward::Scrape, |m| m[next].send_scrape(chain));
            return None;
        }
        let mut n = udp::write_scrape_header(out, chain.transaction_id);
        for counts in &chain.counts[..chain.len as usize] {
            n += udp::write_scrape_entry(&mut out[n..], *counts);
        }
        Some(Reply {
            client: chain.client,
            socket: chain.socket,
            len: self.sent(Action::Scrape, IpVersion::of(chain.client.ip()), n),
        })
    }

    /// Does all the HTTP work waiting in `inbox`; it answers through its own reply slots.
    pub fn drain_http(&mut self, inbox: &Inbox, now: u32) {
        while let Ok(work) = inbox.http.try_recv() {
            self.http_work(now, work);
        }
    }

    /// Takes the next UDP request another worker forwarded (announces first, then scrape
    /// legs) and answers it into `out`. `None`: the inbox is empty. Otherwise the reply to send,
    /// if this worker is the one to send it, and when the request was received (µs).
    pub fn next_forwarded(
        &mut self,
        inbox: &Inbox,
        now: u32,
        out: &mut [u8],
    ) -> Option<(Option<Reply>, u64)> {
        if let Ok(m) = inbox.announces.try_recv() {
            Some((Some(self.forwarded_announce(now, &m, out)), m.received_us))
        } else if let Ok(chain) = inbox.scrapes.try_recv() {
            let received_us = chain.received_us;
            Some((self.scrape_leg(chain, out), received_us))
        } else {
            None
        }
    }

    /// Does one piece of HTTP work for torrents this worker owns and answers through its
    /// reply slot. Work whose requester already gave up (timed out) is skipped, so a backlog
    /// is not paid for twice.
    pub fn http_work(&mut self, now: u32, work: HttpWork) {
        match work {
            HttpWork::Announce {
                announce,
                ip,
                other,
                query,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                let request = AnnounceRequest {
                    announce,
                    ip: ip.to_canonical(),
                    transport: Transport::Http,
                    path: b"/announce",
                    query: &query,
                };
                let answer = self
                    .pipeline
                    .admit(&request)
                    .and_then(|()| self.http_announce(now, &request, other));
                let _ = reply.send(answer);
            }
            HttpWork::Scrape { hashes, reply } => {
                if reply.is_closed() {
                    return;
                }
                let counts = hashes.iter().map(|h| self.scrape_counts(h)).collect();
                let _ = reply.send(counts);
            }
            HttpWork::Lookup {
                info_hash,
                peers,
                reply,
            } => {
                let _ = reply.send(self.shard.view(&info_hash, peers, now));
            }
            HttpWork::Census { list, reply } => self.census.ask(list, reply),
            HttpWork::Cluster(work) => {
                if let Some(c) = &mut self.cluster {
                    c.work(work, &self.shard);
                }
            }
        }
    }

    /// The owner's answer to an admitted HTTP announce: the swarm step, then the reply's
    /// shaping: intervals, and (unless `respect_af`) peers of both families (BEP 7), numwant
    /// split between them.
    /// `other` is the announcer's address of the other family, listed too when given.
    fn http_announce(
        &mut self,
        now: u32,
        r: &AnnounceRequest<'_>,
        other: Option<IpAddr>,
    ) -> Result<HttpAnnounced, Refusal> {
        let a = &r.announce;
        let want = self.pipeline.numwant(a.num_want);
        let dual = !self.pipeline.policy().shaping.respect_af;
        let mut peers = Vec::new();
        // The announcer's address of the other family, if it named one: not handed back to
        // it, and listed too (refused there, a limit, only means it is not).
        let counts = match (r.ip, other.map(|o| o.to_canonical())) {
            (IpAddr::V4(v4), o) => {
                let o6 = match o {
                    Some(IpAddr::V6(o)) => Some(o.octets()),
                    _ => None,
                };
                let skip = o6.unwrap_or(<[u8; 16]>::NONE);
                let own = self.other_family::<[u8; 4], _>(dual, a, want, skip, &mut peers);
                let c = self.swarm_step(v4.octets(), a, own, now, |p| peers.push(http_peer(p)))?;
                o6.map_or(c, |o| self.swarm_step(o, a, 0, now, |_| {}).unwrap_or(c))
            }
            (IpAddr::V6(v6), o) => {
                let o4 = match o {
                    Some(IpAddr::V4(o)) => Some(o.octets()),
                    _ => None,
                };
                let skip = o4.unwrap_or(<[u8; 4]>::NONE);
                let own = self.other_family::<[u8; 16], _>(dual, a, want, skip, &mut peers);
                let c = self.swarm_step(v6.octets(), a, own, now, |p| peers.push(http_peer(p)))?;
                o4.map_or(c, |o| self.swarm_step(o, a, 0, now, |_| {}).unwrap_or(c))
            }
        };
        let counts = match &self.cluster {
            Some(c) => {
                if a.event != AnnounceEvent::Stopped {
                    let (h, seeds) = (&a.info_hash, a.seeds());
                    // The announcer's own family first; the other only for a dual-stack reply.
                    let (v4_skip, v6_skip) = match r.ip {
                        IpAddr::V4(v4) => ((v4.octets(), a.port), (<[u8; 16]>::NONE, 0)),
                        IpAddr::V6(v6) => ((<[u8; 4]>::NONE, 0), (v6.octets(), a.port)),
                    };
                    let v4_first = r.ip.is_ipv4();
                    for family_is_v4 in [v4_first, !v4_first] {
                        if family_is_v4 != v4_first && !dual {
                            break;
                        }
                        let left = want.saturating_sub(peers.len());
                        if family_is_v4 {
                            c.remote.give(h, seeds, v4_skip, left, |ip, port| {
                                peers.push(HttpPeer {
                                    ip: IpAddr::from(ip),
                                    port,
                                })
                            });
                        } else {
                            c.remote.give(h, seeds, v6_skip, left, |ip, port| {
                                peers.push(HttpPeer {
                                    ip: IpAddr::from(ip),
                                    port,
                                })
                            });
                        }
                    }
                }
                c.remote.merged(&a.info_hash, counts)
            }
            None => counts,
        };
        let (interval, min_interval) = self.pipeline.intervals();
        Ok(HttpAnnounced {
            counts,
            peers,
            interval,
            min_interval,
        })
    }

    /// For a dual-stack reply, pushes the announcer's share of the other family's peers (`O`)
    /// and returns how many of its own family (`I`) it still wants. Each family gets at least
    /// half of `want` when it has that many; what one family lacks, the other may fill.
    fn other_family<I: Family, O: Family>(
        &mut self,
        dual: bool,
        a: &Announce,
        want: usize,
        skip: O,
        peers: &mut Vec<HttpPeer>,
    ) -> usize {
        // A stop gets no peers; the swarm step hands out none either.
        if !dual || a.event == AnnounceEvent::Stopped {
            return want;
        }
        let for_seeder = a.seeds();
        let own = self.shard.candidates::<I>(&a.info_hash, for_seeder);
        let other = self.shard.candidates::<O>(&a.info_hash, for_seeder);
        let share = other.min((want / 2).max(want.saturating_sub(own)));
        let given = self
            .shard
            .sample::<O>(&a.info_hash, for_seeder, share, (skip, a.port), |p| {
                peers.push(http_peer(p))
            });
        want - given
    }

    /// A torrent's counts for a scrape: zeros for one the access list refuses.
    fn scrape_counts(&mut self, info_hash: &[u8; 20]) -> SwarmCounts {
        if self.pipeline.scrapes(info_hash) {
            let local = self.shard.counts(info_hash);
            match &self.cluster {
                Some(c) => {
                    c.asked(info_hash);
                    c.remote.merged(info_hash, local)
                }
                None => local,
            }
        } else {
            SwarmCounts::default()
        }
    }

    fn forward(&mut self, kind: Forward, send: impl FnOnce(&[Mailbox]) -> Result<(), InboxFull>) {
        match send(self.mesh.mailboxes()) {
            Ok(()) => self.stats.udp.forwarded(kind),
            Err(_) => self.stats.udp.inbox_dropped(kind),
        }
    }

    /// Counts a refusal under its reason and writes its BEP 15 error, at most `limit` bytes
    /// (the request's length, so an error never amplifies).
    fn refuse(
        &mut self,
        out: &mut [u8],
        v: IpVersion,
        transaction_id: u32,
        refusal: &Refusal,
        limit: usize,
    ) -> usize {
        self.stats.udp.error(refusal.reason());
        let n = udp::write_error(out, transaction_id, refusal.message(), limit);
        self.sent(Action::Error, v, n)
    }

    fn sent(&mut self, action: Action, v: IpVersion, len: usize) -> usize {
        if len > 0 {
            self.stats.udp.response(action, v, len);
        }
        len
    }
}

/// The action a BEP 15 request names; only announces and scrapes can be malformed.
fn named_action(packet: &[u8]) -> Action {
    match udp::header_action(packet) {
        Some(udp::ACTION_CONNECT) => Action::Connect,
        Some(udp::ACTION_SCRAPE) => Action::Scrape,
        _ => Action::Announce,
    }
}

/// Worker `me`'s part of a limit that bounds the whole tracker (`max_torrents`, `max_peers`, a
/// source's quota): split as evenly as whole units allow, the remainder going one each to the
/// lowest workers, so the parts add up to exactly `max` (rounding each part up would let the
/// tracker exceed it by up to one unit per worker).
fn shard_share(max: usize, me: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    max / shards + usize::from(me < max % shards)
}

fn http_peer<I: Family>(p: &Peer<I>) -> HttpPeer {
    HttpPeer {
        ip: p.ip.addr(),
        port: p.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::inbox;
    use std::sync::Mutex;

    /// What a post-hook was shown: kind, seeder, downloaded, port.
    type Seen = Arc<Mutex<Vec<(PeerChange, bool, bool, u16)>>>;

    /// Records what the post-hooks are shown.
    struct Recorder(Seen);

    impl crate::policy::PostHook for Recorder {
        fn changed(&mut self, c: &Change<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((c.kind, c.seeder, c.downloaded, c.port));
        }
    }

    fn handler() -> Handler {
        let config = Config::from_toml_str("", "t").unwrap();
        let (mailbox, _inbox) = inbox::inbox(16).unwrap();
        Handler::new(
            0,
            &config,
            ConnectionIds::new(120).unwrap(),
            vec![mailbox],
            Default::default(),
        )
    }

    fn announce(port: u16, left: u64, event: AnnounceEvent) -> Announce {
        Announce {
            info_hash: [7; 20],
            peer_id: [1; 20],
            port,
            left,
            event,
            num_want: -1,
        }
    }

    #[test]
    fn post_hooks_see_what_each_announce_changed() {
        let mut h = handler();
        let seen = Arc::new(Mutex::new(Vec::new()));
        h.pipeline().add_post_hook(Box::new(Recorder(seen.clone())));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut out = [0u8; 4096];
        for a in [
            announce(1, 5, AnnounceEvent::Started),
            announce(1, 5, AnnounceEvent::None),
            announce(1, 0, AnnounceEvent::Completed),
            // A repeated completed is no second download.
            announce(1, 0, AnnounceEvent::Completed),
            announce(1, 0, AnnounceEvent::Stopped),
            // A stop for a peer never seen changes nothing, and says nothing.
            announce(2, 0, AnnounceEvent::Stopped),
        ] {
            assert!(h.announce(10, ip, 1, &a, &mut out) > 0);
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (PeerChange::Added, false, false, 1),
                (PeerChange::Updated, false, false, 1),
                (PeerChange::Updated, true, true, 1),
                (PeerChange::Updated, true, false, 1),
                (PeerChange::Removed, true, false, 1),
            ]
        );
    }

    #[test]
    fn a_refused_announce_is_no_change() {
        let config = Config::from_toml_str("[limits]\nmax_peers_per_torrent = 1\n", "t").unwrap();
        let (mailbox, _inbox) = inbox::inbox(16).unwrap();
        let mut h = Handler::new(
            0,
            &config,
            ConnectionIds::new(120).unwrap(),
            vec![mailbox],
            Default::default(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        h.pipeline().add_post_hook(Box::new(Recorder(seen.clone())));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut out = [0u8; 4096];
        h.announce(10, ip, 1, &announce(1, 5, AnnounceEvent::None), &mut out);
        let n = h.announce(10, ip, 2, &announce(2, 5, AnnounceEvent::None), &mut out);
        assert_eq!(
            &out[..4],
            &udp::ACTION_ERROR.to_be_bytes(),
            "torrent is full"
        );
        assert!(n > 8);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "only the first announce changed"
        );
    }

    #[test]
    fn shard_limits_add_up_to_the_tracker_limit() {
        for shards in 1..=9 {
            for max in 1..=40 {
                let parts: Vec<usize> =
                    (0..shards).map(|me| shard_share(max, me, shards)).collect();
                assert_eq!(parts.iter().sum::<usize>(), max, "{max} over {shards}");
                let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
                assert!(hi - lo <= 1, "{max} over {shards}: {parts:?}");
            }
        }
    }
}
