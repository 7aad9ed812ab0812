//! hayate: a UDP-first BitTorrent tracker on io_uring.

pub mod config;
pub mod connection_id;
pub mod protocol;
pub mod swarm;
