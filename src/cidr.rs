//! IP networks (`10.0.0.0/8`, `fd00::/8`, or one address): parsed from the config, matched
//! against client addresses. The trusted proxies of the HTTP frontend are a list of these; the
//! config names them without reaching into the frontend. [`Networks`] is a set of them matched
//! per packet (the blocklist, the sources exempt from per-source limits): sorted, merged
//! ranges searched by bisection, so a lookup allocates nothing and hashes nothing.

use std::fmt;
use std::net::IpAddr;
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

/// The first and last address of a network, as integers of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    V4(u32, u32),
    V6(u128, u128),
}

impl Cidr {
    pub fn span(&self) -> Span {
        match self.net {
            IpAddr::V4(net) => {
                let first = u32::from(net);
                Span::V4(first, first | !mask32(u32::MAX, self.prefix))
            }
            IpAddr::V6(net) => {
                let first = u128::from(net);
                Span::V6(first, first | !mask128(u128::MAX, self.prefix))
            }
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

/// A set of networks of both families, as sorted inclusive ranges where no two overlap or touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks {
    pub(crate) v4: Vec<(u32, u32)>,
    pub(crate) v6: Vec<(u128, u128)>,
}

impl Networks {
    pub fn new(networks: impl IntoIterator<Item = Cidr>) -> Networks {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in networks {
            match n.span() {
                Span::V4(first, last) => v4.push((first, last)),
                Span::V6(first, last) => v6.push((first, last)),
            }
        }
        Networks {
            v4: merged(v4, |x| x.checked_add(1)),
            v6: merged(v6, |x| x.checked_add(1)),
        }
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in one of the networks.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => covered(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => covered(&self.v6, u128::from(ip)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Sorted, with overlapping and adjacent ranges joined (`next` gives the address after one, if
/// any).
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if next(prev.1).is_none_or(|n| first <= n) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out.shrink_to_fit();
    out
}

fn covered<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or below x is the only one that can hold it.
    let after = ranges.partition_point(|r| r.0 <= x);
    after > 0 && x <= ranges[after - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
}
