//! One worker's runner of the announce pipeline: the pre-hooks that admit or refuse an announce
//! (in a fixed order: torrent approval, client approval, JWT), the reply shaping that follows
//! the swarm (numwant, interval jitter), and the post-hooks that see what the swarm changed.
//! Each worker has its own, reading the shared policy through an `arc_swap::Cache` (one pointer
//! compare per request unless a reload swapped it), so the hooks take no lock and allocate
//! nothing; a hook that is off costs one branch.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::Cache;

use crate::protocol::{AnnounceRequest, InfoHash, PeerId};

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
    /// The announce counted a download.
    pub downloaded: bool,
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
}

impl Pipeline {
    pub fn new(policy: SharedPolicy) -> Self {
        Self {
            policy: Cache::new(policy),
            rng: fastrand::Rng::new(),
            post: Vec::new(),
        }
    }

    /// The policy in force now.
    #[inline]
    pub fn policy(&mut self) -> &Arc<Policy> {
        self.policy.load()
    }

    /// The pre-hooks, in their fixed order. The first that refuses decides.
    pub fn admit(&mut self, r: &AnnounceRequest<'_>) -> Result<(), Refusal> {
        let policy = self.policy.load();
        if !policy.access.allows(&r.announce.info_hash) {
            return Err(Refusal::TorrentNotAllowed);
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
