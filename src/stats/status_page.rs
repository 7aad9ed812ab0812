//! The status page (`GET /` on the metrics address): the figures of [`Status`] laid out as one
//! plain HTML page with its style inline and its charts as inline SVG, so it needs no other
//! request, no JavaScript and no network, reads on a phone and in a terminal browser (every
//! figure is table text; the charts only repeat them), and reloads itself. Cells holding a
//! figure carry an `id` named after its `/status.json` path, for scripts and tests.

use std::fmt::Write as _;

use super::status::{CensusFigures, HistoryPoint, Status};

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 10;

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1em auto;max-width:60em;\
padding:0 .8em;color:#222;background:#fff}h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;\
margin:1.2em 0 .3em}table{border-collapse:collapse;margin:.3em 0}td,th{padding:.15em .7em;\
text-align:right;border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:left}\
.meta{color:#555}svg{width:100%;max-width:40em;height:6em;background:#f6f6f6}\
polyline{fill:none;stroke:#2a6;stroke-width:1.5}.hash{font-family:monospace;font-size:.85em;\
word-break:break-all}@media(prefers-color-scheme:dark){\
body{background:#111;color:#ddd}td,th{border-color:#333}svg{background:#1b1b1b}.meta{color:#999}}";

/// A figure with a sensible number of decimals for its size.
fn num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d} d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A line chart of `value` over the history, oldest left; the caption says its top.
fn chart(out: &mut String, title: &str, points: &[HistoryPoint], value: fn(&HistoryPoint) -> f64) {
    let top = points.iter().map(value).fold(0.0, f64::max);
    let _ = write!(out, "<h2>{title}, last hour</h2>");
    if points.len() < 2 {
        out.push_str("<p class=meta>a point a minute: the chart starts after two minutes</p>");
        return;
    }
    let oldest = points[0].ago_secs.max(1) as f64;
    out.push_str(
        "<svg viewBox=\"0 0 600 100\" preserveAspectRatio=\"none\" role=img><polyline points=\"",
    );
    for p in points {
        let x = 600.0 * (1.0 - p.ago_secs as f64 / oldest);
        let y = if top > 0.0 {
            98.0 - 96.0 * value(p) / top
        } else {
            98.0
        };
        let _ = write!(out, "{x:.1},{y:.1} ");
    }
    let _ = write!(
        out,
        "\"/></svg><p class=meta>top {}, {} minutes back</p>",
        num(top),
        points[0].ago_secs.div_ceil(60) + 1
    );
}

/// The census's tables: the largest torrents and peers by client.
fn census(o: &mut String, c: &CensusFigures) {
    let _ = write!(
        o,
        "<h2>Largest torrents</h2><p class=meta>counted <span id=census.age_secs>{}</span> s \
         before these figures; look one up at /api/torrent/&lt;info hash&gt;?peers=1</p>",
        c.age_secs
    );
    if c.top_torrents.is_empty() {
        o.push_str("<p id=top_torrents>none</p>");
    } else {
        o.push_str("<table id=top_torrents><tr><th>info hash<th>seeders<th>leechers<th>downloaded");
        for (i, t) in c.top_torrents.iter().enumerate() {
            let _ = write!(
                o,
                "<tr><td class=hash><a href=\"/api/torrent/{h}\">{h}</a>\
                 <td id=top_torrents.{i}.seeders>{}<td id=top_torrents.{i}.leechers>{}<td>{}",
                t.seeders,
                t.leechers,
                t.downloaded,
                h = t.info_hash,
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<h2>Peers by client</h2>");
    if c.clients.is_empty() {
        o.push_str("<p id=clients>none</p>");
        return;
    }
    o.push_str("<table id=clients><tr><th>client<th>peers<th>share");
    for (i, p) in c.clients.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><td id=clients.{i}.client>{}<td id=clients.{i}.peers>{}<td>{:.1} %",
            p.client,
            p.peers,
            100.0 * p.share
        );
    }
    o.push_str("</table>");
}

pub fn html(s: &Status) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=refresh content={REFRESH_SECS}><title>hayate status</title>\
         <style>{STYLE}</style></head><body><h1>hayate {}</h1>\
         <p class=meta>up <span id=uptime>{}</span>, UDP on <span id=io>{}</span>; rates over \
         the last {} s, this page reloads every {REFRESH_SECS} s \
         (<a href=\"/status.json\">/status.json</a>, <a href=\"/metrics\">/metrics</a>, \
         <a href=\"/health\">/health</a>)</p>",
        s.version,
        duration(s.uptime_secs),
        s.io,
        num(s.rate_window_secs),
    );
    let w = &s.swarm;
    let _ = write!(
        o,
        "<h2>Swarms</h2><table><tr><th>torrents<th>seeders<th>leechers<th>peers\
         <tr><td id=swarm.torrents>{}<td id=swarm.seeders>{}<td id=swarm.leechers>{}\
         <td id=swarm.peers>{}</table>",
        w.torrents, w.seeders, w.leechers, w.peers
    );
    if let Some(c) = &s.census {
        census(&mut o, c);
    }
    o.push_str(
        "<h2>Traffic</h2><table><tr><th>protocol<th>requests/s<th>responses/s<th>requests\
         <th>IPv4<th>IPv6<th>in B/s<th>out B/s<th>p50 us<th>p90 us<th>p99 us",
    );
    for p in &s.protocols {
        let n = p.protocol;
        let _ = write!(
            o,
            "<tr><td>{n}<td id=protocols.{n}.requests_per_sec>{}<td>{}\
             <td id=protocols.{n}.requests_total>{}<td>{}<td>{}<td>{}<td>{}<td>{}<td>{}<td>{}",
            num(p.requests_per_sec),
            num(p.responses_per_sec),
            p.requests_total,
            p.ipv4_requests_total,
            p.ipv6_requests_total,
            num(p.bytes_received_per_sec),
            num(p.bytes_sent_per_sec),
            opt(p.latency_us.p50),
            opt(p.latency_us.p90),
            opt(p.latency_us.p99),
        );
    }
    o.push_str("</table><table><tr><th>request<th>requests/s<th>responses/s<th>requests");
    for p in &s.protocols {
        for a in &p.actions {
            let (n, act) = (p.protocol, a.action);
            let _ = write!(
                o,
                "<tr><td>{n} {act}<td>{}<td>{}<td id=protocols.{n}.{act}.requests_total>{}",
                num(a.requests_per_sec),
                num(a.responses_per_sec),
                a.requests_total
            );
        }
    }
    o.push_str("</table><h2>Errors</h2>");
    if s.errors.is_empty() {
        o.push_str("<p id=errors>none</p>");
    } else {
        o.push_str("<table id=errors><tr><th>reason<th>per second<th>total");
        for e in &s.errors {
            let _ = write!(
                o,
                "<tr><td>{} {}<td>{}<td id=errors.{}.{}>{}",
                e.protocol,
                e.reason,
                num(e.per_sec),
                e.protocol,
                e.reason,
                e.total
            );
        }
        o.push_str("</table>");
    }
    o.push_str(
        "<h2>Workers</h2><table><tr><th>worker<th>torrents<th>peers<th>requests/s\
         <th>forwarded<th>inbox drops",
    );
    for w in &s.workers {
        let _ = write!(
            o,
            "<tr><td>{}<td id=workers.{}.torrents>{}<td>{}<td>{}<td>{:.0} %<td>{}",
            w.worker,
            w.worker,
            w.torrents,
            w.peers,
            num(w.requests_per_sec),
            100.0 * w.forwarded_share,
            w.inbox_dropped_total
        );
    }
    let p = &s.process;
    let _ = write!(
        o,
        "</table><h2>Process</h2><table><tr><th>resident memory<th>CPU time<th>threads\
         <th>open files<tr><td id=process.resident_bytes>{}<td>{}<td>{}<td>{}</table>",
        p.resident_bytes.map_or_else(
            || "-".into(),
            |b| format!("{:.1} MiB", b as f64 / 1048576.0)
        ),
        p.cpu_seconds
            .map_or_else(|| "-".into(), |c| format!("{c:.1} s")),
        opt(p.threads),
        opt(p.open_fds),
    );
    chart(&mut o, "Requests per second", &s.history, |p| {
        p.requests_per_sec
    });
    chart(&mut o, "Peers", &s.history, |p| p.peers as f64);
    chart(&mut o, "Errors per second", &s.history, |p| {
        p.errors_per_sec
    });
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_an_operator_would_write_them() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(duration(59), "00:00:59");
        assert_eq!(duration(86_400 + 3661), "1 d 01:01:01");
    }

    #[test]
    fn a_chart_draws_every_point_oldest_left_scaled_to_its_top() {
        let point = |ago_secs, requests_per_sec| HistoryPoint {
            ago_secs,
            requests_per_sec,
            errors_per_sec: 0.0,
            peers: 0,
        };
        let mut out = String::new();
        let points = [point(120, 10.0), point(60, 40.0), point(0, 20.0)];
        chart(&mut out, "Requests", &points, |p| p.requests_per_sec);
        assert!(
            out.contains("points=\"0.0,74.0 300.0,2.0 600.0,50.0 \""),
            "{out}"
        );
        assert!(out.contains("top 40, 3 minutes back"), "{out}");
        let mut out = String::new();
        chart(&mut out, "Requests", &points[..1], |p| p.requests_per_sec);
        assert!(!out.contains("<svg"), "{out}");
    }
}
