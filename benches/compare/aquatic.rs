//! The side-by-side comparison `udp_load --compare` runs: aquatic_udp (the fastest open UDP
//! tracker) installed from crates.io into `target/compare/` on request, started with a config
//! equivalent to hayate's bench config. Ratios between the two runs (`load::print_ratios`), not
//! absolute times, are what carry from one machine to another.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::load::pinned;

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
