//! Shared by the integration tests: a real tracker on loopback with ephemeral ports, and a
//! small BEP 15 client over real UDP sockets. Every wait is bounded.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hayate_tracker::{Config, Tracker};

/// A tracker on 127.0.0.1 and ::1 with ephemeral ports; `extra` is TOML layered on top.
pub fn start_tracker(workers: u32, extra: &str) -> Tracker {
    start_tracker_with_udp(workers, "", extra)
}

/// The UDP I/O loops a tracker can run; the UDP tests run against each.
pub const BACKENDS: [&str; 2] = ["io_uring", "epoll"];

/// As `start_tracker`, with `udp` (TOML keys for the `[udp]` table, e.g. `backend = "epoll"`)
/// added to the test's `[udp]` table; `extra` must not hold a `[udp]` table.
pub fn start_tracker_with_udp(workers: u32, udp: &str, extra: &str) -> Tracker {
    // HTTP off: its default port is fixed, and parallel tests must not fight over it.
    start_from(&format!(
        "[udp]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n{udp}\n[http]\naddresses = []\n[workers]\ncount = {workers}\n{extra}"
    ))
}

/// Starts a tracker on `text`, giving it an ephemeral metrics port unless the text sets its
/// own (the default port is fixed, and parallel tests must not fight over it).
fn start_from(text: &str) -> Tracker {
    let text = if text.contains("[metrics]") {
        text.to_string()
    } else {
        format!("{text}\n[metrics]\naddress = \"127.0.0.1:0\"\n")
    };
    let config = Config::from_toml_str(&text, "test config").expect("test config is valid");
    Tracker::start(config).expect("tracker starts")
}

/// Why this host cannot set up an io_uring (an old kernel, a seccomp profile that forbids it),
/// or `None` where it can. Probed once per test binary with a small ring of our own, not the
/// tracker's, so a tracker bug still fails its tests instead of skipping them.
pub fn io_uring_unavailable() -> Option<String> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(|| io_uring::IoUring::new(8).err().map(|e| e.to_string()))
        .clone()
}

/// True (after printing why) when a test of `backend` must be skipped: io_uring asked for
/// where the host has none.
pub fn skip_backend(backend: &str) -> bool {
    match (backend, io_uring_unavailable()) {
        ("io_uring", Some(why)) => {
            println!("skipped: io_uring unavailable: {why}");
            true
        }
        _ => false,
    }
}

/// One connected client per worker of `t` on `addr`, in worker order: (client, connection id).
/// Which worker a socket reaches is the kernel's SO_REUSEPORT hash of its address, so sockets
/// are opened until every worker's connect counter has moved for one (bounded).
pub fn client_per_worker(t: &Tracker, addr: SocketAddr) -> Vec<(Client, u64)> {
    use hayate_tracker::stats::{Action, IpVersion};
    let workers = t.sources().workers.len();
    let connects = |w: usize| {
        t.sources().workers[w]
            .udp
            .snapshot()
            .requests(Action::Connect, IpVersion::of(addr.ip()))
    };
    let mut found: Vec<Option<(Client, u64)>> = (0..workers).map(|_| None).collect();
    for _ in 0..256 {
        let before: Vec<u64> = (0..workers).map(connects).collect();
        let mut c = Client::new(addr);
        let cid = c.connect();
        // The worker counts before it replies; a relaxed read may lag by a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let owner = loop {
            let moved: Vec<usize> = (0..workers).filter(|&w| connects(w) != before[w]).collect();
            match moved[..] {
                [w] => break w,
                [] if std::time::Instant::now() < deadline => std::thread::yield_now(),
                _ => panic!("one connect moved workers {moved:?}"),
            }
        };
        if found[owner].is_none() {
            found[owner] = Some((c, cid));
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("256 sockets never reached every one of {workers} workers");
}

/// A tracker whose UDP workers run `backend` ("io_uring" or "epoll"); checks it got it.
pub fn start_tracker_on(backend: &str, workers: u32, extra: &str) -> Tracker {
    let t = start_tracker_with_udp(workers, &format!("backend = \"{backend}\""), extra);
    assert_eq!(t.backend(), backend);
    t
}

/// The same with the HTTP frontend on 127.0.0.1 and ::1 (ephemeral ports): `http` is TOML
/// keys for the `[http]` table, `extra` more TOML layered on top (without an `[http]` table).
pub fn start_tracker_http(workers: u32, http: &str, extra: &str) -> Tracker {
    start_from(&format!(
        "[udp]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         [http]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n{http}\n\
         [workers]\ncount = {workers}\n{extra}"
    ))
}

pub fn http_v4(t: &Tracker) -> SocketAddr {
    t.http_addresses()[0]
}

pub fn http_v6(t: &Tracker) -> SocketAddr {
    t.http_addresses()[1]
}

pub fn v4(t: &Tracker) -> SocketAddr {
    t.udp_addresses()[0]
}

pub fn v6(t: &Tracker) -> SocketAddr {
    t.udp_addresses()[1]
}

/// A BEP 15 client bound to a loopback address of the tracker's family.
pub struct Client {
    pub socket: UdpSocket,
    pub tracker: SocketAddr,
    next_txid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Connect {
        txid: u32,
        connection_id: u64,
    },
    Announce {
        txid: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        txid: u32,
        entries: Vec<(u32, u32, u32)>,
    },
    Error {
        txid: u32,
        message: String,
    },
}

pub const EVENT_NONE: u32 = 0;
pub const EVENT_COMPLETED: u32 = 1;
pub const EVENT_STARTED: u32 = 2;
pub const EVENT_STOPPED: u32 = 3;

impl Client {
    pub fn new(tracker: SocketAddr) -> Client {
        Self::bound(
            tracker,
            if tracker.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            },
        )
    }

    /// A client on a chosen local address, e.g. "127.0.0.2:0" to be another host.
    pub fn bound(tracker: SocketAddr, local: &str) -> Client {
        let socket = UdpSocket::bind(local).expect("bind client");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Client {
            socket,
            tracker,
            next_txid: 1,
        }
    }

    pub fn txid(&mut self) -> u32 {
        self.next_txid += 1;
        self.next_txid
    }

    pub fn send(&self, packet: &[u8]) {
        self.socket.send_to(packet, self.tracker).expect("send");
    }

    /// The next datagram, or None after the read timeout.
    pub fn recv_raw(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 8192];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn recv(&self) -> Reply {
        let d = self
            .recv_raw()
            .expect("tracker answered within the timeout");
        decode(&d, self.tracker.is_ipv4())
    }

    pub fn connect(&mut self) -> u64 {
        let txid = self.txid();
        self.send(&connect_packet(txid));
        match self.recv() {
            Reply::Connect {
                txid: t,
                connection_id,
            } if t == txid => connection_id,
            other => panic!("expected connect reply, got {other:?}"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &mut self,
        cid: u64,
        info_hash: [u8; 20],
        port: u16,
        left: u64,
        event: u32,
        num_want: i32,
    ) -> Reply {
        let txid = self.txid();
        self.send(&announce_packet(
            cid, txid, info_hash, port, left, event, num_want,
        ));
        let r = self.recv();
        match &r {
            Reply::Announce { txid: t, .. } | Reply::Error { txid: t, .. } => assert_eq!(*t, txid),
            other => panic!("expected announce reply, got {other:?}"),
        }
        r
    }

    pub fn scrape(&mut self, cid: u64, hashes: &[[u8; 20]]) -> Reply {
        let txid = self.txid();
        self.send(&scrape_packet(cid, txid, hashes));
        self.recv()
    }
}

pub fn connect_packet(txid: u32) -> Vec<u8> {
    let mut p = 0x41727101980u64.to_be_bytes().to_vec();
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&txid.to_be_bytes());
    p
}

pub fn announce_packet(
    cid: u64,
    txid: u32,
    info_hash: [u8; 20],
    port: u16,
    left: u64,
    event: u32,
    num_want: i32,
) -> Vec<u8> {
    let mut p = cid.to_be_bytes().to_vec();
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&txid.to_be_bytes());
    p.extend_from_slice(&info_hash);
    let mut peer_id = *b"-TT0001-000000000000";
    peer_id[12..14].copy_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&peer_id);
    p.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    p.extend_from_slice(&left.to_be_bytes());
    p.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    p.extend_from_slice(&event.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // ip
    p.extend_from_slice(&0x1234u32.to_be_bytes()); // key
    p.extend_from_slice(&num_want.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p
}

pub fn scrape_packet(cid: u64, txid: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let mut p = cid.to_be_bytes().to_vec();
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&txid.to_be_bytes());
    for h in hashes {
        p.extend_from_slice(h);
    }
    p
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

pub fn decode(d: &[u8], ipv4: bool) -> Reply {
    assert!(d.len() >= 8, "reply too short: {d:?}");
    let txid = be32(d, 4);
    match be32(d, 0) {
        0 => Reply::Connect {
            txid,
            connection_id: u64::from_be_bytes(d[8..16].try_into().unwrap()),
        },
        1 => {
            let size = if ipv4 { 6 } else { 18 };
            let body = &d[20..];
            assert_eq!(body.len() % size, 0, "peer list is whole peers");
            let peers = body
                .chunks(size)
                .map(|c| {
                    let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                    if ipv4 {
                        SocketAddr::from((<[u8; 4]>::try_from(&c[..4]).unwrap(), port))
                    } else {
                        SocketAddr::from((<[u8; 16]>::try_from(&c[..16]).unwrap(), port))
                    }
                })
                .collect();
            Reply::Announce {
                txid,
                interval: be32(d, 8),
                leechers: be32(d, 12),
                seeders: be32(d, 16),
                peers,
            }
        }
        2 => Reply::Scrape {
            txid,
            entries: d[8..]
                .chunks(12)
                .map(|c| (be32(c, 0), be32(c, 4), be32(c, 8)))
                .collect(),
        },
        3 => Reply::Error {
            txid,
            message: String::from_utf8_lossy(&d[8..]).into_owned(),
        },
        a => panic!("unknown action {a} in reply"),
    }
}

/// An info hash owned by worker `shard` of `shards`, distinct per `n`.
pub fn hash_for_shard(shard: usize, shards: usize, n: u8) -> [u8; 20] {
    for i in 0u32.. {
        let mut h = [n; 20];
        // Big-endian, as `shard_of` reads it: the counter's low bits pick the shard, so the
        // first few tries find one (little-endian took 2^24 tries for an odd shard).
        h[..4].copy_from_slice(&i.to_be_bytes());
        h[4..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_le_bytes());
        if hayate_tracker::mesh::shard_of(&h, shards) == shard {
            return h;
        }
    }
    unreachable!()
}

/// A plain HTTP/1.1 GET over a fresh TCP connection: (status, content type, body). Bounded by
/// a 5-second timeout; `accept` sets the Accept header.
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the HTTP endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the HTTP answer");
    // Lossy: tracker bodies carry raw hashes and peers; tests match on the text around them.
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let kind = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map_or(String::new(), |(_, v)| v.trim().to_string());
    (status, kind, body.to_string())
}

/// The tracker's `/metrics` page in the Prometheus text format.
pub fn metrics_text(t: &Tracker) -> String {
    let addr = t.metrics_address().expect("metrics endpoint is on");
    let (status, _, body) = http_get(addr, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `name{labels}` on a Prometheus text page: the labels must be exactly
/// the sample's (in any order). `None` if the page has no such sample.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, mut got) = match series.split_once('{') {
                Some((metric, rest)) => {
                    let inner = rest.strip_suffix('}')?;
                    let pairs: Option<Vec<(String, String)>> = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"")?;
                            Some((k.to_string(), v.trim_end_matches('"').to_string()))
                        })
                        .collect();
                    (metric, pairs?)
                }
                None => (series, Vec::new()),
            };
            got.sort();
            (metric == name && got == want).then(|| value.parse().ok())?
        })
}

/// Polls the `/metrics` page at `addr` until `name{labels}` reads `want`, for at most
/// `within`; panics with the last value seen otherwise. Returns the page that matched.
pub fn wait_sample(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, _, page) = http_get(addr, "/metrics", None);
        assert_eq!(status, 200, "{page}");
        let got = sample(&page, name, labels);
        if got == Some(want) {
            return page;
        }
        if std::time::Instant::now() > deadline {
            panic!("{name}{labels:?} is {got:?}, not {want}, after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// TOML for a metrics endpoint on an ephemeral port that gathers every 100 ms (the minimum),
/// so tests see counts soon after the traffic.
pub const FAST_METRICS: &str = "[metrics]\naddress = \"127.0.0.1:0\"\ninterval_ms = 100\n";

/// As `start_tracker_http`, with the UDP workers on `backend` ("io_uring" or "epoll").
pub fn start_tracker_http_on(backend: &str, workers: u32, extra: &str) -> Tracker {
    let t = start_from(&format!(
        "[udp]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\nbackend = \"{backend}\"\n\
         [http]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         [workers]\ncount = {workers}\n{extra}"
    ));
    assert_eq!(t.backend(), backend);
    t
}

/// Every byte percent-escaped, as an info hash goes in a query string.
pub fn url_escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02x}")).collect()
}

/// An HTTP announce of `hash` for peer port `port` (peer id derived from the port), with the
/// peer list in dictionary form without peer ids, so the body is plain text; `extra` is more
/// query parameters ("&numwant=3"). Returns the status and the body.
pub fn http_announce(
    addr: SocketAddr,
    hash: &[u8; 20],
    port: u16,
    left: u64,
    extra: &str,
) -> (u16, String) {
    let path = format!(
        "/announce?info_hash={}&peer_id=-HT0001-{port:012}&port={port}&left={left}\
         &compact=0&no_peer_id=1{extra}",
        url_escape(hash)
    );
    let (status, _, body) = http_get(addr, &path, None);
    (status, body)
}

/// The peers of an HTTP announce body in dictionary form, sorted.
pub fn http_dict_peers(body: &str) -> Vec<SocketAddr> {
    let mut peers: Vec<SocketAddr> = body
        .split("2:ip")
        .skip(1)
        .map(|rest| {
            let (len, rest) = rest.split_once(':').expect("ip length");
            let len: usize = len.parse().expect("ip length is a number");
            let ip: std::net::IpAddr = rest[..len].parse().expect("an IP address");
            let port = rest[len..]
                .split_once("4:porti")
                .and_then(|(_, p)| p.split_once('e'))
                .and_then(|(p, _)| p.parse().ok())
                .expect("a port");
            SocketAddr::new(ip, port)
        })
        .collect();
    peers.sort();
    peers
}

/// (complete, downloaded, incomplete) of `hash` in an HTTP scrape of `hashes`.
pub fn http_scrape(addr: SocketAddr, hashes: &[[u8; 20]], hash: &[u8; 20]) -> (u64, u64, u64) {
    let query: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", url_escape(h)))
        .collect();
    let path = format!("/scrape?{}", query.join("&"));
    // The body holds raw hashes; read it as bytes to find this one's entry.
    let (status, body) = http_get_bytes(addr, &path);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let at = body
        .windows(20)
        .position(|w| w == hash)
        .expect("the scraped hash is in the reply");
    let entry = String::from_utf8_lossy(&body[at + 20..]).into_owned();
    let int = |key: &str| -> u64 {
        let (_, rest) = entry.split_once(key).expect("a scrape field");
        rest[1..rest.find('e').unwrap()].parse().unwrap()
    };
    (
        int("8:complete"),
        int("10:downloaded"),
        int("10:incomplete"),
    )
}

/// The status and raw body of a GET, for replies that carry binary data.
pub fn http_get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the HTTP endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the HTTP answer");
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head and a body");
    let status = String::from_utf8_lossy(&raw[..at])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, raw[at + 4..].to_vec())
}

/// A tracker on exactly `text` (TOML), plus an ephemeral metrics port unless it has `[metrics]`.
pub fn start_tracker_toml(text: &str) -> Tracker {
    start_from(text)
}

/// The source address of the next datagram `c` receives, with its decoded reply.
pub fn recv_with_source(c: &Client) -> (SocketAddr, Reply) {
    let mut buf = [0u8; 8192];
    let (n, from) = c
        .socket
        .recv_from(&mut buf)
        .expect("tracker answered within the timeout");
    (from, decode(&buf[..n], c.tracker.is_ipv4()))
}

/// The `hayate` binary running on a config file, its stderr collected as it comes, and the
/// addresses it reported binding (so its config can use port 0). Killed when dropped, so a
/// failing test leaves no tracker behind.
pub struct Daemon {
    child: Option<std::process::Child>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    pub udp: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// The addresses in `field=[a, b]` or `field=Some(a)` of a log line.
fn logged_addresses(line: &str, field: &str) -> Vec<SocketAddr> {
    let Some((_, rest)) = line.split_once(&format!(" {field}=")) else {
        return Vec::new();
    };
    let (open, close) = if rest.starts_with("Some(") {
        ("Some(", ')')
    } else {
        ("[", ']')
    };
    let Some(rest) = rest.strip_prefix(open) else {
        return Vec::new();
    };
    // IPv6 addresses carry brackets of their own: the list ends at the first unmatched one.
    let mut depth = 0;
    let end = rest
        .char_indices()
        .find(|&(_, ch)| match ch {
            '[' => {
                depth += 1;
                false
            }
            ']' if depth > 0 => {
                depth -= 1;
                false
            }
            c => c == close && depth == 0,
        })
        .map(|(i, _)| i)
        .expect("a closed address list");
    rest[..end]
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a logged socket address"))
        .collect()
}

impl Daemon {
    /// Starts `cmd` (the binary with its arguments) and waits, at most 10 s, for its
    /// "hayate serving" line.
    pub fn start(mut cmd: std::process::Command) -> Daemon {
        use std::io::BufRead;
        cmd.env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("start the hayate binary");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        // Ends at end of file, when the process is gone.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut d = Daemon {
            child: Some(child),
            log,
            udp: Vec::new(),
            http: Vec::new(),
            metrics: None,
        };
        let serving = d.wait_log("hayate serving", 1, Duration::from_secs(10));
        let line = serving
            .lines()
            .find(|l| l.contains("hayate serving"))
            .unwrap()
            .to_string();
        d.udp = logged_addresses(&line, "udp");
        d.http = logged_addresses(&line, "http");
        d.metrics = logged_addresses(&line, "metrics").first().copied();
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `needle` appears `times` times in the log; panics with the log after
    /// `within`, or if the process exits first. Returns the log.
    pub fn wait_log(&mut self, needle: &str, times: usize, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("hayate exited ({status}) before logging {needle:?}:\n{log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} ({times}x) within {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// Waits, at most `within`, for the process to exit; returns its status and whole log.
    pub fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + within;
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hayate did not exit within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader thread reaches end of file once the process is gone; give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::sync::Arc::strong_count(&self.log) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `hayate` binary with `--config path`.
pub fn hayate_with_config(path: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_hayate"));
    c.arg("--config").arg(path);
    c
}

/// A fresh directory for one test's files, named after the test and this process.
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hayate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 40 hex digits, as access lists name info hashes.
pub fn hex(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP connection to `to` from the local address `from` (e.g. "127.0.0.2:0", another host),
/// with a 10 s read timeout.
pub fn connect_from(from: &str, to: SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&from.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// The first of `names` installed on PATH (it runs with `--version`), for tests that drive a
/// real program. Without one the test skips with a note, except under CI=true, where `.ci/run`
/// installs Debian's `package` and its absence is a failure.
pub fn tool(names: &[&'static str], package: &str) -> Option<&'static str> {
    let found = names.iter().copied().find(|name| {
        std::process::Command::new(name)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{names:?} is required under CI=true (Debian package `{package}`)");
        }
        eprintln!("skipped: none of {names:?} on PATH (Debian package `{package}`)");
    }
    found
}
