//! The stats thread's loop and its HTTP endpoint: `GET /metrics` and `GET /health` on a plain
//! blocking `TcpListener`. Two read-only pages scraped every few seconds by one or two
//! Prometheus servers need no async runtime: the thread waits in poll(2) on the listener and a
//! wake socket (stop) with a timeout that is the next aggregation, answers one connection at a
//! time under a short deadline, and closes it. A client that stalls costs the page at most
//! `CLIENT_DEADLINE`, never a worker anything.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::counters::Sources;
use super::exposition::Page;
use super::process::ProcessFigures;
use super::snapshot::Snapshot;
use super::Settings;

/// Longest one client may take to send its request and take the answer.
const CLIENT_DEADLINE: Duration = Duration::from_millis(500);

/// Largest request head read; metrics requests are a few hundred bytes.
const MAX_REQUEST: usize = 8192;

pub(super) struct Server {
    pub listener: TcpListener,
    pub wake: UnixStream,
    pub sources: Sources,
    pub settings: Settings,
}

impl Server {
    /// Aggregates every interval and answers requests until the wake socket becomes readable.
    pub fn run(self) {
        let mut snapshot = Snapshot::take(&self.sources);
        let mut next = Instant::now() + self.settings.interval;
        let mut fds = [
            libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            // Round up so the loop never spins on a sub-millisecond remainder.
            let timeout = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("stats thread poll failed: {e}");
                    return;
                }
            }
            if fds[1].revents != 0 {
                return;
            }
            if Instant::now() >= next {
                snapshot = Snapshot::take(&self.sources);
                next = Instant::now() + self.settings.interval;
            }
            if fds[0].revents != 0 {
                // The listener is non-blocking: take every waiting connection.
                while let Ok((stream, peer)) = self.listener.accept() {
                    if let Err(e) = self.answer(stream, &snapshot) {
                        tracing::debug!(%peer, "metrics request failed: {e}");
                    }
                }
            }
        }
    }

    fn answer(&self, mut stream: TcpStream, snapshot: &Snapshot) -> std::io::Result<()> {
        let deadline = Instant::now() + CLIENT_DEADLINE;
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
        let mut buf = [0u8; MAX_REQUEST];
        let mut len = 0;
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || len == buf.len() {
                return respond(
                    &mut stream,
                    408,
                    "text/plain",
                    b"request too slow or large\n",
                );
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf[len..])? {
                0 => return Ok(()),
                n => len += n,
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]);
        let mut words = head.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        if method != "GET" && method != "HEAD" {
            return respond(&mut stream, 405, "text/plain", b"only GET and HEAD\n");
        }
        let head_only = method == "HEAD";
        let body = |b: &[u8]| if head_only { Vec::new() } else { b.to_vec() };
        match path {
            "/metrics" => {
                let openmetrics = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .any(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("accept")
                            && v.contains("application/openmetrics-text")
                    });
                let page = Page {
                    snapshot: snapshot.clone(),
                    now_ms: self.sources.epoch.elapsed().as_millis() as u64,
                    process: ProcessFigures::read()
                        .map_err(|e| tracing::debug!("reading /proc/self: {e}"))
                        .ok(),
                    io: self.settings.io,
                };
                let (kind, text) = if openmetrics {
                    (
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        page.openmetrics(),
                    )
                } else {
                    (
                        "text/plain; version=0.0.4; charset=utf-8",
                        page.prometheus_text(),
                    )
                };
                respond(&mut stream, 200, kind, &body(text.as_bytes()))
            }
            "/health" => {
                let (status, text) = match super::health(&self.sources, self.settings.stale_after) {
                    Ok(text) => (200, text),
                    Err(text) => (503, text),
                };
                respond(
                    &mut stream,
                    status,
                    "text/plain; charset=utf-8",
                    &body(text.as_bytes()),
                )
            }
            "/" => respond(
                &mut stream,
                200,
                "text/html; charset=utf-8",
                &body(b"<a href=\"/metrics\">/metrics</a> <a href=\"/health\">/health</a>\n"),
            ),
            _ => respond(&mut stream, 404, "text/plain", &body(b"not found\n")),
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}
