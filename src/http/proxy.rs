//! Whose address an HTTP announce is listed under. The TCP peer's, unless the peer is a proxy
//! the operator listed (`http.trusted_proxies`) and the request carries the real-IP header:
//! then the right-most entry of that header that is not itself a trusted proxy. Entries to its
//! left were written by whoever the client is and cannot be believed; nobody else can set it.
//! This is opentracker's rule. Nothing here touches a socket.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

/// An IPv4 or IPv6 network, `10.0.0.0/8` or a single address (`192.0.2.1` is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `x` with all but its first `prefix` bits cleared.
fn mask32(x: u32, prefix: u8) -> u32 {
    x & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(x: u128, prefix: u8) -> u128 {
    x & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an address or network such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
        };
        if prefix > max {
            return Err(format!("`{s}`: a prefix length is at most {max}"));
        }
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        let net = match net {
            IpAddr::V4(v4) => IpAddr::from(mask32(u32::from(v4), prefix).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from(mask128(u128::from(v6), prefix).to_be_bytes()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// A trusted proxy's real-IP header that names no usable address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable;

/// The client's address: `peer` (the TCP peer) unless it is trusted and `header` (every value
/// of the real-IP header, in the order received) names someone. An unreadable entry where the
/// client should be is refused rather than guessed at.
pub fn client_ip(peer: IpAddr, trusted: &[Cidr], header: &[&[u8]]) -> Result<IpAddr, Unreadable> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if header.is_empty() || !is_trusted(peer) {
        return Ok(peer);
    }
    let mut client = None;
    for entry in header.iter().rev().flat_map(|v| v.rsplit(|&b| b == b',')) {
        let ip = parse_entry(entry).ok_or(Unreadable)?;
        client = Some(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    // Every entry a trusted proxy: the left-most is as near the client as anyone knows.
    client.ok_or(Unreadable)
}

/// One entry: an address, maybe with a port (`192.0.2.1:5000`, `[2001:db8::1]:5000`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.255.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "v4-mapped is v4");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("at most 32"));
        assert!("proxy.example".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn untrusted_peer_cannot_set_its_address() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let got = client_ip(ip("203.0.113.1"), &trusted, &[b"198.51.100.1"]);
        assert_eq!(got, Ok(ip("203.0.113.1")));
    }

    #[test]
    fn trusted_proxy_without_header_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &trusted, &[]), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let trusted = cidrs(&["10.0.0.0/8", "fd00::/8"]);
        // The client claims 1.1.1.1; the first proxy saw 198.51.100.1; the second is trusted.
        let h: &[&[u8]] = &[b"1.1.1.1, 198.51.100.1", b"10.0.0.2"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, h),
            Ok(ip("198.51.100.1"))
        );
        let h: &[&[u8]] = &[b"[2001:db8::1]:443,fd00::5"];
        assert_eq!(client_ip(ip("fd00::1"), &trusted, h), Ok(ip("2001:db8::1")));
        let h: &[&[u8]] = &[b"10.0.0.9, 10.0.0.8"];
        assert_eq!(client_ip(ip("10.0.0.1"), &trusted, h), Ok(ip("10.0.0.9")));
    }

    #[test]
    fn garbage_where_the_client_should_be_is_refused() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let h: &[&[u8]] = &[b"1.1.1.1, unknown"];
        assert_eq!(client_ip(ip("10.0.0.1"), &trusted, h), Err(Unreadable));
        // Garbage left of the client is never read.
        let h: &[&[u8]] = &[b"junk, 198.51.100.1"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, h),
            Ok(ip("198.51.100.1"))
        );
    }
}
