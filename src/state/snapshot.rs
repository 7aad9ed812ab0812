//! The swarm snapshot file: every peer, every torrent's `downloaded` and the connection-id key,
//! as written by the workers (one section per shard) and read back at start-up. Pure: bytes in,
//! bytes out, no I/O (`state::files` writes and reads the file).
//!
//! Little-endian throughout. Offsets are from the start of the file.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"HAYATE\0S"` |
//! | 8 | 4 | format version (`VERSION`, 2) |
//! | 12 | 8 | length of the whole file in bytes |
//! | 20 | 8 | `written_unix` |
//! | 28 | 8 | `clock_origin_unix` |
//! | 36 | 16 | `connection_key` |
//! | 52 | 4 | section count |
//! | 56 | 4 | CRC-32 of bytes 0..56 (the header) |
//! | 60 | .. | the sections, one after the other |
//! | len-20 | 8 | torrents in the whole file |
//! | len-12 | 8 | peers in the whole file |
//! | len-4 | 4 | CRC-32 of bytes 0..len-4 |
//!
//! A section is a u64 byte length and then that many bytes of torrents. A torrent is 36 bytes:
//! info hash (20), `downloaded` u32, `keep_secs` u32, IPv4 peer count u32, IPv6 peer count u32;
//! then its IPv4 peers (11 bytes each: address 4, port u16, flags u8, ttl u32) and its IPv6 peers
//! (23 bytes each: address 16, then the same). Flags: bit 0 seeder, bit 1 counted; the other bits
//! must be zero. Version 1 (hayate before peer ids left the swarm) also had each peer's 20-byte
//! peer id between its port and flags; such a file is still read, the ids skipped.
//!
//! Why the header has its own CRC and the file length: a reader can tell a truncated file (shorter
//! than its trusted header says) from a corrupt one, and a flipped byte anywhere past the version
//! is reported as a checksum mismatch rather than as whatever the flip made the bytes look like.
//! Both checksums are checked before any record is parsed; the records are still parsed as if
//! hostile (counts are checked against the bytes actually there before anything is allocated).

use crate::protocol::InfoHash;

pub const VERSION: u32 = 2;
pub const FILE_NAME: &str = "swarm.snap";

const MAGIC: [u8; 8] = *b"HAYATE\x00S";
/// Bytes covered by the header CRC.
const HEADER_FIELDS: usize = 56;
const HEADER_LEN: usize = HEADER_FIELDS + 4;
const TRAILER_LEN: usize = 20;
const TORRENT_LEN: usize = 36;
const PEER_V4_LEN: usize = 4 + PEER_TAIL_LEN;
const PEER_V6_LEN: usize = 16 + PEER_TAIL_LEN;
/// port, flags, ttl: what both families store after the address.
const PEER_TAIL_LEN: usize = 2 + 1 + 4;

/// Where a format version keeps a peer's fields after its address.
#[derive(Debug, Clone, Copy)]
struct PeerLayout {
    /// Bytes after the address.
    tail: usize,
    /// Offset of the flags byte within them; the ttl follows it.
    flags_at: usize,
}

impl PeerLayout {
    fn of(version: u32) -> Self {
        // Version 1's 20-byte peer id sat between the port and the flags.
        let id = if version == 1 { 20 } else { 0 };
        Self {
            tail: PEER_TAIL_LEN + id,
            flags_at: 2 + id,
        }
    }
}
const FLAG_SEEDER: u8 = 1;
const FLAG_COUNTED: u8 = 2;

/// One peer as stored. `I` is [u8; 4] or [u8; 16].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRecord<I> {
    pub ip: I,
    pub port: u16,
    pub seeder: bool,
    /// Its completion was already counted in `downloaded` during this swarm membership.
    pub counted: bool,
    /// Seconds it has left to live (>= 1).
    pub ttl_secs: u32,
}

/// What the whole file carries besides the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Unix seconds when the file was written.
    pub written_unix: u64,
    /// Unix seconds of the writing process's clock zero, and its connection-id key, so ids
    /// clients hold stay valid across a restart.
    pub clock_origin_unix: u64,
    pub connection_key: [u8; 16],
}

/// Builds one shard's section without allocating per torrent: call `torrent` then exactly
/// `v4` + `v6` peers (v4 first), repeat. Reuses its buffer across snapshots (`clear`).
#[derive(Debug, Default)]
pub struct SectionWriter {
    buf: Vec<u8>,
    torrents: u64,
    peers: u64,
    /// Peers the current torrent still expects, per family; v4 must reach 0 before any v6.
    pending_v4: u32,
    pending_v6: u32,
}

impl SectionWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the section but keeps the buffer's capacity for the next snapshot.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.torrents = 0;
        self.peers = 0;
        self.pending_v4 = 0;
        self.pending_v6 = 0;
    }

    /// `keep_secs`: for a torrent with no peers, seconds its `downloaded` is still kept (0 when
    /// it has peers).
    pub fn torrent(
        &mut self,
        info_hash: &InfoHash,
        downloaded: u32,
        keep_secs: u32,
        v4: u32,
        v6: u32,
    ) {
        debug_assert!(
            self.pending_v4 == 0 && self.pending_v6 == 0,
            "SectionWriter::torrent: the previous torrent still expects {} IPv4 and {} IPv6 peers",
            self.pending_v4,
            self.pending_v6
        );
        self.buf
            .reserve(TORRENT_LEN + v4 as usize * PEER_V4_LEN + v6 as usize * PEER_V6_LEN);
        self.buf.extend_from_slice(info_hash);
        self.buf.extend_from_slice(&downloaded.to_le_bytes());
        self.buf.extend_from_slice(&keep_secs.to_le_bytes());
        self.buf.extend_from_slice(&v4.to_le_bytes());
        self.buf.extend_from_slice(&v6.to_le_bytes());
        self.torrents += 1;
        self.pending_v4 = v4;
        self.pending_v6 = v6;
    }

    pub fn peer_v4(&mut self, p: &PeerRecord<[u8; 4]>) {
        debug_assert!(
            self.pending_v4 > 0,
            "SectionWriter::peer_v4: the torrent announced no more IPv4 peers"
        );
        self.pending_v4 = self.pending_v4.saturating_sub(1);
        self.buf.extend_from_slice(&p.ip);
        self.peer_tail(p.port, p.seeder, p.counted, p.ttl_secs);
    }

    pub fn peer_v6(&mut self, p: &PeerRecord<[u8; 16]>) {
        debug_assert!(
            self.pending_v4 == 0 && self.pending_v6 > 0,
            "SectionWriter::peer_v6: {} IPv4 peers still expected first, {} IPv6 left",
            self.pending_v4,
            self.pending_v6
        );
        self.pending_v6 = self.pending_v6.saturating_sub(1);
        self.buf.extend_from_slice(&p.ip);
        self.peer_tail(p.port, p.seeder, p.counted, p.ttl_secs);
    }

    fn peer_tail(&mut self, port: u16, seeder: bool, counted: bool, ttl: u32) {
        // The reader refuses these, so writing one would cost the whole file at the next start.
        debug_assert!(port != 0, "SectionWriter: a peer with port 0");
        debug_assert!(ttl >= 1, "SectionWriter: a peer with no time left to live");
        self.buf.extend_from_slice(&port.to_le_bytes());
        let flags = if seeder { FLAG_SEEDER } else { 0 } | if counted { FLAG_COUNTED } else { 0 };
        self.buf.push(flags);
        self.buf.extend_from_slice(&ttl.to_le_bytes());
        self.peers += 1;
    }

    pub fn torrents(&self) -> u64 {
        self.torrents
    }

    pub fn peers(&self) -> u64 {
        self.peers
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The finished section (bytes). Panics (debug_assert is enough) if peers are missing.
    pub fn as_bytes(&self) -> &[u8] {
        debug_assert!(
            self.pending_v4 == 0 && self.pending_v6 == 0,
            "SectionWriter::as_bytes: the last torrent still expects {} IPv4 and {} IPv6 peers",
            self.pending_v4,
            self.pending_v6
        );
        &self.buf
    }
}

/// Counts the torrents and peers of a section as `SectionWriter` made it, for the trailer.
/// A section cut short (a caller bug) counts what is whole in it; the reader then refuses the
/// file, which is better than a writer that panics in a worker.
fn count_section(section: &[u8]) -> (u64, u64) {
    let (mut torrents, mut peers, mut at) = (0u64, 0u64, 0usize);
    while let Some(t) = section.get(at..at.saturating_add(TORRENT_LEN)) {
        let v4 = u32_at(t, 28) as usize;
        let v6 = u32_at(t, 32) as usize;
        torrents += 1;
        peers += (v4 + v6) as u64;
        at = at
            .saturating_add(TORRENT_LEN)
            .saturating_add(v4.saturating_mul(PEER_V4_LEN))
            .saturating_add(v6.saturating_mul(PEER_V6_LEN));
    }
    (torrents, peers)
}

/// The whole file: header, the sections in order, and a trailer (counts + CRC-32 of everything
/// before it, crc32fast). Writes into `out` (cleared first).
pub fn encode_file(header: &Header, sections: &[&[u8]], out: &mut Vec<u8>) {
    out.clear();
    let body: usize = sections.iter().map(|s| 8 + s.len()).sum();
    let total = HEADER_LEN + body + TRAILER_LEN;
    out.reserve(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(total as u64).to_le_bytes());
    out.extend_from_slice(&header.written_unix.to_le_bytes());
    out.extend_from_slice(&header.clock_origin_unix.to_le_bytes());
    out.extend_from_slice(&header.connection_key);
    let count = u32::try_from(sections.len()).expect("fewer than 2^32 sections (one per worker)");
    out.extend_from_slice(&count.to_le_bytes());
    let header_crc = crc32fast::hash(out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    let (mut torrents, mut peers) = (0u64, 0u64);
    for s in sections {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
        let (t, p) = count_section(s);
        torrents += t;
        peers += p;
    }
    out.extend_from_slice(&torrents.to_le_bytes());
    out.extend_from_slice(&peers.to_le_bytes());
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), total);
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TorrentRecord {
    pub info_hash: InfoHash,
    pub downloaded: u32,
    pub keep_secs: u32,
    pub v4: Vec<PeerRecord<[u8; 4]>>,
    pub v6: Vec<PeerRecord<[u8; 16]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub header: Header,
    pub torrents: Vec<TorrentRecord>,
}

/// Why a file is not a snapshot this build can restore. Offsets are bytes from the file's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the file is empty")]
    Empty,
    #[error("not a hayate swarm snapshot (its first 8 bytes are not the magic HAYATE\\0S)")]
    NotASnapshot,
    #[error(
        "written by a newer hayate: format version {found}, this build reads up to {supported}"
    )]
    NewerVersion { found: u32, supported: u32 },
    #[error("truncated: the file ends at byte {offset}, {needed} more bytes expected there")]
    Truncated { offset: usize, needed: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn truncated(len: usize, want: usize) -> SnapshotError {
    SnapshotError::Truncated {
        offset: len,
        needed: want - len,
    }
}

pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let len = bytes.len();
    if len == 0 {
        return Err(SnapshotError::Empty);
    }
    let seen = len.min(MAGIC.len());
    if bytes[..seen] != MAGIC[..seen] {
        return Err(SnapshotError::NotASnapshot);
    }
    if len < 12 {
        return Err(truncated(len, 12));
    }
    // The version decides the layout, so it is read before any checksum: a newer file's header
    // may not be where this version's is.
    let version = u32_at(bytes, 8);
    if version > VERSION {
        return Err(SnapshotError::NewerVersion {
            found: version,
            supported: VERSION,
        });
    }
    if version == 0 {
        return Err(SnapshotError::Malformed {
            offset: 8,
            what: "format version 0",
        });
    }
    if len < HEADER_LEN {
        return Err(truncated(len, HEADER_LEN));
    }
    let stored = u32_at(bytes, HEADER_FIELDS);
    let computed = crc32fast::hash(&bytes[..HEADER_FIELDS]);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    // The header is now trusted, including the length the writer gave the whole file.
    let declared = u64_at(bytes, 12);
    if declared < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(SnapshotError::Malformed {
            offset: 12,
            what: "file length shorter than a header and a trailer",
        });
    }
    if (len as u64) < declared {
        return Err(SnapshotError::Truncated {
            offset: len,
            needed: usize::try_from(declared - len as u64).unwrap_or(usize::MAX),
        });
    }
    if len as u64 > declared {
        return Err(SnapshotError::Malformed {
            offset: declared as usize,
            what: "bytes after the end the header gives",
        });
    }
    let stored = u32_at(bytes, len - 4);
    let computed = crc32fast::hash(&bytes[..len - 4]);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }

    let header = Header {
        written_unix: u64_at(bytes, 20),
        clock_origin_unix: u64_at(bytes, 28),
        connection_key: bytes[36..52].try_into().expect("16 bytes"),
    };
    let sections = u32_at(bytes, 52);
    let body_end = len - TRAILER_LEN;
    let want_torrents = u64_at(bytes, body_end);
    let want_peers = u64_at(bytes, body_end + 8);
    // Capacity from a count only as far as the bytes there could hold that many torrents.
    let room = (body_end - HEADER_LEN) / TORRENT_LEN;
    let mut torrents = Vec::with_capacity(room.min(usize::try_from(want_torrents).unwrap_or(0)));
    let mut peers = 0u64;
    let layout = PeerLayout::of(version);
    let mut at = HEADER_LEN;
    for _ in 0..sections {
        if body_end - at < 8 {
            return Err(SnapshotError::Malformed {
                offset: at,
                what: "fewer sections than the header counts",
            });
        }
        let section_len = u64_at(bytes, at);
        at += 8;
        if section_len > (body_end - at) as u64 {
            return Err(SnapshotError::Malformed {
                offset: at - 8,
                what: "section longer than the rest of the file",
            });
        }
        let section_end = at + section_len as usize;
        while at < section_end {
            let t = decode_torrent(bytes, at, section_end, layout)?;
            at = t.0;
            peers += (t.1.v4.len() + t.1.v6.len()) as u64;
            torrents.push(t.1);
        }
    }
    if at != body_end {
        return Err(SnapshotError::Malformed {
            offset: at,
            what: "bytes after the last section",
        });
    }
    if torrents.len() as u64 != want_torrents || peers != want_peers {
        return Err(SnapshotError::Malformed {
            offset: body_end,
            what: "the trailer's torrent or peer count disagrees with the sections",
        });
    }
    Ok(Snapshot { header, torrents })
}

/// One torrent starting at `at` inside a section ending at `end`; returns where the next starts.
fn decode_torrent(
    bytes: &[u8],
    at: usize,
    end: usize,
    layout: PeerLayout,
) -> Result<(usize, TorrentRecord), SnapshotError> {
    let (peer_v4_len, peer_v6_len) = (4 + layout.tail, 16 + layout.tail);
    if end - at < TORRENT_LEN {
        return Err(SnapshotError::Malformed {
            offset: at,
            what: "torrent record cut by the end of its section",
        });
    }
    let t = &bytes[at..at + TORRENT_LEN];
    let v4 = u32_at(t, 28) as usize;
    let v6 = u32_at(t, 32) as usize;
    let peers_at = at + TORRENT_LEN;
    // u64: 4 billion peers of 23 bytes do not fit a 32-bit usize.
    let need = v4 as u64 * peer_v4_len as u64 + v6 as u64 * peer_v6_len as u64;
    if need > (end - peers_at) as u64 {
        return Err(SnapshotError::Malformed {
            offset: at + 28,
            what: "peer counts run past the end of the section",
        });
    }
    let v6_at = peers_at + v4 * peer_v4_len;
    let next = v6_at + v6 * peer_v6_len;
    let mut record = TorrentRecord {
        info_hash: t[..20].try_into().expect("20 bytes"),
        downloaded: u32_at(t, 20),
        keep_secs: u32_at(t, 24),
        v4: Vec::with_capacity(v4),
        v6: Vec::with_capacity(v6),
    };
    for (i, p) in bytes[peers_at..v6_at].chunks_exact(peer_v4_len).enumerate() {
        let offset = peers_at + i * peer_v4_len;
        let ip: [u8; 4] = p[..4].try_into().expect("4 bytes");
        record
            .v4
            .push(decode_peer(ip, &p[4..], offset + 4, layout)?);
    }
    for (i, p) in bytes[v6_at..next].chunks_exact(peer_v6_len).enumerate() {
        let offset = v6_at + i * peer_v6_len;
        let ip: [u8; 16] = p[..16].try_into().expect("16 bytes");
        record
            .v6
            .push(decode_peer(ip, &p[16..], offset + 16, layout)?);
    }
    Ok((next, record))
}

/// The part of a peer after its address (`tail`, starting at byte `offset` of the file).
fn decode_peer<I>(
    ip: I,
    tail: &[u8],
    offset: usize,
    layout: PeerLayout,
) -> Result<PeerRecord<I>, SnapshotError> {
    let port = u16::from_le_bytes([tail[0], tail[1]]);
    if port == 0 {
        return Err(SnapshotError::Malformed {
            offset,
            what: "peer with port 0",
        });
    }
    let flags = tail[layout.flags_at];
    if flags & !(FLAG_SEEDER | FLAG_COUNTED) != 0 {
        return Err(SnapshotError::Malformed {
            offset: offset + layout.flags_at,
            what: "peer flags with unknown bits set",
        });
    }
    let ttl_secs = u32_at(tail, layout.flags_at + 1);
    if ttl_secs == 0 {
        return Err(SnapshotError::Malformed {
            offset: offset + layout.flags_at + 1,
            what: "peer with no time left to live (ttl 0)",
        });
    }
    Ok(PeerRecord {
        ip,
        port,
        seeder: flags & FLAG_SEEDER != 0,
        counted: flags & FLAG_COUNTED != 0,
        ttl_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            written_unix: 1_790_000_000,
            clock_origin_unix: 1_789_990_000,
            connection_key: [0xab; 16],
        }
    }

    fn peer4(port: u16, ttl_secs: u32) -> PeerRecord<[u8; 4]> {
        PeerRecord {
            ip: [192, 0, 2, 7],
            port,
            seeder: false,
            counted: true,
            ttl_secs,
        }
    }

    /// Recomputes the header's length and both CRCs, as a writer that meant these bytes would:
    /// what is then refused is refused for its records, not its checksum.
    fn reseal(f: &mut [u8]) {
        let len = f.len() as u64;
        f[12..20].copy_from_slice(&len.to_le_bytes());
        let h = crc32fast::hash(&f[..HEADER_FIELDS]);
        f[HEADER_FIELDS..HEADER_LEN].copy_from_slice(&h.to_le_bytes());
        let n = f.len() - 4;
        let c = crc32fast::hash(&f[..n]);
        f[n..].copy_from_slice(&c.to_le_bytes());
    }

    fn one_torrent(p: &PeerRecord<[u8; 4]>) -> Vec<u8> {
        let mut w = SectionWriter::new();
        w.torrent(&[1; 20], 5, 0, 1, 0);
        w.peer_v4(p);
        let mut out = Vec::new();
        encode_file(&header(), &[w.as_bytes()], &mut out);
        out
    }

    #[test]
    fn layout_matches_the_table() {
        let f = one_torrent(&peer4(6881, 30));
        assert_eq!(
            f.len(),
            HEADER_LEN + 8 + TORRENT_LEN + PEER_V4_LEN + TRAILER_LEN
        );
        assert_eq!(&f[..8], b"HAYATE\0S");
        assert_eq!(u32_at(&f, 8), 2);
        assert_eq!(u64_at(&f, 12), f.len() as u64);
        assert_eq!(u64_at(&f, 20), 1_790_000_000);
        assert_eq!(u32_at(&f, 52), 1, "one section");
        assert_eq!(u64_at(&f, 60), (TORRENT_LEN + PEER_V4_LEN) as u64);
        let peer = HEADER_LEN + 8 + TORRENT_LEN;
        assert_eq!(&f[peer..peer + 4], &[192, 0, 2, 7]);
        assert_eq!(&f[peer + 4..peer + 6], &6881u16.to_le_bytes());
        assert_eq!(f[peer + 6], FLAG_COUNTED);
        assert_eq!(u32_at(&f, peer + 7), 30);
        assert_eq!(u64_at(&f, f.len() - 20), 1, "torrents");
        assert_eq!(u64_at(&f, f.len() - 12), 1, "peers");
        assert_eq!(u32_at(&f, f.len() - 4), crc32fast::hash(&f[..f.len() - 4]));
    }

    #[test]
    fn a_file_with_no_sections_decodes_empty() {
        let mut out = Vec::new();
        encode_file(&header(), &[], &mut out);
        assert_eq!(out.len(), HEADER_LEN + TRAILER_LEN);
        let s = decode(&out).unwrap();
        assert_eq!((s.header, s.torrents.len()), (header(), 0));
    }

    #[test]
    fn port_zero_ttl_zero_and_unknown_flags_are_malformed() {
        let peer = HEADER_LEN + 8 + TORRENT_LEN;
        let mut f = one_torrent(&peer4(6881, 30));
        f[peer + 4..peer + 6].copy_from_slice(&[0, 0]);
        reseal(&mut f);
        assert_eq!(
            decode(&f),
            Err(SnapshotError::Malformed {
                offset: peer + 4,
                what: "peer with port 0"
            })
        );
        let mut f = one_torrent(&peer4(6881, 30));
        f[peer + 7..peer + 11].copy_from_slice(&[0; 4]);
        reseal(&mut f);
        assert_eq!(
            decode(&f),
            Err(SnapshotError::Malformed {
                offset: peer + 7,
                what: "peer with no time left to live (ttl 0)"
            })
        );
        let mut f = one_torrent(&peer4(6881, 30));
        f[peer + 6] = 4;
        reseal(&mut f);
        assert!(matches!(
            decode(&f),
            Err(SnapshotError::Malformed { offset, .. }) if offset == peer + 6
        ));
    }

    /// A file written before peer ids left the swarm: each peer has its 20-byte id between
    /// port and flags. It reads as the same peers, the ids skipped.
    #[test]
    fn a_version_1_file_is_read_without_its_peer_ids() {
        let v2 = one_torrent(&peer4(6881, 30));
        let peer = HEADER_LEN + 8 + TORRENT_LEN;
        let mut f = v2[..peer + 6].to_vec();
        f.extend_from_slice(&[b'p'; 20]);
        f.extend_from_slice(&v2[peer + 6..]);
        f[8..12].copy_from_slice(&1u32.to_le_bytes());
        let section = (TORRENT_LEN + 4 + 27) as u64;
        f[60..68].copy_from_slice(&section.to_le_bytes());
        reseal(&mut f);
        let old = decode(&f).expect("a version 1 file");
        assert_eq!(old, decode(&v2).unwrap());
        assert_eq!(old.torrents[0].v4, vec![peer4(6881, 30)]);
        // Its flags and ttl are where version 1 had them.
        f[peer + 26] = 4;
        reseal(&mut f);
        assert!(matches!(
            decode(&f),
            Err(SnapshotError::Malformed { offset, .. }) if offset == peer + 26
        ));
    }

    /// Counts of 4 billion in a 100-byte file with valid checksums: refused, nothing allocated
    /// from them (an allocation of 4 billion peers would abort the test process).
    #[test]
    fn huge_counts_in_a_small_file_are_a_clean_error() {
        let base = one_torrent(&peer4(6881, 30));
        let counts = HEADER_LEN + 8 + 28;
        for (at, what) in [
            (counts, "peer counts run past the end of the section"),
            (counts + 4, "peer counts run past the end of the section"),
            (52, "fewer sections than the header counts"),
            (60, "section longer than the rest of the file"),
        ] {
            let mut f = base.clone();
            let width = if at == 60 { 8 } else { 4 };
            f[at..at + width].fill(0xff);
            reseal(&mut f);
            match decode(&f) {
                Err(SnapshotError::Malformed { what: got, .. }) => assert_eq!(got, what),
                other => panic!("count at {at}: {other:?}"),
            }
        }
        let mut f = base.clone();
        let n = f.len();
        f[n - 20..n - 12].fill(0xff);
        reseal(&mut f);
        assert!(matches!(
            decode(&f),
            Err(SnapshotError::Malformed { what, .. }) if what.contains("trailer")
        ));
    }

    #[test]
    fn a_short_header_length_and_extra_bytes_are_refused() {
        let mut f = one_torrent(&peer4(6881, 30));
        f.extend_from_slice(b"junk");
        assert!(matches!(
            decode(&f),
            Err(SnapshotError::Malformed { what, .. }) if what == "bytes after the end the header gives"
        ));
        let mut f = one_torrent(&peer4(6881, 30));
        f[12..20].copy_from_slice(&3u64.to_le_bytes());
        let h = crc32fast::hash(&f[..HEADER_FIELDS]);
        f[HEADER_FIELDS..HEADER_LEN].copy_from_slice(&h.to_le_bytes());
        assert!(matches!(
            decode(&f),
            Err(SnapshotError::Malformed { offset: 12, .. })
        ));
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            SnapshotError::Checksum {
                stored: 0xdead_beef,
                computed: 0x12
            }
            .to_string(),
            "checksum mismatch: stored 0xdeadbeef, computed 0x00000012"
        );
        assert_eq!(
            SnapshotError::Truncated {
                offset: 30,
                needed: 70
            }
            .to_string(),
            "truncated: the file ends at byte 30, 70 more bytes expected there"
        );
        let mut f = one_torrent(&peer4(6881, 30));
        f[8] = 0;
        assert_eq!(
            decode(&f).unwrap_err().to_string(),
            "malformed at byte 8: format version 0"
        );
        f[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            decode(&f).unwrap_err().to_string(),
            "written by a newer hayate: format version 7, this build reads up to 2"
        );
        assert_eq!(
            decode(b"HAY"),
            Err(SnapshotError::Truncated {
                offset: 3,
                needed: 9
            })
        );
        assert_eq!(decode(b"HAX"), Err(SnapshotError::NotASnapshot));
        assert_eq!(decode(b""), Err(SnapshotError::Empty));
    }

    #[test]
    fn the_writer_is_reusable_after_clear() {
        let mut w = SectionWriter::new();
        w.torrent(&[1; 20], 5, 0, 1, 0);
        w.peer_v4(&peer4(1, 1));
        w.clear();
        assert_eq!((w.torrents(), w.peers(), w.len_bytes()), (0, 0, 0));
        w.torrent(&[2; 20], 0, 60, 0, 0);
        assert_eq!(
            (w.torrents(), w.peers(), w.len_bytes()),
            (1, 0, TORRENT_LEN)
        );
        let mut out = Vec::new();
        encode_file(&header(), &[w.as_bytes()], &mut out);
        let s = decode(&out).unwrap();
        assert_eq!(s.torrents.len(), 1);
        assert_eq!(s.torrents[0].info_hash, [2; 20]);
        assert_eq!(s.torrents[0].keep_secs, 60);
    }

    #[test]
    #[should_panic(expected = "still expects 1 IPv4")]
    #[cfg(debug_assertions)]
    fn a_missing_peer_is_caught_in_debug_builds() {
        let mut w = SectionWriter::new();
        w.torrent(&[1; 20], 5, 0, 1, 0);
        let _ = w.as_bytes();
    }
}
