//! The bencoded bodies the HTTP tracker answers with: an announce (BEP 3, compact peers per
//! BEP 23, IPv6 peers per BEP 7), a scrape (BEP 48) and a failure. Keys are written in the
//! sorted order bencode requires. Nothing here touches a socket or the swarm.

use std::net::IpAddr;

use crate::mesh::HttpAnnounced;
use crate::protocol::{InfoHash, SwarmCounts};

use super::bencode::Writer;

/// How the client asked for its peers. Dictionary peers (`compact=0`) never carry a `peer id`:
/// the swarm does not keep peer ids (see `swarm::Peer`), so every such reply is what
/// `no_peer_id=1` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFormat {
    pub compact: bool,
    /// The announcer is on IPv6: its peers (IPv6, the swarm keeps families apart) go in
    /// `peers6`, and `peers` is left empty but present, as clients expect the key.
    pub ipv6: bool,
}

/// `d14:failure reason...e`: the one shape every refusal takes.
pub fn failure(reason: &str) -> Vec<u8> {
    let mut w = Writer::with_capacity(reason.len() + 24);
    w.dict()
        .bytes(b"failure reason")
        .bytes(reason.as_bytes())
        .end();
    w.finish()
}

pub fn announce(r: &HttpAnnounced, format: PeerFormat) -> Vec<u8> {
    let mut w = Writer::with_capacity(96 + r.peers.len() * if format.compact { 18 } else { 64 });
    w.dict()
        .key_int("complete", r.counts.seeders.into())
        .key_int("incomplete", r.counts.leechers.into())
        .key_int("interval", r.interval.into())
        .key_int("min interval", r.min_interval.into())
        .bytes(b"peers");
    if format.compact {
        let v4 = r.peers.iter().filter(|p| p.ip.is_ipv4()).count();
        compact(&mut w, r, v4 * 6, IpAddr::is_ipv4);
        let v6 = r.peers.len() - v4;
        if format.ipv6 || v6 > 0 {
            w.bytes(b"peers6");
            compact(&mut w, r, v6 * 18, IpAddr::is_ipv6);
        }
    } else {
        w.list();
        for p in &r.peers {
            w.dict()
                .bytes(b"ip")
                .bytes(p.ip.to_string().as_bytes())
                .key_int("port", p.port.into())
                .end();
        }
        w.end();
    }
    w.end();
    w.finish()
}

/// One family's peers as a compact string: address bytes then the port, big-endian.
fn compact(w: &mut Writer, r: &HttpAnnounced, len: usize, family: fn(&IpAddr) -> bool) {
    w.bytes_header(len);
    for p in r.peers.iter().filter(|p| family(&p.ip)) {
        match p.ip {
            IpAddr::V4(ip) => w.raw(&ip.octets()),
            IpAddr::V6(ip) => w.raw(&ip.octets()),
        };
        w.raw(&p.port.to_be_bytes());
    }
}

/// `files` keyed by raw info hash. `entries` may be in any order and hold repeats; bencode
/// wants the keys sorted and once each.
pub fn scrape(entries: &mut [(InfoHash, SwarmCounts)]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.0);
    let mut w = Writer::with_capacity(16 + entries.len() * 80);
    w.dict().bytes(b"files").dict();
    let mut last = None;
    for (hash, c) in entries.iter() {
        if last == Some(hash) {
            continue;
        }
        last = Some(hash);
        w.bytes(hash)
            .dict()
            .key_int("complete", c.seeders.into())
            .key_int("downloaded", c.downloaded.into())
            .key_int("incomplete", c.leechers.into())
            .end();
    }
    w.end().end();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::HttpPeer;

    fn reply(peers: &[(&str, u16)]) -> HttpAnnounced {
        HttpAnnounced {
            counts: SwarmCounts {
                seeders: 1,
                leechers: 2,
                downloaded: 3,
            },
            peers: peers
                .iter()
                .map(|&(ip, port)| HttpPeer {
                    ip: ip.parse().unwrap(),
                    port,
                })
                .collect(),
            interval: 1800,
            min_interval: 900,
        }
    }

    const V4: PeerFormat = PeerFormat {
        compact: true,
        ipv6: false,
    };

    #[test]
    fn compact_v4() {
        let body = announce(&reply(&[("1.2.3.4", 0x1a1b)]), V4);
        assert_eq!(
            body,
            b"d8:completei1e10:incompletei2e8:intervali1800e12:min intervali900e\
              5:peers6:\x01\x02\x03\x04\x1a\x1be"
        );
    }

    #[test]
    fn compact_v6_keeps_an_empty_peers() {
        let format = PeerFormat { ipv6: true, ..V4 };
        let body = announce(&reply(&[("::1", 1)]), format);
        let mut want = b"5:peers0:6:peers618:".to_vec();
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 0, 1, b'e']);
        assert!(body.ends_with(&want), "{body:?}");
    }

    #[test]
    fn dict_peers_carry_address_and_port() {
        let format = PeerFormat {
            compact: false,
            ..V4
        };
        let body = announce(&reply(&[("1.2.3.4", 80), ("::1", 81)]), format);
        assert!(
            body.ends_with(b"5:peersld2:ip7:1.2.3.44:porti80eed2:ip3:::14:porti81eeee"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn scrape_sorts_and_dedups() {
        let c = SwarmCounts {
            seeders: 4,
            leechers: 5,
            downloaded: 6,
        };
        let mut entries = [
            ([2; 20], c),
            ([1; 20], SwarmCounts::default()),
            ([2; 20], c),
        ];
        let body = scrape(&mut entries);
        let mut want = b"d5:filesd20:".to_vec();
        want.extend_from_slice(&[1; 20]);
        want.extend_from_slice(b"d8:completei0e10:downloadedi0e10:incompletei0ee20:");
        want.extend_from_slice(&[2; 20]);
        want.extend_from_slice(b"d8:completei4e10:downloadedi6e10:incompletei5eeee");
        assert_eq!(body, want);
    }

    #[test]
    fn failure_shape() {
        assert_eq!(failure("no"), b"d14:failure reason2:noe");
    }
}
