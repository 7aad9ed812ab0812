//! The settings a running tracker can change without a restart (SIGHUP): the access list, the
//! announce intervals and the numwant limits. They are one immutable `Settings` value behind an
//! `ArcSwap`. The HTTP thread `load()`s it per request (lock-free, about 25 ns); each worker
//! reads it through an `arc_swap::Cache`, which costs one pointer compare (about 3 ns) unless a
//! reload swapped it. A reload swaps in a whole new value at once, so no request ever sees half
//! of an old and half of a new configuration, and nothing is dropped.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_list::{AccessList, AccessListError};
use crate::config::Config;

/// One consistent set of live-reloadable settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub access: AccessList,
    /// Seconds a client is asked to wait between announces.
    pub announce_interval_secs: u32,
    /// HTTP `min interval`.
    pub min_interval_secs: u32,
    /// Peers returned when the client does not say.
    pub default_numwant: usize,
    /// Most peers returned to one announce.
    pub max_numwant: usize,
}

/// The settings every thread reads; `store` a new `Arc<Settings>` to change them.
pub type SharedSettings = Arc<ArcSwap<Settings>>;

impl Settings {
    /// The configuration's settings with the access list already read.
    pub fn new(config: &Config, access: AccessList) -> Settings {
        let p = &config.protocol;
        Settings {
            access,
            announce_interval_secs: p.announce_interval_secs,
            min_interval_secs: p.min_interval_secs,
            default_numwant: p.default_numwant as usize,
            max_numwant: p.max_numwant as usize,
        }
    }

    /// The configuration's settings, reading the access list file it names.
    pub fn load(config: &Config) -> Result<Settings, AccessListError> {
        let access =
            AccessList::load(config.access_list.mode, Path::new(&config.access_list.path))?;
        Ok(Settings::new(config, access))
    }

    /// Wraps settings for sharing between threads.
    pub fn shared(self) -> SharedSettings {
        Arc::new(ArcSwap::from_pointee(self))
    }

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
