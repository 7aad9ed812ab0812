//! Whose address an HTTP announce is listed under. The TCP peer's, unless the peer is a proxy
//! the operator listed (`http.trusted_proxies`) and the request carries the real-IP header:
//! then the right-most entry of that header that is not itself a trusted proxy. Entries to its
//! left were written by whoever the client is and cannot be believed; nobody else can set it.
//! This is opentracker's rule. Nothing here touches a socket.

use std::net::{IpAddr, SocketAddr};

pub use crate::cidr::Cidr;

/// A trusted proxy's real-IP header that names no usable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
