//! The process's own figures, read from /proc/self at scrape time: resident memory, CPU time,
//! threads, open and allowed file descriptors, start time.

use std::io;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    pub fn read() -> io::Result<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // The command name may hold spaces and parentheses; the fields start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))?;
        // `fields[0]` is field 3 (state) of proc(5).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> io::Result<u64> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::Error::other(format!("no field {n} in /proc/self/stat")))
        };
        // SAFETY: sysconf and getrlimit only read or fill plain values.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        Ok(ProcessFigures {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            resident_bytes: field(24)? * page,
            start_time_seconds: boot_time()? + field(22)? as f64 / ticks,
            open_fds,
            max_fds,
        })
    }
}

/// Unix time of boot, from /proc/stat's `btime`.
fn boot_time() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::other("no btime in /proc/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_figures() {
        let p = ProcessFigures::read().unwrap();
        assert!(p.resident_bytes > 100_000, "{p:?}");
        assert!(p.threads >= 1, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0, "{p:?}");
        assert!(p.start_time_seconds > now - 86_400.0 * 365.0, "{p:?}");
    }
}
