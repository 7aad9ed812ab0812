//! The side-by-side comparison `udp_load --compare` runs: aquatic_udp (the fastest open UDP
//! tracker) installed from crates.io into `target/compare/` on request, started with a config
//! equivalent to hayate's bench config, and the table of ratios between the two runs. Ratios,
//! not absolute times, are what carry from one machine to another.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::load::{pinned, Figures};

/// The release compared against, with the io_uring backend hayate's default matches.
pub const VERSION: &str = "0.9.0";

/// Where `--install-aquatic` puts the binary: under the repository's `target/`, never on PATH.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/compare")
}

pub fn binary() -> PathBuf {
    root().join("bin/aquatic_udp")
}

/// `cargo install aquatic_udp` with the `io-uring` feature into [`root`]; a no-op when that
/// version is already there (cargo's own check). Not `--locked`: the lock file it shipped with
/// pins metrics 0.22.3, which current compilers refuse (E0521); 0.22.4 builds.
pub fn install() -> std::io::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["install", "aquatic_udp", "--features", "io-uring"])
        .args(["--version", VERSION, "--root"])
        .arg(root())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cargo install aquatic_udp {VERSION} failed ({status})"
        )))
    }
}

/// Starts aquatic_udp on `address` with `workers` socket workers on io_uring, at most
/// `max_peers` peers per reply, pinned to `cores` as hayate is (0.9's config keys).
pub fn spawn(
    address: SocketAddr,
    workers: usize,
    max_peers: usize,
    cores: Vec<usize>,
) -> std::io::Result<Child> {
    let binary = binary();
    if !binary.exists() {
        return Err(std::io::Error::other(format!(
            "{} is missing: run with --install-aquatic once (needs crates.io)",
            binary.display()
        )));
    }
    let config = format!(
        "socket_workers = {workers}\nlog_level = \"error\"\n\
         [network]\naddress = \"{address}\"\nuse_io_uring = true\n\
         [protocol]\nmax_response_peers = {max_peers}\n"
    );
    let path = std::env::temp_dir().join(format!("aquatic-bench-{}.toml", std::process::id()));
    std::fs::File::create(&path)?.write_all(config.as_bytes())?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(&path).stdout(Stdio::null());
    pinned(&mut cmd, cores);
    cmd.spawn()
}

/// One tracker's run: its figures and the resident memory its prefill added, per peer.
pub struct Run {
    pub figures: Figures,
    pub rss_bytes_per_peer: Option<f64>,
}

/// The two runs side by side, then one machine-readable `ratio` line per figure
/// (hayate / aquatic: below 1 is hayate doing better, except for responses/s).
pub fn print(hayate: &Run, aquatic: &Run) {
    let (h, a) = (&hayate.figures, &aquatic.figures);
    let rows: [(&str, &str, f64, f64); 8] = [
        ("user_cpu_us_per_response", "us", h.user_us, a.user_us),
        ("kernel_cpu_us_per_response", "us", h.system_us, a.system_us),
        (
            "cpu_us_per_response",
            "us",
            h.user_us + h.system_us,
            a.user_us + a.system_us,
        ),
        ("responses_per_s", "", h.responses_per_s, a.responses_per_s),
        ("latency_p50_us", "us", h.p50_us as f64, a.p50_us as f64),
        ("latency_p99_us", "us", h.p99_us as f64, a.p99_us as f64),
        (
            "rss_bytes_per_peer",
            "B",
            hayate.rss_bytes_per_peer.unwrap_or(f64::NAN),
            aquatic.rss_bytes_per_peer.unwrap_or(f64::NAN),
        ),
        ("rss_mib", "MiB", h.rss_mib as f64, a.rss_mib as f64),
    ];
    println!();
    println!("| figure | hayate | aquatic_udp {VERSION} | ratio |");
    println!("|---|---|---|---|");
    for (name, unit, x, y) in rows {
        println!("| {name} | {x:.2} {unit} | {y:.2} {unit} | {:.3} |", x / y);
    }
    for (name, _, x, y) in rows {
        println!("ratio {name}={:.3} hayate={x:.2} aquatic={y:.2}", x / y);
    }
}
