//! What a worker counts about its own traffic. Only the owning worker writes these, so they are
//! plain integers; the stats side reads snapshots of them.

/// Request kinds, for per-kind arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect = 0,
    Announce = 1,
    Scrape = 2,
    Error = 3,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Requests received, by action (error = refused before an action was known).
    pub requests: [u64; 4],
    /// Replies sent, by action.
    pub responses: [u64; 4],
    /// Datagrams that were not BEP 15 at all, dropped unanswered.
    pub not_tracker: u64,
    /// Requests refused for a bad or expired connection id.
    pub bad_connection_id: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Announces and scrape legs handed to another worker.
    pub forwarded: u64,
    /// Forwards refused because the owner's inbox was full.
    pub inbox_full: u64,
    /// Replies dropped because every send buffer was in flight.
    pub send_slots_exhausted: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Receives the kernel failed.
    pub recv_errors: u64,
}
