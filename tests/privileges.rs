//! Dropping root to the configured user and group: started as root with `[privileges] user`
//! and `group`, the binary serves with every uid and gid (and its supplementary groups) set to
//! them; an unknown group stops it at start-up with the reason. Skipped when not root.

mod common;

use std::time::Duration;

use common::*;

/// A `/proc/<pid>/status` line's values, e.g. "Gid" gives "real effective saved filesystem".
fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap();
    line.split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

fn id(args: &[&str]) -> String {
    let out = std::process::Command::new("id")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn drops_to_the_configured_group_and_refuses_an_unknown_one() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can switch user and group");
        return;
    }
    let dir = test_dir("group");
    let config = dir.join("hayate.toml");
    let write = |group: &str| {
        std::fs::write(
            &config,
            format!(
                "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = []\n\
                 [metrics]\naddress = \"\"\n[workers]\ncount = 2\n\
                 [privileges]\nuser = \"nobody\"\ngroup = \"{group}\"\n"
            ),
        )
        .unwrap();
    };
    // A group other than nobody's own primary one, so the group setting is what shows.
    let group = "daemon";
    let gid = id(&["-g", "daemon"]);
    assert_ne!(
        gid,
        id(&["-g", "nobody"]),
        "the test needs a group nobody is not in"
    );
    write(group);
    let d = Daemon::start(hayate_with_config(&config));
    let pid = d.pid();
    let uid = id(&["-u", "nobody"]);
    assert_eq!(status_line(pid, "Uid"), [uid.as_str(); 4].join(" "));
    assert_eq!(status_line(pid, "Gid"), [gid.as_str(); 4].join(" "));
    assert_eq!(status_line(pid, "Groups"), gid, "root's groups are gone");
    let mut c = Client::new(d.udp[0]);
    c.connect();
    assert!(d.log().contains(&format!("gid={gid}")), "{}", d.log());
    d.signal(libc::SIGTERM);
    let (status, log) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{log}");

    write("no-such-group-hayate");
    let out = hayate_with_config(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("privileges.group") && err.contains("no-such-group-hayate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
