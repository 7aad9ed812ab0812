//! `[blocklist]`: datagrams from a listed source are dropped unread and its HTTP connections
//! closed at accept, each counted as `hayate_errors_total{reason="blocked"}`, while everyone
//! else is served; a reload swaps the list for both frontends at once.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use hayate_tracker::Config;

fn blocked(t: &hayate_tracker::Tracker, protocol: &str, want: f64) {
    wait_sample(
        t.metrics_address().unwrap(),
        "hayate_errors_total",
        &[("protocol", protocol), ("reason", "blocked")],
        want,
        Duration::from_secs(10),
    );
}

/// Sends a scrape over `stream`; the answer, or what the closed connection gave.
fn http_scrape_over(mut stream: TcpStream) -> String {
    let _ = write!(
        stream,
        "GET /scrape HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn listed_sources_are_ignored_and_counted_and_a_reload_swaps_the_list() {
    let dir = test_dir("blocklist");
    let list = dir.join("block.txt");
    std::fs::write(&list, "# one loopback host\n127.0.0.2\n").unwrap();
    let toml = |path: &std::path::Path| {
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = [\"127.0.0.1:0\"]\n\
             [workers]\ncount = 2\n{FAST_METRICS}[blocklist]\npath = \"{}\"\n",
            path.display()
        )
    };
    let t = start_tracker_toml(&toml(&list));
    let (udp, http) = (v4(&t), t.http_addresses()[0]);

    let mut listed = Client::bound(udp, "127.0.0.2:0");
    listed.send(&connect_packet(7));
    blocked(&t, "udp", 1.0);
    // Counted instead of answered: nothing is on its way.
    listed.socket.set_nonblocking(true).unwrap();
    assert!(listed.recv_raw().is_none());
    listed.socket.set_nonblocking(false).unwrap();
    let mut free = Client::bound(udp, "127.0.0.3:0");
    free.connect();

    let reply = http_scrape_over(connect_from("127.0.0.2:0", http));
    assert!(!reply.contains("200 OK"), "{reply}");
    blocked(&t, "http", 1.0);
    let reply = http_scrape_over(connect_from("127.0.0.3:0", http));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A bad file changes nothing.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "127.0.0.3\nnonsense\n").unwrap();
    let e = t
        .reload(&Config::from_toml_str(&toml(&bad), "t").unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    free.connect();

    // The list now names 127.0.0.3 and not 127.0.0.2.
    let swapped = dir.join("swapped.txt");
    std::fs::write(&swapped, "127.0.0.3/32\n").unwrap();
    t.reload(&Config::from_toml_str(&toml(&swapped), "t").unwrap())
        .unwrap();
    listed.connect();
    free.send(&connect_packet(9));
    blocked(&t, "udp", 2.0);
    let reply = http_scrape_over(connect_from("127.0.0.2:0", http));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let reply = http_scrape_over(connect_from("127.0.0.3:0", http));
    assert!(!reply.contains("200 OK"), "{reply}");
    blocked(&t, "http", 2.0);
    t.stop().unwrap();
}

#[test]
fn a_bad_blocklist_is_fatal_at_start_naming_file_and_line() {
    let dir = test_dir("blocklist-bad");
    let list = dir.join("block.txt");
    std::fs::write(&list, "10.0.0.0/8\n10.0.0.0/40\n").unwrap();
    let config = Config::from_toml_str(
        &format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[blocklist]\npath = \"{}\"\n",
            list.display()
        ),
        "t",
    )
    .unwrap();
    let e = hayate_tracker::Tracker::start(config)
        .err()
        .expect("refused");
    let text = format!("{e:#}");
    assert!(text.contains("block.txt, line 2"), "{text}");
}
