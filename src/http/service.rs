//! One HTTP request in, one response out: routes `/announce` and `/scrape`, works out whose
//! address the client is, hands the parsed request to the worker that owns the torrent (a
//! scrape: one part per owner, gathered here) and waits for it, boundedly. It never touches the
//! swarm table; the workers do. Every refusal is status 200 with a bencoded `failure reason`,
//! as clients expect; only an unknown path (404) or method (405) gets an HTTP error.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderName, HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
    VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::Config;
use crate::mesh::{HttpWork, Mailbox, Mesh};
use crate::policy::refusal::BUSY_MESSAGE;
use crate::policy::Refusal;
use crate::protocol::InfoHash;
use crate::rate_limit::RateLimiter;
use crate::stats::{Action, ErrorReason, Forward, IpVersion, Traffic};

use super::full_scrape::{self, FullScrape};
use super::proxy::{self, Cidr};
use super::query;
use super::response::{self, PeerFormat};

/// What the client sees when its worker cannot take or finish the request in time.
pub const BUSY: &str = BUSY_MESSAGE;

/// Everything a request needs, shared by every connection of the frontend.
pub struct Service {
    mesh: Mesh,
    trusted: Vec<Cidr>,
    real_ip_header: HeaderName,
    allow_ip_spoofing: bool,
    worker_timeout: Duration,
    max_scrape_hashes: usize,
    /// What this frontend counts. Only the HTTP thread writes it (every connection task runs
    /// on that one thread), as the counters require.
    stats: Arc<CachePadded<Traffic>>,
    /// Each client's request budget, when limited. Every connection task runs on the one HTTP
    /// thread, so the lock is never contended; it is there because tasks must be `Send`.
    rate: Option<Mutex<RateLimiter>>,
    /// Milliseconds for the limiter count from here.
    epoch: std::time::Instant,
    /// The full scrape, when `[full_scrape] enabled`.
    full_scrape: Option<FullScrape>,
}

/// How a request ended: the body, and whether it was a refusal (its reason already counted).
struct Answer {
    body: Vec<u8>,
    refused: bool,
}

impl Answer {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            body,
            refused: false,
        }
    }

    fn refused(message: &str) -> Self {
        Self {
            body: response::failure(message),
            refused: true,
        }
    }
}

impl Service {
    pub fn new(config: &Config, mailboxes: Vec<Mailbox>) -> anyhow::Result<Self> {
        let h = &config.http;
        Ok(Self {
            mesh: Mesh::new(mailboxes),
            trusted: h.trusted_proxies.clone(),
            real_ip_header: HeaderName::from_bytes(h.real_ip_header.as_bytes())
                .map_err(|_| anyhow::anyhow!("http.real_ip_header is not a header name"))?,
            allow_ip_spoofing: h.allow_ip_spoofing,
            worker_timeout: Duration::from_millis(h.worker_timeout_ms.into()),
            max_scrape_hashes: config.protocol.max_scrape_hashes as usize,
            stats: Default::default(),
            rate: RateLimiter::new(
                config.limits.requests_per_source_per_sec,
                config.limits.request_burst,
                config.limits.exempt(),
            )
            .map(Mutex::new),
            epoch: std::time::Instant::now(),
            full_scrape: None,
        })
    }

    /// Serves BEP 48's full scrape (a `/scrape` naming no torrent) from `full` from now on.
    pub fn serve_full_scrape(mut self, full: FullScrape) -> Self {
        self.full_scrape = Some(full);
        self
    }

    /// A refusal, counted under its reason.
    fn refuse(&self, refusal: Refusal) -> Answer {
        self.stats.error(refusal.reason());
        Answer::refused(refusal.message())
    }

    /// Counts into `stats` (the tracker's `sources().http`) from now on.
    pub fn count_into(mut self, stats: Arc<CachePadded<Traffic>>) -> Self {
        self.stats = stats;
        self
    }

    /// Answers one request from the TCP peer `peer`.
    pub async fn respond<B>(
        &self,
        peer: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let route = match req.uri().path() {
            "/announce" => Route::Announce,
            "/scrape" => Route::Scrape,
            _ => {
                return Ok(plain(
                    StatusCode::NOT_FOUND,
                    "not found: try /announce or /scrape",
                ))
            }
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        let started = std::time::Instant::now();
        let client = self.client(peer.ip(), &req);
        if let Some(rate) = &self.rate {
            // A proxy whose header names nobody is judged by its own address.
            let source = client.unwrap_or(peer.ip());
            let now_ms = started.duration_since(self.epoch).as_millis() as u64;
            if !rate.lock().is_ok_and(|mut r| r.allow(source, now_ms)) {
                self.stats.error(ErrorReason::RateLimited);
                return Ok(too_many_requests());
            }
        }
        let ip = IpVersion::of(peer.ip());
        let query = req.uri().query().unwrap_or("").as_bytes();
        self.stats.received(req.uri().path().len() + query.len());
        if let (Route::Scrape, Some(full)) = (&route, &self.full_scrape) {
            if matches!(
                query::parse_scrape(query, self.max_scrape_hashes),
                Err(query::QueryError::NoHashes)
            ) {
                let source = client.unwrap_or(peer.ip());
                return Ok(self.full_scrape(full, source, &req, ip, started));
            }
        }
        let (action, answer) = match route {
            Route::Announce => (Action::Announce, self.announce(client, query).await),
            Route::Scrape => (Action::Scrape, self.scrape(query).await),
        };
        self.stats.request(action, ip);
        let replied = if answer.refused {
            Action::Error
        } else {
            action
        };
        self.stats.response(replied, ip, answer.body.len());
        self.stats.latency(started.elapsed().as_micros() as u64);
        Ok(bencoded(answer.body))
    }

    /// The client's address: the TCP peer's, or a trusted proxy's header's.
    fn client<B>(&self, peer: IpAddr, req: &Request<B>) -> Result<IpAddr, proxy::Unreadable> {
        let header: Vec<&[u8]> = req
            .headers()
            .get_all(&self.real_ip_header)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        proxy::client_ip(peer, &self.trusted, &header)
    }

    /// The full scrape for `source`, counted as a scrape: the last body built (gzipped if the
    /// client accepts it), 429 if the source had it less than an interval ago, 503 before the
    /// first body is built.
    fn full_scrape<B>(
        &self,
        full: &FullScrape,
        source: IpAddr,
        req: &Request<B>,
        ip: IpVersion,
        started: std::time::Instant,
    ) -> Response<Full<Bytes>> {
        let gzip = req
            .headers()
            .get_all(ACCEPT_ENCODING)
            .iter()
            .any(|v| v.to_str().is_ok_and(full_scrape::accepts_gzip));
        self.stats.request(Action::Scrape, ip);
        let (replied, r) = match full.serve(source, gzip, started) {
            full_scrape::Served::Body(body) => {
                let mut r = Response::new(Full::new(body));
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                if gzip {
                    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                (Action::Scrape, r)
            }
            full_scrape::Served::TooSoon(secs) => {
                self.stats.error(ErrorReason::RateLimited);
                let mut r = bencoded(response::failure(&format!(
                    "full scrape already served to this address, retry in {secs} s"
                )));
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
                (Action::Error, r)
            }
            full_scrape::Served::NotYet => {
                let mut r = bencoded(response::failure(
                    "full scrape not built yet, retry in a few seconds",
                ));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("5"));
                (Action::Error, r)
            }
        };
        let len = hyper::body::Body::size_hint(r.body()).exact().unwrap_or(0) as usize;
        self.stats.response(replied, ip, len);
        self.stats.latency(started.elapsed().as_micros() as u64);
        r
    }

    async fn announce(&self, client: Result<IpAddr, proxy::Unreadable>, query: &[u8]) -> Answer {
        let q = match query::parse_announce(query, self.allow_ip_spoofing) {
            Ok(q) => q,
            Err(e) => return self.refuse(Refusal::Malformed(e.to_string().into())),
        };
        let client = match client {
            Ok(ip) => ip,
            Err(proxy::Unreadable) => {
                return self.refuse(Refusal::Malformed(
                    format!(
                        "the proxy's {} header names no client address",
                        self.real_ip_header
                    )
                    .into(),
                ))
            }
        };
        // Parsed only when allowed (`parse_announce`), the `ip`/`ipv4`/`ipv6` parameters may
        // name the client's address, and a dual-stack client its other family's too.
        let (ip, other) = q.listed_as(client);
        let owner = self.mesh.owner(&q.announce.info_hash);
        let (reply, answer) = oneshot::channel();
        let work = HttpWork::Announce {
            announce: q.announce,
            ip,
            other,
            query: query.to_vec(),
            reply,
        };
        if self.mesh.to(owner).send_http(work).is_err() {
            self.stats.inbox_dropped(Forward::Announce);
            return Answer::refused(BUSY);
        }
        self.stats.forwarded(Forward::Announce);
        match timeout(self.worker_timeout, answer).await {
            // Refused by a hook or past a limit: say why.
            Ok(Ok(Err(refusal))) => self.refuse(refusal),
            Ok(Ok(Ok(r))) => {
                let format = PeerFormat {
                    compact: q.compact,
                    ipv6: ip.is_ipv6(),
                };
                self.stats.peers_in_reply(r.peers.len());
                Answer::ok(response::announce(&r, format))
            }
            // Timed out, or the worker is gone (shutting down).
            _ => self.refuse(Refusal::Busy),
        }
    }

    async fn scrape(&self, query: &[u8]) -> Answer {
        let hashes = match query::parse_scrape(query, self.max_scrape_hashes) {
            Ok(h) => h,
            Err(e) => return self.refuse(Refusal::Malformed(e.to_string().into())),
        };
        let shards = self.mesh.workers();
        let mut parts: Vec<Vec<InfoHash>> = vec![Vec::new(); shards];
        for h in &hashes {
            parts[self.mesh.owner(h)].push(*h);
        }
        // Every owner works on its part at once; the replies are gathered under one deadline.
        let deadline = Instant::now() + self.worker_timeout;
        let mut pending = Vec::new();
        for (owner, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let work = HttpWork::Scrape {
                hashes: part.clone(),
                reply,
            };
            if self.mesh.to(owner).send_http(work).is_err() {
                self.stats.inbox_dropped(Forward::Scrape);
                return Answer::refused(BUSY);
            }
            self.stats.forwarded(Forward::Scrape);
            pending.push((part, answer));
        }
        let mut entries = Vec::with_capacity(hashes.len());
        for (part, answer) in pending {
            match timeout_at(deadline, answer).await {
                Ok(Ok(counts)) if counts.len() == part.len() => {
                    entries.extend(part.into_iter().zip(counts))
                }
                _ => return self.refuse(Refusal::Busy),
            }
        }
        Answer::ok(response::scrape(&mut entries))
    }
}

enum Route {
    Announce,
    Scrape,
}

fn bencoded(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// 429 with a `failure reason` a client can show, and when to come back.
fn too_many_requests() -> Response<Full<Bytes>> {
    let mut r = bencoded(response::failure("rate limit exceeded, retry later"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{inbox, shard_of, HttpAnnounced, Inbox};
    use crate::protocol::SwarmCounts;
    use http_body_util::BodyExt;

    const ANNOUNCE: &str =
        "/announce?info_hash=AAAAAAAAAAAAAAAAAAAA&peer_id=BBBBBBBBBBBBBBBBBBBB&port=1";

    /// A service over `workers` inboxes that nobody drains unless the test does.
    fn service(workers: usize, worker_timeout_ms: u32) -> (Service, Vec<Inbox>) {
        let text = format!("[http]\nworker_timeout_ms = {worker_timeout_ms}\n");
        let config = Config::from_toml_str(&text, "t").unwrap();
        let (mailboxes, inboxes) = (0..workers).map(|_| inbox::inbox(16).unwrap()).unzip();
        (Service::new(&config, mailboxes).unwrap(), inboxes)
    }

    fn body(s: &Service, target: &str) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let req = Request::builder().uri(target).body(()).unwrap();
            let r = s.respond("127.0.0.1:5000".parse().unwrap(), req).await;
            let r = r.unwrap();
            r.into_body().collect().await.unwrap().to_bytes().to_vec()
        })
    }

    #[test]
    fn a_worker_that_does_not_answer_in_time_means_busy() {
        let (s, inboxes) = service(1, 20);
        let started = std::time::Instant::now();
        assert_eq!(body(&s, ANNOUNCE), response::failure(BUSY));
        assert!(started.elapsed() < Duration::from_secs(1));
        // The work did reach the worker, whose reply slot now shows the requester gave up.
        match inboxes[0].http.try_recv().unwrap() {
            HttpWork::Announce {
                reply, announce, ..
            } => {
                assert!(reply.is_closed());
                assert_eq!(announce.port, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_inbox_means_busy_at_once() {
        let (s, _inboxes) = service(1, 60_000);
        while s
            .mesh
            .to(0)
            .send_http(HttpWork::Scrape {
                hashes: Vec::new(),
                reply: oneshot::channel().0,
            })
            .is_ok()
        {}
        let started = std::time::Instant::now();
        assert_eq!(body(&s, ANNOUNCE), response::failure(BUSY));
        assert!(started.elapsed() < Duration::from_secs(1), "no wait");
    }

    #[test]
    fn a_scrape_is_gathered_from_every_owner() {
        let (s, inboxes) = service(2, 5_000);
        let a = [0u8; 20]; // shard 0 of 2
        let b = [0xffu8; 20]; // shard 1 of 2
        assert_eq!((shard_of(&a, 2), shard_of(&b, 2)), (0, 1));
        // Each fake owner answers with its own index as the seeder count.
        let owners: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| {
                std::thread::spawn(move || {
                    let work = inbox.http.recv_timeout(Duration::from_secs(5)).unwrap();
                    let HttpWork::Scrape { hashes, reply } = work else {
                        panic!("a scrape part")
                    };
                    let counts = SwarmCounts {
                        seeders: i as u32 + 10,
                        ..SwarmCounts::default()
                    };
                    reply.send(vec![counts; hashes.len()]).unwrap();
                })
            })
            .collect();
        let target = format!("/scrape?info_hash={}&info_hash={}", esc(&b), esc(&a));
        let got = body(&s, &target);
        for o in owners {
            o.join().unwrap();
        }
        let mut want = vec![
            (
                a,
                SwarmCounts {
                    seeders: 10,
                    ..SwarmCounts::default()
                },
            ),
            (
                b,
                SwarmCounts {
                    seeders: 11,
                    ..SwarmCounts::default()
                },
            ),
        ];
        assert_eq!(got, response::scrape(&mut want));
    }

    #[test]
    fn an_answer_is_encoded_for_the_announcer() {
        let (s, inboxes) = service(1, 5_000);
        let owner = std::thread::spawn(move || {
            let work = inboxes[0]
                .http
                .recv_timeout(Duration::from_secs(5))
                .unwrap();
            let HttpWork::Announce { ip, reply, .. } = work else {
                panic!("an announce")
            };
            assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap(), "the TCP peer");
            reply.send(Ok(answered())).unwrap();
        });
        let got = body(&s, ANNOUNCE);
        owner.join().unwrap();
        let format = PeerFormat {
            compact: true,
            ipv6: false,
        };
        assert_eq!(got, response::announce(&answered(), format));
    }

    /// The owner's answer to an announce of an empty swarm.
    fn answered() -> HttpAnnounced {
        HttpAnnounced {
            interval: 1800,
            min_interval: 900,
            ..HttpAnnounced::default()
        }
    }

    fn esc(b: &[u8]) -> String {
        b.iter().map(|b| format!("%{b:02x}")).collect()
    }
}
