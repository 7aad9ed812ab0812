//! HTTP announce behaviours a client relies on: `event=stopped` takes the peer out of the
//! counts, `numwant` gets exactly that many peers of a bigger swarm, and a `HEAD` request is
//! answered with the headers of a GET and no body.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn stopped_leaves_the_swarm_and_numwant_is_honoured() {
    let t = start_tracker_http(2, "", "");
    let addr = http_v4(&t);
    let h = hash_for_shard(1, 2, 9);
    for port in 1..=10 {
        let (status, _) = http_announce(addr, &h, port, 5, "&event=started");
        assert_eq!(status, 200);
    }
    assert_eq!(http_scrape(addr, &[h], &h), (0, 0, 10));
    for want in [1, 3, 7] {
        let (_, body) = http_announce(addr, &h, 11, 5, &format!("&numwant={want}"));
        let peers = http_dict_peers(&body);
        assert_eq!(peers.len(), want, "numwant={want}: {body}");
        assert!(peers.iter().all(|p| p.port() != 11), "never itself: {body}");
    }
    assert_eq!(http_scrape(addr, &[h], &h), (0, 0, 11));
    let (status, body) = http_announce(addr, &h, 11, 5, "&event=stopped");
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_scrape(addr, &[h], &h), (0, 0, 10));
    let (_, body) = http_announce(addr, &h, 12, 0, "&numwant=50");
    let ports: Vec<u16> = http_dict_peers(&body).iter().map(|p| p.port()).collect();
    assert_eq!(
        ports,
        (1..=10).collect::<Vec<_>>(),
        "the stopped peer is gone"
    );
    t.stop().unwrap();
}

/// The raw bytes of one request's answer on a fresh connection.
fn raw(addr: std::net::SocketAddr, request: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn head_is_answered_with_the_headers_of_get_and_no_body() {
    let t = start_tracker_http(1, "", "");
    let addr = http_v4(&t);
    let h = [0x44; 20];
    let target = format!(
        "/announce?info_hash={}&peer_id=-HT0001-000000000001&port=7&left=5",
        url_escape(&h)
    );
    let get = raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    let head = raw(
        addr,
        &format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    let split = |r: &[u8]| {
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&r[..at]).into_owned(),
            r[at + 4..].to_vec(),
        )
    };
    let (get_head, get_body) = split(&get);
    let (head_head, head_body) = split(&head);
    assert!(head_head.starts_with("HTTP/1.1 200"), "{head_head}");
    assert!(!get_body.is_empty());
    assert_eq!(head_body, Vec::<u8>::new(), "HEAD has no body");
    let length = |h: &str| {
        h.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
    };
    assert_eq!(length(&get_head), Some(get_body.len().to_string()));
    assert_eq!(
        length(&head_head),
        length(&get_head),
        "the length a GET would have"
    );
    t.stop().unwrap();
}
