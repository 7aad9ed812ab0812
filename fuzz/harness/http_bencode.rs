//! The HTTP tracker's bencoded bodies (announce in every peer format, scrape, failure) decoded
//! back with a strict decoder: canonical integers and lengths, dictionary keys sorted and
//! unique, nothing after the end. What decodes is exactly what was put in.
//!
//! The body of the `http_bencode` fuzz target, shared by the libFuzzer binary
//! (fuzz/fuzz_targets/http_bencode.rs) and the seed replay in `cargo test` (tests/fuzz_seeds.rs),
//! so both check the same invariants.
use std::collections::BTreeMap;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use hayate_tracker::http::response::{self, PeerFormat};
use hayate_tracker::mesh::{HttpAnnounced, HttpPeer};
use hayate_tracker::protocol::{InfoHash, SwarmCounts};

#[derive(Debug, PartialEq, Eq)]
enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Decodes one whole value; panics on anything non-canonical.
fn decode(d: &[u8]) -> Value {
    let (v, rest) = value(d, 0);
    assert!(rest.is_empty(), "bytes after the value");
    v
}

fn digits(d: &[u8], end: u8) -> (i64, &[u8]) {
    let i = d.iter().position(|&b| b == end).expect("number ends");
    let s = std::str::from_utf8(&d[..i]).expect("ASCII number");
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    assert!(
        !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()),
        "{s:?}"
    );
    assert!(
        unsigned == "0" || !unsigned.starts_with('0'),
        "leading zero in {s:?}"
    );
    assert!(s != "-0", "negative zero");
    (s.parse().expect("fits i64"), &d[i + 1..])
}

fn value(d: &[u8], depth: usize) -> (Value, &[u8]) {
    assert!(depth < 8, "nested too deep for a tracker reply");
    match d.first().expect("a value") {
        b'i' => {
            let (n, rest) = digits(&d[1..], b'e');
            (Value::Int(n), rest)
        }
        b'l' => {
            let mut items = Vec::new();
            let mut rest = &d[1..];
            while rest[0] != b'e' {
                let (v, r) = value(rest, depth + 1);
                items.push(v);
                rest = r;
            }
            (Value::List(items), &rest[1..])
        }
        b'd' => {
            let mut map = BTreeMap::new();
            let mut last: Option<Vec<u8>> = None;
            let mut rest = &d[1..];
            while rest[0] != b'e' {
                let (Value::Bytes(k), r) = value(rest, depth + 1) else {
                    panic!("dictionary key is not a string");
                };
                if let Some(last) = &last {
                    assert!(*last < k, "keys unsorted or repeated");
                }
                let (v, r) = value(r, depth + 1);
                last = Some(k.clone());
                map.insert(k, v);
                rest = r;
            }
            (Value::Dict(map), &rest[1..])
        }
        b'0'..=b'9' => {
            let (len, rest) = digits(d, b':');
            let len = usize::try_from(len).expect("length is not negative");
            (Value::Bytes(rest[..len].to_vec()), &rest[len..])
        }
        other => panic!("no value starts with {other}"),
    }
}

fn dict(v: &Value) -> &BTreeMap<Vec<u8>, Value> {
    match v {
        Value::Dict(m) => m,
        other => panic!("not a dictionary: {other:?}"),
    }
}

fn get<'a>(m: &'a BTreeMap<Vec<u8>, Value>, key: &str) -> &'a Value {
    m.get(key.as_bytes()).unwrap_or_else(|| panic!("no {key}"))
}

#[derive(Arbitrary, Debug)]
struct Peer {
    v6: bool,
    ip: [u8; 16],
    port: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    seeders: u32,
    leechers: u32,
    downloaded: u32,
    interval: u32,
    min_interval: u32,
    compact: bool,
    ipv6: bool,
    peers: Vec<Peer>,
    scrape: Vec<(u8, u32, u32, u32)>,
    reason: String,
}

/// Runs one fuzz input: the bytes decoded as libFuzzer's typed targets decode them
/// (`arbitrary_take_rest`, inputs shorter than the size hint skipped).
pub fn run(data: &[u8]) {
    if data.len() < <Input as Arbitrary>::size_hint(0).0 {
        return;
    }
    if let Ok(input) = <Input>::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        check(input);
    }
}

fn check(input: Input) {
    let counts = SwarmCounts {
        seeders: input.seeders,
        leechers: input.leechers,
        downloaded: input.downloaded,
    };
    let peers: Vec<HttpPeer> = input
        .peers
        .iter()
        .map(|p| HttpPeer {
            ip: if p.v6 {
                IpAddr::from(p.ip)
            } else {
                IpAddr::from(<[u8; 4]>::try_from(&p.ip[..4]).unwrap())
            },
            port: p.port,
        })
        .collect();
    let format = PeerFormat {
        compact: input.compact,
        ipv6: input.ipv6,
    };
    let r = HttpAnnounced {
        counts,
        peers,
        interval: input.interval,
        min_interval: input.min_interval,
    };
    let body = response::announce(&r, format);
    let v = decode(&body);
    let m = dict(&v);
    assert_eq!(get(m, "complete"), &Value::Int(input.seeders.into()));
    assert_eq!(get(m, "incomplete"), &Value::Int(input.leechers.into()));
    assert_eq!(get(m, "interval"), &Value::Int(input.interval.into()));
    assert_eq!(
        get(m, "min interval"),
        &Value::Int(input.min_interval.into())
    );
    if input.compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &r.peers {
            match p.ip {
                IpAddr::V4(ip) => v4.extend_from_slice(&ip.octets()),
                IpAddr::V6(ip) => v6.extend_from_slice(&ip.octets()),
            }
            let port = p.port.to_be_bytes();
            if p.ip.is_ipv4() { &mut v4 } else { &mut v6 }.extend_from_slice(&port);
        }
        assert_eq!(get(m, "peers"), &Value::Bytes(v4));
        if input.ipv6 || !v6.is_empty() {
            assert_eq!(get(m, "peers6"), &Value::Bytes(v6));
        } else {
            assert!(!m.contains_key(&b"peers6"[..]));
        }
    } else {
        let Value::List(list) = get(m, "peers") else {
            panic!("dictionary peers are a list");
        };
        assert_eq!(list.len(), r.peers.len());
        for (got, p) in list.iter().zip(&r.peers) {
            let d = dict(got);
            assert_eq!(get(d, "ip"), &Value::Bytes(p.ip.to_string().into_bytes()));
            assert_eq!(get(d, "port"), &Value::Int(p.port.into()));
            assert_eq!(d.len(), 2, "address and port only: no peer ids are kept");
        }
    }

    let mut entries: Vec<(InfoHash, SwarmCounts)> = input
        .scrape
        .iter()
        .map(|&(h, s, d, l)| {
            let counts = SwarmCounts {
                seeders: s,
                leechers: l,
                downloaded: d,
            };
            ([h % 16; 20], counts)
        })
        .collect();
    let asked = entries.clone();
    let v = decode(&response::scrape(&mut entries));
    let files = dict(get(dict(&v), "files"));
    let mut distinct: Vec<InfoHash> = asked.iter().map(|e| e.0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(files.len(), distinct.len(), "one entry per distinct hash");
    for (hash, entry) in files {
        let e = dict(entry);
        let got = |k| match get(e, k) {
            Value::Int(n) => *n,
            other => panic!("{k} is {other:?}"),
        };
        let (s, d, l) = (got("complete"), got("downloaded"), got("incomplete"));
        assert!(
            asked.iter().any(|(h, c)| h[..] == hash[..]
                && (
                    i64::from(c.seeders),
                    i64::from(c.downloaded),
                    i64::from(c.leechers)
                ) == (s, d, l)),
            "scrape entry matches no request"
        );
    }

    let v = decode(&response::failure(&input.reason));
    assert_eq!(
        get(dict(&v), "failure reason"),
        &Value::Bytes(input.reason.clone().into_bytes())
    );
}
