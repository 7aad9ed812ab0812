//! Load generator for the HTTP tracker: `cargo bench --bench http_load -- [options]`.
//!
//! Many peers of many torrents (skewed popularity, as udp_load) announce over keep-alive HTTP/1.1
//! connections from 127.0.0.x source addresses, one request in flight per connection (closed
//! loop). The client is hand-written over std's TcpStream and epoll: one write per request, the
//! response head and its Content-Length body read back, the compact `peers` string's length
//! taken from the bencode. It prints responses per second, latency percentiles and, when it
//! knows the server's pid, the server's CPU time per response and resident memory.
//!
//! `--hello` runs the same client against a bare hyper "hello world" server
//! (`examples/hello_server.rs`, started as a child of this bench) pinned like the tracker would
//! be, for the baseline the HTTP target is measured against; `--compare` runs the baseline and
//! then hayate and prints the ratios. Every loop is bounded by --duration.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

mod load;
use load::{cores, info_hash, pin, pinned, proc_figures, splitmix, torrent_of_peer, Figures};
use socket2::{Domain, Protocol, Socket, Type};

#[allow(dead_code)]
#[path = "../examples/hello_server.rs"]
mod hello_server;

/// HTTP announce load generator for hayate (or any HTTP tracker).
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Start hayate itself (the release binary next to this bench) instead of using --target.
    #[arg(long)]
    spawn: bool,
    /// Run the hello baseline and then hayate (as --spawn starts it) under the same load,
    /// pinned the same way, and print each figure's ratio.
    #[arg(long)]
    compare: bool,
    /// With --compare: rounds of both servers, the order alternating, then each ratio's
    /// median and range over the rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Start a bare hyper "hello world" server instead of hayate (the baseline).
    #[arg(long)]
    hello: bool,
    /// Config file for --spawn; by default HTTP only on 127.0.0.1, one worker per
    /// --tracker-cores entry, no metrics endpoint.
    #[arg(long)]
    config: Option<String>,
    /// Cores to pin a spawned server to (comma-separated); hayate's workers are pinned one per core.
    #[arg(long, default_value = "0")]
    tracker_cores: String,
    /// A running HTTP tracker to load (IPv4 or IPv6 address with port).
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Pid of the --target server, to report its CPU and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to measure, after the prefill and warm-up.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Load threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Cores to pin load threads to (comma-separated, used in turn).
    #[arg(long, default_value = "1")]
    load_cores: String,
    /// Keep-alive connections over all load threads, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Distinct torrents.
    #[arg(long, default_value_t = 100_000)]
    torrents: u64,
    /// Distinct peers; each always announces the same torrent from the same address and port.
    #[arg(long, default_value_t = 200_000)]
    peers: u64,
    /// numwant sent in announces.
    #[arg(long, default_value_t = 30)]
    numwant: i32,
    /// Skip announcing every peer once (event=started) before the warm-up.
    #[arg(long)]
    no_prefill: bool,
    /// Internal: serve the hello baseline on this address (what --hello starts).
    #[arg(long, hide = true)]
    serve_hello: Option<SocketAddr>,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes as libtorrent does: unreserved characters as they are, the rest as `%XX`.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    peers_returned: AtomicU64,
    announces_answered: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
}

struct Shared {
    args: Args,
    target: SocketAddr,
    /// The Host header's value.
    host: Vec<u8>,
    /// Source addresses the peers are striped over (one per connection, up to 250).
    sources: usize,
    prefill: bool,
    measuring: AtomicBool,
    stop: AtomicBool,
    totals: Totals,
    latency: Mutex<Histogram<u64>>,
}

/// One keep-alive connection and the request it has in flight.
struct Conn {
    stream: TcpStream,
    source: usize,
    buf: Vec<u8>,
    filled: usize,
    sent_at: Option<Instant>,
}

fn open(shared: &Shared, source: usize) -> std::io::Result<TcpStream> {
    let target = shared.target;
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if target.is_ipv4() && target.ip().is_loopback() {
        let local: SocketAddr = format!("127.0.0.{}:0", 1 + source).parse().unwrap();
        socket.bind(&local.into())?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

/// Writes the next announce of a random peer of this connection's source address.
fn request(out: &mut Vec<u8>, shared: &Shared, source: usize, rng: &mut u64) {
    let a = &shared.args;
    *rng = splitmix(*rng);
    let sources = shared.sources as u64;
    let per_source = (a.peers / sources).max(1);
    let peer = (*rng >> 8) % per_source * sources + source as u64;
    let torrent = torrent_of_peer(peer, a.torrents);
    let id = splitmix(peer ^ 0x5eed);
    out.clear();
    out.extend_from_slice(b"GET /announce?info_hash=");
    escape_into(out, &info_hash(torrent));
    out.extend_from_slice(b"&peer_id=-qB4650-");
    escape_into(out, &id.to_le_bytes()[..6]);
    escape_into(out, &(id >> 48).to_le_bytes()[..6]);
    out.extend_from_slice(b"&port=");
    push_number(out, 1 + (peer / sources) % 65000);
    out.extend_from_slice(b"&uploaded=0&downloaded=0&left=");
    push_number(out, if peer % 4 == 0 { 0 } else { 1_073_741_824 });
    out.extend_from_slice(b"&corrupt=0&key=");
    for shift in (0..8).rev() {
        out.push(HEX[((id >> (shift * 4)) & 15) as usize]);
    }
    if shared.prefill {
        out.extend_from_slice(b"&event=started");
    }
    out.extend_from_slice(b"&numwant=");
    push_number(out, a.numwant.max(0) as u64);
    out.extend_from_slice(
        b"&compact=1&no_peer_id=1&supportcrypto=1&redundant=0 HTTP/1.1\r\nHost: ",
    );
    out.extend_from_slice(&shared.host);
    out.extend_from_slice(
        b"\r\nUser-Agent: qBittorrent/4.6.5\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n",
    );
}

/// A whole response in `buf`: its length and body range, or `None` while more must be read.
fn response_length(buf: &[u8]) -> Option<Result<(usize, usize), ()>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut length = None;
    for line in buf[..head_end].split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            length = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
        }
    }
    let Some(length) = length else {
        return Some(Err(()));
    };
    (buf.len() >= head_end + length).then_some(Ok((head_end, head_end + length)))
}

/// Peers in a bencoded announce reply: the compact `peers` string's length / 6. `None` for a
/// `failure reason` or a body that is not an announce reply (the hello server's).
fn peers_in(body: &[u8]) -> Option<usize> {
    let at = body.windows(7).position(|w| w == b"5:peers")? + 7;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let len: usize = std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()?;
    Some(len / 6)
}

fn load_thread(shared: Arc<Shared>, index: usize) -> std::io::Result<()> {
    let a = &shared.args;
    let lc = cores(&a.load_cores);
    if !lc.is_empty() {
        pin(lc[index % lc.len()]);
    }
    let mut conns = Vec::new();
    for c in (index..a.connections).step_by(a.workers) {
        let source = c % shared.sources;
        conns.push(Conn {
            stream: open(&shared, source)?,
            source,
            buf: vec![0u8; 16 * 1024],
            filled: 0,
            sent_at: None,
        });
    }
    // SAFETY: plain epoll on descriptors this thread owns.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let register = |fd: i32, key: usize| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key as u64,
        };
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    };
    for (key, c) in conns.iter().enumerate() {
        register(c.stream.as_raw_fd(), key);
    }
    let mut rng = splitmix(index as u64 + 1);
    let mut req = Vec::with_capacity(1024);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let tot = &shared.totals;
    let send = |c: &mut Conn, req: &mut Vec<u8>, rng: &mut u64| -> bool {
        request(req, &shared, c.source, rng);
        c.sent_at = Some(Instant::now());
        c.filled = 0;
        if shared.measuring.load(Ordering::Relaxed) {
            tot.sent.fetch_add(1, Ordering::Relaxed);
        }
        c.stream.write_all(req).is_ok()
    };
    let mut broken: Vec<usize> = Vec::new();
    for (key, c) in conns.iter_mut().enumerate() {
        if !send(c, &mut req, &mut rng) {
            broken.push(key);
        }
    }
    let mut last_check = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 50) };
        let now = Instant::now();
        for ev in &events[..n.max(0) as usize] {
            let key = ev.u64 as usize;
            let c = &mut conns[key];
            if c.filled == c.buf.len() {
                c.buf.resize(c.buf.len() * 2, 0);
            }
            let got = match c.stream.read(&mut c.buf[c.filled..]) {
                Ok(0) | Err(_) => {
                    broken.push(key);
                    continue;
                }
                Ok(got) => got,
            };
            c.filled += got;
            let (head_end, end) = match response_length(&c.buf[..c.filled]) {
                None => continue,
                Some(Err(())) => {
                    broken.push(key);
                    continue;
                }
                Some(Ok(range)) => range,
            };
            let measuring = shared.measuring.load(Ordering::Relaxed);
            if measuring {
                tot.received.fetch_add(1, Ordering::Relaxed);
                if let Some(at) = c.sent_at {
                    let _ = hist.record(now.duration_since(at).as_micros().max(1) as u64);
                }
                let body = &c.buf[head_end..end];
                match peers_in(body) {
                    Some(p) => {
                        tot.announces_answered.fetch_add(1, Ordering::Relaxed);
                        tot.peers_returned.fetch_add(p as u64, Ordering::Relaxed);
                    }
                    None if body.starts_with(b"d14:failure reason") => {
                        tot.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            } else if shared.prefill {
                tot.received.fetch_add(1, Ordering::Relaxed);
            }
            if !send(c, &mut req, &mut rng) {
                broken.push(key);
            }
        }
        // A response that never comes (or a closed connection) must not stall the loop.
        if now.duration_since(last_check) > Duration::from_millis(200) {
            last_check = now;
            for (key, c) in conns.iter().enumerate() {
                if c.sent_at
                    .is_some_and(|at| now.duration_since(at) > Duration::from_secs(2))
                {
                    broken.push(key);
                }
            }
        }
        broken.sort_unstable();
        broken.dedup();
        for key in broken.drain(..) {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            tot.reconnects.fetch_add(1, Ordering::Relaxed);
            let c = &mut conns[key];
            unsafe {
                libc::epoll_ctl(
                    epoll,
                    libc::EPOLL_CTL_DEL,
                    c.stream.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
            match open(&shared, c.source) {
                Ok(stream) => {
                    c.stream = stream;
                    register(c.stream.as_raw_fd(), key);
                    let _ = send(c, &mut req, &mut rng);
                }
                Err(_) => {
                    // Try again at the next check.
                    c.sent_at = Some(Instant::now() - Duration::from_secs(3));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    unsafe { libc::close(epoll) };
    shared.latency.lock().unwrap().add(&hist).unwrap();
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_tracker(args: &Args) -> std::io::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let tracker_cores = cores(&args.tracker_cores);
    let config = match &args.config {
        Some(path) => std::fs::read_to_string(path)?,
        None => format!(
            "[udp]\naddresses = []\n[http]\naddresses = [\"127.0.0.1:{port}\"]\n\
             [workers]\ncount = {}\npin_cores = true\n[metrics]\naddress = \"\"\n\
             [log]\nlevel = \"warn\"\n",
            tracker_cores.len().max(1)
        ),
    };
    let path = std::env::temp_dir().join(format!("hayate-http-bench-{}.toml", std::process::id()));
    std::fs::File::create(&path)?.write_all(config.as_bytes())?;
    let target: SocketAddr = if args.config.is_some() {
        let parsed: toml::Table = config.parse().map_err(std::io::Error::other)?;
        parsed["http"]["addresses"][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("config has no http.addresses[0]"))?
    } else {
        format!("127.0.0.1:{port}").parse().unwrap()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hayate"));
    cmd.arg("--config").arg(&path).stdout(Stdio::null());
    pinned(&mut cmd, tracker_cores);
    Ok((cmd.spawn()?, target))
}

/// Starts this same executable as the hello server, pinned like the tracker would be.
fn spawn_hello(args: &Args) -> std::io::Result<(Child, SocketAddr)> {
    let target: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--serve-hello")
        .arg(target.to_string())
        .stdout(Stdio::null());
    pinned(&mut cmd, cores(&args.tracker_cores));
    Ok((cmd.spawn()?, target))
}

fn wait_until_listening(target: SocketAddr) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "nothing listens on {target}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn new_shared(args: &Args, target: SocketAddr, prefill: bool) -> Arc<Shared> {
    Arc::new(Shared {
        args: args.clone(),
        target,
        host: target.to_string().into_bytes(),
        sources: args.connections.clamp(1, 250),
        prefill,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        totals: Totals::default(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 10_000_000, 3).unwrap()),
    })
}

fn start(shared: &Arc<Shared>) -> Vec<std::thread::JoinHandle<std::io::Result<()>>> {
    (0..shared.args.workers)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || load_thread(s, i))
        })
        .collect()
}

/// Announces about every peer once (event=started), paced by replies, bounded in time.
fn prefill(args: &Args, target: SocketAddr) {
    let started = Instant::now();
    let shared = new_shared(args, target, true);
    let threads = start(&shared);
    while shared.totals.received.load(Ordering::Relaxed) < args.peers
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap().expect("prefill thread");
    }
    println!(
        "prefill: {} announces in {:.1} s",
        shared.totals.received.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

/// The hello baseline and hayate under the same load, `--rounds` times (the baseline first in
/// odd rounds, hayate first in even ones), then the ratios and, over several rounds, their
/// medians.
fn compare(args: &Args) {
    let rounds = args.rounds.max(1);
    let hello = |round| {
        println!("== hello baseline (round {round} of {rounds})");
        let (child, target) = spawn_hello(args).expect("spawning the hello server");
        run(args, Some(child), target, None, true)
    };
    let hayate = |round| {
        println!("== hayate (round {round} of {rounds})");
        let (child, target) = spawn_tracker(args).expect("spawning hayate");
        run(args, Some(child), target, None, false)
    };
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (h, o) = if round % 2 == 1 {
            let o = hello(round);
            (hayate(round), o)
        } else {
            let h = hayate(round);
            (h, hello(round))
        };
        ratios.push(load::print_ratios("hello", &h, &o, &[]));
    }
    if rounds > 1 {
        load::print_medians("hello", &ratios);
    }
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore it.
    let argv: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let mut args = Args::parse_from(argv);
    if let Some(addr) = args.serve_hello {
        hello_server::serve(addr).expect("hello server");
        return;
    }
    args.workers = args.workers.max(1);
    args.connections = args.connections.max(args.workers);
    if args.compare {
        compare(&args);
        return;
    }
    let (child, target, pid) = if args.hello {
        let (child, target) = spawn_hello(&args).expect("spawning the hello server");
        (Some(child), target, None)
    } else if args.spawn {
        let (child, target) = spawn_tracker(&args).expect("spawning hayate");
        (Some(child), target, None)
    } else {
        let target = args
            .target
            .expect("--target HOST:PORT, --spawn, --hello or --compare");
        (None, target, args.pid)
    };
    run(&args, child, target, pid, args.hello);
}

/// Prefill (not for the `hello` server), warm-up and the measured run against the server at
/// `target` (`child` when this bench started it, stopped at the end); prints the report.
fn run(
    args: &Args,
    mut child: Option<Child>,
    target: SocketAddr,
    pid: Option<u32>,
    hello: bool,
) -> Figures {
    let pid = pid.or(child.as_ref().map(Child::id));
    wait_until_listening(target);
    let rss_before = pid.and_then(proc_figures).map_or(0, |f| f.rss_kib);
    println!(
        "target {target}{}, {} load threads, {} connections, {} torrents, {} peers, numwant {}",
        if hello { " (hello baseline)" } else { "" },
        args.workers,
        args.connections,
        args.torrents,
        args.peers,
        args.numwant
    );
    if !args.no_prefill && !hello {
        prefill(args, target);
        if let Some(rss) = pid.and_then(proc_figures).map(|f| f.rss_kib) {
            println!(
                "prefill done: server RSS {} MiB ({:.1} bytes per peer over the start)",
                rss / 1024,
                (rss.saturating_sub(rss_before) as f64 * 1024.0) / args.peers as f64
            );
        }
    }
    let shared = new_shared(args, target, false);
    let threads = start(&shared);
    std::thread::sleep(Duration::from_secs(args.warmup));
    let cpu_start = pid.and_then(proc_figures);
    let load_cpu_start = proc_figures(std::process::id()).map_or(0, |f| f.user_us + f.system_us);
    shared.measuring.store(true, Ordering::Relaxed);
    let begin = Instant::now();
    let mut last = 0;
    while begin.elapsed() < Duration::from_secs(args.duration) {
        std::thread::sleep(Duration::from_secs(1));
        let r = shared.totals.received.load(Ordering::Relaxed);
        println!(
            "  {:>3} s: {:>9} responses/s",
            begin.elapsed().as_secs(),
            r - last
        );
        last = r;
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = begin.elapsed().as_secs_f64();
    let cpu_end = pid.and_then(proc_figures);
    let load_cpu =
        proc_figures(std::process::id()).map_or(0, |f| f.user_us + f.system_us) - load_cpu_start;
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap().expect("load thread");
    }
    let t = &shared.totals;
    let received = t.received.load(Ordering::Relaxed);
    let figures = load::Report {
        elapsed_secs: elapsed,
        sent: t.sent.load(Ordering::Relaxed),
        received,
        peers_returned: t.peers_returned.load(Ordering::Relaxed),
        announces: t.announces_answered.load(Ordering::Relaxed),
        latency: &shared.latency.lock().unwrap(),
        cpu_start,
        cpu_end,
        extra_rows: vec![
            (
                "failure replies",
                t.failures.load(Ordering::Relaxed).to_string(),
            ),
            (
                "reconnects",
                t.reconnects.load(Ordering::Relaxed).to_string(),
            ),
            // Near 1e6 / responses_per_s per load thread, the client is the bottleneck.
            (
                "load generator CPU per response",
                format!("{:.2} us", load_cpu as f64 / received.max(1) as f64),
            ),
        ],
    }
    .print();
    if let Some(c) = child.as_mut() {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    figures
}
