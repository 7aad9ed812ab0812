//! What both load generators (`udp_load`, `http_load`) share: the simulated population
//! (torrent popularity, info hashes), CPU pinning, and reading the tracker's CPU time and
//! memory from /proc. Each bench includes it with `mod load;`.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Core numbers from a comma-separated list.
pub fn cores(list: &str) -> Vec<usize> {
    list.split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// Pins the calling thread to one core.
pub fn pin(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Makes `cmd`'s process run only on `cores` (all cores if empty).
pub fn pinned(cmd: &mut Command, cores: Vec<usize>) {
    // SAFETY: the closure only calls async-signal-safe sched_setaffinity between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cores {
                libc::CPU_SET(c, &mut set);
            }
            if !cores.is_empty() {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            Ok(())
        });
    }
}

/// Popularity: torrent index = torrents * u^3 for uniform u, so low indices are hot. With 1M
/// torrents the hottest 1% get about 22% of the peers, the hottest 10% about 46%.
pub fn torrent_of_peer(peer: u64, torrents: u64) -> u64 {
    let u = (splitmix(peer) >> 11) as f64 / (1u64 << 53) as f64;
    ((torrents as f64) * u * u * u) as u64 % torrents
}

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The info hash of simulated torrent number `torrent`.
pub fn info_hash(torrent: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&splitmix(torrent).to_le_bytes());
    h[8..16].copy_from_slice(&splitmix(torrent ^ 0xabcdef).to_le_bytes());
    h[16..].copy_from_slice(&(torrent as u32).to_le_bytes());
    h
}

/// CPU time (µs) and resident memory (MiB) of a process, from /proc.
pub fn proc_figures(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks * 1_000_000 / hz, rss_kb / 1024))
}
