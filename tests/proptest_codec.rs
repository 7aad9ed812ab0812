//! Property tests of the BEP 15 codec: requests written by an independent encoder (the test
//! client's) parse back to what was written, with or without BEP 41 options; every truncation
//! is refused, never misread; and every reply the writers produce decodes back (with the test
//! client's decoder) to what was written. Error replies never outgrow their limit.

mod common;

use std::net::SocketAddr;

use common::{announce_packet, connect_packet, decode, scrape_packet, Reply};
use hayate_tracker::protocol::udp::{self, ParseError, Request};
use hayate_tracker::protocol::{AnnounceEvent, SwarmCounts};
use proptest::prelude::*;

fn event_of(code: u32) -> AnnounceEvent {
    match code {
        0 => AnnounceEvent::None,
        1 => AnnounceEvent::Completed,
        2 => AnnounceEvent::Started,
        _ => AnnounceEvent::Stopped,
    }
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
