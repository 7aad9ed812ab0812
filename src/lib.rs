//! hayate: a UDP-first BitTorrent tracker on io_uring. `cli::main` is the binary;
//! `tracker::Tracker` starts and stops a whole tracker for tests and embedding.

pub mod cidr;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection_id;
pub mod handover;
pub mod http;
pub mod mesh;
pub mod notify;
pub mod policy;
pub mod privileges;
pub mod protocol;
pub mod rate_limit;
pub mod resources;
pub mod sockets;
pub mod state;
pub mod stats;
pub mod steering;
pub mod swarm;
pub mod tracker;
pub mod worker;

pub use config::Config;
pub use tracker::Tracker;
