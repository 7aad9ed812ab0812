//! How swarms are laid out in Redis. Every key of one torrent carries the torrent's info hash
//! as its hash tag (`{hex}`), so in a Redis Cluster a torrent lives in one slot and one
//! pipeline reaches it on one node. Each node writes only its own keys, so it stays the one
//! authority on its peers and a re-publish can simply overwrite them:
//!
//! - `<prefix>{<hash>}:<node>:s` and `:l`: sorted sets of the node's seeders and leechers. A
//!   member is the peer's compact address (6 bytes IPv4, 18 bytes IPv6, as BEP 23 and BEP 7
//!   write them); its score is the Unix second the peer expires, so readers skip the dead and
//!   a node that vanished has its peers age out on their own.
//! - `<prefix>{<hash>}:dl`: a hash of node → downloads that node counted for the torrent.
//! - `<prefix>nodes`: a sorted set of node → the Unix second its newest peer may live to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::protocol::InfoHash;

/// Which of a node's two sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Seeders,
    Leechers,
}

/// The key names of one deployment (prefix) as one node sees them.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub node: String,
}

impl Keys {
    pub fn new(prefix: &str, node: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            node: node.to_string(),
        }
    }

    /// Writes `node`'s set of `role` for the torrent into `out` (reused: the sync thread
    /// names keys without allocating).
    pub fn write_peers(&self, out: &mut String, info_hash: &InfoHash, node: &str, role: Role) {
        self.write_torrent(out, info_hash);
        out.push_str(node);
        out.push_str(match role {
            Role::Seeders => ":s",
            Role::Leechers => ":l",
        });
    }

    pub fn write_downloads(&self, out: &mut String, info_hash: &InfoHash) {
        self.write_torrent(out, info_hash);
        out.push_str("dl");
    }

    /// `<prefix>{<hex>}:`
    fn write_torrent(&self, out: &mut String, info_hash: &InfoHash) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.clear();
        out.push_str(&self.prefix);
        out.push('{');
        for b in info_hash {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out.push_str("}:");
    }

    /// `node`'s set of `role` for the torrent.
    pub fn peers(&self, info_hash: &InfoHash, node: &str, role: Role) -> String {
        let mut s = String::new();
        self.write_peers(&mut s, info_hash, node, role);
        s
    }

    /// This node's own set of `role`.
    pub fn own(&self, info_hash: &InfoHash, role: Role) -> String {
        self.peers(info_hash, &self.node, role)
    }

    pub fn downloads(&self, info_hash: &InfoHash) -> String {
        let mut s = String::new();
        self.write_downloads(&mut s, info_hash);
        s
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

/// A peer as a set member: its compact address, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    bytes: [u8; 18],
    len: u8,
}

impl Member {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

pub fn member(ip: IpAddr, port: u16) -> Member {
    let mut bytes = [0u8; 18];
    let n = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    bytes[n..n + 2].copy_from_slice(&port.to_be_bytes());
    Member {
        bytes,
        len: n as u8 + 2,
    }
}

/// A member read back; `None` for anything that is not a compact address (garbage in Redis).
pub fn parse_member(m: &[u8]) -> Option<(IpAddr, u16)> {
    let (ip, port) = match m.len() {
        6 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&m[..4]).ok()?)),
            &m[4..],
        ),
        18 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&m[..16]).ok()?)),
            &m[16..],
        ),
        _ => return None,
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    (port != 0).then_some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_torrent_share_one_hash_tag() {
        let k = Keys::new("t:", "a");
        let h = [0xab; 20];
        let tag = format!("{{{}}}", "ab".repeat(20));
        for key in [
            k.own(&h, Role::Seeders),
            k.peers(&h, "b", Role::Leechers),
            k.downloads(&h),
        ] {
            assert!(key.starts_with(&format!("t:{tag}:")), "{key}");
        }
        assert_eq!(k.own(&h, Role::Seeders), format!("t:{tag}:a:s"));
        assert_eq!(k.peers(&h, "b", Role::Leechers), format!("t:{tag}:b:l"));
        assert_eq!(k.nodes(), "t:nodes");
    }

    #[test]
    fn members_round_trip_and_garbage_is_refused() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(member(v4, 6881).as_bytes(), [10, 1, 2, 3, 0x1a, 0xe1]);
        assert_eq!(member(mapped, 6881), member(v4, 6881));
        assert_eq!(parse_member(member(v4, 6881).as_bytes()), Some((v4, 6881)));
        assert_eq!(parse_member(member(v6, 1).as_bytes()), Some((v6, 1)));
        assert_eq!(parse_member(b"hello"), None);
        assert_eq!(parse_member(&[1, 2, 3, 4, 0, 0]), None, "port 0");
        assert_eq!(parse_member(&[]), None);
    }
}
