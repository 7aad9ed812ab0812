//! The old process's side of a `SIGUSR2` upgrade: start the binary now on disk with this
//! process's arguments, pass it every socket, and wait for it to say it is ready. Until then this
//! process keeps serving; a new binary that fails to start, exits or stays silent is stopped
//! and reaped, and the caller goes on serving.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use sendfd::SendWithFd;

use super::{channel, receive_within, FDS_PER_MESSAGE, HANDED, READY, SENT, SOCKETS, UPGRADE_FD};

/// How to start this binary again.
#[derive(Debug, Clone)]
pub struct Launch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Launch {
    /// This process's binary (by path, so a file replaced since is what starts) and its
    /// arguments. Read at start, before anything can replace or delete the file.
    pub fn current() -> std::io::Result<Launch> {
        Ok(Launch {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// A started new process that has this process's sockets.
pub struct Successor {
    child: Child,
    channel: UnixStream,
}

impl Successor {
    /// Starts `launch` and passes it `sockets`. The new process shares this one's standard
    /// output and error (the same log).
    pub fn start(launch: &Launch, sockets: &[(&'static str, OwnedFd)]) -> anyhow::Result<Self> {
        let (ours, theirs) = channel().context("creating the upgrade channel")?;
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(&launch.exe);
        command
            .args(&launch.args)
            .env(UPGRADE_FD, fd.to_string())
            // systemd's WATCHDOG_PID names this process; the new one becomes the main process
            // and must ping in its place (WATCHDOG_USEC, inherited, says how often).
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null());
        // SAFETY: between fork and exec the closure only calls fcntl, which is
        // async-signal-safe, on a descriptor the child has.
        unsafe {
            command.pre_exec(move || {
                // The channel's end is the one descriptor the new process inherits.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.exe.display()))?;
        drop(theirs);
        let mut successor = Successor {
            child,
            channel: ours,
        };
        if let Err(e) = successor.send_sockets(sockets) {
            successor.abandon();
            return Err(e);
        }
        Ok(successor)
    }

    fn send_sockets(&self, sockets: &[(&'static str, OwnedFd)]) -> anyhow::Result<()> {
        // Each message: SOCKETS, then the descriptors' names, a line each.
        for chunk in sockets.chunks(FDS_PER_MESSAGE) {
            let mut message = SOCKETS.to_vec();
            let raw: Vec<_> = chunk.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            for (name, _) in chunk {
                message.push(b'\n');
                message.extend_from_slice(name.as_bytes());
            }
            self.channel
                .send_with_fd(&message, &raw)
                .context("passing the sockets to the new process")?;
        }
        self.channel
            .send_with_fd(SENT, &[])
            .context("passing the sockets to the new process")?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the new process is ready to take over. On any failure (it exits, closes
    /// the channel, says something else, or stays silent for `within`) it is stopped and reaped,
    /// and the error says what happened.
    pub fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let mut buf = [0u8; 16];
        let got = receive_within(&self.channel, within, &mut buf);
        let why = match got {
            Ok(n) if &buf[..n] == READY => return Ok(()),
            // Closed with our messages unread, the channel resets rather than ends.
            Ok(0) => "it ended before it was ready".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                "it ended before it was ready".to_string()
            }
            Ok(n) => format!("it sent {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                format!("it was not ready within {} s", within.as_secs())
            }
            Err(e) => format!("reading from it: {e}"),
        };
        let status = self.abandon();
        bail!("the new process {}: {why} ({status})", self.pid())
    }

    /// Tells the new process that this one has stopped serving and written its final
    /// snapshot: the sockets and the swarm are its own.
    pub fn hand_over(self) {
        if let Err(e) = self.channel.send_with_fd(HANDED, &[]) {
            tracing::warn!(error = %e, "telling the new process to take over");
        }
    }

    /// Stops the new process (if it still runs) and reaps it; returns how it ended.
    fn abandon(&mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot reap it: {e}"),
        }
    }
}
