//! The process's own figures, read at scrape time from what `ProcSubset=pid` (the shipped
//! unit's sandbox) leaves visible: `/proc/self/stat` and `/proc/self/fd`, plus system calls
//! (getrlimit, clock_gettime). Nothing system-wide (`/proc/stat`, `/proc/uptime`,
//! `/proc/meminfo`), which that sandbox hides. Each figure is read on its own: one that cannot
//! be read is left off the page and warned about once, and the others still show.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: Option<f64>,
}

/// One bit per figure already warned about, so a figure that never reads (a sandbox) logs
/// once, not at every scrape.
static WARNED: AtomicU8 = AtomicU8::new(0);

impl ProcessFigures {
    /// This process's figures, from the real `/proc`.
    pub fn read() -> ProcessFigures {
        Self::read_from(Path::new("/proc"))
    }

    /// As `read`, with `proc` in place of `/proc` (tests give it a pruned copy).
    pub fn read_from(proc: &Path) -> ProcessFigures {
        let stat = read_stat(proc);
        let stat = stat.as_ref();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let field = |n: usize| stat.map_err(|e| e.to_string()).and_then(|s| s.field(n));
        ProcessFigures {
            cpu_seconds: figure(
                0,
                "hayate_process_cpu_seconds_total",
                field(14).and_then(|u| field(15).map(|s| (u + s) as f64 / ticks)),
            ),
            threads: figure(1, "hayate_process_threads", field(20)),
            resident_bytes: figure(
                2,
                "hayate_process_resident_memory_bytes",
                field(24).map(|pages| pages * page),
            ),
            start_time_seconds: figure(
                3,
                "hayate_process_start_time_seconds",
                field(22).and_then(|t| boot_time().map(|boot| boot + t as f64 / ticks)),
            ),
            open_fds: figure(
                4,
                "hayate_process_open_fds",
                std::fs::read_dir(proc.join("self/fd"))
                    .map(|d| d.count() as u64)
                    .map_err(|e| format!("reading {}/self/fd: {e}", proc.display())),
            ),
            max_fds: figure(5, "hayate_process_max_fds", max_fds()),
        }
    }
}

/// `value` as a figure; on the first failure of figure `bit`, a warning naming the metric.
fn figure<T>(bit: u8, metric: &str, value: Result<T, String>) -> Option<T> {
    match value {
        Ok(v) => Some(v),
        Err(e) => {
            if WARNED.fetch_or(1 << bit, Ordering::Relaxed) & (1 << bit) == 0 {
                tracing::warn!("{metric} is left off /metrics: {e}");
            }
            None
        }
    }
}

/// `/proc/self/stat`, split into fields.
struct Stat {
    /// Field 3 (state) of proc(5) onwards.
    fields: Vec<String>,
}

impl Stat {
    /// Field `n`, numbered as in proc(5).
    fn field(&self, n: usize) -> Result<u64, String> {
        self.fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {n} in /proc/self/stat"))
    }
}

fn read_stat(proc: &Path) -> io::Result<Stat> {
    let path = proc.join("self/stat");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| io::Error::other(format!("{} has no command name", path.display())))?;
    Ok(Stat {
        fields: rest.split_whitespace().map(str::to_string).collect(),
    })
}

/// Unix time of boot: the realtime clock less the time since boot (CLOCK_BOOTTIME, the clock
/// `/proc/self/stat`'s start time counts on), so `/proc/stat`'s `btime` is not needed.
fn boot_time() -> Result<f64, String> {
    let clock = |id| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write to.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return Err(format!("clock_gettime: {}", io::Error::last_os_error()));
        }
        Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    };
    Ok(clock(libc::CLOCK_REALTIME)? - clock(libc::CLOCK_BOOTTIME)?)
}

fn max_fds() -> Result<u64, String> {
    // SAFETY: getrlimit fills a plain struct.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    fn assert_plausible(p: &ProcessFigures) {
        assert!(p.resident_bytes.unwrap() > 100_000, "{p:?}");
        assert!(p.threads.unwrap() >= 1, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap(), "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0, "{p:?}");
        let start = p.start_time_seconds.unwrap();
        assert!(start <= now() + 1.0, "{p:?}");
        assert!(start > now() - 86_400.0 * 365.0, "{p:?}");
    }

    #[test]
    fn reads_plausible_figures() {
        let p = ProcessFigures::read();
        assert_plausible(&p);
    }

    /// A directory laid out as `ProcSubset=pid` shows /proc: `self/` and nothing system-wide.
    fn pid_only_view(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("hayate-proc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("self/fd")).unwrap();
        std::fs::copy("/proc/self/stat", root.join("self/stat")).unwrap();
        for fd in std::fs::read_dir("/proc/self/fd").unwrap() {
            let name = fd.unwrap().file_name();
            std::fs::write(root.join("self/fd").join(name), "").unwrap();
        }
        root
    }

    #[test]
    fn every_figure_reads_under_a_pid_only_proc() {
        let root = pid_only_view("pid-only");
        for hidden in ["stat", "uptime", "meminfo"] {
            assert!(!root.join(hidden).exists());
        }
        let p = ProcessFigures::read_from(&root);
        assert_plausible(&p);
        // The start time is this process's, not the copy's: within a second of the real one's
        // reading (both count from boot).
        let real = ProcessFigures::read().start_time_seconds.unwrap();
        assert!((p.start_time_seconds.unwrap() - real).abs() < 1.0, "{p:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn one_figure_failing_leaves_the_others() {
        let root = pid_only_view("no-fd");
        std::fs::remove_dir_all(root.join("self/fd")).unwrap();
        let p = ProcessFigures::read_from(&root);
        assert_eq!(p.open_fds, None, "{p:?}");
        assert!(p.resident_bytes.is_some() && p.threads.is_some(), "{p:?}");
        assert!(
            p.start_time_seconds.is_some() && p.max_fds.is_some(),
            "{p:?}"
        );
        // And without stat, the fd count still reads.
        let root2 = pid_only_view("no-stat");
        std::fs::remove_file(root2.join("self/stat")).unwrap();
        let p = ProcessFigures::read_from(&root2);
        assert_eq!(
            (p.resident_bytes, p.threads, p.cpu_seconds),
            (None, None, None)
        );
        assert!(p.open_fds.is_some() && p.max_fds.is_some(), "{p:?}");
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&root2);
    }
}
