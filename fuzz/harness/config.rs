//! The config loader: any text layered over the defaults either loads into a configuration
//! whose cross-key rules hold, or is refused with an error naming the file. Never a panic.
//!
//! The body of the `config` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/config.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use hayate_tracker::config::{Config, MAX_UDP_SCRAPE_HASHES};
use hayate_tracker::worker::handler::Handler;

/// Runs one fuzz input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, "fuzz.toml") {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz.toml"),
                "error without the file: {message}"
            );
        }
        Ok(c) => {
            let p = &c.protocol;
            assert!(1 <= p.default_numwant && p.default_numwant <= p.max_numwant);
            assert!(p.max_numwant <= 1000);
            assert!((1..=MAX_UDP_SCRAPE_HASHES).contains(&p.max_scrape_hashes));
            assert!(p.min_interval_secs <= p.announce_interval_secs);
            assert!(c.cleaning.peer_lifetime_secs >= p.announce_interval_secs);
            assert!(p.connection_id_lifetime_secs >= 120);
            assert!(c.limits.max_torrents >= 1 && c.limits.max_peers_per_torrent >= 1);
            assert!(c.worker_count() >= 1);
            assert!(c.udp.recv_depth >= 1 && c.udp.send_depth >= 1);
            // Every reply fits the send buffer the worker sizes from this config.
            let len = Handler::max_reply_len(&c);
            assert!(len >= 20 + 18 * p.max_numwant as usize);
            assert!(len >= 8 + 12 * p.max_scrape_hashes as usize);
            assert!(len <= 20 + 18 * 1000);
            // Loading is deterministic.
            let again = Config::from_toml_str(text, "fuzz.toml").expect("loads twice");
            assert_eq!(format!("{c:?}"), format!("{again:?}"));
        }
    }
}
