//! The `hayate` binary as a child process of a test: its stderr log read as it is written (so a
//! test can wait for a line, e.g. the "hayate serving" line that names the ports it bound when
//! configured with port 0), a bounded wait for its exit, and a guard that kills and reaps it if
//! the test panics first, so no tracker outlives a failed test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `hayate`; killed and waited for when dropped.
pub struct Hayate {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Hayate {
    /// Spawns `cmd` with its stderr captured (stdout discarded).
    pub fn spawn(cmd: &mut Command) -> Hayate {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the hayate binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        // Ends when the child's stderr closes (it exited, or was killed on drop).
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Hayate {
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.id() as i32, sig) }, 0);
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (boundedly) for a log line containing `needle` and returns it; fails with the log
    /// so far if the child exits or `within` passes first.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        self.line_or_exit(needle, within).unwrap_or_else(|| {
            panic!(
                "hayate exited before logging {needle:?}:\n{}",
                self.finish_log()
            )
        })
    }

    /// As `wait_for_line`, but `None` if the child exits without logging it (`wait_exit` then
    /// gives its status and log).
    pub fn line_or_exit(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                // Its last lines may still be in the pipe: read to the end, then decide.
                let log = self.finish_log();
                return log.lines().find(|l| l.contains(needle)).map(str::to_string);
            }
            assert!(
                Instant::now() < deadline,
                "hayate logged no {needle:?} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the "hayate serving" line and returns the UDP addresses it names (`None`: the
    /// child exited without serving).
    pub fn serving_udp_or_exit(&mut self) -> Option<Vec<SocketAddr>> {
        let line = self.line_or_exit("hayate serving", Duration::from_secs(10))?;
        let list = line
            .split_once("udp=[")
            .and_then(|(_, rest)| rest.split_once(']'))
            .unwrap_or_else(|| panic!("no udp=[...] in {line:?}"))
            .0;
        Some(
            list.split(", ")
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.parse()
                        .unwrap_or_else(|e| panic!("{a:?} in {line:?}: {e}"))
                })
                .collect(),
        )
    }

    /// Waits for the "hayate serving" line and returns the UDP addresses it names.
    pub fn serving_udp(&mut self) -> Vec<SocketAddr> {
        self.serving_udp_or_exit()
            .unwrap_or_else(|| panic!("hayate exited without serving:\n{}", self.finish_log()))
    }

    /// Waits for the child to exit, boundedly (killing it and failing past `within`); returns
    /// its status and its whole log.
    pub fn wait_exit(mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                // Drop kills and reaps it.
                panic!("hayate did not exit within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.child = None;
        (status, self.finish_log())
    }

    /// The whole log, once the child has exited and the reader has seen its stderr close.
    fn finish_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }
}

impl Drop for Hayate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
