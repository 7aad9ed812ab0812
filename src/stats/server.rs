//! The metrics endpoint: `GET /metrics`, `GET /health`, the status page `GET /` and its figures
//! `GET /status.json`, one torrent `GET /api/torrent/<40 hex digits>[?peers=1]` (asked of the
//! worker that owns it, through its inbox), over HTTP/1.1 (hyper) on the stats thread's runtime. Every connection is a task of its own, so a client that stalls holds
//! its own socket and nothing else: `/health` answers at once however many idle connections are
//! open. Connections are bounded (`MAX_CONNECTIONS`); past the bound a new connection takes the
//! place of the oldest one still waiting for its request, so an idle flood cannot lock a
//! liveness probe out, and one that is being answered is never cut short for it. Each
//! connection carries one request (no keep-alive: scrapers make one every few seconds), sent
//! within `HEADER_READ_TIMEOUT`, answered and closed within `CONNECTION_DEADLINE`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch, Notify, Semaphore};

use crate::mesh::{HttpWork, Mesh};
use crate::protocol::{parse_hex_hash, peer_client, to_hex};

use super::counters::Sources;
use super::exposition::Page;
use super::history::History;
use super::process::ProcessFigures;
use super::snapshot::Snapshot;
use super::status::Status;
use super::{status_page, Settings};

/// Open connections at most: a few scrapers and probes need a handful; 64 idle sockets cost
/// a few kilobytes.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a connection may stay open, request and answer together (a page is tens of
/// kilobytes; a scraper reading it slower than this is not one).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// What a request is answered from.
pub(super) struct Endpoint {
    pub sources: Sources,
    pub settings: Settings,
    /// The latest aggregation, replaced every `settings.interval`.
    pub latest: watch::Receiver<Arc<Snapshot>>,
    /// The aggregations behind the status page's rates and charts; only this thread locks it.
    pub history: Arc<Mutex<History>>,
    /// The last census of the swarm (largest torrents, peers by client).
    pub census: super::census::Latest,
    /// The workers' inboxes, for torrent lookups; `None` without workers.
    pub mesh: Option<Mesh>,
}

/// Longest a torrent lookup waits for the owning worker (it answers between two batches).
const LOOKUP_WITHIN: Duration = Duration::from_secs(2);

/// Connections still waiting for their request head, oldest first, each with the signal that
/// closes it.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    queue: VecDeque<(u64, Arc<Notify>)>,
}

impl Waiting {
    fn remove(waiting: &Mutex<Waiting>, id: u64) {
        let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.queue.retain(|(i, _)| *i != id);
    }
}

/// Accepts until the runtime is dropped (which closes every connection with it).
pub(super) async fn serve(listener: tokio::net::TcpListener, endpoint: Arc<Endpoint>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper's smallest read buffer; metrics requests are a few hundred bytes.
        .max_buf_size(8192);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::debug!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let oldest = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .queue
                    .pop_front();
                let Some((_, close)) = oldest else {
                    tracing::debug!(%peer, "metrics connection refused: every connection is being answered");
                    continue;
                };
                close.notify_one();
                // The closed connection's task gives its permit back as soon as it runs.
                match tokio::time::timeout(Duration::from_secs(1), permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => continue,
                }
            }
        };
        let close = Arc::new(Notify::new());
        let id = {
            let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
            w.next_id += 1;
            let id = w.next_id;
            w.queue.push_back((id, close.clone()));
            id
        };
        let (endpoint, waiting) = (endpoint.clone(), waiting.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answering = waiting.clone();
            let service = service_fn(move |req| {
                // The head is in: answered from here, no longer one to make room with.
                Waiting::remove(&answering, id);
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(endpoint.answer(req).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                done = tokio::time::timeout(CONNECTION_DEADLINE, connection) => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, "metrics connection failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "metrics connection closed at its deadline"),
                },
                () = close.notified() => {
                    tracing::debug!(%peer, "idle metrics connection closed to make room for a new one");
                }
            }
            Waiting::remove(&waiting, id);
        });
    }
}

impl Endpoint {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            let mut r = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET and HEAD\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        // HEAD gets the same head as GET (Content-Length included); hyper leaves the body out.
        if let Some(hex) = req.uri().path().strip_prefix("/api/torrent/") {
            let peers = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "peers=1" || p == "peers=true"));
            return self.lookup(hex, peers).await;
        }
        match req.uri().path() {
            "/metrics" => {
                let openmetrics = req.headers().get_all(ACCEPT).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
                let page = Page {
                    snapshot: Snapshot::clone(&self.latest.borrow()),
                    now_ms: self.sources.epoch.elapsed().as_millis() as u64,
                    process: ProcessFigures::read(),
                    io: self.settings.io,
                };
                if openmetrics {
                    respond(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        page.openmetrics(),
                    )
                } else {
                    respond(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        page.prometheus_text(),
                    )
                }
            }
            "/health" => {
                let (status, text) = match super::health(&self.sources, self.settings.stale_after) {
                    Ok(text) => (StatusCode::OK, text),
                    Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
                };
                respond(status, "text/plain; charset=utf-8", text)
            }
            "/" | "/status.json" => {
                let census = self
                    .census
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let status = Status::build(
                    &self.history.lock().expect("only this thread locks it"),
                    ProcessFigures::read(),
                    self.settings.io,
                    census.as_deref(),
                );
                let Some(status) = status else {
                    return respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "no figures gathered yet\n",
                    );
                };
                if req.uri().path() == "/" {
                    respond(
                        StatusCode::OK,
                        "text/html; charset=utf-8",
                        status_page::html(&status),
                    )
                } else {
                    respond(StatusCode::OK, "application/json", status.json())
                }
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }

    /// One torrent as its owner holds it: counts, and its peers when `peers`.
    async fn lookup(&self, hex: &str, peers: bool) -> Response<Full<Bytes>> {
        let json = |status, value: serde_json::Value| {
            respond(status, "application/json", value.to_string() + "\n")
        };
        let hash = match parse_hex_hash(hex) {
            Ok(hash) => hash,
            Err(why) => return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": why })),
        };
        let Some(mesh) = &self.mesh else {
            let why = "this tracker runs no workers";
            return json(StatusCode::NOT_FOUND, serde_json::json!({ "error": why }));
        };
        let owner = mesh.owner(&hash);
        let (reply, answer) = oneshot::channel();
        let asked = HttpWork::Lookup {
            info_hash: hash,
            peers,
            reply,
        };
        let busy = serde_json::json!({ "error": format!("worker {owner} did not answer, retry") });
        if mesh.to(owner).send_query(asked).is_err() {
            return json(StatusCode::SERVICE_UNAVAILABLE, busy);
        }
        let view = match tokio::time::timeout(LOOKUP_WITHIN, answer).await {
            Ok(Ok(view)) => view,
            _ => return json(StatusCode::SERVICE_UNAVAILABLE, busy),
        };
        let info_hash = to_hex(&hash);
        let Some(view) = view else {
            let why = "the tracker holds no peers or downloads of this torrent";
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "info_hash": info_hash, "worker": owner, "error": why }),
            );
        };
        let mut body = serde_json::json!({
            "info_hash": info_hash,
            "worker": owner,
            "seeders": view.counts.seeders,
            "leechers": view.counts.leechers,
            "downloaded": view.counts.downloaded,
        });
        if peers {
            body["peers"] = view
                .peers
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "ip": p.ip.to_string(),
                        "port": p.port,
                        "seeder": p.seeder,
                        "expires_in_secs": p.expires_in_secs,
                        "client": peer_client::name(p.client),
                    })
                })
                .collect();
        }
        json(StatusCode::OK, body)
    }
}

fn respond(
    status: StatusCode,
    kind: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Figures of one moment: a cache in between must not serve them later.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
