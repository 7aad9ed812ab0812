//! BEP 15, the UDP tracker protocol: requests are read in place from the receive buffer through
//! zerocopy views of the fixed layouts, and replies are written straight into the send buffer.
//! Nothing here allocates.
//!
//! Packets that are not BEP 15 at all (shorter than a header, an unknown action, a connect without
//! the protocol id) are refused with [`ParseError::NotTracker`] and get no answer: answering
//! garbage only helps reflection attacks. Requests that are BEP 15 but wrong get an error packet.

use zerocopy::byteorder::network_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Announce, AnnounceEvent, InfoHash, SwarmCounts};

/// The magic constant a connect request starts with.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;

/// Bytes of an announce request before any BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
/// Bytes of an announce reply before its peers.
pub const ANNOUNCE_REPLY_HEADER_LEN: usize = 20;
/// Bytes of the common request header (connection id, action, transaction id).
pub const HEADER_LEN: usize = 16;
/// Bytes of a scrape reply before its entries, and of one entry.
pub const SCRAPE_REPLY_HEADER_LEN: usize = 8;
pub const SCRAPE_ENTRY_LEN: usize = 12;
/// Bytes of one peer in an announce reply.
pub const PEER_V4_LEN: usize = 6;
pub const PEER_V6_LEN: usize = 18;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RequestHeader {
    connection_id: U64,
    action: U32,
    transaction_id: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AnnounceBody {
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    downloaded: U64,
    left: U64,
    uploaded: U64,
    event: U32,
    ip: U32,
    key: U32,
    num_want: I32,
    port: U16,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ConnectReply {
    action: U32,
    transaction_id: U32,
    connection_id: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AnnounceReplyHeader {
    action: U32,
    transaction_id: U32,
    interval: U32,
    leechers: U32,
    seeders: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ActionHeader {
    action: U32,
    transaction_id: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ScrapeEntry {
    seeders: U32,
    completed: U32,
    leechers: U32,
}

/// A parsed BEP 15 request, borrowing the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Connect {
        transaction_id: u32,
    },
    Announce {
        connection_id: u64,
        transaction_id: u32,
        announce: Announce,
        /// The bytes after the fixed layout: BEP 41 options (see `protocol::bep41`).
        options: &'a [u8],
    },
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        info_hashes: &'a [InfoHash],
    },
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a BEP 15 request: dropped without an answer.
    #[error("not a BEP 15 request")]
    NotTracker,
    /// A BEP 15 request that is malformed: answered with an error packet.
    #[error("{message}")]
    Invalid {
        transaction_id: u32,
        message: &'static str,
    },
}

/// The action field of a packet long enough to hold a request header. A refused request is
/// counted under the action it names, whether or not the rest of it parsed.
pub fn header_action(packet: &[u8]) -> Option<u32> {
    RequestHeader::ref_from_prefix(packet)
        .ok()
        .map(|(header, _)| header.action.get())
}

/// The info hash of a packet shaped as an announce, read without checking the rest: enough
/// to start loading its swarm before the packet is handled in full.
pub fn announce_hash(packet: &[u8]) -> Option<&InfoHash> {
    if packet.len() < ANNOUNCE_LEN || header_action(packet)? != ACTION_ANNOUNCE {
        return None;
    }
    packet[HEADER_LEN..HEADER_LEN + 20].try_into().ok()
}

/// Parses one datagram. `max_scrape_hashes` bounds a scrape.
pub fn parse_request(packet: &[u8], max_scrape_hashes: usize) -> Result<Request<'_>, ParseError> {
    let (header, body) =
        RequestHeader::ref_from_prefix(packet).map_err(|_| ParseError::NotTracker)?;
    let transaction_id = header.transaction_id.get();
    let connection_id = header.connection_id.get();
    let invalid = |message| ParseError::Invalid {
        transaction_id,
        message,
    };
    match header.action.get() {
        ACTION_CONNECT if connection_id == PROTOCOL_ID => Ok(Request::Connect { transaction_id }),
        ACTION_ANNOUNCE => {
            // Bytes past the fixed layout are BEP 41 options, read by the pipeline when a hook
            // needs the URL.
            let (a, options) = AnnounceBody::ref_from_prefix(body)
                .map_err(|_| invalid("announce is too short"))?;
            let event = match a.event.get() {
                0 => AnnounceEvent::None,
                1 => AnnounceEvent::Completed,
                2 => AnnounceEvent::Started,
                3 => AnnounceEvent::Stopped,
                _ => return Err(invalid("unknown announce event")),
            };
            let port = a.port.get();
            if port == 0 {
                return Err(invalid("port 0 is not a port"));
            }
            Ok(Request::Announce {
                connection_id,
                transaction_id,
                announce: Announce {
                    info_hash: a.info_hash,
                    peer_id: a.peer_id,
                    port,
                    left: a.left.get(),
                    event,
                    num_want: a.num_want.get(),
                },
                options,
            })
        }
        ACTION_SCRAPE => {
            let whole = body.len() / 20;
            if whole == 0 {
                return Err(invalid("scrape names no info hash"));
            }
            if whole > max_scrape_hashes {
                return Err(invalid("too many info hashes in one scrape"));
            }
            let info_hashes = <[InfoHash]>::ref_from_bytes(&body[..whole * 20])
                .map_err(|_| invalid("scrape is malformed"))?;
            Ok(Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            })
        }
        _ => Err(ParseError::NotTracker),
    }
}

/// Writes a connect reply; returns its length. `out` must hold 16 bytes.
pub fn write_connect(out: &mut [u8], transaction_id: u32, connection_id: u64) -> usize {
    let reply = ConnectReply {
        action: ACTION_CONNECT.into(),
        transaction_id: transaction_id.into(),
        connection_id: connection_id.into(),
    };
    write(out, &reply)
}

/// Writes the fixed part of an announce reply; the peers follow at [`ANNOUNCE_REPLY_HEADER_LEN`].
pub fn write_announce_header(
    out: &mut [u8],
    transaction_id: u32,
    interval: u32,
    counts: SwarmCounts,
) -> usize {
    let reply = AnnounceReplyHeader {
        action: ACTION_ANNOUNCE.into(),
        transaction_id: transaction_id.into(),
        interval: interval.into(),
        leechers: counts.leechers.into(),
        seeders: counts.seeders.into(),
    };
    write(out, &reply)
}

/// Writes one peer (4- or 16-byte address, then port) at the start of `out`; returns its length.
pub fn write_peer(out: &mut [u8], ip: &[u8], port: u16) -> usize {
    out[..ip.len()].copy_from_slice(ip);
    out[ip.len()..ip.len() + 2].copy_from_slice(&port.to_be_bytes());
    ip.len() + 2
}

/// Writes the fixed part of a scrape reply; entries follow, one per hash in request order.
pub fn write_scrape_header(out: &mut [u8], transaction_id: u32) -> usize {
    let reply = ActionHeader {
        action: ACTION_SCRAPE.into(),
        transaction_id: transaction_id.into(),
    };
    write(out, &reply)
}

/// Writes one scrape entry at the start of `out`.
pub fn write_scrape_entry(out: &mut [u8], counts: SwarmCounts) -> usize {
    let entry = ScrapeEntry {
        seeders: counts.seeders.into(),
        completed: counts.downloaded.into(),
        leechers: counts.leechers.into(),
    };
    write(out, &entry)
}

/// Writes an error reply no longer than `max_len` bytes (the request's own length, so an error
/// never amplifies), cutting the message if it must. Returns 0 if not even the header fits.
pub fn write_error(out: &mut [u8], transaction_id: u32, message: &str, max_len: usize) -> usize {
    let max_len = max_len.min(out.len());
    if max_len < SCRAPE_REPLY_HEADER_LEN {
        return 0;
    }
    let header = ActionHeader {
        action: ACTION_ERROR.into(),
        transaction_id: transaction_id.into(),
    };
    let n = write(out, &header);
    let text = &message.as_bytes()[..message.len().min(max_len - n)];
    out[n..n + text.len()].copy_from_slice(text);
    n + text.len()
}

fn write<T: IntoBytes + Immutable>(out: &mut [u8], value: &T) -> usize {
    let bytes = value.as_bytes();
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(connection_id: u64, action: u32, txid: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&connection_id.to_be_bytes());
        v.extend_from_slice(&action.to_be_bytes());
        v.extend_from_slice(&txid.to_be_bytes());
        v
    }

    fn announce_packet(event: u32, port: u16, num_want: i32) -> Vec<u8> {
        let mut v = header(7, ACTION_ANNOUNCE, 99);
        v.extend_from_slice(&[1u8; 20]);
        v.extend_from_slice(&[2u8; 20]);
        v.extend_from_slice(&10u64.to_be_bytes());
        v.extend_from_slice(&20u64.to_be_bytes());
        v.extend_from_slice(&30u64.to_be_bytes());
        v.extend_from_slice(&event.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&5u32.to_be_bytes());
        v.extend_from_slice(&num_want.to_be_bytes());
        v.extend_from_slice(&port.to_be_bytes());
        assert_eq!(v.len(), ANNOUNCE_LEN);
        v
    }

    #[test]
    fn the_hash_to_prefetch_is_read_only_from_whole_announces() {
        let mut packet = announce_packet(0, 1, 1);
        packet[HEADER_LEN] = 9;
        let hash = announce_hash(&packet).expect("an announce");
        assert_eq!(hash[0], 9);
        assert_eq!(&hash[1..], &[1u8; 19]);
        assert_eq!(announce_hash(&packet[..ANNOUNCE_LEN - 1]), None);
        let mut scrape = header(7, ACTION_SCRAPE, 1);
        scrape.extend_from_slice(&[0u8; ANNOUNCE_LEN]);
        assert_eq!(announce_hash(&scrape), None);
    }

    #[test]
    fn the_header_names_its_action_even_when_the_rest_is_wrong() {
        assert_eq!(
            header_action(&header(7, ACTION_SCRAPE, 1)),
            Some(ACTION_SCRAPE)
        );
        // An announce cut short still names itself; so does an action no tracker knows.
        let cut = &announce_packet(0, 1, 1)[..40];
        assert_eq!(header_action(cut), Some(ACTION_ANNOUNCE));
        assert_eq!(header_action(&header(7, 0x0102_0304, 1)), Some(0x0102_0304));
        // Shorter than a header: no action at all.
        assert_eq!(header_action(&header(7, ACTION_ANNOUNCE, 1)[..15]), None);
    }

    #[test]
    fn connect_round_trip() {
        let p = header(PROTOCOL_ID, ACTION_CONNECT, 0xdead_beef);
        assert_eq!(
            parse_request(&p, 74),
            Ok(Request::Connect {
                transaction_id: 0xdead_beef
            })
        );
        let mut out = [0u8; 64];
        let n = write_connect(&mut out, 0xdead_beef, 0x1122_3344_5566_7788);
        assert_eq!(n, 16);
        assert_eq!(&out[..4], &0u32.to_be_bytes());
        assert_eq!(&out[4..8], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&out[8..16], &0x1122_3344_5566_7788u64.to_be_bytes());
    }

    #[test]
    fn connect_without_protocol_id_is_not_tracker_traffic() {
        let p = header(12345, ACTION_CONNECT, 1);
        assert_eq!(parse_request(&p, 74), Err(ParseError::NotTracker));
    }

    #[test]
    fn short_packets_and_unknown_actions_are_dropped() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                parse_request(&vec![0u8; len], 74),
                Err(ParseError::NotTracker)
            );
        }
        assert_eq!(
            parse_request(&header(1, 9, 1), 74),
            Err(ParseError::NotTracker)
        );
    }

    #[test]
    fn announce_fields_and_bep41_options() {
        let mut p = announce_packet(2, 6881, -1);
        p.extend_from_slice(&[2, 10, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c', b'e']);
        let Ok(Request::Announce {
            connection_id,
            transaction_id,
            announce,
            options,
        }) = parse_request(&p, 74)
        else {
            panic!("announce not parsed");
        };
        assert_eq!(options, &p[ANNOUNCE_LEN..]);
        assert_eq!((connection_id, transaction_id), (7, 99));
        assert_eq!(announce.info_hash, [1u8; 20]);
        assert_eq!(announce.peer_id, [2u8; 20]);
        assert_eq!(announce.left, 20);
        assert_eq!(announce.event, AnnounceEvent::Started);
        assert_eq!(announce.num_want, -1);
        assert_eq!(announce.port, 6881);
    }

    #[test]
    fn every_truncated_announce_is_an_error_with_its_transaction_id() {
        let p = announce_packet(0, 6881, 10);
        for len in HEADER_LEN..ANNOUNCE_LEN {
            assert_eq!(
                parse_request(&p[..len], 74),
                Err(ParseError::Invalid {
                    transaction_id: 99,
                    message: "announce is too short"
                })
            );
        }
    }

    #[test]
    fn port_zero_and_bad_event_are_refused() {
        assert!(matches!(
            parse_request(&announce_packet(0, 0, 10), 74),
            Err(ParseError::Invalid { message, .. }) if message.contains("port")
        ));
        assert!(matches!(
            parse_request(&announce_packet(4, 1, 10), 74),
            Err(ParseError::Invalid { message, .. }) if message.contains("event")
        ));
    }

    #[test]
    fn scrape_counts_hashes_and_enforces_bounds() {
        let mut p = header(7, ACTION_SCRAPE, 3);
        assert!(matches!(
            parse_request(&p, 74),
            Err(ParseError::Invalid { message, .. }) if message.contains("no info hash")
        ));
        p.extend_from_slice(&[5u8; 20]);
        p.extend_from_slice(&[6u8; 20]);
        p.extend_from_slice(&[7u8; 7]); // a partial trailing hash is ignored
        match parse_request(&p, 74) {
            Ok(Request::Scrape { info_hashes, .. }) => {
                assert_eq!(info_hashes, &[[5u8; 20], [6u8; 20]]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_request(&p, 1),
            Err(ParseError::Invalid { message, .. }) if message.contains("too many")
        ));
    }

    #[test]
    fn error_reply_never_exceeds_the_limit() {
        let mut out = [0u8; 128];
        let n = write_error(&mut out, 42, "invalid connection id", 200);
        assert_eq!(&out[..8], &[0, 0, 0, 3, 0, 0, 0, 42]);
        assert_eq!(&out[8..n], b"invalid connection id");
        assert_eq!(write_error(&mut out, 42, "invalid connection id", 16), 16);
        assert_eq!(&out[8..16], b"invalid ");
        assert_eq!(write_error(&mut out, 42, "x", 7), 0);
    }

    /// `bytes` written at `offset` of `packet`, which grows to hold them.
    fn put_at(packet: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
        if packet.len() < offset + bytes.len() {
            packet.resize(offset + bytes.len(), 0);
        }
        packet[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn announce_fields_are_read_at_their_bep15_offsets() {
        // Built from the offsets of BEP 15's table, not from this module's layout, with every
        // byte distinct so a shifted or mis-ordered field reads as another value.
        let info_hash: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
        let peer_id: [u8; 20] = std::array::from_fn(|i| i as u8 + 101);
        for (code, event) in [
            (0u32, AnnounceEvent::None),
            (1, AnnounceEvent::Completed),
            (2, AnnounceEvent::Started),
            (3, AnnounceEvent::Stopped),
        ] {
            let mut p = Vec::new();
            put_at(&mut p, 0, &0x1122_3344_5566_7788u64.to_be_bytes()); // connection_id
            put_at(&mut p, 8, &ACTION_ANNOUNCE.to_be_bytes());
            put_at(&mut p, 12, &0xa1a2_a3a4u32.to_be_bytes()); // transaction_id
            put_at(&mut p, 16, &info_hash);
            put_at(&mut p, 36, &peer_id);
            put_at(&mut p, 56, &0xb1b2_b3b4_b5b6_b7b8u64.to_be_bytes()); // downloaded
            put_at(&mut p, 64, &0xc1c2_c3c4_c5c6_c7c8u64.to_be_bytes()); // left
            put_at(&mut p, 72, &0xd1d2_d3d4_d5d6_d7d8u64.to_be_bytes()); // uploaded
            put_at(&mut p, 80, &code.to_be_bytes());
            put_at(&mut p, 84, &0xe1e2_e3e4u32.to_be_bytes()); // ip
            put_at(&mut p, 88, &0xf1f2_f3f4u32.to_be_bytes()); // key
            put_at(&mut p, 92, &(-2_000_000_000i32).to_be_bytes()); // num_want
            put_at(&mut p, 96, &0x1ae1u16.to_be_bytes()); // port
            assert_eq!(p.len(), ANNOUNCE_LEN);
            assert_eq!(
                parse_request(&p, 74),
                Ok(Request::Announce {
                    connection_id: 0x1122_3344_5566_7788,
                    transaction_id: 0xa1a2_a3a4,
                    announce: Announce {
                        info_hash,
                        peer_id,
                        port: 0x1ae1,
                        left: 0xc1c2_c3c4_c5c6_c7c8,
                        event,
                        num_want: -2_000_000_000,
                    },
                    options: &[],
                }),
                "event code {code}"
            );
        }
    }

    #[test]
    fn scrape_takes_exactly_its_limit() {
        let mut p = header(7, ACTION_SCRAPE, 3);
        for i in 0..3u8 {
            p.extend_from_slice(&[i; 20]);
        }
        match parse_request(&p, 3) {
            Ok(Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            }) => {
                assert_eq!((connection_id, transaction_id), (7, 3));
                assert_eq!(info_hashes, &[[0u8; 20], [1; 20], [2; 20]]);
            }
            other => panic!("three hashes with a limit of three: {other:?}"),
        }
        assert_eq!(
            parse_request(&p, 2),
            Err(ParseError::Invalid {
                transaction_id: 3,
                message: "too many info hashes in one scrape"
            })
        );
    }

    #[test]
    fn replies_have_bep15_offsets() {
        // Every reply field at its BEP 15 offset, with distinct bytes per field.
        let mut out = [0u8; 64];
        assert_eq!(
            write_connect(&mut out, 0xa1a2_a3a4, 0x1122_3344_5566_7788),
            16
        );
        assert_eq!(
            out[..16],
            [0, 0, 0, 0, 0xa1, 0xa2, 0xa3, 0xa4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        let counts = SwarmCounts {
            seeders: 0xc1c2_c3c4,
            leechers: 0xd1d2_d3d4,
            downloaded: 0xe1e2_e3e4,
        };
        assert_eq!(
            write_announce_header(&mut out, 0xa1a2_a3a4, 0xb1b2_b3b4, counts),
            ANNOUNCE_REPLY_HEADER_LEN
        );
        assert_eq!(out[..4], ACTION_ANNOUNCE.to_be_bytes());
        assert_eq!(out[4..8], [0xa1, 0xa2, 0xa3, 0xa4]);
        assert_eq!(out[8..12], [0xb1, 0xb2, 0xb3, 0xb4], "interval");
        assert_eq!(out[12..16], [0xd1, 0xd2, 0xd3, 0xd4], "leechers");
        assert_eq!(out[16..20], [0xc1, 0xc2, 0xc3, 0xc4], "seeders");
        let mut peer = [0xffu8; 8];
        assert_eq!(write_peer(&mut peer, &[127, 0, 0, 1], 0x1ae1), PEER_V4_LEN);
        assert_eq!(peer, [127, 0, 0, 1, 0x1a, 0xe1, 0xff, 0xff]);
        let v6: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        let mut peer = [0xffu8; 20];
        assert_eq!(write_peer(&mut peer, &v6, 0x1ae1), PEER_V6_LEN);
        assert_eq!(peer[..16], v6);
        assert_eq!(
            peer[16..],
            [0x1a, 0xe1, 0xff, 0xff],
            "port, then nothing written"
        );
        assert_eq!(
            write_scrape_header(&mut out, 0xa1a2_a3a4),
            SCRAPE_REPLY_HEADER_LEN
        );
        assert_eq!(out[..8], [0, 0, 0, 2, 0xa1, 0xa2, 0xa3, 0xa4]);
        assert_eq!(write_scrape_entry(&mut out, counts), SCRAPE_ENTRY_LEN);
        assert_eq!(out[..4], [0xc1, 0xc2, 0xc3, 0xc4], "seeders");
        assert_eq!(out[4..8], [0xe1, 0xe2, 0xe3, 0xe4], "completed");
        assert_eq!(out[8..12], [0xd1, 0xd2, 0xd3, 0xd4], "leechers");
    }

    #[test]
    fn error_reply_is_cut_at_its_limit_exactly() {
        let mut out = [0xffu8; 32];
        // Room for the header only: the header, no text.
        assert_eq!(write_error(&mut out, 0xa1a2_a3a4, "nope", 8), 8);
        assert_eq!(out[..8], [0, 0, 0, 3, 0xa1, 0xa2, 0xa3, 0xa4]);
        assert_eq!(out[8], 0xff, "no text past the limit");
        // One byte short of a header: nothing at all.
        assert_eq!(write_error(&mut out, 1, "nope", 7), 0);
        // Room for part of the text.
        assert_eq!(write_error(&mut out, 1, "nope", 10), 10);
        assert_eq!(&out[8..10], b"no");
        // The buffer bounds the reply as much as the limit does.
        let mut small = [0u8; 12];
        assert_eq!(write_error(&mut small, 1, "a longer text", 100), 12);
        assert_eq!(&small[8..], b"a lo");
    }
}
