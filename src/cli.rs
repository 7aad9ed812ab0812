//! The command line: which configuration to use, what to do with it, logging set-up, and
//! the signal loop: SIGINT or SIGTERM stops the tracker, SIGHUP reloads the live settings
//! (access list, intervals, numwant) from the config file, SIGUSR2 hands the tracker on to the
//! binary now on disk (`handover`). The service manager is told each step (`notify`: READY,
//! RELOADING, STOPPING, MAINPID) and given the sockets to keep (FDSTORE) under systemd.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::handover::{Inherited, Launch, Successor};
use crate::notify;
use crate::policy::Policy;
use crate::tracker::Tracker;

/// hayate: a UDP-first, high-throughput BitTorrent tracker on io_uring.
///
/// With no options it serves on its embedded defaults (see --print-config): UDP (BEP 15) and
/// HTTP (BEP 3) on 0.0.0.0:6969 and [::]:6969, Prometheus metrics, /health (503 naming any
/// worker, HTTP or stats thread that stopped beating), a status page (/ and /status.json) and
/// torrent lookups (/api/torrent/<info hash>[?peers=1]) on 127.0.0.1:9000, one worker per
/// core. The full scrape (/scrape without info_hash) is off until [full_scrape] enabled = true.
/// Several nodes share their swarms through Redis or a Redis Cluster when [cluster] redis is
/// set (off by default); no announce waits on Redis, and a node serves its own peers while
/// Redis is down.
/// Under systemd with WatchdogSec= it sends WATCHDOG=1 while that check passes; a panic on any
/// thread aborts the process so the service manager restarts it. SIGINT or SIGTERM stops it (writing the swarm snapshot
/// when [state] directory is set); SIGHUP re-reads the config file and applies the announce
/// pipeline's settings (access list, client list, JWT keys, intervals, jitter, numwant) and the
/// HTTPS listeners' certificates from the next request (or connection) on. SIGUSR2 upgrades in place: it starts the binary now at the same path with
/// the same arguments, passes it the sockets, and once it is ready stops, writes the snapshot
/// and exits; the new process restores the swarm and serves (requests in between wait in the
/// kernel). If the new binary fails to start, this one keeps serving. Under systemd the sockets
/// are also kept in the service's fd store, so `systemctl restart` and crashes lose none.
#[derive(Debug, Parser)]
#[command(name = "hayate", version, about, long_about)]
pub struct Args {
    /// TOML configuration file; keys it leaves out keep their defaults.
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the default configuration, with a comment on every key, and exit.
    #[arg(long, conflicts_with_all = ["config", "check_config"])]
    pub print_config: bool,

    /// Validate a configuration file and exit: 0 if it is usable (warning on stderr about a
    /// metrics address open to the network, a missing privileges user or group, and start-up
    /// memory past 1 GiB), 1 with the reason if not.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.check_config {
        // Every file the config names (lists, keys) is read too, as a start would.
        let checked = Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| Policy::load(&c).map(|_| c).map_err(|e| e.to_string()));
        return match checked {
            Ok(config) => {
                println!("{}: ok", path.display());
                for warning in check_warnings(&config) {
                    eprintln!("hayate: warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hayate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default_config()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hayate: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log.level);
    exit_on_panic();
    // Before any thread starts: both read and clear the environment.
    let launch = Launch::current();
    let inherited = match Inherited::from_environment() {
        Ok(inherited) => inherited,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match serve(config, args.config.as_deref(), inherited, launch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    config: Config,
    path: Option<&Path>,
    inherited: Inherited,
    launch: std::io::Result<Launch>,
) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])
        .context("installing signal handlers")?;
    let started_max_numwant = config.protocol.max_numwant;
    let tracker = Tracker::start_with(config, inherited)?;
    // Every socket is bound and every worker serves.
    notify::tell(notify::READY);
    match notify::store(tracker.sockets_to_hand_on()) {
        Ok(true) => tracing::info!(
            sockets = tracker.sockets_to_hand_on().len(),
            "sockets kept in the service manager's fd store"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep the sockets in the service manager's fd store")
        }
    }
    let mut successor = None;
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                notify::tell(&notify::reloading());
                reload(&tracker, path, started_max_numwant);
                notify::tell(notify::READY);
            }
            SIGUSR2 => match upgrade(&tracker, &launch) {
                Ok(ready) => {
                    successor = Some(ready);
                    break;
                }
                Err(e) => tracing::error!("upgrade failed, still serving: {e:#}"),
            },
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    let Some(successor) = successor else {
        notify::tell(notify::STOPPING);
        tracker.stop()?;
        tracing::info!("stopped");
        return Ok(());
    };
    // The new process becomes the service's main process before this one exits.
    notify::tell(&format!("MAINPID={}", successor.pid()));
    tracker.stop()?;
    successor.hand_over();
    tracing::info!("handed over to the new process");
    Ok(())
}

/// How long a new binary started by SIGUSR2 may take to be ready before it is given up on.
const UPGRADE_READY_WITHIN: Duration = Duration::from_secs(60);

/// Starts the binary on disk with this process's sockets and waits until it is ready to take
/// over. Anything wrong leaves this process serving, and says why.
fn upgrade(tracker: &Tracker, launch: &std::io::Result<Launch>) -> anyhow::Result<Successor> {
    let launch = launch
        .as_ref()
        .map_err(|e| anyhow::anyhow!("this process's binary could not be found at start: {e}"))?;
    if tracker.config().state.directory().is_none() {
        tracing::warn!(
            "upgrading with [state] directory off: the new process starts with an empty swarm"
        );
    }
    let mut successor = Successor::start(launch, tracker.sockets_to_hand_on())?;
    tracing::info!(pid = successor.pid(), "upgrade: started the new process");
    successor.wait_ready(UPGRADE_READY_WITHIN)?;
    tracing::info!(
        pid = successor.pid(),
        "upgrade: the new process is ready; stopping and writing the snapshot"
    );
    Ok(successor)
}

/// What a usable config may still get wrong, for `--check-config` to say.
fn check_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(addr) = config.metrics_address() {
        if !addr.ip().is_loopback() {
            warnings.push(format!(
                "metrics.address {addr} is not a loopback address: /metrics and /health are \
                 open to whoever reaches it"
            ));
        }
    }
    if let Err(e) = crate::privileges::check_names(&config.privileges) {
        warnings.push(format!(
            "{e:#}: a start as root would fail to drop privileges"
        ));
    }
    let workers = config.worker_count();
    let reserved = crate::resources::reserved_bytes(config, workers);
    if reserved > crate::resources::RESERVED_WARNING_BYTES {
        warnings.push(format!(
            "inboxes and I/O buffers reserve {} MiB at start with {workers} workers: lower \
             workers.inbox_capacity, workers.count or udp.recv_depth/send_depth if unintended",
            reserved >> 20
        ));
    }
    warnings
}

/// Re-reads the config file (the embedded defaults without one) and applies its live settings.
/// Anything wrong keeps the settings in force and logs why.
fn reload(tracker: &Tracker, path: Option<&Path>, started_max_numwant: u32) {
    let config = match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default_config()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload failed, keeping the settings in force: {e}");
            return;
        }
    };
    for (address, reloaded) in tracker.reload_tls(&config) {
        match reloaded {
            Ok(()) => tracing::info!(%address, "TLS certificate reloaded"),
            Err(e) => tracing::error!(%address, "{e}; keeping the certificate in force"),
        }
    }
    match tracker.reload(&config) {
        Ok(p) => {
            let s = &p.shaping;
            if s.max_numwant > started_max_numwant as usize {
                tracing::warn!(
                    max_numwant = s.max_numwant,
                    started_max_numwant,
                    "UDP replies stay capped at the max_numwant the tracker started with"
                );
            }
            tracing::info!(
                access_list = ?p.access.mode(),
                listed = p.access.len(),
                blocked_networks = p.blocklist.len(),
                announce_interval_secs = s.announce_interval_secs,
                interval_jitter_secs = s.interval_jitter_secs,
                min_interval_secs = s.min_interval_secs,
                default_numwant = s.default_numwant,
                max_numwant = s.max_numwant,
                "reloaded (other keys take effect at the next start)"
            );
        }
        Err(e) => tracing::error!("reload failed, keeping the settings in force: {e}"),
    }
}

/// Makes a panic on any thread end the whole process (after logging it), instead of leaving
/// the rest running without it: a worker that panicked would leave its shard unanswered, the
/// HTTP thread its listeners unserved, while the process looked alive. Aborting hands recovery
/// to the service manager (`Restart=on-failure`): the next process takes the sockets back from
/// the fd store and the swarm from the last snapshot. Installed by `main` once logging is up;
/// public so a test can install it in a process of its own.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {l}"));
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        tracing::error!(
            "thread {thread} panicked{location}: {message}; aborting so the service manager \
             restarts hayate{backtrace}"
        );
        std::process::abort();
    }));
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
