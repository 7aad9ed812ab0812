//! Real Redis for the cluster tests: `redis-server` (Debian's) started by the test in its own
//! temporary directory, standalone on a unix socket (no port to race for) or as the nodes of a
//! Redis Cluster on loopback ports, and killed and reaped when dropped, so tests never share
//! state and a failing test leaves no server behind. Every wait is bounded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `redis-server` on PATH, or `None` (skip) outside CI; under CI=true its absence fails.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("redis-server is required under CI=true (Debian package `redis-server`)");
        }
        eprintln!("skipped: redis-server is not on PATH (Debian package `redis-server`)");
    }
    found
}

/// One running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    pub dir: PathBuf,
    /// Where clients reach it: `redis+unix:///...` or `redis://127.0.0.1:port`.
    pub url: String,
    pub port: Option<u16>,
    args: Vec<String>,
}

impl Redis {
    /// A standalone server listening only on a unix socket in `dir`.
    pub fn standalone(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("redis.sock");
        let args = vec![
            "--port".into(),
            "0".into(),
            "--unixsocket".into(),
            socket.display().to_string(),
        ];
        let mut r = Redis {
            child: None,
            dir: dir.to_path_buf(),
            url: format!("redis+unix://{}", socket.display()),
            port: None,
            args,
        };
        r.start().expect("redis-server starts on its unix socket");
        r
    }

    /// A cluster-enabled server on a free loopback port (tried a few times: the port and its
    /// cluster bus port, +10000, must both be free).
    pub fn cluster_node(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port();
            if port > 55_000 {
                continue;
            }
            let args = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                "1000".into(),
                // Replicas sync at once, and may take over however stale they are.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
                "--cluster-replica-validity-factor".into(),
                "0".into(),
            ];
            let mut r = Redis {
                child: None,
                dir: dir.to_path_buf(),
                url: format!("redis://127.0.0.1:{port}"),
                port: Some(port),
                args,
            };
            match r.start() {
                Ok(()) => return r,
                Err(e) => last = e,
            }
        }
        panic!("no cluster node started: {last}");
    }

    fn start(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let ready = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("eady to accept connections")
                .count()
        };
        let before = ready();
        // Nothing is persisted: a restart comes back empty, as the tests want.
        let mut child = Command::new("redis-server")
            .args(&self.args)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready() > before {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-server not ready within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty (nothing is saved), on the same socket or port.
    pub fn restart(&mut self) {
        self.kill();
        self.start().expect("redis-server restarts");
    }

    /// `redis-cli` against this server with `args`; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        match self.port {
            Some(port) => c.args(["-h", "127.0.0.1", "-p", &port.to_string()]),
            None => c.args(["-s", &self.dir.join("redis.sock").display().to_string()]),
        };
        let out = c.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port the kernel just handed out (the socket is closed before the server binds it; the
/// caller retries if the server then fails to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, made with
/// `redis-cli --cluster create`; waits until every slot is served.
pub fn cluster(root: &Path, masters: usize, replicas: usize) -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..masters * (1 + replicas))
        .map(|i| Redis::cluster_node(&root.join(format!("node{i}"))))
        .collect();
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port.unwrap())),
    );
    args.extend([
        "--cluster-replicas".into(),
        replicas.to_string(),
        "--cluster-yes".into(),
    ]);
    let out = Command::new("redis-cli")
        .args(&args)
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_cluster_ok(&nodes[0]);
    // Every replica has its master's data before a test kills a master.
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let info = n.cli(&["info", "replication"]);
            if info.contains("role:master") || info.contains("master_link_status:up") {
                break;
            }
            assert!(Instant::now() < deadline, "replica not in sync: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

/// Waits (at most 20 s) until `node` reports `cluster_state:ok`.
pub fn wait_cluster_ok(node: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = node.cli(&["cluster", "info"]);
        if info.contains("cluster_state:ok") {
            return;
        }
        assert!(Instant::now() < deadline, "cluster not ok: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
