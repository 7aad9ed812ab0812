//! One thread of a child tracker held in a ptrace stop, for tests of what a stuck thread does
//! to the rest (`/health`, forwards, the watchdog). Shared by tests/health.rs and
//! tests/stalled_worker.rs.

/// The thread id of the thread named `name` in process `pid`.
pub fn thread_named(pid: u32, name: &str) -> i32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            (comm.trim() == name).then(|| tid.parse().unwrap())
        })
        .next()
        .unwrap_or_else(|| panic!("no thread {name} in {pid}"))
}

/// One thread (not its process) held in a ptrace stop until this is dropped. Dropping resumes
/// it, on a failed assertion too: a thread left stopped would make the process unkillable by
/// the `Daemon` drop (its exit would wait for this tracer) and hang the test.
pub struct StoppedThread(i32);

impl StoppedThread {
    /// `None` where ptrace is refused.
    pub fn stop(tid: i32) -> Option<StoppedThread> {
        // SAFETY: plain ptrace calls on a thread of our own child process.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
                return None;
            }
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        }
        Some(StoppedThread(tid))
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // SAFETY: as above; the thread is in a ptrace stop.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
        if detached != 0 && !std::thread::panicking() {
            panic!("PTRACE_DETACH failed: {}", std::io::Error::last_os_error());
        }
    }
}
