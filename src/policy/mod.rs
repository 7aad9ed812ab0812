//! What the tracker decides about an announce, apart from the swarm's own rules: which
//! torrents and clients are served, which tokens are accepted, and how replies are shaped
//! (numwant, intervals, families, subnets). All of it is one immutable [`Policy`] value behind an
//! `ArcSwap`, swapped whole on SIGHUP, so no request ever sees half an old and half a new
//! configuration, and both frontends change at the same instant (only workers read it).
//! [`Pipeline`] is one worker's runner of the hooks, [`Refusal`] the one list of reasons an
//! announce is refused, each with its message and metric.

pub mod access_list;
pub mod blocklist;
pub mod client_list;
pub mod jwt;
mod pipeline;
pub mod refusal;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use access_list::{AccessList, AccessListError};
use blocklist::{Blocklist, BlocklistError};
use client_list::{ClientList, ClientListError};
use jwt::{JwtError, Verifier};

pub use pipeline::{Change, PeerChange, Pipeline, PostHook};
pub use refusal::Refusal;

/// How replies are shaped: the announce intervals and numwant limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaping {
    /// Seconds a client is asked to wait between announces.
    pub announce_interval_secs: u32,
    /// HTTP `min interval`.
    pub min_interval_secs: u32,
    /// Up to this many seconds are added to each reply's interval, at random, so clients
    /// that started together drift apart instead of announcing in waves.
    pub interval_jitter_secs: u32,
    /// The same random increase is added to `min interval`.
    pub jitter_min_interval: bool,
    /// Peers returned when the client does not say.
    pub default_numwant: usize,
    /// Most peers returned to one announce.
    pub max_numwant: usize,
    /// HTTP replies hold only peers of the announcer's own address family (BEP 7 dual stack
    /// off). UDP replies always do: a BEP 15 reply has one peer size.
    pub respect_af: bool,
}

/// One consistent set of live-reloadable settings of every hook.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Sources whose datagrams and connections are ignored.
    pub blocklist: Blocklist,
    pub access: AccessList,
    pub clients: ClientList,
    /// The token check, when `[jwt] mode = "required"`.
    pub jwt: Option<Arc<Verifier>>,
    pub shaping: Shaping,
}

/// The policy every worker reads; `store` a new `Arc<Policy>` to change it.
pub type SharedPolicy = Arc<ArcSwap<Policy>>;

/// A policy that cannot be loaded: a list or key file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    AccessList(#[from] AccessListError),
    #[error(transparent)]
    Blocklist(#[from] BlocklistError),
    #[error(transparent)]
    ClientList(#[from] ClientListError),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl Policy {
    /// The configuration's policy with the access list already read, and no client list or
    /// token check (see [`Policy::load`]).
    pub fn new(config: &Config, access: AccessList) -> Policy {
        let p = &config.protocol;
        Policy {
            blocklist: Blocklist::default(),
            access,
            clients: ClientList::off(),
            jwt: None,
            shaping: Shaping {
                announce_interval_secs: p.announce_interval_secs,
                min_interval_secs: p.min_interval_secs,
                interval_jitter_secs: p.interval_jitter_secs,
                jitter_min_interval: p.jitter_min_interval,
                default_numwant: p.default_numwant as usize,
                max_numwant: p.max_numwant as usize,
                respect_af: p.respect_af,
            },
        }
    }

    /// The configuration's policy, reading every file it names.
    pub fn load(config: &Config) -> Result<Policy, PolicyError> {
        let access =
            AccessList::load(config.access_list.mode, Path::new(&config.access_list.path))?;
        Ok(Policy {
            blocklist: Blocklist::load(&config.blocklist.path)?,
            clients: ClientList::load(&config.client_list)?,
            jwt: Verifier::load(&config.jwt)?.map(Arc::new),
            ..Policy::new(config, access)
        })
    }

    /// Wraps a policy for sharing between threads.
    pub fn shared(self) -> SharedPolicy {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

impl Shaping {
    /// Peers to hand an announcer who asked for `asked` (0 or negative: the default).
    #[inline]
    pub fn numwant(&self, asked: i32) -> usize {
        if asked <= 0 {
            self.default_numwant
        } else {
            (asked as usize).min(self.max_numwant)
        }
    }
}
