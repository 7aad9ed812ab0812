//! The new process's side of a `SIGUSR2` upgrade: receive the old process's sockets at start,
//! and once this process is set up (config read, sockets matched, privileges dropped) tell it
//! to stop, then wait until it has written its final snapshot, so the restore that follows
//! holds every announce it answered.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{bail, Context};
use sendfd::{RecvWithFd, SendWithFd};

use super::{receive_within, set_cloexec, FDS_PER_MESSAGE, HANDED, READY, SENT, SOCKETS};

/// How long the old process may take to pass its sockets.
const SOCKETS_WITHIN: Duration = Duration::from_secs(10);
/// How long its stop and final snapshot may take before this process serves anyway (a swarm
/// of millions of peers is written in about a second).
const HANDED_WITHIN: Duration = Duration::from_secs(300);

/// The process this one replaces.
pub struct Predecessor {
    channel: UnixStream,
}

impl Predecessor {
    /// Takes the channel at `fd` and the sockets the old process sends over it.
    pub(super) fn connect(fd: RawFd) -> anyhow::Result<(Predecessor, Vec<(String, OwnedFd)>)> {
        // SAFETY: F_GETFD only asks whether the number is an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("the upgrade channel (descriptor {fd}) is not open");
        }
        // SAFETY: the old process opened this descriptor for this process alone and named it
        // in the environment; nothing else here owns it.
        let channel = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        set_cloexec(fd);
        channel.set_read_timeout(Some(SOCKETS_WITHIN))?;
        let mut sockets = Vec::new();
        loop {
            let mut buf = [0u8; 64 * FDS_PER_MESSAGE];
            let mut fds = [-1 as RawFd; FDS_PER_MESSAGE];
            let (n, k) = channel
                .recv_with_fd(&mut buf, &mut fds)
                .context("receiving the sockets from the previous process")?;
            let mut lines = buf[..n].split(|&b| b == b'\n');
            let head = lines.next().unwrap_or_default();
            let mut names = lines.map(|l| String::from_utf8_lossy(l).into_owned());
            for &fd in &fds[..k] {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(fd);
                sockets.push((names.next().unwrap_or_default(), owned));
            }
            match head {
                SOCKETS => continue,
                SENT => break,
                [] => bail!("the previous process closed the upgrade channel before handing its sockets over"),
                other => bail!(
                    "unexpected message on the upgrade channel: {:?}",
                    String::from_utf8_lossy(other)
                ),
            }
        }
        Ok((Predecessor { channel }, sockets))
    }

    /// Tells the old process to stop serving and waits until it has written its final
    /// snapshot, or is gone, or `HANDED_WITHIN` passes (then this process serves anyway).
    pub fn take_over(self) -> anyhow::Result<()> {
        self.channel
            .send_with_fd(READY, &[])
            .context("telling the previous process this one is ready")?;
        let mut buf = [0u8; 16];
        let got = receive_within(&self.channel, HANDED_WITHIN, &mut buf);
        match got {
            Ok(n) if &buf[..n] == HANDED => {
                tracing::info!(
                    "the previous process has stopped and written its snapshot: taking over"
                )
            }
            Ok(_) => tracing::warn!(
                "the previous process ended without confirming its final snapshot: taking over"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "the previous process did not confirm its final snapshot: taking over"
            ),
        }
        Ok(())
    }
}
