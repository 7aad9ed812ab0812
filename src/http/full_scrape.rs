//! BEP 48's full scrape (`/scrape` without `info_hash`): every torrent's counts in one body.
//! The stats thread builds the body from a census every `[full_scrape] interval_secs` (bencoded,
//! and gzipped once for every client that accepts it) and swaps it in here; the HTTP thread
//! serves the last one built, so a request costs a pointer copy, never a walk of the swarm.
//! One source may fetch it once per interval: the body changes no more often than that.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::protocol::{InfoHash, SwarmCounts};

/// Sources remembered at most; past it, those whose interval is over are forgotten, and if
/// none is, the oldest half.
const MAX_SOURCES: usize = 65_536;

/// One built body.
#[derive(Debug)]
pub struct Body {
    pub plain: Bytes,
    pub gzip: Bytes,
    pub torrents: usize,
}

impl Body {
    /// The body for `torrents` (any order; bencode wants them sorted, which this does).
    pub fn build(mut torrents: Vec<(InfoHash, SwarmCounts)>) -> Body {
        let plain = super::response::scrape(&mut torrents);
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(plain.len() / 2),
            flate2::Compression::fast(),
        );
        gz.write_all(&plain).expect("writing to memory");
        let gzip = gz.finish().expect("writing to memory");
        Body {
            plain: plain.into(),
            gzip: gzip.into(),
            torrents: torrents.len(),
        }
    }

    /// Writes the body to `path` atomically: gzipped if the name ends in `.gz`.
    pub fn write_to(&self, path: &Path) -> anyhow::Result<()> {
        let gz = path.extension().is_some_and(|e| e == "gz");
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("{} names no file", path.display()))?
            .to_string_lossy();
        let bytes = if gz { &self.gzip } else { &self.plain };
        crate::state::files::write_atomic(dir, &name, bytes)
    }
}

/// The last body built, shared by the stats thread (which builds it) and the HTTP thread.
pub type Shared = Arc<ArcSwapOption<Body>>;

/// What a full-scrape request gets.
#[derive(Debug)]
pub enum Served {
    Body(Bytes),
    /// Not built yet (the first census is still under way).
    NotYet,
    /// This source fetched it less than an interval ago; come back in this many seconds.
    TooSoon(u64),
}

/// The HTTP thread's side: the shared body and each source's last fetch.
pub struct FullScrape {
    body: Shared,
    interval: Duration,
    fetched: Mutex<HashMap<IpAddr, Instant>>,
}

impl FullScrape {
    pub fn new(body: Shared, interval: Duration) -> Self {
        Self {
            body,
            interval,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// The body for `source` at `now`: gzipped if `gzip`.
    pub fn serve(&self, source: IpAddr, gzip: bool, now: Instant) -> Served {
        let Some(body) = self.body.load_full() else {
            return Served::NotYet;
        };
        // Only the HTTP thread locks it.
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&last) = fetched.get(&source) {
            let since = now.saturating_duration_since(last);
            if since < self.interval {
                return Served::TooSoon((self.interval - since).as_secs().max(1));
            }
        }
        if fetched.len() >= MAX_SOURCES && !fetched.contains_key(&source) {
            let interval = self.interval;
            fetched.retain(|_, last| now.saturating_duration_since(*last) < interval);
            if fetched.len() >= MAX_SOURCES {
                let mut times: Vec<Instant> = fetched.values().copied().collect();
                let (_, median, _) = times.select_nth_unstable(MAX_SOURCES / 2);
                let median = *median;
                fetched.retain(|_, last| *last > median);
            }
        }
        fetched.insert(source, now);
        Served::Body(if gzip {
            body.gzip.clone()
        } else {
            body.plain.clone()
        })
    }
}

/// Whether an `Accept-Encoding` value accepts gzip (and does not refuse it with `q=0`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn counts(s: u32, l: u32, d: u32) -> SwarmCounts {
        SwarmCounts {
            seeders: s,
            leechers: l,
            downloaded: d,
        }
    }

    #[test]
    fn the_body_is_the_scrape_of_every_torrent_and_its_gzip_the_same_bytes() {
        let body = Body::build(vec![([2; 20], counts(1, 2, 3)), ([1; 20], counts(4, 5, 6))]);
        assert_eq!(body.torrents, 2);
        let want = super::super::response::scrape(&mut [
            ([1; 20], counts(4, 5, 6)),
            ([2; 20], counts(1, 2, 3)),
        ]);
        assert_eq!(&body.plain[..], &want[..]);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body.gzip[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, want);
    }

    #[test]
    fn one_fetch_per_source_per_interval() {
        let shared: Shared = Default::default();
        let fs = FullScrape::new(shared.clone(), Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        assert!(matches!(fs.serve(a, false, t0), Served::NotYet));
        shared.store(Some(Arc::new(Body::build(vec![(
            [1; 20],
            counts(1, 0, 0),
        )]))));
        assert!(matches!(fs.serve(a, false, t0), Served::Body(_)));
        let later = t0 + Duration::from_secs(45);
        assert!(matches!(fs.serve(a, true, later), Served::TooSoon(15)));
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(matches!(fs.serve(b, true, later), Served::Body(_)));
        let after = t0 + Duration::from_secs(60);
        assert!(matches!(fs.serve(a, true, after), Served::Body(_)));
    }

    #[test]
    fn the_memory_of_sources_stays_bounded() {
        let shared: Shared = Default::default();
        shared.store(Some(Arc::new(Body::build(Vec::new()))));
        let fs = FullScrape::new(shared, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert!(matches!(
                fs.serve(IpAddr::from(i.to_be_bytes()), false, at),
                Served::Body(_)
            ));
        }
        let n = fs.fetched.lock().unwrap().len();
        assert!(n <= MAX_SOURCES, "{n}");
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.8"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }
}
