//! The command line: which configuration to use, what to do with it, logging set-up, and
//! waiting for the signal that stops the tracker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::tracker::Tracker;

/// hayate: a UDP-first, high-throughput BitTorrent tracker (BEP 15) on io_uring.
///
/// With no options it serves on its embedded defaults (see --print-config): UDP on
/// 0.0.0.0:6969 and [::]:6969, one worker per core. SIGINT or SIGTERM stops it.
#[derive(Debug, Parser)]
#[command(name = "hayate", version, about, long_about)]
pub struct Args {
    /// TOML configuration file; keys it leaves out keep their defaults.
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the default configuration, with a comment on every key, and exit.
    #[arg(long, conflicts_with_all = ["config", "check_config"])]
    pub print_config: bool,

    /// Validate a configuration file and exit: 0 if it is usable, 1 with the reason if not.
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
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
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
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let tracker = Tracker::start(config)?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping");
    }
    tracker.stop()?;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
