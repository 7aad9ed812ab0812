//! Restarts and upgrades that drop nothing, tried with the real binary: `SIGUSR2` under a steady
//! stream of announces (every peer kept, at most 0.1% of requests unanswered, the old
//! connection id still good), a new binary that cannot start (the old one keeps serving), and
//! systemd's fd store (the sockets handed to `NOTIFY_SOCKET` with `FDSTORE=1`, a UDP request and
//! an HTTP connection made while no process runs, both answered by the next process started
//! with them in `LISTEN_FDS`).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sendfd::RecvWithFd;

const TORRENTS: u32 = 100;

fn write_config(path: &Path, state: &Path, http: &str) {
    std::fs::write(
        path,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = [{http}]\n\
             [workers]\ncount = 2\n[metrics]\naddress = \"\"\n\
             [state]\ndirectory = \"{}\"\nsnapshot_interval_secs = 3600\n",
            state.display()
        ),
    )
    .unwrap();
}

fn torrent(n: u32) -> [u8; 20] {
    let mut h = [0x3c; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h
}

/// Leechers in every torrent, summed (scraped with `cid`).
fn leechers(c: &mut Client, cid: u64) -> u32 {
    let hashes: Vec<[u8; 20]> = (0..TORRENTS).map(torrent).collect();
    let mut sum = 0;
    for chunk in hashes.chunks(50) {
        match c.scrape(cid, chunk) {
            Reply::Scrape { entries, .. } => sum += entries.iter().map(|e| e.2).sum::<u32>(),
            other => panic!("scrape refused: {other:?}"),
        }
    }
    sum
}

/// A process this test did not start (the upgrade's new one): killed when dropped, so a failed
/// test leaves no tracker behind.
struct Adopted(i32);

impl Adopted {
    fn from_log(log: &str) -> Adopted {
        let pid = log
            .lines()
            .find(|l| l.contains("upgrade: started the new process"))
            .and_then(|l| l.split("pid=").nth(1))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no new process pid in the log:\n{log}"));
        Adopted(pid)
    }

    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.0, 0) == 0 }
    }

    /// SIGTERM, then waits (boundedly) until it is gone.
    fn stop(self) {
        // SAFETY: a plain signal to a pid read from the tracker's own log.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.alive(), "the new process did not stop");
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

#[test]
fn sigusr2_under_load_keeps_every_peer_and_answers_nearly_every_request() {
    let dir = test_dir("handover-usr2");
    let config = dir.join("hayate.toml");
    write_config(&config, &dir.join("state"), "");
    let mut old = Daemon::start(hayate_with_config(&config));
    let tracker = old.udp[0];
    let mut control = Client::new(tracker);
    let cid = control.connect();

    // 2000 announces a second for 3 s from one socket, each a new leecher (its own port), while
    // a second thread collects the replies by transaction id.
    const SENT: u32 = 6000;
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (socket, answered, done) = (socket.clone(), answered.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut refused = Vec::new();
            while !done.load(Ordering::Acquire) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                match decode(&buf[..n], true) {
                    Reply::Announce { txid, .. } => {
                        answered.lock().unwrap().insert(txid);
                    }
                    other => refused.push(other),
                }
            }
            refused
        })
    };
    let start = Instant::now();
    for i in 0..SENT {
        let due = start + Duration::from_micros(500) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if i == SENT / 3 {
            old.signal(libc::SIGUSR2);
        }
        let port = 10_000 + i as u16;
        let packet = announce_packet(cid, i, torrent(i % TORRENTS), port, 1000, EVENT_STARTED, 0);
        socket.send_to(&packet, tracker).unwrap();
    }
    let log = old.wait_log("hayate serving", 2, Duration::from_secs(20));
    let new = Adopted::from_log(&log);
    // Replies still on their way: wait until all are in, or 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while answered.lock().unwrap().len() < SENT as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    let refused = receiver.join().unwrap();
    let answered = answered.lock().unwrap().len() as u32;
    let unanswered = SENT - answered;
    println!(
        "upgrade under load: {SENT} announces, {answered} answered, {unanswered} unanswered \
         ({:.3}%), {} refused",
        100.0 * f64::from(unanswered) / f64::from(SENT),
        refused.len()
    );
    assert!(refused.is_empty(), "{refused:?}");
    let (status, log) = old.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    assert!(log.contains("handed over to the new process"), "{log}");
    assert!(
        unanswered * 1000 <= SENT,
        "{unanswered} of {SENT} unanswered:\n{log}"
    );
    // Every answered announce's peer is in the new process's swarm, counted once, and the id
    // made by the old process is still good.
    let stored = leechers(&mut control, cid);
    assert!(
        stored >= answered && stored <= SENT,
        "{stored} stored, {answered} answered"
    );
    new.stop();
}

#[test]
fn a_new_binary_that_cannot_start_leaves_the_old_one_serving() {
    let dir = test_dir("handover-fail");
    let config = dir.join("hayate.toml");
    write_config(&config, &dir.join("state"), "");
    let mut old = Daemon::start(hayate_with_config(&config));
    let mut c = Client::new(old.udp[0]);
    let cid = c.connect();
    for i in 0..10 {
        let r = c.announce(cid, torrent(i), 7000, 1000, EVENT_STARTED, 0);
        assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
    }
    // The new process reads the same file: broken, it exits at once.
    std::fs::write(&config, "[udp\n").unwrap();
    old.signal(libc::SIGUSR2);
    let log = old.wait_log("upgrade failed, still serving", 1, Duration::from_secs(20));
    assert!(log.contains("ended before it was ready"), "{log}");
    assert_eq!(leechers(&mut c, cid), 10);
    let r = c.announce(cid, torrent(11), 7000, 1000, EVENT_STARTED, 0);
    assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
    assert_eq!(leechers(&mut c, cid), 11);
    assert_eq!(log.matches("hayate serving").count(), 1, "{log}");
    old.signal(libc::SIGTERM);
    let (status, log) = old.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{log}");
}

/// Reads `FDSTORE=1` messages until every socket kind has arrived (udp, http): the descriptors
/// with their names.
fn stored_fds(notify: &UnixDatagram, within: Duration) -> (Vec<(String, OwnedFd)>, String) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut messages = String::new();
    while Instant::now() < deadline && !got.iter().any(|(n, _): &(String, OwnedFd)| n == "http") {
        let mut buf = [0u8; 256];
        let mut fds = [-1 as RawFd; 64];
        let Ok((n, k)) = notify.recv_with_fd(&mut buf, &mut fds) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        messages.push_str(&text);
        messages.push('|');
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("")
            .to_string();
        for &fd in &fds[..k] {
            // SAFETY: the kernel installed this descriptor in this process for us.
            got.push((name.clone(), unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    (got, messages)
}

#[test]
fn the_fd_store_keeps_requests_made_while_no_process_runs() {
    let dir = test_dir("handover-fdstore");
    let config = dir.join("hayate.toml");
    write_config(&config, &dir.join("state"), "\"127.0.0.1:0\"");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = hayate_with_config(&config);
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let first = Daemon::start(cmd);
    let (stored, messages) = stored_fds(&notify, Duration::from_secs(10));
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["udp", "udp", "http"], "{messages}");
    assert!(messages.contains("READY=1"), "{messages}");
    assert!(
        messages.contains("FDSTOREREMOVE=1\nFDNAME=udp"),
        "{messages}"
    );
    let (udp, http) = (first.udp[0], first.http[0]);

    let mut c = Client::new(udp);
    let cid = c.connect();
    let r = c.announce(cid, torrent(1), 7001, 0, EVENT_STARTED, 0);
    assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
    // `systemctl restart`: SIGTERM, the snapshot, exit; the store still holds the sockets.
    first.signal(libc::SIGTERM);
    let (status, log) = first.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{log}");

    // While no process runs: a UDP announce waits in the socket, a TCP connection in the
    // backlog.
    c.send(&announce_packet(
        cid,
        4242,
        torrent(1),
        7002,
        1000,
        EVENT_STARTED,
        0,
    ));
    let mut tcp = std::net::TcpStream::connect(http).expect("the listener is still open");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /announce?info_hash={}&peer_id=-TT0001-httphttphttp&port=7003&left=5 \
         HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        url_escape(&torrent(1))
    )
    .unwrap();

    // The next start, as systemd makes it: the stored descriptors from 3 on, LISTEN_PID being
    // the new process (the shell execs the tracker, keeping its pid).
    let raw: Vec<RawFd> = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let count = raw.len();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hayate"))
        .arg("--config")
        .arg(&config)
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    // SAFETY: between fork and exec only dup2, which is async-signal-safe. Targets 3.. are
    // first moved above every source so that no dup2 overwrites a source not yet copied.
    unsafe {
        cmd.pre_exec(move || {
            let base = 500;
            for (i, &fd) in raw.iter().enumerate() {
                if libc::dup2(fd, base + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..raw.len() {
                if libc::dup2(base + i as RawFd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let second = Daemon::start(cmd);
    assert_eq!(second.udp[0], udp);
    assert_eq!(second.http[0], http);
    assert!(
        second
            .log()
            .contains("took over sockets from systemd sockets=3"),
        "{}",
        second.log()
    );
    // The announce sent in between is answered, with the peer from before the restart.
    match c.recv() {
        Reply::Announce {
            txid: 4242,
            peers,
            seeders,
            ..
        } => {
            assert_eq!(seeders, 1);
            assert_eq!(
                peers.iter().map(SocketAddr::port).collect::<Vec<_>>(),
                [7001]
            );
        }
        other => panic!("{other:?}\n{}", second.log()),
    }
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("8:completei1e"), "{reply}");
    drop(stored);
}
