//! Load generator for the UDP tracker: `cargo bench --bench udp_load -- [options]`.
//!
//! Simulates many torrents with skewed popularity and many peers announcing to them over BEP 15,
//! from many 127.0.0.x source addresses and sockets (so SO_REUSEPORT spreads the load), and
//! prints responses per second, latency percentiles and, when it knows the tracker's pid, the
//! tracker's CPU time per response (user and kernel) and resident memory. `--compare` runs
//! hayate and then aquatic_udp under the same load and prints the ratios (compare/aquatic.rs).
//! Every loop is bounded by --duration.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[path = "compare/aquatic.rs"]
mod aquatic;
mod load;

#[path = "../tests/support/jwt_tokens.rs"]
mod jwt_tokens;
use load::{cores, info_hash, pin, pinned, proc_figures, splitmix, torrent_of_peer};

/// BEP 15 load generator for hayate (or any UDP tracker).
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Start hayate itself (the release binary next to this bench) instead of using --target.
    #[arg(long)]
    spawn: bool,
    /// Config file for --spawn; by default one worker per --tracker-cores entry on 127.0.0.1.
    #[arg(long)]
    config: Option<String>,
    /// Cores to pin a spawned tracker to (comma-separated); its workers are pinned one per core.
    #[arg(long, default_value = "0")]
    tracker_cores: String,
    /// A running tracker to load (IPv4 or IPv6 address with port).
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Run hayate (as --spawn would) and then aquatic_udp under the same load, pinned the same
    /// way, and print each figure's ratio. Needs aquatic_udp in target/compare (see
    /// --install-aquatic).
    #[arg(long)]
    compare: bool,
    /// With --compare: rounds of both trackers, the order alternating, then each ratio's
    /// median and range over the rounds (one round's ratio moves with the machine's noise).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// With --compare: the peer is this hayate binary (say, today's main built into another
    /// directory) instead of aquatic_udp, so a change is measured against what it changes.
    #[arg(long, value_name = "PATH")]
    baseline: Option<std::path::PathBuf>,
    /// First install aquatic_udp (io-uring feature) from crates.io into target/compare with
    /// `cargo install`, for --compare.
    #[arg(long)]
    install_aquatic: bool,
    /// Pid of the --target tracker, to report its CPU and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// The tracker's metrics address (hayate's `[metrics] address`), to report the share of
    /// announces forwarded between workers; with --spawn --config, read from that file.
    #[arg(long)]
    metrics: Option<SocketAddr>,
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
    /// Distinct torrents.
    #[arg(long, default_value_t = 1_000_000)]
    torrents: u64,
    /// Distinct peers; each always announces the same torrent from the same address and port.
    #[arg(long, default_value_t = 2_000_000)]
    peers: u64,
    /// Weights of connect, announce and scrape requests.
    #[arg(long, default_value = "0,100,1")]
    weights: String,
    /// num_want sent in announces.
    #[arg(long, default_value_t = 30)]
    numwant: i32,
    /// Source addresses (127.0.0.1 up to 127.0.0.N) per load thread; one socket each.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Requests in flight per socket (closed loop). Ignored with --rate.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Open loop: requests per second over all threads, for latency at a set load.
    #[arg(long)]
    rate: Option<u64>,
    /// Peer i announces torrent i (modulo --torrents) instead of the skewed choice: with as many
    /// torrents as peers, every announce names a distinct info hash (a flood of fake torrents).
    #[arg(long)]
    uniform: bool,
    /// Skip announcing every peer once before the warm-up.
    #[arg(long)]
    no_prefill: bool,
    /// Every announce carries a JWT for its torrent in BEP 41 URL data (`/announce?jwt=...`),
    /// signed (EdDSA, kid "ed-1") with the committed test keys of tests/data/jwt for the
    /// issuer and audience tests/support/jwt_tokens.rs names: run the tracker with that JWKS.
    /// Tokens are made up front, one per torrent, so keep --torrents modest.
    #[arg(long)]
    jwt: bool,
}

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const BATCH: usize = 64;

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    peers_returned: AtomicU64,
    announces_answered: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    args: Args,
    target: SocketAddr,
    measuring: AtomicBool,
    stop: AtomicBool,
    totals: Totals,
    latency: Mutex<Histogram<u64>>,
    /// Announce every peer once in order instead of at random.
    prefill: bool,
    /// With --jwt: each torrent's BEP 41 options, ready to append.
    url_data: Arc<Vec<Vec<u8>>>,
}

/// One load socket: a source address, its connection id, and send times by transaction id.
struct Source {
    /// With `Shared::prefill`: how many of this source's peers have announced.
    next_peer: u64,
    socket: UdpSocket,
    connection_id: u64,
    connected_at: Instant,
    sent_at: Vec<Option<Instant>>,
    in_flight: usize,
}

#[allow(clippy::too_many_arguments)]
fn request(
    out: &mut Vec<u8>,
    shared: &Shared,
    source: &mut Source,
    source_index: usize,
    sources: usize,
    txid: u32,
    rng: &mut u64,
    weights: (u64, u64, u64),
) {
    out.clear();
    *rng = splitmix(*rng);
    let a = &shared.args;
    let pick = *rng % (weights.0 + weights.1 + weights.2).max(1);
    if pick < weights.0 {
        out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&txid.to_be_bytes());
    } else if pick < weights.0 + weights.1 {
        // A peer whose source address is this socket's: peers are striped over sources.
        let per_source = (a.peers / sources as u64).max(1);
        let k = if shared.prefill {
            // Every peer exactly once, in order, so the table holds all of them afterwards.
            source.next_peer += 1;
            (source.next_peer - 1) % per_source
        } else {
            (*rng >> 8) % per_source
        };
        let peer = k * sources as u64 + source_index as u64;
        let torrent = if a.uniform {
            peer % a.torrents
        } else {
            torrent_of_peer(peer, a.torrents)
        };
        out.extend_from_slice(&source.connection_id.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&txid.to_be_bytes());
        out.extend_from_slice(&info_hash(torrent));
        out.extend_from_slice(&splitmix(peer).to_le_bytes());
        out.extend_from_slice(&[0u8; 12]);
        out.extend_from_slice(&0u64.to_be_bytes());
        let left: u64 = if peer % 4 == 0 { 0 } else { 1000 };
        out.extend_from_slice(&left.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // event none
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(peer as u32).to_be_bytes());
        out.extend_from_slice(&a.numwant.to_be_bytes());
        out.extend_from_slice(&(1 + (peer / sources as u64) % 65000).to_be_bytes()[6..]);
        if let Some(options) = shared.url_data.get(torrent as usize) {
            out.extend_from_slice(options);
        }
    } else {
        out.extend_from_slice(&source.connection_id.to_be_bytes());
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&txid.to_be_bytes());
        for i in 0..(1 + *rng % 10) {
            let torrent = torrent_of_peer(*rng ^ i, a.torrents);
            out.extend_from_slice(&info_hash(torrent));
        }
    }
}

fn connect(socket: &UdpSocket) -> std::io::Result<u64> {
    let mut p = PROTOCOL_ID.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let mut buf = [0u8; 64];
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(Duration::from_millis(250)))?;
    for _ in 0..40 {
        // A tracker still starting answers the first tries with ICMP port-unreachable, which a
        // connected socket reports as ECONNREFUSED on the next call: retry through it.
        if socket.send(&p).is_err() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match socket.recv(&mut buf) {
            Ok(16) if buf[..4] == [0, 0, 0, 0] && buf[4..8] == [0xff; 4] => {
                socket.set_nonblocking(true)?;
                return Ok(u64::from_be_bytes(buf[8..16].try_into().unwrap()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {}
        }
    }
    Err(std::io::Error::other("tracker did not answer connect"))
}

fn load_thread(shared: Arc<Shared>, index: usize) -> std::io::Result<()> {
    let a = &shared.args;
    let lc = cores(&a.load_cores);
    if !lc.is_empty() {
        pin(lc[index % lc.len()]);
    }
    let weights: Vec<u64> = a
        .weights
        .split(',')
        .map(|w| w.trim().parse().unwrap_or(0))
        .collect();
    let weights = (
        weights[0],
        *weights.get(1).unwrap_or(&0),
        *weights.get(2).unwrap_or(&0),
    );
    let total_sources = a.sources * a.workers;
    let mut sources = Vec::new();
    for s in 0..a.sources {
        let global = index * a.sources + s;
        let local: SocketAddr = if shared.target.is_ipv4() {
            format!("127.0.0.{}:0", 1 + global % 250).parse().unwrap()
        } else {
            "[::1]:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(shared.target)?;
        let connection_id = connect(&socket)?;
        sources.push(Source {
            socket,
            connection_id,
            connected_at: Instant::now(),
            sent_at: vec![None; 1 << 16],
            in_flight: 0,
            next_peer: 0,
        });
    }
    let mut rng = splitmix(index as u64 + 1);
    let mut txid: u32 = 0;
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut recv_bufs = vec![[0u8; 2048]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut mmsg = Mmsg::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let per_thread_rate = a.rate.map(|r| r as f64 / a.workers as f64);
    let started = Instant::now();
    let mut sent_total: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let measuring = shared.measuring.load(Ordering::Relaxed);
        for (si, source) in sources.iter_mut().enumerate() {
            if source.connected_at.elapsed() > Duration::from_secs(60) {
                // Clients refresh their id before the tracker's 2-minute limit.
                if let Ok(id) = connect(&source.socket) {
                    source.connection_id = id;
                }
                source.connected_at = Instant::now();
            }
            // How many to send now.
            let budget = match per_thread_rate {
                Some(rate) => {
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    (due.saturating_sub(sent_total) as usize).min(BATCH)
                }
                None => a.window.saturating_sub(source.in_flight).min(BATCH),
            };
            let global = index * a.sources + si;
            for p in packets.iter_mut().take(budget) {
                txid = txid.wrapping_add(1);
                request(
                    p,
                    &shared,
                    &mut *source,
                    global,
                    total_sources,
                    txid,
                    &mut rng,
                    weights,
                );
                source.sent_at[(txid & 0xffff) as usize] = Some(Instant::now());
            }
            let sent = mmsg.send(&source.socket, &packets[..budget]);
            source.in_flight += sent;
            sent_total += sent as u64;
            if measuring {
                shared.totals.sent.fetch_add(sent as u64, Ordering::Relaxed);
            }
            let got = mmsg.recv(&source.socket, &mut recv_bufs, &mut lens);
            let now = Instant::now();
            for (buf, &len) in lens[..got].iter().enumerate() {
                let reply = &recv_bufs[buf][..len];
                if len < 8 {
                    continue;
                }
                source.in_flight = source.in_flight.saturating_sub(1);
                let t = u32::from_be_bytes(reply[4..8].try_into().unwrap());
                let action = u32::from_be_bytes(reply[..4].try_into().unwrap());
                if let Some(at) = source.sent_at[(t & 0xffff) as usize].take() {
                    if measuring {
                        let _ = hist.record(now.duration_since(at).as_micros().max(1) as u64);
                    }
                }
                if measuring {
                    let tot = &shared.totals;
                    tot.received.fetch_add(1, Ordering::Relaxed);
                    match action {
                        1 => {
                            tot.announces_answered.fetch_add(1, Ordering::Relaxed);
                            let size = if shared.target.is_ipv4() { 6 } else { 18 };
                            tot.peers_returned
                                .fetch_add(((len - 20) / size) as u64, Ordering::Relaxed);
                        }
                        3 => {
                            tot.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            // A closed loop whose replies were lost must not stall: forget stale in-flight.
            if per_thread_rate.is_none() && source.in_flight >= a.window {
                let oldest_ok = source
                    .sent_at
                    .iter()
                    .flatten()
                    .all(|t| t.elapsed() < Duration::from_millis(200));
                if !oldest_ok {
                    source.in_flight = 0;
                    source.sent_at.iter_mut().for_each(|t| *t = None);
                }
            }
        }
    }
    shared.latency.lock().unwrap().add(&hist).unwrap();
    Ok(())
}

/// Reusable sendmmsg/recvmmsg headers, so the generator spends its core on packets.
struct Mmsg {
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Mmsg {
    fn new() -> Self {
        Mmsg {
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            // SAFETY: all-zero is a valid mmsghdr.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    fn point(&mut self, bufs: impl Iterator<Item = (*mut u8, usize)>) -> usize {
        let mut n = 0;
        for (i, (ptr, len)) in bufs.enumerate() {
            self.iov[i] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: len,
            };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
            self.msgs[i].msg_len = 0;
            n += 1;
        }
        n
    }

    fn send(&mut self, socket: &UdpSocket, packets: &[Vec<u8>]) -> usize {
        let n = self.point(packets.iter().map(|p| (p.as_ptr() as *mut u8, p.len())));
        if n == 0 {
            return 0;
        }
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
            )
        };
        r.max(0) as usize
    }

    /// Receives up to a batch; returns how many, lengths in `lens`.
    fn recv(&mut self, socket: &UdpSocket, bufs: &mut [[u8; 2048]], lens: &mut [usize]) -> usize {
        let n = self.point(bufs.iter_mut().map(|b| (b.as_mut_ptr(), b.len())));
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = r.max(0) as usize;
        for (len, msg) in lens.iter_mut().zip(&self.msgs[..got]) {
            *len = msg.msg_len as usize;
        }
        got
    }
}

fn spawn_tracker(args: &Args) -> std::io::Result<Tracker> {
    spawn_binary(args, env!("CARGO_BIN_EXE_hayate").as_ref())
}

/// As [`spawn_tracker`], with a hayate binary other than the one built beside this bench.
fn spawn_binary(args: &Args, binary: &std::path::Path) -> std::io::Result<Tracker> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let tracker_cores = cores(&args.tracker_cores);
    let config = match &args.config {
        Some(path) => std::fs::read_to_string(path)?,
        None => format!(
            "[udp]\naddresses = [\"127.0.0.1:{port}\"]\n[http]\naddresses = []\n[metrics]\naddress = \"\"\n[workers]\ncount = {}\npin_cores = true\n[log]\nlevel = \"warn\"\n",
            tracker_cores.len().max(1)
        ),
    };
    let path = std::env::temp_dir().join(format!("hayate-bench-{}.toml", std::process::id()));
    std::fs::File::create(&path)?.write_all(config.as_bytes())?;
    let (target, metrics): (SocketAddr, _) = if args.config.is_some() {
        let parsed: toml::Table = config.parse().map_err(std::io::Error::other)?;
        let target = parsed["udp"]["addresses"][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("config has no udp.addresses[0]"))?;
        let metrics = parsed
            .get("metrics")
            .and_then(|m| m.get("address"))
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok());
        (target, metrics)
    } else {
        (format!("127.0.0.1:{port}").parse().unwrap(), None)
    };
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(&path).stdout(Stdio::null());
    pinned(&mut cmd, tracker_cores);
    Ok(Tracker::started(
        cmd.spawn()?,
        target,
        metrics.or(args.metrics),
    ))
}

/// A tracker under load: one this bench started (stopped when dropped) or one running.
struct Tracker {
    child: Option<Child>,
    target: SocketAddr,
    pid: Option<u32>,
    metrics: Option<SocketAddr>,
}

impl Tracker {
    /// One this bench started, with its figures read from /proc.
    fn started(child: Child, target: SocketAddr, metrics: Option<SocketAddr>) -> Self {
        Self {
            pid: Some(child.id()),
            child: Some(child),
            target,
            metrics,
        }
    }
}

/// One tracker's run: its figures and the resident memory its prefill added, per peer.
struct Run {
    figures: load::Figures,
    rss_bytes_per_peer: Option<f64>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore it.
    let argv: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let args = Args::parse_from(argv);
    if args.install_aquatic {
        aquatic::install().expect("installing aquatic_udp");
    }
    if args.compare {
        compare(&args);
        return;
    }
    let tracker = if args.spawn {
        spawn_tracker(&args).expect("spawning hayate")
    } else {
        Tracker {
            child: None,
            target: args
                .target
                .expect("--target HOST:PORT, --spawn or --compare"),
            pid: args.pid,
            metrics: args.metrics,
        }
    };
    run(&args, tracker);
}

/// hayate (as --spawn starts it) and its peer (aquatic_udp, or the --baseline hayate) under
/// the same load, pinned the same way, and the ratios between them: `--rounds` times, hayate
/// first in odd rounds and the peer first in even ones, so a drift of the machine's speed
/// during a round does not favour either.
fn compare(args: &Args) {
    let rounds = args.rounds.max(1);
    let peer_name = if args.baseline.is_some() {
        "baseline"
    } else {
        "aquatic"
    };
    let run_peer = |round| match &args.baseline {
        Some(binary) => {
            println!(
                "== baseline {} (round {round} of {rounds})",
                binary.display()
            );
            run(
                args,
                spawn_binary(args, binary).expect("spawning the baseline hayate"),
            )
        }
        None => run_aquatic(args, round, rounds),
    };
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (hayate, peer) = if round % 2 == 1 {
            let h = run_hayate(args, round, rounds);
            (h, run_peer(round))
        } else {
            let p = run_peer(round);
            (run_hayate(args, round, rounds), p)
        };
        let per_peer = |r: &Run| r.rss_bytes_per_peer.unwrap_or(f64::NAN);
        ratios.push(load::print_ratios(
            peer_name,
            &hayate.figures,
            &peer.figures,
            &[("rss_bytes_per_peer", per_peer(&hayate), per_peer(&peer))],
        ));
    }
    if rounds > 1 {
        load::print_medians(peer_name, &ratios);
    }
}

fn run_hayate(args: &Args, round: usize, rounds: usize) -> Run {
    println!("== hayate (round {round} of {rounds})");
    run(args, spawn_tracker(args).expect("spawning hayate"))
}

fn run_aquatic(args: &Args, round: usize, rounds: usize) -> Run {
    println!(
        "== aquatic_udp {} (round {round} of {rounds})",
        aquatic::VERSION
    );
    let workers = cores(&args.tracker_cores).len().max(1);
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let max_peers = usize::try_from(args.numwant).unwrap_or(0).max(1);
    let child = aquatic::spawn(target, workers, max_peers, cores(&args.tracker_cores))
        .expect("starting aquatic_udp");
    run(args, Tracker::started(child, target, None))
}

/// Prefill, warm-up and the measured run against `tracker`; prints the report.
fn run(args: &Args, mut tracker: Tracker) -> Run {
    let (target, pid, metrics) = (tracker.target, tracker.pid, tracker.metrics);
    let url_data = Arc::new(if args.jwt {
        tokens(args.torrents)
    } else {
        Vec::new()
    });
    let shared = Arc::new(Shared {
        args: args.clone(),
        target,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        totals: Totals::default(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 10_000_000, 3).unwrap()),
        prefill: false,
        url_data: url_data.clone(),
    });
    // Wait for the tracker to answer.
    let probe = UdpSocket::bind(if target.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .unwrap();
    probe.connect(target).unwrap();
    if let Err(e) = connect(&probe) {
        if let Some(status) = tracker
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("the tracker exited ({status}) before answering; its log is above");
        }
        panic!("tracker at {target} does not answer a connect: {e}");
    }
    let rss_before = pid.and_then(proc_figures).map_or(0, |f| f.rss_kib);
    println!(
        "target {target}, {} load threads x {} sources, {} torrents, {} peers, weights {}, numwant {}",
        args.workers, args.sources, args.torrents, args.peers, args.weights, args.numwant
    );
    let mut rss_bytes_per_peer = None;
    if !args.no_prefill {
        prefill(args, target, &url_data);
        if let Some(rss) = pid.and_then(proc_figures).map(|f| f.rss_kib) {
            let per_peer = (rss.saturating_sub(rss_before) as f64 * 1024.0) / args.peers as f64;
            println!(
                "prefill done: tracker RSS {} MiB ({per_peer:.1} bytes per peer over the start)",
                rss / 1024
            );
            rss_bytes_per_peer = Some(per_peer);
        }
    }
    let threads: Vec<_> = (0..args.workers)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || load_thread(s, i))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.warmup));
    let cpu_start = pid.and_then(proc_figures);
    let forwards_start = metrics.and_then(forwarded_announces);
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < Duration::from_secs(args.duration) {
        std::thread::sleep(Duration::from_secs(1));
        let r = shared.totals.received.load(Ordering::Relaxed);
        println!(
            "  {:>3} s: {:>9} responses/s",
            start.elapsed().as_secs(),
            r - last
        );
        last = r;
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_end = pid.and_then(proc_figures);
    let forwards_end = metrics.and_then(forwarded_announces);
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
        extra_rows: [(
            "error replies",
            t.errors.load(Ordering::Relaxed).to_string(),
        )]
        .into_iter()
        .chain(
            forwards_start
                .zip(forwards_end)
                .map(|((f0, a0), (f1, a1))| {
                    let (forwarded, announces) = (f1 - f0, a1 - a0);
                    (
                        "announces forwarded between workers",
                        format!(
                            "{forwarded:.0} of {announces:.0} ({:.1} %)",
                            100.0 * forwarded / announces.max(1.0)
                        ),
                    )
                }),
        )
        .collect(),
    }
    .print();
    Run {
        figures,
        rss_bytes_per_peer,
    }
}

/// Announces forwarded to their owner's worker and announces received, over UDP, so far.
fn forwarded_announces(metrics: SocketAddr) -> Option<(f64, f64)> {
    let sums = metric_sums(
        metrics,
        &[
            "hayate_forwarded_total{protocol=\"udp\",kind=\"announce\"}",
            "hayate_requests_total{protocol=\"udp\",action=\"announce\"",
        ],
    )?;
    Some((sums[0], sums[1]))
}

/// Announces every peer once, paced by replies, so the table holds all peers before measuring.
fn prefill(args: &Args, target: SocketAddr, url_data: &Arc<Vec<Vec<u8>>>) {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        args: Args {
            weights: "0,1,0".into(),
            ..args.clone()
        },
        target,
        measuring: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        totals: Totals::default(),
        latency: Mutex::new(Histogram::new(3).unwrap()),
        prefill: true,
        url_data: url_data.clone(),
    });
    // Each source walks its own peers in order; once `peers` announces were answered every
    // peer has announced once. Bounded in time in case replies are lost.
    let threads: Vec<_> = (0..args.workers)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || load_thread(s, i))
        })
        .collect();
    while shared.totals.received.load(Ordering::Relaxed) < args.peers
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "prefill: {} announces in {:.1} s",
        shared.totals.received.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

/// Each torrent's BEP 41 URL-data options carrying a JWT for it.
fn tokens(torrents: u64) -> Vec<Vec<u8>> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    (0..torrents)
        .map(|t| {
            let claims = serde_json::json!({
                "iss": jwt_tokens::ISSUER,
                "aud": jwt_tokens::AUDIENCE,
                "exp": exp,
                "infohash": jwt_tokens::hex(&info_hash(t)),
            });
            let token = jwt_tokens::sign(jsonwebtoken::Algorithm::EdDSA, "ed-1", &claims);
            let url = format!("/announce?jwt={token}");
            let mut options = Vec::new();
            for part in url.as_bytes().chunks(255) {
                options.push(2);
                options.push(part.len() as u8);
                options.extend_from_slice(part);
            }
            options
        })
        .collect()
}

/// Sums of the tracker's Prometheus counters whose name and labels start as `prefix` says
/// (e.g. `hayate_forwarded_total{protocol="udp",kind="announce"`), read from `GET /metrics` at
/// `address`; `None` when it cannot be read. A raw HTTP/1.0 request keeps the bench free of an
/// HTTP client.
fn metric_sums(address: std::net::SocketAddr, prefixes: &[&str]) -> Option<Vec<f64>> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    if !body.starts_with("HTTP/1.") || !body.contains(" 200 ") {
        return None;
    }
    let mut sums = vec![0.0; prefixes.len()];
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        for (sum, prefix) in sums.iter_mut().zip(prefixes) {
            if line.starts_with(prefix) {
                *sum += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    Some(sums)
}
