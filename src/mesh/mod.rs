//! Routing between the threads: which worker owns an info hash (`shard_of`), the inboxes that
//! carry work to an owner, and the wakes that get an idle owner going. Both frontends route
//! through here — the UDP workers forward announces and scrape chains, the HTTP thread hands
//! parsed requests over — so "who owns this torrent" is answered in one place.

pub mod inbox;

use crate::protocol::InfoHash;

pub use inbox::{
    ForwardedAnnounce, HttpAnnounced, HttpPeer, HttpWork, Inbox, InboxFull, Mailbox, ScrapeChain,
    Wake, SCRAPE_CHAIN_MAX,
};

/// The shard that owns `info_hash` among `shards`. Every thread must agree, so the hash is
/// unkeyed: the hash is already uniformly random, its first bytes are as good as any. The
/// kernel must agree too (see [`crate::steering`]), so it is what classic BPF can compute: the
/// first four bytes in network order, modulo the shard count (a bias of at most
/// shards / 2^32).
pub fn shard_of(info_hash: &InfoHash, shards: usize) -> usize {
    let x = u32::from_be_bytes(info_hash[..4].try_into().expect("4 bytes"));
    x as usize % shards
}

/// Every worker's inbox, as one thread sees them: the way to reach the owner of a torrent.
#[derive(Clone, Debug)]
pub struct Mesh {
    mailboxes: Vec<Mailbox>,
}

impl Mesh {
    pub fn new(mailboxes: Vec<Mailbox>) -> Self {
        Self { mailboxes }
    }

    /// How many workers (shards) there are.
    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// The worker that owns `info_hash`.
    #[inline]
    pub fn owner(&self, info_hash: &InfoHash) -> usize {
        shard_of(info_hash, self.mailboxes.len())
    }

    /// Worker `index`'s inbox.
    pub fn to(&self, index: usize) -> &Mailbox {
        &self.mailboxes[index]
    }

    pub fn mailboxes(&self) -> &[Mailbox] {
        &self.mailboxes
    }

    /// Every owner's wake, for shutdown and for flushing deferred wakes.
    pub fn wakes(&self) -> Vec<std::sync::Arc<Wake>> {
        self.mailboxes.iter().map(Mailbox::wake_handle).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_spreads_and_stays_in_range() {
        let mut hits = [0usize; 3];
        for i in 0..3000u32 {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            h[4..8].copy_from_slice(&i.wrapping_mul(40_503).to_be_bytes());
            hits[shard_of(&h, 3)] += 1;
        }
        assert!(hits.iter().all(|&n| n > 500), "{hits:?}");
    }
}
