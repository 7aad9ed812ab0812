//! The HTTP tracker frontend: one thread running a single-threaded tokio runtime and hyper,
//! serving every `http.addresses` listener. It parses requests and hands them, with a reply
//! slot, to the worker that owns the torrent; it never touches the swarm table. This module
//! owns the sockets and connections (binding, the connection cap, HTTP/1.1 limits and timeouts,
//! shutdown); `service` answers one request, `query`, `proxy` and `response` are the wire rules.

mod bencode;
mod connections;
pub mod full_scrape;
pub mod proxy;
pub mod query;
pub mod response;
mod service;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::mesh::Mailbox;
use crate::policy::SharedPolicy;

use service::Service;

/// A listening TCP socket on `addr` (port 0 resolves). IPv6 sockets are v6-only, like the UDP
/// ones. `sockets` binds every configured address with it before anything runs.
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restart must not wait out the old process's TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Tells the frontend to stop; cheap to clone, callable from any thread.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// What the frontend thread waits on to stop.
pub struct Stopped(watch::Receiver<bool>);

/// A stop handle and the signal it sends, made before the frontend so a shutdown handle can
/// hold it from the start.
pub fn stop_channel() -> (StopHandle, Stopped) {
    let (tx, rx) = watch::channel(false);
    (StopHandle(Arc::new(tx)), Stopped(rx))
}

/// What the frontend serves on: its bound listeners, the certificates of the TLS ones (the
/// last `tls.len()` listeners, in order), and the full scrape when it is on.
pub struct Served {
    pub listeners: Vec<TcpListener>,
    pub tls: Vec<tls::Certificate>,
    pub full_scrape: Option<full_scrape::FullScrape>,
}

/// Starts the frontend thread on already bound listeners. Returns once its runtime is built
/// and the listeners registered, so start-up errors surface here.
pub fn spawn(
    served: Served,
    config: &Config,
    mailboxes: Vec<Mailbox>,
    stats: std::sync::Arc<crossbeam_utils::CachePadded<crate::stats::Traffic>>,
    heartbeat: crate::stats::Heartbeat,
    policy: SharedPolicy,
    stopped: Stopped,
) -> anyhow::Result<JoinHandle<()>> {
    let Served {
        listeners,
        tls,
        full_scrape,
    } = served;
    // Work handed to a worker wakes it when this thread goes idle (or every few requests), not
    // per request: on a shared core that saves a context switch per request.
    let wakes: Vec<_> = mailboxes.iter().map(|m| m.wake_handle()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .on_thread_park(move || wakes.iter().for_each(|w| w.flush()))
        .enable_io()
        .enable_time()
        .build()
        .context("building the HTTP runtime")?;
    // The TLS listeners are the last ones, one per certificate.
    let plain = listeners.len().saturating_sub(tls.len());
    let acceptors = (0..plain)
        .map(|_| None)
        .chain(tls.iter().map(|c| Some(c.acceptor())));
    let listeners = {
        let _inside = runtime.enter();
        listeners
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .zip(acceptors)
            .map(|(l, tls)| l.map(|l| (l, tls)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("registering HTTP listeners")?
    };
    let h = &config.http;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Covers the wait for each request head, so it also ends idle keep-alive connections.
        .header_read_timeout(Duration::from_secs(h.header_read_timeout_secs.into()))
        .max_header_size(h.max_request_bytes as usize)
        // hyper's read buffer cannot be under 8 KiB; the head limit above is the real one.
        .max_buf_size((h.max_request_bytes as usize).max(8192));
    let mut service = Service::new(config, mailboxes)?.count_into(stats.clone());
    if let Some(full) = full_scrape {
        service = service.serve_full_scrape(full);
    }
    let server = Arc::new(Server {
        handshake_timeout: Duration::from_secs(h.header_read_timeout_secs.into()),
        service,
        stats,
        policy,
        builder,
        connections: connections::Connections::new(
            h.max_connections,
            h.max_connections_per_ip,
            config.limits.exempt(),
        ),
    });
    std::thread::Builder::new()
        .name("hayate-http".into())
        .spawn(move || {
            // A task of this runtime, so /health sees the runtime itself stall, not just the
            // thread: anything that blocks it stops the heartbeat.
            runtime.spawn(heartbeat.keep());
            runtime.block_on(serve(listeners, server, stopped));
            // Dropping the runtime drops every connection task and closes its socket.
            drop(runtime);
        })
        .context("spawning the HTTP thread")
}

struct Server {
    /// Longest a TLS handshake may take (as a request head: `header_read_timeout_secs`).
    handshake_timeout: Duration,
    service: Service,
    stats: Arc<crossbeam_utils::CachePadded<crate::stats::Traffic>>,
    /// Read at each accept for the blocklist (reloaded on SIGHUP like the workers' view).
    policy: SharedPolicy,
    builder: http1::Builder,
    /// The connection caps, total and per address.
    connections: Arc<connections::Connections>,
}

/// How long a stop waits for requests in flight (their workers still run) before the rest of
/// the connections are dropped; the whole tracker must stop within a second.
const DRAIN: Duration = Duration::from_millis(500);

/// A listener, and the TLS acceptor of an HTTPS one.
type Listener = (tokio::net::TcpListener, Option<TlsAcceptor>);

async fn serve(listeners: Vec<Listener>, server: Arc<Server>, stopped: Stopped) {
    let graceful = Arc::new(GracefulShutdown::new());
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(l, tls)| tokio::spawn(accept_loop(l, tls, server.clone(), graceful.clone())))
        .collect();
    let mut stopped = stopped.0;
    // An error means every stop handle is gone, which is a stop too.
    let _ = stopped.wait_for(|&stop| stop).await;
    // Stop accepting (dropping the listeners), then let every connection finish the request it
    // is in and close; idle keep-alive connections close at once.
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    server: Arc<Server>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if server.policy.load().blocklist.blocks(peer.ip()) {
            server.stats.error(crate::stats::ErrorReason::Blocked);
            continue;
        }
        // At a cap, close at once: a fast refusal the client can retry beats a queue of
        // connections nobody is reading.
        let permit = match server.connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                server.stats.error(reason);
                tracing::debug!(%peer, reason = reason.as_str(), "HTTP connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(|req| server.service.respond(peer, req));
            let served = match tls {
                None => {
                    let io = TokioIo::new(stream);
                    watcher
                        .watch(server.builder.serve_connection(io, service))
                        .await
                }
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(server.handshake_timeout, tls.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            failed => {
                                server.stats.error(crate::stats::ErrorReason::TlsHandshake);
                                let why = match failed {
                                    Ok(Err(e)) => e.to_string(),
                                    _ => "timed out".into(),
                                };
                                tracing::debug!(%peer, why, "TLS handshake failed");
                                return;
                            }
                        };
                    let io = TokioIo::new(stream);
                    watcher
                        .watch(server.builder.serve_connection(io, service))
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Accept errors that concern one connection only (it went away before we took it).
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{inbox, HttpAnnounced, HttpWork};
    use crate::protocol::SwarmCounts;
    use std::io::{Read, Write};

    #[test]
    fn a_request_in_flight_at_stop_is_answered_then_the_connection_closes() {
        let config = Config::from_toml_str("[http]\naddresses = [\"127.0.0.1:0\"]\n", "t").unwrap();
        let listener = listener(config.http.addresses[0]).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listeners = vec![listener];
        let addr = listeners[0].local_addr().unwrap();
        let (mailbox, inbox) = inbox::inbox(16).unwrap();
        let (stop, stopped) = stop_channel();
        let served = Served {
            listeners,
            tls: Vec::new(),
            full_scrape: None,
        };
        let thread = spawn(
            served,
            &config,
            vec![mailbox],
            Default::default(),
            crate::stats::Heartbeat::new(std::time::Instant::now()),
            crate::policy::Policy::load(&config).unwrap().shared(),
            stopped,
        )
        .unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            client,
            "GET /announce?info_hash=AAAAAAAAAAAAAAAAAAAA&peer_id=BBBBBBBBBBBBBBBBBBBB&port=1 \
             HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        // The request is now with the "worker" (this test): stop the frontend meanwhile.
        let work = inbox
            .http
            .recv_timeout(Duration::from_secs(5))
            .expect("the request reached the worker");
        stop.trigger();
        std::thread::sleep(Duration::from_millis(50));
        let HttpWork::Announce { reply, .. } = work else {
            panic!("expected an announce")
        };
        let counts = SwarmCounts {
            seeders: 4,
            leechers: 2,
            downloaded: 0,
        };
        let _ = reply.send(Ok(HttpAnnounced {
            counts,
            peers: Vec::new(),
            interval: 1800,
            min_interval: 900,
        }));
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read until close");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("8:completei4e"), "{text}");
        thread.join().unwrap();
        // And nothing listens any more.
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
