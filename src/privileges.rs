//! Dropping root: a tracker started as root (outside systemd, to bind a port below 1024) binds
//! every socket first, then becomes `[privileges] user` and `group` before it serves, so nothing
//! that parses packets ever runs as root.

use std::ffi::CString;

use anyhow::{bail, Context};

use crate::config::PrivilegesConfig;

/// Who the process runs as after `drop_privileges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Switches to the configured user and group. With no user configured nothing changes (a
/// warning is logged when that leaves the process root). Not root but already the configured
/// identity (e.g. started by systemd as that user): nothing to do. Must run before any other
/// thread starts, so every thread has the same identity.
pub fn drop_privileges(p: &PrivilegesConfig) -> anyhow::Result<Option<Identity>> {
    // SAFETY: these getters cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if p.user.is_empty() {
        if euid == 0 {
            tracing::warn!(
                "running as root: set [privileges] user (or run under the systemd unit) so the \
                 tracker drops root once its sockets are bound"
            );
        }
        return Ok(None);
    }
    let (target_uid, user_gid) = lookup_user(&p.user)?;
    let target_gid = if p.group.is_empty() {
        user_gid
    } else {
        lookup_group(&p.group)?
    };
    let target = Identity {
        uid: target_uid,
        gid: target_gid,
    };
    // SAFETY: as above.
    let gid = unsafe { libc::getgid() };
    if euid != 0 {
        if uid == target_uid && euid == target_uid && gid == target_gid {
            return Ok(Some(target));
        }
        bail!(
            "cannot switch to user {:?} (privileges.user): only root can, and this process runs as uid {euid}",
            p.user
        );
    }
    // SAFETY: plain syscalls on values we own; glibc applies set*id to every thread.
    unsafe {
        if libc::setgroups(1, &target_gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgroups");
        }
        if libc::setgid(target_gid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setgid({target_gid}) for privileges.group"));
        }
        if libc::setuid(target_uid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setuid({target_uid}) for privileges.user"));
        }
        // A target of root itself is allowed (pointless, but not a failure to drop).
        if target_uid != 0 && libc::setuid(0) == 0 {
            bail!("privileges were not dropped: setuid(0) still succeeds");
        }
    }
    tracing::info!(user = %p.user, uid = target_uid, gid = target_gid, "dropped root privileges");
    Ok(Some(target))
}

/// Whether the configured user and group exist (`--check-config`); `Ok` when none is set.
pub fn check_names(p: &PrivilegesConfig) -> anyhow::Result<()> {
    if !p.user.is_empty() {
        lookup_user(&p.user)?;
    }
    if !p.group.is_empty() {
        lookup_group(&p.group)?;
    }
    Ok(())
}

/// A user's uid and primary gid, by name or number.
fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let c = CString::new(name).context("privileges.user contains a NUL byte")?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: all-zero is a valid passwd; getpwnam_r writes into it and `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if r == 0 && !found.is_null() {
        return Ok((pwd.pw_uid, pwd.pw_gid));
    }
    if let Ok(uid) = name.parse::<u32>() {
        return Ok((uid, uid));
    }
    bail!("privileges.user: no such user {name:?}")
}

/// A group's gid, by name or number.
fn lookup_group(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).context("privileges.group contains a NUL byte")?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: as for getpwnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let r = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if r == 0 && !found.is_null() {
        return Ok(grp.gr_gid);
    }
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    bail!("privileges.group: no such group {name:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_names_and_numbers() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(lookup_group("root").unwrap(), 0);
        assert_eq!(lookup_user("4242").unwrap(), (4242, 4242));
        let e = lookup_user("no-such-user-hayate").unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
    }

    #[test]
    fn no_user_changes_nothing() {
        let p = PrivilegesConfig {
            user: String::new(),
            group: String::new(),
        };
        assert_eq!(drop_privileges(&p).unwrap(), None);
    }
}
