//! The query strings of `/announce` and `/scrape`, parsed into the tracker's own request types.
//! Values are percent-decoded as bytes (an info hash is binary), escapes may be in either case,
//! characters clients leave unescaped are taken as they are (`+` is a literal `+`, not a space:
//! BitTorrent clients escape spaces), parameters may come in any order and unknown ones are
//! ignored. Every refusal says, in words, what was wrong. Nothing here touches a socket.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::protocol::hex_digit as hex;
use crate::protocol::urlencoded;
use crate::protocol::{Announce, AnnounceEvent, InfoHash};

/// An announce as the HTTP frontend needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceQuery {
    pub announce: Announce,
    /// BEP 23: compact peer strings unless the client sent `compact=0`.
    pub compact: bool,
    /// The address the client asked to be listed under (`ip`, `ipv4`, `ipv6`), when the
    /// caller allows that; see [`AnnounceQuery::listed_as`].
    pub ip: Option<IpAddr>,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
}

impl AnnounceQuery {
    /// The addresses a client connected from `client` asked to be listed under: `ip`, else
    /// the parameter of the family it connected over, else `client`; and, when it names one,
    /// its address of the other family (a dual-stack client is listed under both).
    pub fn listed_as(&self, client: IpAddr) -> (IpAddr, Option<IpAddr>) {
        let client = client.to_canonical();
        let (same, _) = self.by_family(client.is_ipv4());
        let ip = self.ip.or(same).unwrap_or(client).to_canonical();
        let (_, other) = self.by_family(ip.is_ipv4());
        (ip, other)
    }

    /// The `ipv4`/`ipv6` parameters as (this family's, the other family's).
    fn by_family(&self, v4: bool) -> (Option<IpAddr>, Option<IpAddr>) {
        if v4 {
            (self.ipv4, self.ipv6)
        } else {
            (self.ipv6, self.ipv4)
        }
    }
}

/// Why a query was refused. `Display` is the `failure reason` the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Missing(&'static str),
    /// A parameter whose value is not what it must be: the name and what it must be.
    Malformed(&'static str, &'static str),
    /// A hash or id of the wrong length: the name and the length after decoding.
    WrongLength(&'static str, usize),
    BadEvent,
    NoHashes,
    TooManyHashes {
        max: usize,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Missing(name) => write!(f, "missing {name}"),
            QueryError::Malformed(name, what) => write!(f, "invalid {name}: {what}"),
            QueryError::WrongLength(name, len) => {
                write!(f, "invalid {name}: must be 20 bytes, got {len}")
            }
            QueryError::BadEvent => {
                f.write_str("invalid event: must be started, completed, stopped or empty")
            }
            QueryError::NoHashes => f.write_str("missing info_hash: name at least one torrent"),
            QueryError::TooManyHashes { max } => {
                write!(f, "too many info_hash values: at most {max} per scrape")
            }
        }
    }
}

/// Parses an announce query (the part after `?`). `allow_ip` accepts `ip`, `ipv4` and
/// `ipv6`; otherwise they are ignored, so nobody can list somebody else's address.
pub fn parse_announce(query: &[u8], allow_ip: bool) -> Result<AnnounceQuery, QueryError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut left = None;
    let mut event = AnnounceEvent::None;
    let mut num_want = -1;
    let mut q = AnnounceQuery {
        announce: Announce {
            info_hash: [0; 20],
            peer_id: [0; 20],
            port: 0,
            left: 0,
            event: AnnounceEvent::None,
            num_want: -1,
        },
        compact: true,
        ip: None,
        ipv4: None,
        ipv6: None,
    };
    for (key, value) in pairs(query) {
        match key.as_ref() {
            b"info_hash" => info_hash = Some(twenty("info_hash", value)?),
            b"peer_id" => peer_id = Some(twenty("peer_id", value)?),
            b"port" => {
                port = Some(
                    number(value)
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|&p| p != 0)
                        .ok_or(QueryError::Malformed(
                            "port",
                            "must be a number from 1 to 65535",
                        ))?,
                )
            }
            b"left" => {
                left = Some(number(value).ok_or(QueryError::Malformed(
                    "left",
                    "must be a whole number of bytes",
                ))?)
            }
            b"event" => event = parse_event(value)?,
            b"numwant" | b"num_want" => num_want = parse_numwant(value),
            b"compact" => q.compact = decoded(value).as_deref() != Some(b"0"),
            b"ip" if allow_ip => q.ip = parse_ip(value),
            b"ipv4" if allow_ip => q.ipv4 = parse_ip(value).filter(IpAddr::is_ipv4),
            b"ipv6" if allow_ip => q.ipv6 = parse_ip(value).filter(IpAddr::is_ipv6),
            // `uploaded`, `downloaded`, `key` and `no_peer_id` are accepted and not used: the
            // tracker keeps no byte totals, tells peers apart by address and port, not key, and
            // keeps no peer ids, so dictionary peers never carry one.
            _ => {}
        }
    }
    q.announce = Announce {
        info_hash: info_hash.ok_or(QueryError::Missing("info_hash"))?,
        peer_id: peer_id.ok_or(QueryError::Missing("peer_id"))?,
        port: port.ok_or(QueryError::Missing("port"))?,
        // A client that does not say what it lacks is taken for a leecher: at worst it is sent
        // seeders it does not need, never denied peers it does.
        left: left.unwrap_or(u64::MAX),
        event,
        num_want,
    };
    Ok(q)
}

/// Parses a scrape query into its info hashes (in order, repeats kept), at most `max` of them.
/// A scrape of every torrent (no `info_hash`) is not offered.
pub fn parse_scrape(query: &[u8], max: usize) -> Result<Vec<InfoHash>, QueryError> {
    let mut hashes = Vec::new();
    for (key, value) in pairs(query) {
        if key.as_ref() == b"info_hash" {
            if hashes.len() == max {
                return Err(QueryError::TooManyHashes { max });
            }
            hashes.push(twenty("info_hash", value)?);
        }
    }
    if hashes.is_empty() {
        return Err(QueryError::NoHashes);
    }
    Ok(hashes)
}

/// The `key=value` pairs of a query, keys decoded (a key that does not decode is skipped),
/// values left raw so only the ones used are decoded.
fn pairs(query: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, &[u8])> {
    urlencoded::pairs(query).filter_map(|(key, value)| Some((decoded(key)?, value)))
}

/// Percent-decodes `raw` as bytes; `None` if an escape is not `%` and two hex digits.
pub fn decoded(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'%') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

/// Decodes a 20-byte value (info hash, peer id) straight into place: this runs twice per
/// announce, so it does not build a `Vec` first.
fn twenty(name: &'static str, raw: &[u8]) -> Result<[u8; 20], QueryError> {
    let bad_escape =
        QueryError::Malformed(name, "bad percent escape (must be % and two hex digits)");
    let mut out = [0u8; 20];
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let byte = if raw[i] == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex);
            let lo = raw.get(i + 2).copied().and_then(hex);
            i += 3;
            match (hi, lo) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(bad_escape),
            }
        } else {
            i += 1;
            raw[i - 1]
        };
        if let Some(slot) = out.get_mut(len) {
            *slot = byte;
        }
        len += 1;
    }
    if len == 20 {
        Ok(out)
    } else {
        Err(QueryError::WrongLength(name, len))
    }
}

/// A decimal number without sign, or `None`.
fn number(raw: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(raw).ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_event(raw: &[u8]) -> Result<AnnounceEvent, QueryError> {
    match decoded(raw).as_deref() {
        Some(b"" | b"empty" | b"paused") => Ok(AnnounceEvent::None),
        Some(b"started") => Ok(AnnounceEvent::Started),
        Some(b"completed") => Ok(AnnounceEvent::Completed),
        Some(b"stopped") => Ok(AnnounceEvent::Stopped),
        _ => Err(QueryError::BadEvent),
    }
}

/// `numwant` as the swarm takes it: negative or unreadable means "the default" (as UDP's -1),
/// and anything past `i32::MAX` is capped later anyway.
fn parse_numwant(raw: &[u8]) -> i32 {
    let Some(s) = std::str::from_utf8(raw).ok() else {
        return -1;
    };
    match s.parse::<i64>() {
        Ok(n) => n.clamp(-1, i64::from(i32::MAX)) as i32,
        Err(_) => -1,
    }
}

/// An address as `ip`/`ipv4`/`ipv6` carry it: bare, or with a port (`1.2.3.4:6881`,
/// `[::1]:6881`). A host name (BEP 3 allows one) is not resolved and so not used.
fn parse_ip(raw: &[u8]) -> Option<IpAddr> {
    let bytes = decoded(raw)?;
    let s = std::str::from_utf8(&bytes).ok()?;
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "%01%02%03%04%05%06%07%08%09%0a%0B%0c%0D%0e%0F%10%11%12%13%14";

    fn announce(q: &str) -> Result<AnnounceQuery, QueryError> {
        parse_announce(q.as_bytes(), false)
    }

    #[test]
    fn full_announce_in_any_order() {
        let q = format!(
            "port=6881&peer_id=-lt0D20-abcdefghijkl&numwant=80&info_hash={HASH}&left=0\
             &event=completed&compact=0&no_peer_id=1&key=%ff%00&uploaded=1&downloaded=2&x=y"
        );
        let a = announce(&q).unwrap();
        let want: Vec<u8> = (1..=20).collect();
        assert_eq!(&a.announce.info_hash[..], &want[..]);
        assert_eq!(&a.announce.peer_id, b"-lt0D20-abcdefghijkl");
        assert_eq!(a.announce.port, 6881);
        assert_eq!(a.announce.left, 0);
        assert_eq!(a.announce.event, AnnounceEvent::Completed);
        assert_eq!(a.announce.num_want, 80);
        assert!(!a.compact);
    }

    #[test]
    fn defaults_and_unescaped_characters() {
        // Unescaped `+`, `*` and `.` are themselves; the hash mixes raw and escaped bytes.
        let q = "info_hash=abc+*.%2Bdefghijklmnop&peer_id=%2D%2d%41AAAAAAAAAAAAAAAAA&port=1";
        let a = announce(q).unwrap();
        assert_eq!(&a.announce.info_hash, b"abc+*.+defghijklmnop");
        assert_eq!(&a.announce.peer_id[..3], b"--A");
        assert!(a.compact);
        assert_eq!(a.announce.event, AnnounceEvent::None);
        assert_eq!(a.announce.num_want, -1);
        assert!(a.announce.left > 0, "no `left` is a leecher");
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let ok_id = "peer_id=AAAAAAAAAAAAAAAAAAAA";
        let cases = [
            (format!("{ok_id}&port=1"), "missing info_hash"),
            (format!("info_hash={HASH}&port=1"), "missing peer_id"),
            (format!("info_hash={HASH}&{ok_id}"), "missing port"),
            (
                format!("info_hash=abc&{ok_id}&port=1"),
                "info_hash: must be 20 bytes, got 3",
            ),
            (format!("info_hash={HASH}%15&{ok_id}&port=1"), "got 21"),
            (
                format!("info_hash=%zz{HASH}&{ok_id}&port=1"),
                "bad percent escape",
            ),
            (
                format!("info_hash={HASH}%1&{ok_id}&port=1"),
                "bad percent escape",
            ),
            (
                format!("info_hash={HASH}&peer_id=short&port=1"),
                "invalid peer_id",
            ),
            (format!("info_hash={HASH}&{ok_id}&port=0"), "invalid port"),
            (
                format!("info_hash={HASH}&{ok_id}&port=65536"),
                "invalid port",
            ),
            (format!("info_hash={HASH}&{ok_id}&port=-1"), "invalid port"),
            (
                format!("info_hash={HASH}&{ok_id}&port=1&left=x"),
                "invalid left",
            ),
            (
                format!("info_hash={HASH}&{ok_id}&port=1&event=begun"),
                "invalid event",
            ),
        ];
        for (q, want) in cases {
            let e = announce(&q).unwrap_err().to_string();
            assert!(e.contains(want), "{q}: {e}");
        }
    }

    #[test]
    fn numwant_forms() {
        let base = format!("info_hash={HASH}&peer_id=AAAAAAAAAAAAAAAAAAAA&port=1");
        let nw = |v: &str| {
            announce(&format!("{base}&numwant={v}"))
                .unwrap()
                .announce
                .num_want
        };
        assert_eq!(nw("0"), 0);
        assert_eq!(nw("-5"), -1);
        assert_eq!(nw("junk"), -1);
        assert_eq!(nw("99999999999"), i32::MAX);
    }

    #[test]
    fn ip_parameters_only_when_allowed() {
        let q = format!(
            "info_hash={HASH}&peer_id=AAAAAAAAAAAAAAAAAAAA&port=1&ipv4=10.0.0.1:6881&ipv6=%3A%3A1"
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = parse_announce(q.as_bytes(), false).unwrap();
        assert_eq!(a.listed_as(ip("192.0.2.9")), (ip("192.0.2.9"), None));
        let a = parse_announce(q.as_bytes(), true).unwrap();
        assert_eq!(
            a.listed_as(ip("192.0.2.9")),
            (ip("10.0.0.1"), Some(ip("::1")))
        );
        assert_eq!(
            a.listed_as(ip("2001:db8::9")),
            (ip("::1"), Some(ip("10.0.0.1")))
        );
        let a = parse_announce(format!("{q}&ip=example.org").as_bytes(), true).unwrap();
        assert_eq!(a.ip, None, "host names are not used");
        let a = parse_announce(format!("{q}&ip=1.2.3.4").as_bytes(), true).unwrap();
        assert_eq!(
            a.listed_as(ip("2001:db8::9")),
            (ip("1.2.3.4"), Some(ip("::1")))
        );
        // Only the other family's address named: listed under the connection's and that one.
        let only6 =
            "info_hash=".to_string() + HASH + "&peer_id=AAAAAAAAAAAAAAAAAAAA&port=1&ipv6=%3A%3A1";
        let a = parse_announce(only6.as_bytes(), true).unwrap();
        assert_eq!(
            a.listed_as(ip("192.0.2.9")),
            (ip("192.0.2.9"), Some(ip("::1")))
        );
    }

    #[test]
    fn scrape_hashes() {
        let h = |n: u8| format!("info_hash={}", "%00".repeat(19) + &format!("%{n:02x}"));
        let q = format!("{}&{}&foo=1&{}", h(1), h(2), h(1));
        let got = parse_scrape(q.as_bytes(), 3).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1][19], 2);
        let e = parse_scrape(format!("{q}&{}", h(4)).as_bytes(), 3).unwrap_err();
        assert_eq!(e, QueryError::TooManyHashes { max: 3 });
        assert_eq!(parse_scrape(b"x=1", 3).unwrap_err(), QueryError::NoHashes);
        assert!(parse_scrape(b"info_hash=abc", 3).is_err());
    }

    #[test]
    fn decoding_is_binary_safe() {
        assert_eq!(
            decoded(b"%00%ff%FF%7e").unwrap().as_ref(),
            &[0, 255, 255, 0x7e]
        );
        assert_eq!(decoded(b"a%").as_deref(), None);
        assert_eq!(decoded(b"%g0").as_deref(), None);
    }
}
