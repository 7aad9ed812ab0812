//! A worker's request handling, without I/O: one datagram in, at most one reply written into a
//! caller's buffer, or the request forwarded to the worker that owns its torrent. The ring loop
//! calls this; tests and fuzz targets can drive it directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::Cache;
use crossbeam_utils::CachePadded;

use crate::access_list::{AccessList, REFUSED_MESSAGE};
use crate::config::Config;
use crate::connection_id::ConnectionIds;
use crate::protocol::udp::{self, ParseError, Request};
use crate::protocol::{Announce, InfoHash, PeerId, SwarmCounts};
use crate::settings::{Settings, SharedSettings};
use crate::stats::{Action, ErrorReason, Forward, IpVersion, WorkerStats};
use crate::swarm::{shard_of, Limits, Refused, Shard};

use super::inbox::{
    ForwardedAnnounce, HttpAnnounced, HttpPeer, HttpWork, Inbox, Mailbox, ScrapeChain,
    SCRAPE_CHAIN_MAX,
};

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
    /// Every worker's inbox, mine included (never sent to).
    mailboxes: Vec<Mailbox>,
    /// The access list, intervals and numwant limits, reloadable while serving. The cache
    /// re-reads the shared value only when a reload has swapped it: one pointer compare per
    /// request (about 3 ns, where `ArcSwap::load` costs about 25).
    settings: Cache<SharedSettings, Arc<Settings>>,
    max_scrape_hashes: usize,
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
        let limits = Limits {
            max_torrents: shard_max_torrents(
                config.limits.max_torrents as usize,
                me,
                mailboxes.len(),
            ),
            max_peers_per_torrent: config.limits.max_peers_per_torrent as usize,
        };
        Self {
            me,
            shard: Shard::with_limits(config.cleaning.peer_lifetime_secs, limits),
            stats,
            received_us: 0,
            ids,
            mailboxes,
            // Serves every torrent until the tracker shares its live settings (`share_settings`).
            settings: Cache::new(Settings::new(config, AccessList::off()).shared()),
            max_scrape_hashes: p.max_scrape_hashes as usize,
        }
    }

    /// Reads the access list, intervals and numwant limits from `settings` from now on, so a
    /// reload swapped in there takes effect with the next request.
    pub fn share_settings(&mut self, settings: SharedSettings) {
        self.settings = Cache::new(settings);
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
        let c = &self.stats.udp;
        c.received(packet.len());
        let ip = client.ip().to_canonical();
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
                c.error(ErrorReason::Malformed);
                return self.error(out, v, transaction_id, message, packet.len());
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
            } => {
                c.request(Action::Announce, v);
                if let Err(e) = self.ids.check(connection_id, ip, now) {
                    c.error(id_reason(e));
                    return self.error(out, v, transaction_id, id_message(e), packet.len());
                }
                // Refused where it lands, before it costs the owner a forward.
                if !self.settings.load().access.allows(&announce.info_hash) {
                    c.error(ErrorReason::TorrentNotAllowed);
                    return self.error(out, v, transaction_id, REFUSED_MESSAGE, packet.len());
                }
                let owner = shard_of(&announce.info_hash, self.mailboxes.len());
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
                    c.error(id_reason(e));
                    return self.error(out, v, transaction_id, id_message(e), packet.len());
                }
                let shards = self.mailboxes.len();
                if info_hashes.iter().all(|h| shard_of(h, shards) == self.me) {
                    let settings = self.settings.load();
                    let mut n = udp::write_scrape_header(out, transaction_id);
                    for h in info_hashes {
                        let counts = allowed_counts(&self.shard, settings, h);
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

    /// Answers an announce for a torrent this worker owns.
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
        let (want, interval) = {
            let s = self.settings.load();
            (s.numwant(a.num_want).min(room), s.announce_interval_secs)
        };
        let mut n = udp::ANNOUNCE_REPLY_HEADER_LEN;
        let counts = match ip {
            IpAddr::V4(v4) => self.shard.announce(v4.octets(), a, want, now, |p| {
                n += udp::write_peer(&mut out[n..], &p.ip, p.port);
            }),
            IpAddr::V6(v6) => self.shard.announce(v6.octets(), a, want, now, |p| {
                n += udp::write_peer(&mut out[n..], &p.ip, p.port);
            }),
        };
        let v = IpVersion::of(ip);
        let counts = match counts {
            Ok(counts) => counts,
            Err(refused) => {
                self.stats.udp.error(refused_reason(refused));
                // Every announce is at least ANNOUNCE_LEN long, so this never amplifies.
                let limit = udp::ANNOUNCE_LEN;
                return self.error(out, v, transaction_id, refused.message(), limit);
            }
        };
        udp::write_announce_header(out, transaction_id, interval, counts);
        let udp_stats = &self.stats.udp;
        udp_stats.peers_in_reply((n - udp::ANNOUNCE_REPLY_HEADER_LEN) / peer_len);
        self.sent(Action::Announce, v, n)
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
        let shards = self.mailboxes.len();
        let settings = self.settings.load();
        let mut next = None;
        for i in 0..chain.len as usize {
            let owner = shard_of(&chain.hashes[i], shards);
            if owner == self.me {
                chain.counts[i] = allowed_counts(&self.shard, settings, &chain.hashes[i]);
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
                .map(|h| shard_of(h, shards))
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
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                let want = self.settings.load().numwant(announce.num_want);
                let mut peers = Vec::new();
                let mut push = |ip, port, peer_id: &PeerId| {
                    peers.push(HttpPeer {
                        ip,
                        port,
                        peer_id: *peer_id,
                    })
                };
                let counts = self.shard.announce_ip(ip, &announce, want, now, &mut push);
                let _ = reply.send(counts.map(|counts| HttpAnnounced { counts, peers }));
            }
            HttpWork::Scrape { hashes, reply } => {
                if reply.is_closed() {
                    return;
                }
                let settings = self.settings.load();
                let counts = hashes
                    .iter()
                    .map(|h| allowed_counts(&self.shard, settings, h))
                    .collect();
                let _ = reply.send(counts);
            }
        }
    }

    fn forward(
        &mut self,
        kind: Forward,
        send: impl FnOnce(&[Mailbox]) -> Result<(), super::inbox::InboxFull>,
    ) {
        match send(&self.mailboxes) {
            Ok(()) => self.stats.udp.forwarded(kind),
            Err(_) => self.stats.udp.inbox_dropped(kind),
        }
    }

    fn error(
        &mut self,
        out: &mut [u8],
        v: IpVersion,
        transaction_id: u32,
        message: &str,
        limit: usize,
    ) -> usize {
        let n = udp::write_error(out, transaction_id, message, limit);
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

/// Worker `me`'s part of `limits.max_torrents`, which bounds the whole tracker: the limit
/// split as evenly as whole torrents allow, the remainder going one each to the lowest
/// workers, so the parts add up to exactly `max` (rounding each part up would let the tracker
/// exceed it by up to one torrent per worker).
fn shard_max_torrents(max: usize, me: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    max / shards + usize::from(me < max % shards)
}

/// A torrent's counts for a scrape: zeros for one the access list refuses.
fn allowed_counts(shard: &Shard, settings: &Settings, info_hash: &InfoHash) -> SwarmCounts {
    if settings.access.allows(info_hash) {
        shard.counts(info_hash)
    } else {
        SwarmCounts::default()
    }
}

fn refused_reason(r: Refused) -> ErrorReason {
    match r {
        Refused::TrackerFull => ErrorReason::TrackerFull,
        Refused::TorrentFull => ErrorReason::TorrentFull,
    }
}

fn id_reason(e: crate::connection_id::ConnectionIdError) -> ErrorReason {
    use crate::connection_id::ConnectionIdError::*;
    match e {
        Forged | FromTheFuture => ErrorReason::ConnectionIdInvalid,
        Expired => ErrorReason::ConnectionIdExpired,
    }
}

fn id_message(e: crate::connection_id::ConnectionIdError) -> &'static str {
    use crate::connection_id::ConnectionIdError::*;
    match e {
        Forged | FromTheFuture => "invalid connection id",
        Expired => "connection id expired",
    }
}

#[cfg(test)]
mod tests {
    use super::shard_max_torrents;

    #[test]
    fn shard_limits_add_up_to_the_tracker_limit() {
        for shards in 1..=9 {
            for max in 1..=40 {
                let parts: Vec<usize> = (0..shards)
                    .map(|me| shard_max_torrents(max, me, shards))
                    .collect();
                assert_eq!(parts.iter().sum::<usize>(), max, "{max} over {shards}");
                let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
                assert!(hi - lo <= 1, "{max} over {shards}: {parts:?}");
            }
        }
    }
}
