//! The swarm snapshot reader (`state::snapshot::decode`) on any bytes, twice: as they are (almost
//! always stopped by the magic or a checksum) and resealed (magic, version, length and both
//! CRCs set to what the bytes need), so the record parser behind the checksums is fuzzed too.
//! What must hold: never a panic or an allocation the bytes cannot back; an error names a place
//! inside the file; a decoded snapshot holds only peers the writer could have written (port not
//! 0, ttl at least 1) and, written again by the encoder, decodes to the same snapshot, in the
//! same bytes when the file had at most one section (the format has one encoding per swarm) and
//! is of the current version (an older one is written again without its peer ids).
//!
//! The body of the `snapshot` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/snapshot.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use hayate_tracker::state::snapshot::{decode, encode_file, SectionWriter, SnapshotError, VERSION};

const HEADER_FIELDS: usize = 56;
const HEADER_LEN: usize = 60;
const TRAILER_LEN: usize = 20;

/// What one input came to as it is: the seed replay checks the seeds reach each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded, with how many IPv4 and IPv6 peers.
    Decoded {
        v4: usize,
        v6: usize,
    },
    Empty,
    NotASnapshot,
    NewerVersion,
    Truncated,
    Checksum,
    Malformed,
}

/// Sets magic, version, length and both CRCs to what `f` needs to pass them. A version this
/// build reads is kept, so each version's record layout is fuzzed; any other becomes `VERSION`.
pub fn reseal(f: &mut [u8]) {
    assert!(f.len() >= HEADER_LEN + TRAILER_LEN);
    f[..8].copy_from_slice(b"HAYATE\x00S");
    let version = u32::from_le_bytes(f[8..12].try_into().unwrap());
    if !(1..=VERSION).contains(&version) {
        f[8..12].copy_from_slice(&VERSION.to_le_bytes());
    }
    let len = f.len() as u64;
    f[12..20].copy_from_slice(&len.to_le_bytes());
    let h = crc32fast::hash(&f[..HEADER_FIELDS]);
    f[HEADER_FIELDS..HEADER_LEN].copy_from_slice(&h.to_le_bytes());
    let n = f.len() - 4;
    let c = crc32fast::hash(&f[..n]);
    f[n..].copy_from_slice(&c.to_le_bytes());
}

pub fn run(data: &[u8]) -> Outcome {
    let outcome = check(data);
    if data.len() >= HEADER_LEN + TRAILER_LEN {
        let mut f = data.to_vec();
        reseal(&mut f);
        let resealed = check(&f);
        assert!(
            matches!(resealed, Outcome::Decoded { .. } | Outcome::Malformed),
            "a resealed file can only decode or be malformed: {resealed:?}"
        );
    }
    outcome
}

fn check(bytes: &[u8]) -> Outcome {
    let len = bytes.len();
    let snapshot = match decode(bytes) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return match e {
                SnapshotError::Empty => {
                    assert_eq!(len, 0);
                    Outcome::Empty
                }
                SnapshotError::NotASnapshot => Outcome::NotASnapshot,
                SnapshotError::NewerVersion { found, supported } => {
                    assert!(found > supported, "{e}");
                    Outcome::NewerVersion
                }
                SnapshotError::Truncated { offset, needed } => {
                    assert!(offset == len && needed > 0, "{e} in {len} bytes");
                    Outcome::Truncated
                }
                SnapshotError::Checksum { stored, computed } => {
                    assert_ne!(stored, computed);
                    Outcome::Checksum
                }
                SnapshotError::Malformed { offset, .. } => {
                    assert!(offset <= len, "{e} in {len} bytes");
                    Outcome::Malformed
                }
            };
        }
    };
    let mut w = SectionWriter::new();
    let (mut v4, mut v6) = (0, 0);
    for t in &snapshot.torrents {
        assert!(t.v4.iter().all(|p| p.port != 0 && p.ttl_secs >= 1));
        assert!(t.v6.iter().all(|p| p.port != 0 && p.ttl_secs >= 1));
        w.torrent(
            &t.info_hash,
            t.downloaded,
            t.keep_secs,
            t.v4.len() as u32,
            t.v6.len() as u32,
        );
        t.v4.iter().for_each(|p| w.peer_v4(p));
        t.v6.iter().for_each(|p| w.peer_v6(p));
        v4 += t.v4.len();
        v6 += t.v6.len();
    }
    // The header's section count (offset 52): all of them written back as one, or none if none.
    let sections = u32::from_le_bytes(bytes[52..56].try_into().unwrap()) as usize;
    let one = [w.as_bytes()];
    let written: &[&[u8]] = if sections == 0 { &[] } else { &one };
    let mut again = Vec::new();
    encode_file(&snapshot.header, written, &mut again);
    assert_eq!(
        decode(&again).as_ref(),
        Ok(&snapshot),
        "written back, decoded alike"
    );
    // Each section but one had its own 8-byte length; version 1 also a 20-byte id per peer.
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let ids = if version == 1 { 20 * (v4 + v6) } else { 0 };
    assert_eq!(again.len(), len - 8 * sections.saturating_sub(1) - ids);
    if sections <= 1 && version == VERSION {
        assert!(again == bytes, "one encoding per swarm");
    }
    Outcome::Decoded { v4, v6 }
}
