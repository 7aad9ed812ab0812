//! Sources the tracker ignores: a file of networks (`203.0.113.0/24`, `2001:db8::/32`, or one
//! address per line, `#` comments), whose UDP datagrams are dropped unread and whose HTTP
//! connections are closed at accept, each counted (`hayate_errors_total{reason="blocked"}`).
//! Checked once per datagram before anything is parsed, so the lookup is a [`Networks`] search:
//! no allocation, no hashing, a few dozen comparisons for a hundred-thousand-line list. Parsed whole before it replaces the old one (SIGHUP), so a bad
//! file never half-applies; errors name the file and the line.

use std::net::IpAddr;
use std::path::Path;

use crate::cidr::{Cidr, Networks};

/// A parsed list; empty when off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    networks: Networks,
    /// Lines the file listed.
    listed: usize,
}

/// A blocklist file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("cannot read blocklist {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("blocklist {file}, line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
}

impl Blocklist {
    /// Reads the file at `path`; an empty path is no list.
    pub fn load(path: &str) -> Result<Blocklist, BlocklistError> {
        if path.trim().is_empty() {
            return Ok(Blocklist::default());
        }
        let text =
            std::fs::read_to_string(Path::new(path)).map_err(|source| BlocklistError::Read {
                file: path.to_string(),
                source,
            })?;
        Self::parse(&text, path)
    }

    /// Parses list text (named `file` in errors).
    pub fn parse(text: &str, file: &str) -> Result<Blocklist, BlocklistError> {
        let mut listed = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let cidr: Cidr = line.parse().map_err(|message| BlocklistError::Line {
                file: file.to_string(),
                line: i + 1,
                message,
            })?;
            listed.push(cidr);
        }
        Ok(Blocklist {
            listed: listed.len(),
            networks: Networks::new(listed),
        })
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is listed.
    #[inline]
    pub fn blocks(&self, ip: IpAddr) -> bool {
        self.networks.contains(ip)
    }

    /// Networks and addresses the file listed.
    pub fn len(&self) -> usize {
        self.listed
    }

    pub fn is_empty(&self) -> bool {
        self.listed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_addresses_of_both_families_block_exactly_what_they_cover() {
        let list = Blocklist::parse(
            "# bad actors\n203.0.113.0/24\n198.51.100.7 # one host\n\n2001:db8::/32\n",
            "b.txt",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        for blocked in [
            "203.0.113.0",
            "203.0.113.255",
            "198.51.100.7",
            "2001:db8:ffff::1",
        ] {
            assert!(list.blocks(ip(blocked)), "{blocked}");
        }
        for free in [
            "203.0.112.255",
            "203.0.114.0",
            "198.51.100.6",
            "198.51.100.8",
            "2001:db9::",
        ] {
            assert!(!list.blocks(ip(free)), "{free}");
        }
        // A v4-mapped address is its IPv4 address.
        assert!(list.blocks(ip("::ffff:203.0.113.9")));
        assert!(!Blocklist::default().blocks(ip("203.0.113.9")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let list = Blocklist::parse(
            "10.0.0.0/8\n10.1.0.0/16\n11.0.0.0/8\n13.0.0.1\n0.0.0.0/0\n",
            "b",
        )
        .unwrap();
        assert_eq!(list.networks.v4, vec![(0, u32::MAX)]);
        let list =
            Blocklist::parse("10.0.0.0/8\n10.1.0.0/16\n11.0.0.0/8\n13.0.0.1\n", "b").unwrap();
        assert_eq!(
            list.networks.v4,
            vec![(0x0a00_0000, 0x0bff_ffff), (0x0d00_0001, 0x0d00_0001)]
        );
        assert!(list.blocks(ip("11.255.255.255")));
        assert!(!list.blocks(ip("12.0.0.0")));
        assert!(!list.blocks(ip("13.0.0.0")));
        assert!(list.blocks(ip("13.0.0.1")));
        assert!(!list.blocks(ip("13.0.0.2")));
        let all6 = Blocklist::parse("::/0\n::1\n", "b").unwrap();
        assert_eq!(all6.networks.v6, vec![(0, u128::MAX)]);
        assert!(all6.blocks(ip("ffff::1")));
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let e = Blocklist::parse("10.0.0.0/8\n\nnot-an-address\n", "block.txt")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("block.txt, line 3") && e.contains("not-an-address"),
            "{e}"
        );
        let e = Blocklist::parse("10.0.0.0/33\n", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = Blocklist::load("/nonexistent/block.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/block.txt"), "{e}");
        assert!(Blocklist::load("").unwrap().is_empty());
    }
}
