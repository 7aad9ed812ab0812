//! Property tests of the swarm snapshot format (`state::snapshot`):
//! - written with `SectionWriter` and `encode_file`, random shards (random torrents, 0..300 peers
//!   per family, random flags, lifetimes and `downloaded`, over several sections) decode back to
//!   exactly what was written, in order;
//! - every truncation of a valid file (each prefix length of a small file, a sample of a large
//!   one's) is refused as `Truncated` at exactly the point the file ends, never misread;
//! - every single-byte flip is refused: in the magic as a foreign file, in the version as a
//!   version error, anywhere else as a checksum mismatch;
//! - a flip whose checksums were then fixed (what a buggy writer or the fuzzer makes) decodes or
//!   is refused, never a panic.

use hayate_tracker::state::snapshot::{
    decode, encode_file, Header, PeerRecord, SectionWriter, Snapshot, SnapshotError, TorrentRecord,
    VERSION,
};
use proptest::prelude::*;

/// Where the header's CRC sits and what it covers (the module's layout table).
const HEADER_FIELDS: usize = 56;
const HEADER_LEN: usize = 60;

fn peer<I: std::fmt::Debug + Clone>(
    ip: impl Strategy<Value = I>,
) -> impl Strategy<Value = PeerRecord<I>> {
    (ip, 1u16.., any::<bool>(), any::<bool>(), 1u32..).prop_map(
        |(ip, port, seeder, counted, ttl_secs)| PeerRecord {
            ip,
            port,
            seeder,
            counted,
            ttl_secs,
        },
    )
}

fn torrent() -> impl Strategy<Value = TorrentRecord> {
    (
        any::<[u8; 20]>(),
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(peer(any::<[u8; 4]>()), 0..300),
        prop::collection::vec(peer(any::<[u8; 16]>()), 0..300),
    )
        .prop_map(|(info_hash, downloaded, keep, v4, v6)| TorrentRecord {
            info_hash,
            downloaded,
            // The writer's rule: a torrent with peers keeps nothing past them.
            keep_secs: if v4.is_empty() && v6.is_empty() {
                keep
            } else {
                0
            },
            v4,
            v6,
        })
}

/// Sections (one per shard) of torrents; some sections empty.
fn shards() -> impl Strategy<Value = Vec<Vec<TorrentRecord>>> {
    prop::collection::vec(prop::collection::vec(torrent(), 0..4), 0..5)
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u64>(), any::<u64>(), any::<[u8; 16]>()).prop_map(
        |(written_unix, clock_origin_unix, connection_key)| Header {
            written_unix,
            clock_origin_unix,
            connection_key,
        },
    )
}

/// The file the workers would write for these shards, one reused writer per shard.
fn encode(header: &Header, shards: &[Vec<TorrentRecord>]) -> Vec<u8> {
    let mut writers: Vec<SectionWriter> = Vec::new();
    for shard in shards {
        let mut w = SectionWriter::new();
        for t in shard {
            w.torrent(
                &t.info_hash,
                t.downloaded,
                t.keep_secs,
                t.v4.len() as u32,
                t.v6.len() as u32,
            );
            t.v4.iter().for_each(|p| w.peer_v4(p));
            t.v6.iter().for_each(|p| w.peer_v6(p));
        }
        let peers: usize = shard.iter().map(|t| t.v4.len() + t.v6.len()).sum();
        assert_eq!(w.torrents(), shard.len() as u64);
        assert_eq!(w.peers(), peers as u64);
        writers.push(w);
    }
    let sections: Vec<&[u8]> = writers.iter().map(|w| w.as_bytes()).collect();
    let mut out = vec![0xee; 3]; // encode_file clears what was there
    encode_file(header, &sections, &mut out);
    out
}

/// The prefix lengths to cut at: all of a small file's, else the header and trailer regions
/// and a random sample of the rest.
fn cuts(len: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    if len <= 4096 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..100).chain(len - 40..len).collect();
    cuts.extend((0..300).map(|_| rng.usize(100..len - 40)));
    cuts
}

fn positions(len: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    if len <= 4096 {
        return (0..len).collect();
    }
    let mut at: Vec<usize> = (0..100).chain(len - 40..len).collect();
    at.extend((0..300).map(|_| rng.usize(100..len - 40)));
    at
}

/// Sets the header's length and both CRCs to what these bytes need.
fn reseal(f: &mut [u8]) {
    let len = f.len() as u64;
    f[12..20].copy_from_slice(&len.to_le_bytes());
    let h = crc32fast::hash(&f[..HEADER_FIELDS]);
    f[HEADER_FIELDS..HEADER_LEN].copy_from_slice(&h.to_le_bytes());
    let n = f.len() - 4;
    let c = crc32fast::hash(&f[..n]);
    f[n..].copy_from_slice(&c.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn encode_then_decode_is_the_identity(header in header(), shards in shards()) {
        let file = encode(&header, &shards);
        let want = Snapshot {
            header,
            torrents: shards.into_iter().flatten().collect(),
        };
        prop_assert_eq!(decode(&file), Ok(want));
    }

    #[test]
    fn every_truncation_is_refused_where_the_file_ends(
        header in header(),
        shards in shards(),
        seed in any::<u64>(),
    ) {
        let file = encode(&header, &shards);
        let len = file.len();
        let mut rng = fastrand::Rng::with_seed(seed);
        for cut in cuts(len, &mut rng) {
            let want = match cut {
                0 => SnapshotError::Empty,
                1..12 => SnapshotError::Truncated { offset: cut, needed: 12 - cut },
                12..HEADER_LEN => SnapshotError::Truncated { offset: cut, needed: HEADER_LEN - cut },
                _ => SnapshotError::Truncated { offset: cut, needed: len - cut },
            };
            prop_assert_eq!(decode(&file[..cut]), Err(want), "cut at {} of {}", cut, len);
        }
    }

    #[test]
    fn every_flipped_byte_is_refused(
        header in header(),
        shards in shards(),
        seed in any::<u64>(),
    ) {
        let file = encode(&header, &shards);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut flipped = file.clone();
        for at in positions(file.len(), &mut rng) {
            let mask = rng.u8(1..);
            flipped[at] ^= mask;
            let got = decode(&flipped);
            flipped[at] = file[at];
            match at {
                0..8 => prop_assert_eq!(got, Err(SnapshotError::NotASnapshot)),
                // The version the flip made decides: 0 is malformed, a later one is refused
                // before any checksum, an earlier one (still read) fails the header's CRC.
                8..12 => match VERSION ^ (u32::from(mask) << (8 * (at - 8))) {
                    0 => prop_assert_eq!(
                        got,
                        Err(SnapshotError::Malformed { offset: 8, what: "format version 0" })
                    ),
                    found if found > VERSION => prop_assert_eq!(
                        got,
                        Err(SnapshotError::NewerVersion { found, supported: VERSION })
                    ),
                    _ => prop_assert!(
                        matches!(got, Err(SnapshotError::Checksum { stored, computed }) if stored != computed),
                        "flip {:#04x} at {}: {:?}", mask, at, got
                    ),
                },
                _ => prop_assert!(
                    matches!(got, Err(SnapshotError::Checksum { stored, computed }) if stored != computed),
                    "flip {:#04x} at {}: {:?}", mask, at, got
                ),
            }
        }
    }

    /// Past the checksums: a flipped record byte in a file whose CRCs were recomputed decodes
    /// (a different but valid snapshot) or is refused as malformed; never a panic, and never an
    /// error that blames the checksum or the length.
    #[test]
    fn a_resealed_flip_decodes_or_is_malformed(
        header in header(),
        shards in shards(),
        seed in any::<u64>(),
    ) {
        let file = encode(&header, &shards);
        let mut rng = fastrand::Rng::with_seed(seed);
        for at in positions(file.len(), &mut rng) {
            if at < 52 || (HEADER_FIELDS..HEADER_LEN).contains(&at) || at >= file.len() - 4 {
                continue; // magic, version, length, header fields and CRCs: the test above
            }
            let mut f = file.clone();
            f[at] ^= rng.u8(1..);
            reseal(&mut f);
            match decode(&f) {
                Ok(_) | Err(SnapshotError::Malformed { .. }) => {}
                Err(e) => prop_assert!(false, "flip at {}: {:?}", at, e),
            }
        }
    }
}
