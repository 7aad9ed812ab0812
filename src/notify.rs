//! systemd's notification protocol (sd_notify): a datagram such as `READY=1` sent to the unix
//! socket named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`),
//! carrying descriptors for the service's fd store (`FDSTORE=1`). Outside systemd the variable
//! is unset and every notification is a no-op.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use sendfd::SendWithFd;

/// Every socket is bound and every worker serves (`Type=notify` start-up is done).
pub const READY: &str = "READY=1";
/// Shutdown has begun.
pub const STOPPING: &str = "STOPPING=1";
/// Still alive: resets the unit's `WatchdogSec=` timer.
pub const WATCHDOG: &str = "WATCHDOG=1";

/// How often to send `WATCHDOG=1`, from the variables systemd sets when the unit has
/// `WatchdogSec=`: a third of `WATCHDOG_USEC` (sd_watchdog_enabled(3) advises half; a third
/// leaves room for one late ping). `None` when no watchdog is asked of this process: the
/// variable unset, or `WATCHDOG_PID` naming another process. A value that is not a positive
/// number of microseconds is an error the caller logs.
pub fn watchdog_period(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<std::time::Duration>, String> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(pid) = pid {
        match pid.trim().parse::<u32>() {
            Ok(p) if p == own_pid => {}
            Ok(_) => return Ok(None),
            Err(_) => return Err(format!("WATCHDOG_PID={pid:?} is not a process id")),
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(std::time::Duration::from_micros(n / 3))),
        _ => Err(format!(
            "WATCHDOG_USEC={usec:?} is not a positive number of microseconds"
        )),
    }
}

/// `watchdog_period` from this process's environment, logging (and pinging never) on a bad
/// value.
pub fn watchdog_from_environment() -> Option<std::time::Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id()).unwrap_or_else(|e| {
        tracing::warn!("{e}; no watchdog pings will be sent");
        None
    })
}

/// Tells the service manager `state` (newline-separated `KEY=value` lines). Returns whether a
/// manager was there to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state, &[])
}

/// Descriptors per message: the kernel passes at most 253 (SCM_MAX_FD).
const FDS_PER_MESSAGE: usize = 200;

/// Puts `fds` in the service's fd store, grouped by name, in place of whatever it held under
/// those names: systemd keeps them open across a restart or a crash and passes them back in
/// `LISTEN_FDS`. The unit must allow enough (`FileDescriptorStoreMax=`). Returns whether a
/// manager was there to tell.
pub fn store(fds: &[(&'static str, OwnedFd)]) -> io::Result<bool> {
    let target = std::env::var_os("NOTIFY_SOCKET");
    store_to(target.as_deref(), fds)
}

fn store_to(target: Option<&std::ffi::OsStr>, fds: &[(&'static str, OwnedFd)]) -> io::Result<bool> {
    let mut names: Vec<&str> = fds.iter().map(|(name, _)| *name).collect();
    names.dedup();
    for name in names {
        // systemd ignores a descriptor it already holds, but not one that is gone from the
        // configuration: empty the name first.
        if !notify_to(target, &format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])? {
            return Ok(false);
        }
        let raw: Vec<RawFd> = fds
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, fd)| fd.as_raw_fd())
            .collect();
        for chunk in raw.chunks(FDS_PER_MESSAGE) {
            notify_to(target, &format!("FDSTORE=1\nFDNAME={name}"), chunk)?;
        }
    }
    Ok(true)
}

/// `notify` with the socket named by `target` (`$NOTIFY_SOCKET`'s value; `None`: unset). Tests
/// pass it here: setting the variable while other threads read the environment is unsound.
fn notify_to(target: Option<&std::ffi::OsStr>, state: &str, fds: &[RawFd]) -> io::Result<bool> {
    let Some(socket) = connect(target)? else {
        return Ok(false);
    };
    socket.send_with_fd(state.as_bytes(), fds)?;
    Ok(true)
}

/// `WATCHDOG=1`, without ever waiting: the ping is sent from the stats thread, which also
/// answers `/health`, and a manager that stopped reading (its queue full) must not freeze it.
/// A ping that cannot be sent at once is an error (`WouldBlock`) and is not retried: the next
/// one comes a third of the watchdog time later.
pub fn ping_watchdog() -> io::Result<bool> {
    ping_watchdog_to(std::env::var_os("NOTIFY_SOCKET").as_deref())
}

fn ping_watchdog_to(target: Option<&std::ffi::OsStr>) -> io::Result<bool> {
    let Some(socket) = connect(target)? else {
        return Ok(false);
    };
    socket.set_nonblocking(true)?;
    socket.send(WATCHDOG.as_bytes())?;
    Ok(true)
}

/// A datagram socket connected to `target` (see `notify_to`); `None` when it is unset.
fn connect(target: Option<&std::ffi::OsStr>) -> io::Result<Option<UnixDatagram>> {
    let Some(target) = target else {
        return Ok(None);
    };
    let target = target.as_encoded_bytes();
    let socket = UnixDatagram::unbound()?;
    match target.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&target[1..])?;
            socket.connect_addr(&addr)?;
        }
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt;
            socket.connect(std::ffi::OsStr::from_bytes(target))?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract socket name",
            ))
        }
    }
    Ok(Some(socket))
}

/// A reload has begun; `READY=1` ends it. systemd wants the monotonic clock with it.
pub fn reloading() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// `notify`, logging (never failing) when the manager cannot be told.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::ffi::OsStr;

    /// A service manager's notify socket in a fresh directory named after `tag`: (directory,
    /// socket path, socket).
    fn manager(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("hayate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        (dir, path, socket)
    }

    #[test]
    fn path_and_abstract_sockets_receive_the_state() {
        let (dir, path, listener) = manager("notify");
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 128];
        assert!(notify_to(Some(path.as_os_str()), READY, &[]).unwrap());
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hayate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        abstract_listener
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let at_name = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&at_name)), &reloading(), &[]).unwrap());
        let n = abstract_listener.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{got}");

        assert!(notify_to(Some(OsStr::new("relative")), READY, &[]).is_err());
        assert!(!notify_to(None, READY, &[]).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watchdog_period_is_a_third_of_watchdog_usec_for_this_process_only() {
        use std::time::Duration;
        assert_eq!(watchdog_period(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_period(Some("30000000"), None, 7),
            Ok(Some(Duration::from_secs(10)))
        );
        assert_eq!(
            watchdog_period(Some("30000000"), Some("7"), 7),
            Ok(Some(Duration::from_secs(10)))
        );
        // Meant for another process (a parent that ran us): not ours to ping for.
        assert_eq!(watchdog_period(Some("30000000"), Some("8"), 7), Ok(None));
        for bad in ["0", "-5", "30s", ""] {
            let e = watchdog_period(Some(bad), None, 7).unwrap_err();
            assert!(e.contains("WATCHDOG_USEC"), "{e}");
        }
        assert!(watchdog_period(Some("1000"), Some("x"), 7)
            .unwrap_err()
            .contains("WATCHDOG_PID"));
    }

    #[test]
    fn a_watchdog_ping_to_a_full_queue_fails_at_once() {
        let (dir, path, manager) = manager("ping");
        // Nobody reads: the queue fills (net.unix.max_dgram_qlen, 10 by default, or the
        // receive buffer), then every ping must fail without waiting.
        let started = std::time::Instant::now();
        let mut sent = 0;
        let error = loop {
            match ping_watchdog_to(Some(path.as_os_str())) {
                Ok(true) => sent += 1,
                Ok(false) => panic!("the target is set"),
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the queue never filled");
        };
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let mut buf = [0u8; 32];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
