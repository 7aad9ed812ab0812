//! Handing the tracker on to its next process without dropping a request. The sockets outlive
//! the process, so what arrives in between waits in the kernel; the swarm goes over through the
//! snapshot. Two ways in, one set of sockets:
//! - systemd: the sockets are kept in the service's fd store (`FDSTORE=1`, see `notify`), and a
//!   restarted process (after `systemctl restart` or a crash) gets them back in `LISTEN_FDS`
//!   (the sd_listen_fds protocol; socket units arrive the same way);
//! - `SIGUSR2` without systemd: the running process starts the binary now on disk with the same
//!   arguments and passes the sockets over a private channel (`successor`), the new process
//!   says when it is ready (`predecessor`), the old one stops serving, writes its final snapshot
//!   and exits, and only then does the new one restore the swarm and serve.
//!
//! `sockets` matches whatever arrives to the configuration.

mod predecessor;
mod successor;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use anyhow::Context;
use socket2::{Domain, Socket, Type};

pub use predecessor::Predecessor;
pub use successor::{Launch, Successor};

/// The variable naming the channel to the predecessor in a process started by `SIGUSR2`.
pub const UPGRADE_FD: &str = "HAYATE_UPGRADE_FD";

/// The upgrade channel's messages, one datagram each (a seqpacket pair keeps them apart and
/// reports the other end closing).
const SOCKETS: &[u8] = b"sockets";
const SENT: &[u8] = b"sent";
const READY: &[u8] = b"ready";
const HANDED: &[u8] = b"handed";
/// Descriptors per message: the kernel passes at most 253 (SCM_MAX_FD).
const FDS_PER_MESSAGE: usize = 200;

/// Both ends of an upgrade channel. `std` has no seqpacket type; `UnixStream` wraps the
/// descriptor because its calls (send, recv, recvmsg with descriptors) are the same syscalls.
fn channel() -> std::io::Result<(UnixStream, UnixStream)> {
    let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
    Ok((
        UnixStream::from(OwnedFd::from(a)),
        UnixStream::from(OwnedFd::from(b)),
    ))
}

/// The next message on `channel` into `buf`, waiting at most `within`; its length (0: the other
/// end closed).
fn receive_within(
    channel: &UnixStream,
    within: std::time::Duration,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    use sendfd::RecvWithFd;
    channel.set_read_timeout(Some(within))?;
    channel.recv_with_fd(buf, &mut []).map(|(n, _)| n)
}

/// What a process is handed at start.
#[derive(Default)]
pub struct Inherited {
    /// Each descriptor with the name it was handed on with (`sockets::UDP`, ...).
    pub fds: Vec<(String, OwnedFd)>,
    /// The process being replaced, when started by its `SIGUSR2`.
    pub predecessor: Option<Predecessor>,
    /// Where the sockets came from, for the log: "systemd" or "the previous process".
    pub from: &'static str,
    /// How often to send systemd's `WATCHDOG=1` (`notify::watchdog_period`); `None`: never.
    pub watchdog: Option<std::time::Duration>,
}

impl Inherited {
    /// Takes what the environment hands this process and removes the variables, so no child
    /// inherits them. Must run before any other thread starts: it edits the environment.
    pub fn from_environment() -> anyhow::Result<Inherited> {
        let upgrade = std::env::var(UPGRADE_FD).ok();
        let listen_pid = std::env::var("LISTEN_PID").ok();
        let listen_fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        for var in [UPGRADE_FD, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        // Left in the environment: a successor started by SIGUSR2 inherits WATCHDOG_USEC and
        // pings once it is the main process (it is not given WATCHDOG_PID, see `successor`).
        let watchdog = crate::notify::watchdog_from_environment();
        if let Some(fd) = upgrade {
            let fd: RawFd = fd
                .parse()
                .ok()
                .filter(|&fd| fd > 2)
                .with_context(|| format!("{UPGRADE_FD}={fd:?} is not a descriptor number"))?;
            let (predecessor, fds) = Predecessor::connect(fd)?;
            return Ok(Inherited {
                fds,
                predecessor: Some(predecessor),
                from: "the previous process",
                watchdog,
            });
        }
        let fds = listen_fds_range(
            std::process::id(),
            listen_pid.as_deref(),
            listen_fds.as_deref(),
        )
        .context("reading LISTEN_FDS")?
        .zip(names.split(':').chain(std::iter::repeat("")))
        .filter_map(|(fd, name)| {
            // SAFETY: F_GETFD only asks whether the number is an open descriptor.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                tracing::warn!(fd, "LISTEN_FDS names a descriptor that is not open");
                return None;
            }
            // SAFETY: the service manager passed these descriptors to this process alone and
            // nothing else in it has taken them: they are ours to own from here.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            set_cloexec(fd);
            Some((name.to_string(), owned))
        })
        .collect();
        Ok(Inherited {
            fds,
            predecessor: None,
            from: "systemd",
            watchdog,
        })
    }
}

/// The descriptors the sd_listen_fds protocol passes: `LISTEN_FDS` of them from 3 on, if
/// `LISTEN_PID` names this process (otherwise they were meant for another).
fn listen_fds_range(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
) -> anyhow::Result<std::ops::Range<RawFd>> {
    const FIRST: RawFd = 3;
    let (Some(listen_pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(FIRST..FIRST);
    };
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Ok(FIRST..FIRST);
    }
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| (0..=65_536).contains(&n))
        .with_context(|| format!("LISTEN_FDS={count:?} is not a descriptor count"))?;
    Ok(FIRST..FIRST + count)
}

/// Systemd passes descriptors without close-on-exec; a child started later gets them only on
/// purpose.
fn set_cloexec(fd: RawFd) {
    // SAFETY: plain fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_are_taken_only_when_meant_for_this_process() {
        assert_eq!(listen_fds_range(7, Some("7"), Some("3")).unwrap(), 3..6);
        assert_eq!(listen_fds_range(7, Some("8"), Some("3")).unwrap(), 3..3);
        assert_eq!(listen_fds_range(7, None, Some("3")).unwrap(), 3..3);
        assert_eq!(listen_fds_range(7, Some("7"), None).unwrap(), 3..3);
        assert_eq!(listen_fds_range(7, Some("7"), Some("0")).unwrap(), 3..3);
        let e = listen_fds_range(7, Some("7"), Some("many")).unwrap_err();
        assert!(format!("{e:#}").contains("LISTEN_FDS"), "{e:#}");
        assert!(listen_fds_range(7, Some("7"), Some("-1")).is_err());
    }
}
