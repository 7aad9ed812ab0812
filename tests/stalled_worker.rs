//! One worker of the real binary stopped while the rest keep running (ptrace stops exactly one
//! thread), as a worker stuck in a long sweep or starved of CPU would be: HTTP requests for its
//! torrents get "tracker busy, retry" after `http.worker_timeout_ms` and are counted, `/health`
//! turns 503 naming it, forwards to its full inbox are dropped and counted, and once it runs
//! again everything it queued is answered and `/health` is 200. Skipped where ptrace is refused.

mod common;
#[path = "support/stopped_thread.rs"]
mod stopped_thread;

use std::time::{Duration, Instant};

use common::*;
use stopped_thread::{thread_named, StoppedThread};

fn health(d: &Daemon) -> (u16, String) {
    let (status, _, body) = http_get(d.metrics.unwrap(), "/health", None);
    (status, body)
}

#[test]
fn a_stopped_worker_means_busy_http_a_failing_health_check_and_counted_drops() {
    let dir = test_dir("stalled");
    let config = dir.join("hayate.toml");
    std::fs::write(
        &config,
        // Unsteered, so a worker that is not stopped receives the stopped one's announces and
        // forwards them to its filling inbox.
        "[udp]\naddresses = [\"127.0.0.1:0\"]\nsteer_announces = false\n[http]\naddresses = [\"127.0.0.1:0\"]\n\
         worker_timeout_ms = 300\n[workers]\ncount = 2\ninbox_capacity = 16\n\
         [metrics]\naddress = \"127.0.0.1:0\"\ninterval_ms = 100\nstale_after_secs = 2\n",
    )
    .unwrap();
    let d = Daemon::start(hayate_with_config(&config));
    let metrics = d.metrics.unwrap();
    let http = d.http[0];
    assert_eq!(health(&d).0, 200);
    let mine = hash_for_shard(1, 2, 1); // owned by the worker that will stop
    let other = hash_for_shard(0, 2, 2);
    let tid = thread_named(d.pid(), "hayate-w1");
    let Some(stopped) = StoppedThread::stop(tid) else {
        eprintln!("skipped: ptrace is refused here");
        return;
    };

    // HTTP: the stopped worker's torrent is busy after the timeout; the other is served.
    let asked = Instant::now();
    let (status, body) = http_announce(http, &mine, 1000, 5, "");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 200);
    assert!(
        body.contains("14:failure reason19:tracker busy, retry"),
        "{body}"
    );
    let (_, body) = http_announce(http, &other, 1000, 5, "");
    assert!(body.contains("8:interval"), "{body}");
    wait_sample(
        metrics,
        "hayate_errors_total",
        &[("protocol", "http"), ("reason", "worker_timeout")],
        1.0,
        Duration::from_secs(5),
    );

    // /health names it once its heartbeat is older than stale_after_secs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = health(&d);
        if status == 503 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("unhealthy: worker 1 has not checked in"),
        "{body}"
    );
    assert!(!body.contains("worker 0 has not"), "{body}");

    // UDP: a client served by the running worker (the stopped one does not answer its
    // connect) announces the stopped worker's torrent: 16 forwards fill its inbox, the rest drop.
    let (c, cid) = (0..64)
        .find_map(|_| {
            let mut c = Client::new(d.udp[0]);
            c.socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let txid = c.txid();
            c.send(&connect_packet(txid));
            match c.recv_raw().map(|r| decode(&r, true)) {
                Some(Reply::Connect { connection_id, .. }) => Some((c, connection_id)),
                _ => None,
            }
        })
        .expect("a client port the running worker serves");
    for port in 0..26u16 {
        c.send(&announce_packet(
            cid,
            100 + u32::from(port),
            mine,
            2000 + port,
            5,
            EVENT_STARTED,
            -1,
        ));
    }
    let udp = |kind| [("protocol", "udp"), ("kind", kind)];
    let page = wait_sample(
        metrics,
        "hayate_inbox_dropped_total",
        &udp("announce"),
        10.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        sample(&page, "hayate_forwarded_total", &udp("announce")),
        Some(16.0)
    );
    assert_eq!(
        sample(
            &page,
            "hayate_errors_total",
            &[("protocol", "udp"), ("reason", "inbox_full")]
        ),
        Some(10.0)
    );

    // Running again: the 16 it held are answered, and the health check recovers.
    drop(stopped);
    c.socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answered = 0;
    while let Some(r) = c.recv_raw() {
        assert!(matches!(decode(&r, true), Reply::Announce { .. }));
        answered += 1;
        if answered == 16 {
            break;
        }
    }
    assert_eq!(answered, 16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&d).0 != 200 {
        assert!(Instant::now() < deadline, "health never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.signal(libc::SIGTERM);
    let (status, log) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
