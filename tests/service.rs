//! hayate as a service: the access list and its live reload (in process and by SIGHUP to the
//! binary), systemd readiness notifications and watchdog pings, dropping root, and the epoll
//! fallback where io_uring is forbidden.

mod common;
#[path = "support/hayate_process.rs"]
mod hayate_process;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use hayate_process::Hayate;
use hayate_tracker::{Config, Tracker};

const NOT_ALLOWED: &str = "torrent not allowed";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hayate-service-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hex(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn esc(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("%{b:02x}")).collect()
}

fn udp_error(r: Reply) -> String {
    match r {
        Reply::Error { message, .. } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn udp_peers(r: Reply) -> (u32, Vec<SocketAddr>) {
    match r {
        Reply::Announce {
            interval, peers, ..
        } => (interval, peers),
        other => panic!("expected an announce reply, got {other:?}"),
    }
}

/// (seeders, completed, leechers) of one scraped hash.
fn udp_scrape(c: &mut Client, cid: u64, h: [u8; 20]) -> (u32, u32, u32) {
    match c.scrape(cid, &[h]) {
        Reply::Scrape { entries, .. } => entries[0],
        other => panic!("{other:?}"),
    }
}

fn http_announce(t: &Tracker, h: &[u8; 20], port: u16) -> String {
    let path = format!(
        "/announce?info_hash={}&peer_id=-HT0001-000000000000&port={port}&left=5&compact=0&no_peer_id=1",
        esc(h)
    );
    let (status, _, body) = http_get(http_v4(t), &path, None);
    assert_eq!(status, 200);
    body
}

fn config_text(list: &Path, mode: &str, protocol: &str) -> String {
    format!(
        "[udp]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         [http]\naddresses = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         [workers]\ncount = 2\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [access_list]\nmode = \"{mode}\"\npath = \"{}\"\n[protocol]\n{protocol}\n",
        list.display()
    )
}

#[test]
fn access_list_reload_refuses_then_allows_without_losing_peers() {
    for backend in BACKENDS {
        if skip_backend(backend) {
            continue;
        }
        let dir = temp_dir(&format!("reload-{backend}"));
        let list = dir.join("deny.txt");
        std::fs::write(&list, "# nothing denied yet\n").unwrap();
        let text = config_text(&list, "deny", "");
        let config = Config::from_toml_str(&text, "t").unwrap();
        let mut udp_config = config.clone();
        udp_config.udp.backend = match backend {
            "epoll" => hayate_tracker::config::Backend::Epoll,
            _ => hayate_tracker::config::Backend::IoUring,
        };
        let t = Tracker::start(udp_config).unwrap();
        assert_eq!(t.backend(), backend);
        // Two torrents, one per worker: `x` is refused and allowed again, `y` must not notice.
        let x = hash_for_shard(0, 2, 1);
        let y = hash_for_shard(1, 2, 2);
        let mut c = Client::new(v4(&t));
        let cid = c.connect();
        for port in 1..=3 {
            udp_peers(c.announce(cid, y, 100 + port, 5, EVENT_STARTED, -1));
        }
        udp_peers(c.announce(cid, x, 200, 5, EVENT_STARTED, -1));
        assert_eq!(udp_scrape(&mut c, cid, x), (0, 0, 1));

        // Deny x.
        std::fs::write(&list, format!("# refused\n{}\n", hex(&x))).unwrap();
        t.reload(&config).unwrap();
        // Announces are refused by every worker: one client reaches each.
        for (mut other, cid) in client_per_worker(&t, v4(&t)) {
            let e = udp_error(other.announce(cid, x, 201, 5, EVENT_STARTED, -1));
            assert_eq!(e, NOT_ALLOWED);
            assert_eq!(
                udp_scrape(&mut other, cid, x),
                (0, 0, 0),
                "scrape answers zeros"
            );
        }
        assert!(http_announce(&t, &x, 202).contains(&format!("14:failure reason19:{NOT_ALLOWED}")));
        let scrape = format!("/scrape?info_hash={}", esc(&x));
        let (_, _, body) = http_get(http_v4(&t), &scrape, None);
        assert!(
            body.contains("8:completei0e") && body.contains("10:incompletei0e"),
            "{body}"
        );
        let (_, peers) = udp_peers(c.announce(cid, y, 104, 5, EVENT_STARTED, -1));
        assert_eq!(peers.len(), 3, "peers of other torrents are untouched");

        // A bad list on reload changes nothing and says where.
        std::fs::write(&list, format!("{}\nnot a hash\n", hex(&y))).unwrap();
        let e = t.reload(&config).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("deny.txt"), "{e}");
        assert_eq!(
            udp_error(c.announce(cid, x, 200, 5, EVENT_NONE, -1)),
            NOT_ALLOWED
        );
        udp_peers(c.announce(cid, y, 104, 5, EVENT_NONE, -1));

        // Allowed again: its peer was kept all along.
        std::fs::write(&list, "").unwrap();
        t.reload(&config).unwrap();
        assert_eq!(udp_scrape(&mut c, cid, x), (0, 0, 1));
        let (_, peers) = udp_peers(c.announce(cid, x, 203, 5, EVENT_STARTED, -1));
        assert_eq!(peers, vec!["127.0.0.1:200".parse().unwrap()]);
        assert!(http_announce(&t, &x, 204).contains("8:intervali1800e"));
        assert_eq!(udp_scrape(&mut c, cid, y), (0, 0, 4));
        t.stop().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn allow_mode_serves_only_listed_torrents_and_reload_changes_intervals_and_numwant() {
    let dir = temp_dir("allow");
    let list = dir.join("allow.txt");
    let listed = [0x11; 20];
    std::fs::write(
        &list,
        format!("{}  # ours\n\n", hex(&listed).to_uppercase()),
    )
    .unwrap();
    let t = Tracker::start(Config::from_toml_str(&config_text(&list, "allow", ""), "t").unwrap())
        .unwrap();
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    assert_eq!(
        udp_error(c.announce(cid, [0x22; 20], 1, 5, EVENT_STARTED, -1)),
        NOT_ALLOWED
    );
    for port in 1..=5 {
        let (interval, _) = udp_peers(c.announce(cid, listed, port, 5, EVENT_STARTED, -1));
        assert_eq!(interval, 1800);
    }
    let (_, peers) = udp_peers(c.announce(cid, listed, 9, 5, EVENT_STARTED, -1));
    assert_eq!(peers.len(), 5);

    let protocol = "announce_interval_secs = 600\nmin_interval_secs = 60\ndefault_numwant = 2\nmax_numwant = 3\n";
    let reloaded = Config::from_toml_str(&config_text(&list, "allow", protocol), "t").unwrap();
    let s = t.reload(&reloaded).unwrap();
    assert_eq!((s.shaping.default_numwant, s.shaping.max_numwant), (2, 3));
    let (interval, peers) = udp_peers(c.announce(cid, listed, 9, 5, EVENT_NONE, -1));
    assert_eq!((interval, peers.len()), (600, 2));
    let (_, peers) = udp_peers(c.announce(cid, listed, 9, 5, EVENT_NONE, 100));
    assert_eq!(peers.len(), 3);
    let body = http_announce(&t, &listed, 30);
    assert!(
        body.contains("8:intervali600e") && body.contains("12:min intervali60e"),
        "{body}"
    );
    t.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_list_at_start_up_is_fatal_with_its_line() {
    let dir = temp_dir("bad-start");
    let list = dir.join("list.txt");
    std::fs::write(&list, format!("# ok\n{}\nxyz\n", hex(&[1; 20]))).unwrap();
    let config = Config::from_toml_str(&config_text(&list, "deny", ""), "t").unwrap();
    let e = format!("{:#}", Tracker::start(config).err().expect("refused"));
    assert!(e.contains("list.txt, line 3"), "{e}");
    let config = Config::from_toml_str(&config_text(&dir.join("missing"), "allow", ""), "t");
    let e = format!(
        "{:#}",
        Tracker::start(config.unwrap()).err().expect("refused")
    );
    assert!(e.contains("missing"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- The binary, as systemd or an operator runs it. ----

/// A config file serving UDP on 127.0.0.1:`port` only (0: any free port, which the tracker's
/// "hayate serving" log line names), plus `extra`.
fn binary_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:{port}\"]\n[http]\naddresses = []\n\
             [workers]\ncount = 2\n[metrics]\naddress = \"\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn hayate(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hayate"));
    c.arg("--config").arg(config).env("RUST_LOG", "info");
    c
}

/// The one UDP address a `binary_config` tracker serves on, once it serves.
fn serving_at(child: &mut Hayate) -> SocketAddr {
    let addrs = child.serving_udp();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert_ne!(addrs[0].port(), 0, "the log names the port bound");
    addrs[0]
}

/// The next state notification; the sockets handed to the fd store right after READY
/// (`FDSTORE=1`, checked in tests/handover.rs) are passed over.
fn notification(listener: &UnixDatagram) -> String {
    loop {
        let mut buf = [0u8; 512];
        let n = listener
            .recv(&mut buf)
            .expect("a notification within the timeout");
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        if !text.starts_with("FDSTORE") {
            return text;
        }
    }
}

#[test]
fn notifies_systemd_and_reloads_on_sighup() {
    let dir = temp_dir("sighup");
    let list = dir.join("deny.txt");
    std::fs::write(&list, "").unwrap();
    let config = binary_config(
        &dir,
        0,
        &format!(
            "[access_list]\nmode = \"deny\"\npath = \"{}\"\n",
            list.display()
        ),
    );
    let socket_path = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&socket_path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Hayate::spawn(hayate(&config).env("NOTIFY_SOCKET", &socket_path));
    assert_eq!(notification(&listener), "READY=1");
    // Ready means serving: the very first connect is answered.
    let mut c = Client::new(serving_at(&mut child));
    let cid = c.connect();
    let x = [0x33; 20];
    udp_peers(c.announce(cid, x, 1000, 5, EVENT_STARTED, -1));

    let reload = |contents: String| {
        std::fs::write(&list, contents).unwrap();
        child.signal(libc::SIGHUP);
        let n = notification(&listener);
        assert!(n.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{n}");
        assert_eq!(notification(&listener), "READY=1");
    };
    reload(format!("{}\n", hex(&x)));
    assert_eq!(
        udp_error(c.announce(cid, x, 1000, 5, EVENT_NONE, -1)),
        NOT_ALLOWED
    );
    reload("garbage\n".into());
    assert_eq!(
        udp_error(c.announce(cid, x, 1000, 5, EVENT_NONE, -1)),
        NOT_ALLOWED
    );
    reload("# allowed again\n".into());
    let (_, peers) = udp_peers(c.announce(cid, x, 2000, 5, EVENT_NONE, -1));
    assert_eq!(
        peers,
        vec!["127.0.0.1:1000".parse().unwrap()],
        "no peer lost"
    );

    child.signal(libc::SIGTERM);
    assert_eq!(notification(&listener), "STOPPING=1");
    let (status, err) = child.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        err.contains("reload failed") && err.contains("deny.txt, line 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `WATCHDOG=1` pings that arrive on `listener` within `within`; other notifications
/// (READY, the fd store) are passed over.
fn watchdog_pings(listener: &UnixDatagram, within: Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    let mut pings = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return pings;
        }
        listener.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        match listener.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"WATCHDOG=1" => pings += 1,
            Ok(_) => {}
            Err(_) => return pings,
        }
    }
}

#[test]
fn pings_the_watchdog_when_systemd_asks_and_only_then() {
    let dir = temp_dir("watchdog");
    // The metrics endpoint is off in these configs: the pings must not depend on it.
    let config = binary_config(&dir, 0, "");
    let run = |name: &str, env: &[(&str, String)]| {
        let socket_path = dir.join(format!("{name}.sock"));
        let listener = UnixDatagram::bind(&socket_path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut cmd = hayate(&config);
        cmd.env("NOTIFY_SOCKET", &socket_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = Hayate::spawn(&mut cmd);
        assert_eq!(notification(&listener), "READY=1");
        serving_at(&mut child);
        // WATCHDOG_USEC = 300 ms: a ping every 100 ms, so 1.5 s holds about 15.
        let pings = watchdog_pings(&listener, Duration::from_millis(1500));
        child.signal(libc::SIGTERM);
        let (status, err) = child.wait_exit(Duration::from_secs(3));
        assert!(status.success(), "{status:?}: {err}");
        (pings, err)
    };
    let (pings, err) = run("on", &[("WATCHDOG_USEC", "300000".into())]);
    assert!((8..=20).contains(&pings), "{pings} pings in 1.5 s:\n{err}");
    assert!(err.contains("sending systemd watchdog pings"), "{err}");
    // systemd names the process the watchdog is for; a child that inherited the variables
    // (a shell started by hayate's unit, say) does not ping on its behalf.
    let (pings, _) = run(
        "own-pid",
        &[
            ("WATCHDOG_USEC", "300000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    assert_eq!(pings, 0, "pinged for another process");
    let (pings, err) = run("off", &[]);
    assert_eq!(pings, 0, "pinged without WATCHDOG_USEC");
    assert!(!err.contains("watchdog"), "{err}");
    let (pings, err) = run("bad", &[("WATCHDOG_USEC", "30s".into())]);
    assert_eq!(pings, 0);
    assert!(
        err.contains("WATCHDOG_USEC=\"30s\" is not a positive number"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_list_stops_the_binary_at_start_up() {
    let dir = temp_dir("bad-binary");
    let list = dir.join("allow.txt");
    std::fs::write(&list, "# ok\n\n0123\n").unwrap();
    let config = binary_config(
        &dir,
        0,
        &format!(
            "[access_list]\nmode = \"allow\"\npath = \"{}\"\n",
            list.display()
        ),
    );
    let (status, err) = Hayate::spawn(&mut hayate(&config)).wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("allow.txt, line 3"), "{err}");
    // --check-config reads the list too.
    let out = Command::new(env!("CARGO_BIN_EXE_hayate"))
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `Uid:` line of /proc/<pid>/status: real, effective, saved, filesystem.
fn uids(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a tracker on a port below 1024 (only root can bind one) that then drops to
/// `nobody`. No fixed port is assumed free: each try is a different port from 1023 down, and a
/// port someone else holds only moves on to the next.
fn serving_on_a_privileged_port(dir: &Path) -> (Hayate, SocketAddr) {
    let mut last = String::new();
    for port in (1000..1024).rev() {
        let config = binary_config(dir, port, "[privileges]\nuser = \"nobody\"\n");
        let mut child = Hayate::spawn(&mut hayate(&config));
        if let Some(addrs) = child.serving_udp_or_exit() {
            assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], port))]);
            return (child, addrs[0]);
        }
        let (status, err) = child.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains("in use"),
            "failed on port {port}, and not because it is taken: {err}"
        );
        last = err;
    }
    panic!("every port from 1000 to 1023 was in use; the last try said:\n{last}");
}

#[test]
fn drops_root_to_the_configured_user_after_binding() {
    let dir = temp_dir("privileges");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: switching user is impossible, and hayate says so instead of serving.
        let config = binary_config(&dir, 0, "[privileges]\nuser = \"nobody\"\n");
        let (status, err) = Hayate::spawn(&mut hayate(&config)).wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("only root can"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let (child, at) = serving_on_a_privileged_port(&dir);
    let mut c = Client::new(at);
    let nobody = {
        let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(uids(child.id()), [nobody.as_str(); 4].join(" "));
    let cid = c.connect();
    udp_peers(c.announce(cid, [5; 20], 1000, 5, EVENT_STARTED, -1));
    child.signal(libc::SIGTERM);
    let (status, err) = child.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{err}");
    assert!(err.contains("dropped root privileges"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the child under a seccomp filter that fails io_uring_setup with ENOSYS, as an old
/// kernel or a container's default profile does.
fn forbid_io_uring(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    #[repr(C)]
    struct Filter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct Program {
        len: u16,
        filter: *const Filter,
    }
    // SAFETY: between fork and exec only async-signal-safe prctl calls run.
    unsafe {
        cmd.pre_exec(|| {
            let filter = [
                // A = the system call number (seccomp_data.nr).
                Filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                // if A == io_uring_setup: next, else skip one.
                Filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_io_uring_setup as u32,
                },
                Filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x0005_0000 | libc::ENOSYS as u32,
                },
                Filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                },
            ];
            let program = Program {
                len: filter.len() as u16,
                filter: filter.as_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2, &program as *const Program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn without_io_uring_auto_falls_back_to_epoll_and_io_uring_refuses_to_start() {
    let dir = temp_dir("fallback");
    let config = binary_config(&dir, 0, "");
    let mut cmd = hayate(&config);
    forbid_io_uring(&mut cmd);
    let mut child = Hayate::spawn(&mut cmd);
    let mut c = Client::new(serving_at(&mut child));
    let cid = c.connect();
    for port in [1000, 1001] {
        udp_peers(c.announce(cid, [6; 20], port, 5, EVENT_STARTED, -1));
    }
    let (_, peers) = udp_peers(c.announce(cid, [6; 20], 1002, 5, EVENT_STARTED, -1));
    assert_eq!(peers.len(), 2);
    child.signal(libc::SIGTERM);
    let (status, err) = child.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains("io_uring cannot be set up"),
        "{err}"
    );
    assert!(err.contains("io=\"epoll\""), "{err}");

    // Forced io_uring where there is none: a clear error, not a silent fallback.
    let config = binary_config(&dir, 0, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[http]", "backend = \"io_uring\"\n[http]");
    std::fs::write(&config, text).unwrap();
    let mut cmd = hayate(&config);
    forbid_io_uring(&mut cmd);
    let (status, err) = Hayate::spawn(&mut cmd).wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("udp.backend"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
