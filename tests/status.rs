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

/// Metrics every 100 ms and a census every second.
fn census_config() -> String {
    format!("{FAST_METRICS}census_secs = 1\n")
}

/// `/status.json` once its census counts `peers` peers by client (censuses follow the traffic
/// within a second or two).
fn status_with_census(metrics: SocketAddr, peers: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status_json(metrics);
        let counted: u64 = s["census"]["clients"]
            .as_array()
            .map_or(0, |c| c.iter().map(|c| c["peers"].as_u64().unwrap()).sum());
        if counted == peers {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no census of {peers} peers: {:#}",
            s["census"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_census_shows_the_largest_torrents_and_peers_by_client() {
    let t = start_tracker_http(2, "", &census_config());
    let metrics = t.metrics_address().unwrap();
    make_traffic(&t);
    let s = status_with_census(metrics, 8);
    let c = &s["census"];
    // Four torrents of two peers each: a tie, broken by info hash.
    let top: Vec<(String, u64, u64)> = c["top_torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let n = |k: &str| t[k].as_u64().unwrap();
            (
                t["info_hash"].as_str().unwrap().to_string(),
                n("seeders"),
                n("leechers"),
            )
        })
        .collect();
    let hex = |n: u8| format!("{n:02x}").repeat(20);
    assert_eq!(
        top,
        [
            (hex(0), 1, 1),
            (hex(1), 1, 1),
            (hex(2), 0, 2),
            (hex(9), 0, 2)
        ],
        "{c:#}"
    );
    // The UDP helper's peer ids are -TT0001-..., the HTTP helper's -HT0001-... (no known client).
    let clients: Vec<(&str, u64)> = c["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["client"].as_str().unwrap(), c["peers"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        clients,
        [("TuoTu", 6), ("other (Azureus-style)", 2)],
        "{c:#}"
    );
    assert!(c["age_secs"].as_u64().unwrap() < 60, "{c:#}");

    let (_, _, html) = http_get(metrics, "/", None);
    for (id, want) in [
        ("top_torrents.0.seeders", "1"),
        ("top_torrents.3.leechers", "2"),
        ("clients.0.client", "TuoTu"),
        ("clients.0.peers", "6"),
        ("clients.1.peers", "2"),
    ] {
        assert!(
            html.contains(&format!("id={id}>{want}<")),
            "{id} = {want} in {html}"
        );
    }
    assert!(
        html.contains(&format!("href=\"/api/torrent/{}\"", hex(9))),
        "{html}"
    );
}

#[test]
fn a_torrent_lookup_gives_its_counts_and_with_peers_1_its_peers() {
    let t = start_tracker_http(2, "", FAST_METRICS);
    let metrics = t.metrics_address().unwrap();
    make_traffic(&t);
    let hex9 = "09".repeat(20);
    let get = |path: &str| {
        let (status, kind, body) = http_get(metrics, path, None);
        assert_eq!(kind, "application/json", "{body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, json)
    };
    let (status, bare) = get(&format!("/api/torrent/{hex9}"));
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["info_hash"], hex9);
    assert_eq!(
        (bare["seeders"].as_u64(), bare["leechers"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(bare["downloaded"], 0);
    assert!(bare.get("peers").is_none(), "{bare}");

    // Upper case is the same torrent.
    let (status, full) = get(&format!("/api/torrent/{}?peers=1", hex9.to_uppercase()));
    assert_eq!(status, 200, "{full}");
    let mut peers: Vec<(String, u64, bool, String)> = full["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let secs = p["expires_in_secs"].as_u64().unwrap();
            assert!(secs > 0 && secs <= 3600, "{p}");
            (
                p["ip"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
                p["seeder"].as_bool().unwrap(),
                p["client"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    peers.sort();
    let other = "other (Azureus-style)".to_string();
    assert_eq!(
        peers,
        [
            ("127.0.0.1".into(), 8001, false, other.clone()),
            ("127.0.0.1".into(), 8002, false, other)
        ]
    );
    // A seeder and a leecher over UDP.
    let (_, zero) = get(&format!("/api/torrent/{}?peers=1", "00".repeat(20)));
    let seeders = zero["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["seeder"] == true);
    assert_eq!(seeders.count(), 1, "{zero}");
    assert_eq!(zero["peers"][0]["client"], "TuoTu");

    let (status, unknown) = get(&format!("/api/torrent/{}", "ab".repeat(20)));
    assert_eq!(status, 404, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("holds no peers"),
        "{unknown}"
    );
    let (status, bad) = get("/api/torrent/not-a-hash");
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("40 hex digits"),
        "{bad}"
    );
    let (status, bad) = get(&format!("/api/torrent/{}", "zz".repeat(20)));
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("not hexadecimal"),
        "{bad}"
    );
}

/// The published schema of `/status.json` (`contrib/status.schema.json`).
fn schema() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/status.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON schema")
}

fn assert_valid(schema: &jsonschema::Validator, doc: &serde_json::Value) {
    let errors: Vec<String> = schema
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\nin {doc:#}");
}

#[test]
fn status_json_keeps_to_its_published_schema_before_and_after_traffic() {
    let schema = schema();
    let t = start_tracker_http(2, "", &census_config());
    let metrics = t.metrics_address().unwrap();
    assert_valid(&schema, &status_json(metrics));
    make_traffic(&t);
    let s = status_with_census(metrics, 8);
    assert_valid(&schema, &s);
    // The schema is strict enough to notice drift: a field renamed, a type changed, one added.
    let mut renamed = s.clone();
    let swarm = renamed.as_object_mut().unwrap().remove("swarm").unwrap();
    renamed["swarms"] = swarm;
    let mut retyped = s.clone();
    retyped["swarm"]["torrents"] = "4".into();
    let mut bad_hash = s.clone();
    bad_hash["census"]["top_torrents"][0]["info_hash"] = "XYZ".into();
    for wrong in [renamed, retyped, bad_hash] {
        assert!(!schema.is_valid(&wrong), "accepted {wrong:#}");
    }
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
    let Some(browser) = tool(&["chromium", "chromium-browser"], "chromium") else {
        return;
    };
    let t = start_tracker_http(2, "", &census_config());
    let metrics = t.metrics_address().unwrap();
    make_traffic(&t);
    // With the census in, so the page (and the screenshot) has every table.
    let s = status_with_census(metrics, 8);
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
        (
            "clients.0.client",
            s["census"]["clients"][0]["client"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        (
            "top_torrents.0.seeders",
            s["census"]["top_torrents"][0]["seeders"].to_string(),
        ),
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
