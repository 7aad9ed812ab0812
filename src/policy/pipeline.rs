//! One worker's runner of the announce pipeline: the pre-hooks that admit or refuse an announce
//! (in a fixed order: torrent approval, client approval, JWT), the reply shaping that follows
//! the swarm (numwant, interval jitter), and the post-hooks that see what the swarm changed.
//! Each worker has its own, reading the shared policy through an `arc_swap::Cache` (one pointer
//! compare per request unless a reload swapped it), so the hooks take no lock and allocate
//! nothing; a hook that is off costs one branch.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::Cache;

use crate::protocol::bep41;
use crate::protocol::{AnnounceRequest, InfoHash, PeerId};

use super::jwt::{JwtRefusal, TokenCache, DEFAULT_CACHE_ENTRIES, MAX_TOKEN_LEN};
use super::{Policy, Refusal, SharedPolicy};

/// What an announce did to its peer's entry in the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// The peer is new to the torrent.
    Added,
    /// The peer was there and is refreshed (its role may have changed).
    Updated,
    /// The peer stopped and is gone.
    Removed,
}

/// What one announce changed, as post-hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub info_hash: &'a InfoHash,
    pub ip: IpAddr,
    pub port: u16,
    pub peer_id: &'a PeerId,
    pub kind: PeerChange,
    /// The peer is (now, or was when it stopped) a seeder.
    pub seeder: bool,
    /// For an update: the peer was a seeder before it.
    pub was_seeder: bool,
    /// The announce counted a download.
    pub downloaded: bool,
    /// The torrent's downloads after this change.
    pub total_downloaded: u32,
    /// When the peer expires, on the process clock (seconds); 0 for a removal.
    pub expires: u32,
}

/// Something that wants to know what the swarm changed (a snapshot writer, a Redis sync, a
/// database flush). Called on the owning worker right after the reply is made, so it must be
/// quick and must never block: hand the change to another thread through a bounded queue.
pub trait PostHook: Send {
    fn changed(&mut self, change: &Change<'_>);
}

pub struct Pipeline {
    policy: Cache<SharedPolicy, Arc<Policy>>,
    rng: fastrand::Rng,
    post: Vec<Box<dyn PostHook>>,
    /// Tokens this worker verified, so a re-announce costs a lookup, not a signature check.
    tokens: TokenCache,
    /// Where a token is percent-decoded (preallocated: the hot path allocates nothing).
    token: Box<[u8; MAX_TOKEN_LEN]>,
}

impl Pipeline {
    pub fn new(policy: SharedPolicy) -> Self {
        let mut rng = fastrand::Rng::new();
        // The key only has to be unknown to clients; the generator is seeded from the OS.
        let key = rng.u128(..).to_le_bytes();
        Self {
            policy: Cache::new(policy),
            rng,
            post: Vec::new(),
            tokens: TokenCache::with_key(key, DEFAULT_CACHE_ENTRIES),
            token: Box::new([0; MAX_TOKEN_LEN]),
        }
    }

    /// The policy in force now.
    #[inline]
    pub fn policy(&mut self) -> &Arc<Policy> {
        self.policy.load()
    }

    /// The pre-hooks, in their fixed order: torrent approval (the access list), client
    /// approval (peer id prefixes), JWT approval. The first that refuses decides. A hook that
    /// is off costs a branch.
    pub fn admit(&mut self, r: &AnnounceRequest<'_>) -> Result<(), Refusal> {
        let policy = self.policy.load();
        if !policy.access.allows(&r.announce.info_hash) {
            return Err(Refusal::TorrentNotAllowed);
        }
        if !policy.clients.allows(&r.announce.peer_id) {
            return Err(Refusal::ClientNotAllowed);
        }
        if let Some(verifier) = &policy.jwt {
            let raw = bep41::query_param(r.query, b"jwt").unwrap_or(&[]);
            let token = bep41::percent_decode(raw, &mut self.token[..])
                .map_err(|_| Refusal::Jwt(JwtRefusal::Malformed))?;
            verifier
                .check(token, &r.announce.info_hash, unix_now(), &mut self.tokens)
                .map_err(Refusal::Jwt)?;
        }
        Ok(())
    }

    /// Whether the access list lets `info_hash` be scraped (a refused torrent scrapes as zeros).
    #[inline]
    pub fn scrapes(&mut self, info_hash: &InfoHash) -> bool {
        self.policy.load().access.allows(info_hash)
    }

    /// The `interval` and `min interval` of one reply, each with its random increase.
    pub fn intervals(&mut self) -> (u32, u32) {
        let s = &self.policy.load().shaping;
        let (interval, min, jitter, on_min) = (
            s.announce_interval_secs,
            s.min_interval_secs,
            s.interval_jitter_secs,
            s.jitter_min_interval,
        );
        if jitter == 0 {
            return (interval, min);
        }
        let extra = self.rng.u32(..=jitter);
        (
            interval.saturating_add(extra),
            if on_min {
                min.saturating_add(extra)
            } else {
                min
            },
        )
    }

    /// Peers to hand an announcer who asked for `asked`.
    #[inline]
    pub fn numwant(&mut self, asked: i32) -> usize {
        self.policy.load().shaping.numwant(asked)
    }

    /// Adds a post-hook; it sees every change from the next announce on.
    pub fn add_post_hook(&mut self, hook: Box<dyn PostHook>) {
        self.post.push(hook);
    }

    /// Hands a change to every post-hook.
    #[inline]
    pub fn changed(&mut self, change: &Change<'_>) {
        for hook in &mut self.post {
            hook.changed(change);
        }
    }

    /// Whether any post-hook listens (so callers can skip building changes).
    #[inline]
    pub fn has_post_hooks(&self) -> bool {
        !self.post.is_empty()
    }
}

/// Seconds since 1970 (a vDSO clock read, no system call), for token expiry.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
