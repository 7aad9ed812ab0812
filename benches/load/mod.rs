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

/// A process's CPU time so far, split as the kernel accounts it, and its resident memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc {
    /// CPU µs spent in user space (the part the program's own code controls).
    pub user_us: u64,
    /// CPU µs spent in the kernel on its behalf (for a tracker, mostly the UDP/TCP path).
    pub system_us: u64,
    pub rss_kib: u64,
}

impl Proc {
    pub fn rss_mib(&self) -> u64 {
        self.rss_kib / 1024
    }
}

/// CPU time and resident memory of a process, from /proc.
pub fn proc_figures(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let ticks = |i: usize| -> Option<u64> { Some(fields[i].parse::<u64>().ok()? * 1_000_000 / hz) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Proc {
        user_us: ticks(11)?,
        system_us: ticks(12)?,
        rss_kib,
    })
}

/// What a measured run gives to compare with another: per response, CPU in µs and latency.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub responses_per_s: f64,
    pub user_us: f64,
    pub system_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub rss_mib: u64,
}

/// hayate's figures beside `peer`'s, then one machine-readable `ratio` line per figure (hayate /
/// peer: below 1 is hayate spending less, except for responses/s), with `extra` rows last.
/// Returns each figure's ratio, for [`print_medians`].
pub fn print_ratios<'a>(
    peer: &str,
    hayate: &Figures,
    other: &Figures,
    extra: &[(&'a str, f64, f64)],
) -> Vec<(&'a str, f64)> {
    let (h, o) = (hayate, other);
    let rows: Vec<(&str, f64, f64)> = [
        ("user_cpu_us_per_response", h.user_us, o.user_us),
        ("kernel_cpu_us_per_response", h.system_us, o.system_us),
        (
            "cpu_us_per_response",
            h.user_us + h.system_us,
            o.user_us + o.system_us,
        ),
        ("responses_per_s", h.responses_per_s, o.responses_per_s),
        ("latency_p50_us", h.p50_us as f64, o.p50_us as f64),
        ("latency_p99_us", h.p99_us as f64, o.p99_us as f64),
        ("rss_mib", h.rss_mib as f64, o.rss_mib as f64),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    println!();
    println!("| figure | hayate | {peer} | ratio |");
    println!("|---|---|---|---|");
    for &(name, x, y) in &rows {
        println!("| {name} | {x:.2} | {y:.2} | {:.3} |", x / y);
    }
    for &(name, x, y) in &rows {
        println!("ratio {name}={:.3} hayate={x:.2} {peer}={y:.2}", x / y);
    }
    rows.iter().map(|&(name, x, y)| (name, x / y)).collect()
}

/// Each figure's ratio over several rounds: the median, and the lowest and highest, as a table
/// and one machine-readable `median` line per figure.
pub fn print_medians(peer: &str, rounds: &[Vec<(&str, f64)>]) {
    let Some(first) = rounds.first() else {
        return;
    };
    let spread: Vec<(&str, f64, f64, f64)> = first
        .iter()
        .enumerate()
        .map(|(i, &(name, _))| {
            let mut r: Vec<f64> = rounds.iter().map(|round| round[i].1).collect();
            r.sort_by(f64::total_cmp);
            let mid = r.len() / 2;
            let median = if r.len() % 2 == 1 {
                r[mid]
            } else {
                (r[mid - 1] + r[mid]) / 2.0
            };
            (name, median, r[0], r[r.len() - 1])
        })
        .collect();
    println!();
    println!(
        "| figure (hayate / {peer}, {} rounds) | median | lowest | highest |",
        rounds.len()
    );
    println!("|---|---|---|---|");
    for &(name, median, low, high) in &spread {
        println!("| {name} | {median:.3} | {low:.3} | {high:.3} |");
    }
    for &(name, median, low, high) in &spread {
        println!("median {name}={median:.3} low={low:.3} high={high:.3}");
    }
}

/// What a measured run saw, printed as a table and then the one machine-readable summary line
/// both generators share.
pub struct Report<'a> {
    pub elapsed_secs: f64,
    pub sent: u64,
    pub received: u64,
    /// Peers handed out over `announces` announce replies.
    pub peers_returned: u64,
    pub announces: u64,
    /// Round-trip times in microseconds.
    pub latency: &'a hdrhistogram::Histogram<u64>,
    /// The server's figures when measuring began and when it ended (from `proc_figures`,
    /// when its pid is known).
    pub cpu_start: Option<Proc>,
    pub cpu_end: Option<Proc>,
    /// Rows only one generator has: name and value.
    pub extra_rows: Vec<(&'static str, String)>,
}

impl Report<'_> {
    /// Prints the table and summary line; returns the figures.
    pub fn print(&self) -> Figures {
        let rps = self.received as f64 / self.elapsed_secs;
        let sent_per_s = self.sent as f64 / self.elapsed_secs;
        let loss = if self.sent > 0 {
            100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        } else {
            0.0
        };
        let peers_per_reply = self.peers_returned as f64 / self.announces.max(1) as f64;
        let per_response = |us: u64| us as f64 / self.received.max(1) as f64;
        let (user_us, system_us, rss) = match (self.cpu_start, self.cpu_end) {
            (Some(a), Some(b)) => (
                per_response(b.user_us - a.user_us),
                per_response(b.system_us - a.system_us),
                b.rss_mib(),
            ),
            _ => (f64::NAN, f64::NAN, 0),
        };
        let cpu_us = user_us + system_us;
        let (p50, p99, p999) = (
            self.latency.value_at_quantile(0.5),
            self.latency.value_at_quantile(0.99),
            self.latency.value_at_quantile(0.999),
        );
        println!();
        println!("| figure | value |");
        println!("|---|---|");
        println!("| responses/s | {rps:.0} |");
        println!("| requests/s | {sent_per_s:.0} |");
        println!("| loss | {loss:.2} % |");
        for (name, value) in &self.extra_rows {
            println!("| {name} | {value} |");
        }
        println!("| peers per announce reply | {peers_per_reply:.1} |");
        println!("| latency p50 / p99 / p99.9 | {p50} / {p99} / {p999} us |");
        println!("| server CPU per response | {cpu_us:.2} us ({user_us:.2} user, {system_us:.2} kernel) |");
        println!("| server RSS | {rss} MiB |");
        println!(
            "summary responses_per_s={rps:.0} requests_per_s={sent_per_s:.0} loss_pct={loss:.2} \
             peers_per_reply={peers_per_reply:.1} p50_us={p50} p99_us={p99} p999_us={p999} \
             tracker_cpu_us_per_response={cpu_us:.2} tracker_user_cpu_us_per_response={user_us:.2} \
             tracker_rss_mb={rss}"
        );
        Figures {
            responses_per_s: rps,
            user_us,
            system_us,
            p50_us: p50,
            p99_us: p99,
            rss_mib: rss,
        }
    }
}
