//! BEP 48's full scrape (`GET /scrape` without `info_hash`, `[full_scrape] enabled`): after
//! known announces, the bencoded body decodes to every torrent with the counts a per-torrent
//! scrape gives; gzip is served to a client that accepts it (and only then); a source asking
//! again within the interval gets 429 with Retry-After; the file named by `path` holds the same;
//! and with the full scrape off (the default) the request is refused as before.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_bencode::value::Value;

/// (complete, downloaded, incomplete) by info hash.
type Files = BTreeMap<[u8; 20], (i64, i64, i64)>;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from local address `from`, with `headers`.
fn get(addr: SocketAddr, from: IpAddr, path: &str, headers: &str) -> Reply {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip stream");
    out
}

/// The `files` of a full-scrape body.
fn files(body: &[u8]) -> Files {
    let Ok(Value::Dict(top)) = serde_bencode::from_bytes::<Value>(body) else {
        panic!(
            "not a bencoded dictionary: {}",
            String::from_utf8_lossy(body)
        );
    };
    let Some(Value::Dict(files)) = top.get(&b"files"[..]) else {
        panic!("no files: {}", String::from_utf8_lossy(body));
    };
    files
        .iter()
        .map(|(hash, stats)| {
            let Value::Dict(stats) = stats else {
                panic!("not a dictionary")
            };
            let n = |k: &[u8]| match stats.get(k) {
                Some(Value::Int(n)) => *n,
                other => panic!("{} is {other:?}", String::from_utf8_lossy(k)),
            };
            let hash: [u8; 20] = hash.as_slice().try_into().expect("a 20-byte info hash");
            (hash, (n(b"complete"), n(b"downloaded"), n(b"incomplete")))
        })
        .collect()
}

const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[test]
fn the_full_scrape_lists_every_torrent_gzips_on_request_and_limits_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("full-scrape.bencode.gz");
    let t = start_tracker_http(
        2,
        "",
        &format!(
            "[full_scrape]\nenabled = true\ninterval_secs = 1\npath = \"{}\"\n",
            file.display()
        ),
    );
    let http = http_v4(&t);
    // Torrent n has n + 1 peers, the first a seeder; torrent 3's leecher completes over HTTP.
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let hashes: Vec<[u8; 20]> = (0..5u8).map(|n| [n + 1; 20]).collect();
    for (n, hash) in hashes.iter().enumerate() {
        for i in 0..=n as u16 {
            let left = u64::from(i > 0);
            let reply = c.announce(cid, *hash, 7000 + i, left, EVENT_STARTED, 0);
            assert!(matches!(reply, common::Reply::Announce { .. }), "{reply:?}");
        }
    }
    let (status, body) = http_announce(http, &hashes[3], 9000, 0, "&event=completed");
    assert_eq!(status, 200, "{body}");
    // What a scrape of each torrent says.
    let want: Files = hashes
        .iter()
        .map(|h| {
            let (complete, downloaded, incomplete) = http_scrape(http, &[*h], h);
            (*h, (complete as i64, downloaded as i64, incomplete as i64))
        })
        .collect();
    assert_eq!(want[&hashes[3]], (2, 1, 3), "{want:?}");

    // Rebuilt every second: poll (a second apart, as the limit allows) until it has them all.
    let deadline = Instant::now() + Duration::from_secs(20);
    let plain = loop {
        let r = get(http, A, "/scrape", "");
        match r.status {
            200 => {
                assert_eq!(r.header("content-encoding"), None, "not asked for gzip");
                if files(&r.body) == want {
                    break r;
                }
            }
            // Before the first body.
            503 => assert!(r.header("retry-after").is_some()),
            s => panic!("status {s}: {}", String::from_utf8_lossy(&r.body)),
        }
        assert!(
            Instant::now() < deadline,
            "the full scrape never showed {want:?}; last {:?}",
            files(&r.body)
        );
        std::thread::sleep(Duration::from_millis(1100));
    };
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    // Again at once from the same source: refused until its interval is over.
    let again = get(http, A, "/scrape", "");
    assert_eq!(again.status, 429);
    assert_eq!(again.header("retry-after"), Some("1"));
    let reason = String::from_utf8_lossy(&again.body);
    assert!(reason.contains("failure reason"), "{reason}");
    assert!(reason.contains("retry in 1 s"), "{reason}");

    // Another source, accepting gzip: the same torrents, compressed.
    let zipped = get(http, B, "/scrape", "Accept-Encoding: gzip, deflate\r\n");
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(files(&gunzip(&zipped.body)), want);

    // The file (gzip, from its name) holds the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(&file) {
            if files(&gunzip(&bytes)) == want {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {want:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A scrape naming torrents is still a scrape of those torrents.
    let (complete, _, incomplete) = http_scrape(http, &[hashes[0]], &hashes[0]);
    assert_eq!((complete, incomplete), (1, 0));
}

#[test]
fn with_the_full_scrape_off_a_scrape_must_name_a_torrent() {
    let t = start_tracker_http(1, "", "");
    let r = get(http_v4(&t), A, "/scrape", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("failure reason"), "{body}");
    assert!(body.contains("missing info_hash"), "{body}");
}

#[test]
fn a_path_without_the_full_scrape_is_a_config_error_naming_the_key() {
    let e = hayate_tracker::config::Config::from_toml_str(
        "[full_scrape]\npath = \"/tmp/x\"\n",
        "test.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("full_scrape.path"), "{e}");
    assert!(e.contains("test.toml"), "{e}");
}
