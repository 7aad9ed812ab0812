//! The HTTP announce and scrape query parsers: any query string parses or is refused with a
//! message; a parsed announce holds what its parameters said, and an announce or scrape written
//! back as a fully percent-encoded query parses to the same request.
//!
//! The body of the `http_query` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/http_query.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use hayate_tracker::http::query::{decoded, parse_announce, parse_scrape};
use hayate_tracker::protocol::AnnounceEvent;

fn esc(b: &[u8]) -> String {
    b.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Runs one fuzz input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    if let Some(d) = decoded(data) {
        assert!(d.len() <= data.len());
        assert_eq!(
            decoded(esc(&d).as_bytes()).as_deref(),
            Some(&d[..]),
            "escape round trip"
        );
    }
    for allow_ip in [false, true] {
        match parse_announce(data, allow_ip) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(q) => {
                let a = q.announce;
                assert_ne!(a.port, 0, "port 0 accepted");
                if !allow_ip {
                    assert!(q.ip.is_none() && q.ipv4.is_none() && q.ipv6.is_none());
                }
                assert!(q.ipv4.is_none_or(|ip| ip.is_ipv4()));
                assert!(q.ipv6.is_none_or(|ip| ip.is_ipv6()));
                let event = match a.event {
                    AnnounceEvent::None => "",
                    AnnounceEvent::Completed => "completed",
                    AnnounceEvent::Started => "started",
                    AnnounceEvent::Stopped => "stopped",
                };
                let mut again = format!(
                    "info_hash={}&peer_id={}&port={}&event={event}&compact={}",
                    esc(&a.info_hash),
                    esc(&a.peer_id),
                    a.port,
                    u8::from(q.compact),
                );
                if a.left != u64::MAX {
                    again += &format!("&left={}", a.left);
                }
                if a.num_want > 0 {
                    again += &format!("&numwant={}", a.num_want);
                }
                let r = parse_announce(again.as_bytes(), false).expect("written back, parses");
                assert_eq!(r.announce.info_hash, a.info_hash);
                assert_eq!(r.announce.peer_id, a.peer_id);
                assert_eq!(r.announce.port, a.port);
                assert_eq!(r.announce.left, a.left);
                assert_eq!(r.announce.event, a.event);
                assert_eq!(r.compact, q.compact);
                if a.num_want > 0 {
                    assert_eq!(r.announce.num_want, a.num_want);
                }
            }
        }
    }
    for max in [1, 74] {
        match parse_scrape(data, max) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(hashes) => {
                assert!(!hashes.is_empty() && hashes.len() <= max);
                let again: Vec<String> = hashes
                    .iter()
                    .map(|h| format!("info_hash={}", esc(h)))
                    .collect();
                assert_eq!(parse_scrape(again.join("&").as_bytes(), max), Ok(hashes));
            }
        }
    }
}
