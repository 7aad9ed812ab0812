//! Property tests of the BEP 15 codec: requests written by an independent encoder (the test
//! client's) parse back to what was written, with or without BEP 41 options; every truncation
//! is refused, never misread; and every reply the writers produce decodes back (with the test
//! client's decoder) to what was written. Error replies never outgrow their limit, checked on
//! near-valid requests (a real header of each action, then cut, bad fields or bad counts) that
//! the parser must refuse: random bytes reach a refusal about 3 times in 2^32.

mod common;

use std::net::SocketAddr;

use common::{announce_packet, connect_packet, decode, scrape_packet, Reply};
use hayate_tracker::protocol::udp::{self, ParseError, Request};
use hayate_tracker::protocol::{AnnounceEvent, SwarmCounts};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn event_of(code: u32) -> AnnounceEvent {
    match code {
        0 => AnnounceEvent::None,
        1 => AnnounceEvent::Completed,
        2 => AnnounceEvent::Started,
        _ => AnnounceEvent::Stopped,
    }
}

/// What the parser must make of a near-valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refused with an error reply carrying the request's transaction id.
    Refused,
    /// Not a tracker request: dropped unanswered.
    Dropped,
    /// A request: parsed.
    Parsed,
}

/// Requests shaped like real ones gone wrong (most of them refused), with what the parser must
/// do with each, and the scrape limit to parse them with.
fn near_valid() -> impl Strategy<Value = (Vec<u8>, Expect, usize)> {
    let txid = any::<u32>();
    let garbage = || prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        // An announce cut anywhere past the header: too short.
        3 => (any::<u64>(), txid, any::<[u8; 20]>(), 1u16.., 0u32..4, udp::HEADER_LEN..udp::ANNOUNCE_LEN)
            .prop_map(|(cid, txid, hash, port, event, cut)| {
                let mut p = announce_packet(cid, txid, hash, port, 0, event, -1);
                p.truncate(cut);
                (p, Expect::Refused, 74)
            }),
        // A whole announce with an unknown event or port 0, then BEP 41 bytes or garbage.
        2 => (any::<u64>(), txid, 4u32.., garbage())
            .prop_map(|(cid, txid, event, tail)| {
                let mut p = announce_packet(cid, txid, [7; 20], 6881, 1, event, 50);
                p.extend_from_slice(&tail);
                (p, Expect::Refused, 74)
            }),
        2 => (any::<u64>(), txid, 0u32..4, garbage())
            .prop_map(|(cid, txid, event, tail)| {
                let mut p = announce_packet(cid, txid, [7; 20], 0, 1, event, 50);
                p.extend_from_slice(&tail);
                (p, Expect::Refused, 74)
            }),
        // A scrape naming no whole hash, or more than the limit.
        2 => (any::<u64>(), txid, 0usize..20, 1usize..=74)
            .prop_map(|(cid, txid, partial, max)| {
                let mut p = scrape_packet(cid, txid, &[]);
                p.extend(std::iter::repeat_n(0x5a, partial));
                (p, Expect::Refused, max)
            }),
        3 => (any::<u64>(), txid, 1usize..=74, 1usize..8, 0usize..20)
            .prop_map(|(cid, txid, max, over, partial)| {
                let hashes: Vec<[u8; 20]> = (0..max + over).map(|i| [i as u8; 20]).collect();
                let mut p = scrape_packet(cid, txid, &hashes);
                p.extend(std::iter::repeat_n(0x5a, partial));
                (p, Expect::Refused, max)
            }),
        // Not refused: a connect without the protocol id and actions past scrape are dropped;
        // an announce with trailing garbage (BEP 41 options) is parsed.
        1 => (any::<u64>(), txid).prop_filter_map("the protocol id", |(cid, txid)| {
            let mut p = connect_packet(txid);
            p[..8].copy_from_slice(&cid.to_be_bytes());
            (cid != udp::PROTOCOL_ID).then_some((p, Expect::Dropped, 74))
        }),
        1 => (any::<u64>(), txid, 3u32.., garbage()).prop_map(|(cid, txid, action, tail)| {
            let mut p = announce_packet(cid, txid, [7; 20], 6881, 1, 2, 50);
            p[8..12].copy_from_slice(&action.to_be_bytes());
            p.extend_from_slice(&tail);
            (p, Expect::Dropped, 74)
        }),
        1 => (any::<u64>(), txid, garbage()).prop_map(|(cid, txid, tail)| {
            let mut p = announce_packet(cid, txid, [7; 20], 6881, 1, 2, 50);
            p.extend_from_slice(&tail);
            (p, Expect::Parsed, 74)
        }),
    ]
}

/// Checks one near-valid request: the parser does what it must, and a refusal's error reply
/// echoes the transaction id and never outgrows the request. Says whether it was refused.
fn check_near_valid(p: &[u8], expect: Expect, max: usize) -> Result<bool, TestCaseError> {
    let got = udp::parse_request(p, max);
    let kind = match &got {
        Err(ParseError::Invalid { .. }) => Expect::Refused,
        Err(ParseError::NotTracker) => Expect::Dropped,
        Ok(_) => Expect::Parsed,
    };
    prop_assert_eq!(kind, expect, "{:?}", got);
    if let Err(ParseError::Invalid {
        transaction_id,
        message,
    }) = got
    {
        prop_assert_eq!(transaction_id.to_be_bytes(), [p[12], p[13], p[14], p[15]]);
        prop_assert!(!message.is_empty());
        let mut out = [0u8; 512];
        let n = udp::write_error(&mut out, transaction_id, message, p.len());
        prop_assert!(
            n <= p.len(),
            "error reply of {} bytes to {} bytes",
            n,
            p.len()
        );
        prop_assert_eq!(
            n,
            (8 + message.len()).min(p.len()),
            "cut to the request, no shorter"
        );
        prop_assert_eq!(
            decode(&out[..n], true),
            Reply::Error {
                txid: transaction_id,
                message: message[..n - 8].to_string()
            }
        );
        return Ok(true);
    }
    Ok(false)
}

/// Near-valid requests: each lands where it must, and most (counted) are refused, so the
/// no-amplification check runs on almost every case.
#[test]
fn near_valid_requests_are_refused_without_amplification() {
    let mut runner = TestRunner::new(Config::default());
    let cases = runner.config().cases as usize;
    let refused = std::cell::Cell::new(0);
    let result = runner.run(&near_valid(), |(p, expect, max)| {
        if check_near_valid(&p, expect, max)? {
            refused.set(refused.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let refused = refused.get();
    assert!(
        refused * 3 >= cases * 2,
        "only {refused} of {cases} near-valid requests reached the refusal"
    );
}

proptest! {
    #[test]
    fn connect_round_trips(txid in any::<u32>(), trailing in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut p = connect_packet(txid);
        p.extend_from_slice(&trailing);
        prop_assert_eq!(udp::parse_request(&p, 74), Ok(Request::Connect { transaction_id: txid }));
    }

    #[test]
    fn connect_without_the_protocol_id_is_dropped(cid in any::<u64>(), txid in any::<u32>()) {
        prop_assume!(cid != udp::PROTOCOL_ID);
        let mut p = connect_packet(txid);
        p[..8].copy_from_slice(&cid.to_be_bytes());
        prop_assert_eq!(udp::parse_request(&p, 74), Err(ParseError::NotTracker));
    }

    #[test]
    fn announce_round_trips(
        cid in any::<u64>(),
        txid in any::<u32>(),
        info_hash in any::<[u8; 20]>(),
        port in 1u16..,
        left in any::<u64>(),
        event in 0u32..4,
        num_want in any::<i32>(),
        options in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut p = announce_packet(cid, txid, info_hash, port, left, event, num_want);
        p.extend_from_slice(&options);
        let Ok(Request::Announce { connection_id, transaction_id, announce, .. }) =
            udp::parse_request(&p, 74)
        else {
            return Err(TestCaseError::fail("announce not parsed"));
        };
        prop_assert_eq!((connection_id, transaction_id), (cid, txid));
        prop_assert_eq!(announce.info_hash, info_hash);
        prop_assert_eq!(&announce.peer_id[..], &p[36..56]);
        prop_assert_eq!(announce.port, port);
        prop_assert_eq!(announce.left, left);
        prop_assert_eq!(announce.event, event_of(event));
        prop_assert_eq!(announce.num_want, num_want);
    }

    #[test]
    fn truncated_announce_is_refused_with_its_transaction_id(
        txid in any::<u32>(),
        cut in 0usize..udp::ANNOUNCE_LEN,
    ) {
        let p = announce_packet(9, txid, [1; 20], 6881, 0, 2, -1);
        let got = udp::parse_request(&p[..cut], 74);
        if cut < udp::HEADER_LEN {
            prop_assert_eq!(got, Err(ParseError::NotTracker));
        } else {
            let refused = matches!(
                got,
                Err(ParseError::Invalid { transaction_id, .. }) if transaction_id == txid
            );
            prop_assert!(refused, "{:?}", got);
        }
    }

    #[test]
    fn bad_event_and_port_zero_are_refused(event in 4u32.., txid in any::<u32>()) {
        let p = announce_packet(9, txid, [1; 20], 6881, 0, event, -1);
        let got = udp::parse_request(&p, 74);
        prop_assert!(matches!(got, Err(ParseError::Invalid { .. })), "{:?}", got);
        let p = announce_packet(9, txid, [1; 20], 0, 0, 2, -1);
        let got = udp::parse_request(&p, 74);
        prop_assert!(matches!(got, Err(ParseError::Invalid { .. })), "{:?}", got);
    }

    #[test]
    fn scrape_round_trips_within_the_limit(
        cid in any::<u64>(),
        txid in any::<u32>(),
        hashes in prop::collection::vec(any::<[u8; 20]>(), 0..80),
        partial in 0usize..20,
        max in 1usize..=74,
    ) {
        let mut p = scrape_packet(cid, txid, &hashes);
        p.extend(std::iter::repeat_n(0xab, partial));
        match udp::parse_request(&p, max) {
            Ok(Request::Scrape { connection_id, transaction_id, info_hashes }) => {
                prop_assert!(!hashes.is_empty() && hashes.len() <= max);
                prop_assert_eq!((connection_id, transaction_id), (cid, txid));
                prop_assert_eq!(info_hashes, &hashes[..]);
            }
            Err(ParseError::Invalid { transaction_id, .. }) => {
                prop_assert!(hashes.is_empty() || hashes.len() > max);
                prop_assert_eq!(transaction_id, txid);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn any_bytes_parse_or_are_refused_without_panic(p in prop::collection::vec(any::<u8>(), 0..200)) {
        match udp::parse_request(&p, 74) {
            Ok(_) | Err(ParseError::NotTracker) => {}
            Err(ParseError::Invalid { transaction_id, message }) => {
                prop_assert_eq!(transaction_id.to_be_bytes(), [p[12], p[13], p[14], p[15]]);
                let mut out = [0u8; 512];
                let n = udp::write_error(&mut out, transaction_id, message, p.len());
                prop_assert!(n <= p.len(), "error reply amplifies");
            }
        }
    }

    #[test]
    fn connect_reply_decodes(txid in any::<u32>(), id in any::<u64>()) {
        let mut out = [0u8; 64];
        let n = udp::write_connect(&mut out, txid, id);
        prop_assert_eq!(decode(&out[..n], true), Reply::Connect { txid, connection_id: id });
    }

    #[test]
    fn announce_reply_decodes(
        txid in any::<u32>(),
        interval in any::<u32>(),
        seeders in any::<u32>(),
        leechers in any::<u32>(),
        v4 in any::<bool>(),
        peers in prop::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..50),
    ) {
        let mut out = vec![0u8; 20 + 18 * 50];
        let counts = SwarmCounts { seeders, leechers, downloaded: 0 };
        let mut n = udp::write_announce_header(&mut out, txid, interval, counts);
        let mut want = Vec::new();
        for (ip, port) in &peers {
            let ip = if v4 { &ip[..4] } else { &ip[..] };
            n += udp::write_peer(&mut out[n..], ip, *port);
            want.push(match ip.len() {
                4 => SocketAddr::from((<[u8; 4]>::try_from(ip).unwrap(), *port)),
                _ => SocketAddr::from((<[u8; 16]>::try_from(ip).unwrap(), *port)),
            });
        }
        prop_assert_eq!(n, 20 + peers.len() * if v4 { 6 } else { 18 });
        prop_assert_eq!(
            decode(&out[..n], v4),
            Reply::Announce { txid, interval, leechers, seeders, peers: want }
        );
    }

    #[test]
    fn scrape_reply_decodes(
        txid in any::<u32>(),
        entries in prop::collection::vec(any::<(u32, u32, u32)>(), 0..74),
    ) {
        let mut out = vec![0u8; 8 + 12 * 74];
        let mut n = udp::write_scrape_header(&mut out, txid);
        for &(seeders, downloaded, leechers) in &entries {
            let c = SwarmCounts { seeders, leechers, downloaded };
            n += udp::write_scrape_entry(&mut out[n..], c);
        }
        prop_assert_eq!(n, 8 + 12 * entries.len());
        prop_assert_eq!(decode(&out[..n], true), Reply::Scrape { txid, entries });
    }

    #[test]
    fn error_reply_is_cut_to_its_limit(
        txid in any::<u32>(),
        message in "[ -~]{0,120}",
        limit in 0usize..200,
    ) {
        let mut out = [0u8; 256];
        let n = udp::write_error(&mut out, txid, &message, limit);
        prop_assert!(n <= limit);
        if limit < 8 {
            prop_assert_eq!(n, 0);
        } else {
            let Reply::Error { txid: t, message: m } = decode(&out[..n], true) else {
                return Err(TestCaseError::fail("not an error reply"));
            };
            prop_assert_eq!(t, txid);
            prop_assert!(message.starts_with(&m));
            prop_assert_eq!(m.len(), message.len().min(limit - 8));
        }
    }
}
