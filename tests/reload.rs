//! The real binary re-reading its config file on SIGHUP, as an operator runs
//! `systemctl reload hayate`: a changed access list and interval take effect on HTTP too, a
//! broken file keeps the settings in force and the log says why, and SIGINT (Ctrl-C) stops it
//! cleanly with exit status 0.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const NOT_ALLOWED: &str = "14:failure reason19:torrent not allowed";

fn write_config(path: &Path, list: &Path, interval: u32) {
    std::fs::write(
        path,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = [\"127.0.0.1:0\"]\n\
             [workers]\ncount = 2\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [access_list]\nmode = \"deny\"\npath = \"{}\"\n\
             [protocol]\nannounce_interval_secs = {interval}\nmin_interval_secs = 60\n",
            list.display()
        ),
    )
    .unwrap();
}

/// Sends SIGHUP and waits for the log to show the reload's `n`th outcome (done or failed).
fn reload(d: &mut Daemon, n: usize) -> String {
    d.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.log();
        if log.matches("reloaded (").count() + log.matches("reload failed").count() >= n {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload {n} not logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sighup_rereads_the_file_for_http_keeps_settings_on_a_broken_file_and_sigint_stops() {
    let dir = test_dir("reload-binary");
    let config = dir.join("hayate.toml");
    let list = dir.join("deny.txt");
    std::fs::write(&list, "").unwrap();
    write_config(&config, &list, 1800);
    let mut d = Daemon::start(hayate_with_config(&config));
    let http = d.http[0];
    let (x, y) = ([0x31; 20], [0x32; 20]);
    let (status, body) = http_announce(http, &x, 1000, 5, "");
    assert_eq!(status, 200);
    assert!(body.contains("8:intervali1800e"), "{body}");

    // Deny x and shorten the interval in the file: both apply to HTTP at once.
    std::fs::write(&list, format!("{}\n", hex(&x))).unwrap();
    write_config(&config, &list, 600);
    let log = reload(&mut d, 1);
    assert!(log.contains("reloaded ("), "{log}");
    let (status, body) = http_announce(http, &x, 1000, 5, "");
    assert_eq!(status, 200);
    assert!(body.contains(NOT_ALLOWED), "{body}");
    let (_, body) = http_announce(http, &y, 1001, 5, "");
    assert!(body.contains("8:intervali600e"), "{body}");

    // A file that is not TOML: nothing changes, and the log names the file and the problem.
    std::fs::write(&config, "[protocol\nannounce_interval_secs = 5\n").unwrap();
    let log = reload(&mut d, 2);
    let failed = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .expect("the failure is logged");
    assert!(
        failed.contains("keeping the settings in force")
            && failed.contains("hayate.toml")
            && failed.contains("not valid TOML"),
        "{failed}"
    );
    assert!(failed.contains("ERROR"), "{failed}");
    // A value out of range: the same, naming the key.
    std::fs::write(&config, "[protocol]\nannounce_interval_secs = 0\n").unwrap();
    let log = reload(&mut d, 3);
    let failed = log
        .lines()
        .filter(|l| l.contains("reload failed"))
        .nth(1)
        .unwrap();
    assert!(
        failed.contains("protocol.announce_interval_secs"),
        "{failed}"
    );
    let (_, body) = http_announce(http, &x, 1000, 5, "");
    assert!(
        body.contains(NOT_ALLOWED),
        "the old list is in force: {body}"
    );
    let (_, body) = http_announce(http, &y, 1001, 5, "");
    assert!(body.contains("8:intervali600e"), "the old interval: {body}");
    assert_eq!(
        d.log().matches("reloaded (").count(),
        1,
        "one reload applied"
    );

    d.signal(libc::SIGINT);
    let (status, log) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
