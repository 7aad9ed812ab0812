//! Wire formats. Each submodule turns one protocol's bytes into the tracker's own request types
//! and writes its replies; none of them touches a socket or the swarm table.

pub mod bep41;
pub mod peer_client;
pub mod udp;
pub mod urlencoded;

use std::net::IpAddr;

/// The value of one hex digit, either case (percent escapes, hex info hashes).
pub fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// An info hash written as operators write it: 40 hex digits, either case.
pub fn parse_hex_hash(s: &str) -> Result<InfoHash, String> {
    if s.len() != 40 {
        return Err(format!(
            "expected an info hash of 40 hex digits, got {:?} ({} characters)",
            shorten(s),
            s.chars().count()
        ));
    }
    let mut hash = [0u8; 20];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (hex(pair[0]), hex(pair[1])) {
            (Some(hi), Some(lo)) => hash[i] = (hi * 16 + lo) as u8,
            _ => {
                return Err(format!(
                    "{:?} is not hexadecimal (expected 40 digits 0-9, a-f)",
                    shorten(s)
                ))
            }
        }
    }
    Ok(hash)
}

/// At most 60 characters of `s`, for an error message.
fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `bytes` as lowercase hex digits (an info hash as operators write it).
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A torrent's 20-byte info hash (a BitTorrent v2 hash is cut to 20 bytes by clients).
pub type InfoHash = [u8; 20];

/// A client's 20-byte peer id.
pub type PeerId = [u8; 20];

/// What an announce says happened (BEP 3 `event`, BEP 15 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    None,
    Completed,
    Started,
    Stopped,
}

/// An announce as the swarm needs it, whichever protocol carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port the client listens on (never 0: refused while parsing).
    pub port: u16,
    /// Bytes the client still needs; 0 makes it a seeder.
    pub left: u64,
    pub event: AnnounceEvent,
    /// Peers asked for, as sent: 0 or negative means "the default".
    pub num_want: i32,
}

impl Announce {
    /// Whether the announcer is a seeder: it lacks nothing, or says it just completed.
    #[inline]
    pub fn seeds(&self) -> bool {
        self.left == 0 || self.event == AnnounceEvent::Completed
    }
}

/// Which frontend carried a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Http,
}

/// An announce with everything the pipeline's hooks may look at, whichever frontend carried
/// it. It borrows the request's bytes: nothing is copied to build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceRequest<'a> {
    pub announce: Announce,
    /// The address the peer is listed under (canonical: IPv4-mapped is IPv4).
    pub ip: IpAddr,
    pub transport: Transport,
    /// The URL path the client announced to: the HTTP path, or BEP 41 URL data over UDP
    /// (empty when the client sent none).
    pub path: &'a [u8],
    /// The raw query string (without `?`): the HTTP query, or the part of BEP 41 URL data
    /// after `?`.
    pub query: &'a [u8],
}

/// A swarm's counts, as a scrape reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwarmCounts {
    pub seeders: u32,
    pub leechers: u32,
    /// Completed events seen for the torrent.
    pub downloaded: u32,
}
