//! BEP 15 request parser and reply writers: any datagram is either dropped, refused with an
//! error no longer than itself, or parsed into exactly the fields its bytes hold; a parsed
//! request written back out parses to the same request, and every reply the writers produce
//! for it reads back to what was written.
//!
//! The body of the `udp_request` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/udp_request.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use hayate_tracker::protocol::udp::{self, ParseError, Request};
use hayate_tracker::protocol::{AnnounceEvent, SwarmCounts};

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

fn be64(d: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(d[at..at + 8].try_into().unwrap())
}

fn event_code(e: AnnounceEvent) -> u32 {
    match e {
        AnnounceEvent::None => 0,
        AnnounceEvent::Completed => 1,
        AnnounceEvent::Started => 2,
        AnnounceEvent::Stopped => 3,
    }
}

/// Runs one fuzz input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    for max_hashes in [1, 5, 74] {
        check(data, max_hashes);
    }
}

fn check(data: &[u8], max_hashes: usize) {
    let mut out = [0u8; 2048];
    match udp::parse_request(data, max_hashes) {
        Err(ParseError::NotTracker) => {
            if data.len() >= udp::HEADER_LEN {
                let action = be32(data, 8);
                assert!(
                    action > udp::ACTION_SCRAPE
                        || (action == udp::ACTION_CONNECT && be64(data, 0) != udp::PROTOCOL_ID),
                    "a tracker request dropped unanswered"
                );
            }
        }
        Err(ParseError::Invalid {
            transaction_id,
            message,
        }) => {
            assert!(data.len() >= udp::HEADER_LEN);
            assert_eq!(
                transaction_id,
                be32(data, 12),
                "error echoes the transaction id"
            );
            assert!(!message.is_empty());
            let n = udp::write_error(&mut out, transaction_id, message, data.len());
            assert!(
                n <= data.len(),
                "error reply of {n} bytes to {} bytes",
                data.len()
            );
            assert!(n == 0 || n >= 8);
            if n > 0 {
                assert_eq!(be32(&out, 0), udp::ACTION_ERROR);
                assert_eq!(be32(&out, 4), transaction_id);
                assert!(message.as_bytes().starts_with(&out[8..n]));
            }
        }
        Ok(Request::Connect { transaction_id }) => {
            assert_eq!(be64(data, 0), udp::PROTOCOL_ID);
            assert_eq!(be32(data, 8), udp::ACTION_CONNECT);
            assert_eq!(transaction_id, be32(data, 12));
            let n = udp::write_connect(&mut out, transaction_id, 0x0102_0304_0506_0708);
            assert_eq!(n, 16);
            assert_eq!(
                (be32(&out, 0), be32(&out, 4), be64(&out, 8)),
                (udp::ACTION_CONNECT, transaction_id, 0x0102_0304_0506_0708)
            );
        }
        Ok(Request::Announce {
            connection_id,
            transaction_id,
            announce: a,
            options,
        }) => {
            assert_eq!(options, &data[udp::ANNOUNCE_LEN..]);
            assert!(data.len() >= udp::ANNOUNCE_LEN);
            assert_eq!(be32(data, 8), udp::ACTION_ANNOUNCE);
            assert_eq!(connection_id, be64(data, 0));
            assert_eq!(transaction_id, be32(data, 12));
            assert_eq!(a.info_hash, data[16..36]);
            assert_eq!(a.peer_id, data[36..56]);
            assert_eq!(a.left, be64(data, 64));
            assert_eq!(event_code(a.event), be32(data, 80));
            assert_eq!(a.num_want, be32(data, 92) as i32);
            assert_eq!(a.port, u16::from_be_bytes([data[96], data[97]]));
            assert_ne!(a.port, 0, "port 0 accepted");
            // Written back with the fixed layout only (BEP 41 options dropped): the same request.
            let mut p = Vec::with_capacity(udp::ANNOUNCE_LEN);
            p.extend_from_slice(&connection_id.to_be_bytes());
            p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
            p.extend_from_slice(&transaction_id.to_be_bytes());
            p.extend_from_slice(&a.info_hash);
            p.extend_from_slice(&a.peer_id);
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&a.left.to_be_bytes());
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&event_code(a.event).to_be_bytes());
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&a.num_want.to_be_bytes());
            p.extend_from_slice(&a.port.to_be_bytes());
            assert_eq!(
                udp::parse_request(&p, max_hashes),
                Ok(Request::Announce {
                    connection_id,
                    transaction_id,
                    announce: a,
                    options: &[],
                })
            );
            // An announce reply with peers of both sizes reads back.
            let counts = SwarmCounts {
                seeders: be32(data, 56),
                leechers: be32(data, 60),
                downloaded: 0,
            };
            let mut n = udp::write_announce_header(&mut out, transaction_id, 1800, counts);
            assert_eq!(n, udp::ANNOUNCE_REPLY_HEADER_LEN);
            n += udp::write_peer(&mut out[n..], &a.info_hash[..4], a.port);
            n += udp::write_peer(&mut out[n..], &a.peer_id[..16], a.port);
            assert_eq!(n, 20 + udp::PEER_V4_LEN + udp::PEER_V6_LEN);
            assert_eq!(
                (be32(&out, 0), be32(&out, 4), be32(&out, 8)),
                (udp::ACTION_ANNOUNCE, transaction_id, 1800)
            );
            assert_eq!(
                (be32(&out, 12), be32(&out, 16)),
                (counts.leechers, counts.seeders)
            );
            assert_eq!(&out[20..24], &a.info_hash[..4]);
            assert_eq!(&out[24..26], &a.port.to_be_bytes());
            assert_eq!(&out[26..42], &a.peer_id[..16]);
            assert_eq!(&out[42..44], &a.port.to_be_bytes());
        }
        Ok(Request::Scrape {
            connection_id,
            transaction_id,
            info_hashes,
        }) => {
            assert_eq!(be32(data, 8), udp::ACTION_SCRAPE);
            assert_eq!(connection_id, be64(data, 0));
            assert_eq!(transaction_id, be32(data, 12));
            let whole = (data.len() - udp::HEADER_LEN) / 20;
            assert_eq!(info_hashes.len(), whole);
            assert!((1..=max_hashes).contains(&whole));
            for (i, h) in info_hashes.iter().enumerate() {
                assert_eq!(h[..], data[16 + 20 * i..36 + 20 * i]);
            }
            let mut n = udp::write_scrape_header(&mut out, transaction_id);
            for (i, h) in info_hashes.iter().enumerate() {
                let counts = SwarmCounts {
                    seeders: be32(h, 0),
                    leechers: be32(h, 4),
                    downloaded: i as u32,
                };
                n += udp::write_scrape_entry(&mut out[n..], counts);
            }
            assert_eq!(
                n,
                udp::SCRAPE_REPLY_HEADER_LEN + udp::SCRAPE_ENTRY_LEN * whole
            );
            assert_eq!(
                (be32(&out, 0), be32(&out, 4)),
                (udp::ACTION_SCRAPE, transaction_id)
            );
            for (i, h) in info_hashes.iter().enumerate() {
                let e = 8 + 12 * i;
                assert_eq!(
                    (be32(&out, e), be32(&out, e + 4), be32(&out, e + 8)),
                    (be32(h, 0), i as u32, be32(h, 4)),
                    "(seeders, completed, leechers)"
                );
            }
        }
    }
}
