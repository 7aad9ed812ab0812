//! The status page (`GET /`) and `GET /status.json` on the metrics address, after known
//! traffic over UDP and HTTP: the JSON gives the counts that traffic makes and the same figures
//! `/metrics` gives; the page shows the same figures, needs nothing but itself (no script, no
//! asset from elsewhere) and reloads itself; and, in a real browser (Debian's `chromium`,
//! headless; required when CI=true, skipped with a note otherwise), the rendered page holds
//! those figures, and a screenshot of it is kept in `target/status-page.png`.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn hash(n: u8) -> [u8; 20] {
    [n; 20]
}

fn status_json(metrics: SocketAddr) -> serde_json::Value {
    let (status, kind, body) = http_get(metrics, "/status.json", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(kind, "application/json");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The sum of every `name` sample whose labels include all of `labels`.
fn total(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// Known traffic: over UDP a connect, six announces to three torrents (two as seeders) and one
/// announce cut short (malformed); over HTTP two leechers on a fourth torrent. Returns once
/// `/metrics` shows the swarm it made (the gauges follow the workers' one-second tick), with
/// that page.
fn make_traffic(t: &hayate_tracker::Tracker) -> String {
    let mut c = Client::new(v4(t));
    let cid = c.connect();
    for n in 0..6u8 {
        let left = if n < 2 { 0 } else { 1 };
        let reply = c.announce(
            cid,
            hash(n % 3),
            7000 + u16::from(n),
            left,
            EVENT_STARTED,
            0,
        );
        assert!(matches!(reply, Reply::Announce { .. }), "{reply:?}");
    }
    let txid = c.txid();
    let cut = &announce_packet(cid, txid, hash(1), 1, 1, EVENT_STARTED, 0)[..40];
    c.send(cut);
    assert!(matches!(c.recv(), Reply::Error { .. }));
    for port in [8001, 8002] {
        let (status, body) = http_announce(http_v4(t), &hash(9), port, 1, "");
        assert_eq!(status, 200, "{body}");
    }
    let metrics = t.metrics_address().unwrap();
    let within = Duration::from_secs(10);
    wait_sample(metrics, "hayate_torrents", &[], 4.0, within);
    // Torrents never go down here, so the page where the leechers are in shows both.
    wait_sample(metrics, "hayate_leechers", &[], 6.0, within)
}

#[test]
fn the_status_json_and_page_show_what_the_traffic_made_and_metrics_says() {
    let t = start_tracker_http(2, "", FAST_METRICS);
    let metrics = t.metrics_address().unwrap();
    // The stats thread takes its first snapshot as it starts, which may be after the tracker
    // is up: the page answering proves that one exists, so the rates have a start before the
    // traffic (CI once made its traffic first, and every rate read 0).
    assert_eq!(status_json(metrics)["protocols"][0]["requests_total"], 0);
    let page = make_traffic(&t);
    let s = status_json(metrics);

    // What the traffic made.
    assert_eq!(s["swarm"]["torrents"], 4, "{s:#}");
    assert_eq!(s["swarm"]["seeders"], 2);
    assert_eq!(s["swarm"]["leechers"], 6);
    assert_eq!(s["swarm"]["peers"], 8);
    let udp = &s["protocols"][0];
    let http = &s["protocols"][1];
    assert_eq!(
        (udp["protocol"].as_str(), http["protocol"].as_str()),
        (Some("udp"), Some("http"))
    );
    assert_eq!(udp["requests_total"], 8);
    assert_eq!(udp["ipv4_requests_total"], 8);
    assert_eq!(udp["ipv6_requests_total"], 0);
    assert_eq!(http["requests_total"], 2);
    let action = |p: &serde_json::Value, a: &str| {
        p["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["action"] == a)
            .unwrap_or_else(|| panic!("no {a} in {p}"))["requests_total"]
            .clone()
    };
    assert_eq!(action(udp, "connect"), 1);
    assert_eq!(action(udp, "announce"), 7);
    assert_eq!(action(http, "announce"), 2);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["reason"], "malformed");
    assert_eq!(errors[0]["protocol"], "udp");
    assert_eq!(errors[0]["total"], 1);
    // Answered a moment ago, so inside the rate window, unless this machine took longer than
    // the window (10 s) since the snapshot before the traffic.
    if s["rate_window_secs"].as_f64().unwrap() < 10.0 {
        assert!(udp["latency_us"]["p50"].is_u64(), "{udp}");
        assert!(udp["requests_per_sec"].as_f64().unwrap() > 0.0, "{udp}");
    }
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let torrents: u64 = workers
        .iter()
        .map(|w| w["torrents"].as_u64().unwrap())
        .sum();
    assert_eq!(torrents, 4);
    assert_eq!(s["io"], t.backend());
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["process"]["resident_bytes"].as_u64().unwrap() > 0);

    // The same figures as /metrics.
    assert_eq!(sample(&page, "hayate_torrents", &[]), Some(4.0));
    assert_eq!(sample(&page, "hayate_seeders", &[]), Some(2.0));
    for (p, json) in [("udp", udp), ("http", http)] {
        let from_metrics = total(&page, "hayate_requests_total", &[("protocol", p)]);
        assert_eq!(json["requests_total"].as_f64(), Some(from_metrics), "{p}");
    }
    let malformed = total(
        &page,
        "hayate_errors_total",
        &[("protocol", "udp"), ("reason", "malformed")],
    );
    assert_eq!(errors[0]["total"].as_f64(), Some(malformed));

    // The page: the same figures, self-contained, reloading itself.
    let (status, kind, html) = http_get(metrics, "/", None);
    assert_eq!(status, 200);
    assert_eq!(kind, "text/html; charset=utf-8");
    for (id, want) in [
        ("swarm.torrents", "4"),
        ("swarm.seeders", "2"),
        ("swarm.leechers", "6"),
        ("swarm.peers", "8"),
        ("protocols.udp.requests_total", "8"),
        ("protocols.http.requests_total", "2"),
        ("protocols.udp.announce.requests_total", "7"),
        ("errors.udp.malformed", "1"),
    ] {
        assert!(
            html.contains(&format!("id={id}>{want}<")),
            "{id} = {want} in {html}"
        );
    }
    assert!(html.contains("http-equiv=refresh"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("src="), "{html}");
    assert!(!html.contains("href=\"http"), "{html}");
}

#[test]
fn before_any_traffic_the_page_shows_zeros_not_an_error() {
    let t = start_tracker(1, FAST_METRICS);
    let s = status_json(t.metrics_address().unwrap());
    assert_eq!(s["swarm"]["torrents"], 0);
    assert_eq!(s["protocols"][0]["requests_total"], 0);
    assert_eq!(s["errors"].as_array().map(Vec::len), Some(0));
    let (status, _, html) = http_get(t.metrics_address().unwrap(), "/", None);
    assert_eq!(status, 200);
    assert!(html.contains("<p id=errors>none</p>"), "{html}");
}

/// Debian's browser, if installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs headless chromium with `args` on `url`, for at most a minute; its stdout.
fn headless(browser: &str, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg("--disable-javascript")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[test]
fn a_real_browser_renders_the_figures_with_javascript_off() {
    let Some(browser) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is required under CI=true (Debian package `chromium`)");
        }
        eprintln!("skipped: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    let t = start_tracker_http(2, "", FAST_METRICS);
    let metrics = t.metrics_address().unwrap();
    make_traffic(&t);
    let s = status_json(metrics);
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{metrics}/");
    let dom = headless(browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<h1>hayate "), "{dom}");
    // Chromium writes attributes quoted: id="swarm.torrents">4<.
    for (id, want) in [
        ("swarm.torrents", s["swarm"]["torrents"].to_string()),
        ("swarm.peers", s["swarm"]["peers"].to_string()),
        (
            "protocols.udp.requests_total",
            s["protocols"][0]["requests_total"].to_string(),
        ),
        (
            "protocols.http.requests_total",
            s["protocols"][1]["requests_total"].to_string(),
        ),
        ("errors.udp.malformed", "1".to_string()),
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\">{want}<")),
            "{id} = {want} in the rendered page: {dom}"
        );
    }
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        browser,
        profile.path(),
        &[
            "--window-size=1000,1600",
            "--hide-scrollbars",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {} byte screenshot is blank",
        png.len()
    );
}
