//! The pipeline's approval hooks over real sockets, UDP and HTTP, on 127.0.0.1 and ::1: client
//! approval (peer id prefixes) and JWT approval (tokens in the HTTP `jwt` parameter or in BEP 41
//! URL data, split over several options), each allowed, refused with its reason and metric, and
//! changed by a reload.

mod common;

use std::net::SocketAddr;

use common::*;
use hayate_tracker::Tracker;

#[path = "support/jwt_tokens.rs"]
mod jwt_tokens;

/// One UDP announce from port `port` with `peer_id`'s first bytes replaced by `prefix` and
/// `url` as BEP 41 URL data (split into options of at most 255 bytes).
fn udp_announce(tracker: SocketAddr, hash: [u8; 20], port: u16, prefix: &[u8], url: &str) -> Reply {
    let mut c = Client::new(tracker);
    let cid = c.connect();
    let mut p = announce_packet(cid, 77, hash, port, 10, EVENT_NONE, -1);
    p[36..36 + prefix.len()].copy_from_slice(prefix);
    for part in url.as_bytes().chunks(255) {
        p.push(2);
        p.push(part.len() as u8);
        p.extend_from_slice(part);
    }
    c.send(&p);
    c.recv()
}

fn refused(r: &Reply) -> &str {
    match r {
        Reply::Error { message, .. } => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn served(r: &Reply) {
    assert!(
        matches!(r, Reply::Announce { .. }),
        "expected a reply, got {r:?}"
    );
}

/// Waits until `hayate_errors_total{protocol, reason}` reads `want`.
fn wait_errors(t: &Tracker, protocol: &str, reason: &str, want: f64) {
    wait_sample(
        t.metrics_address().expect("metrics on"),
        "hayate_errors_total",
        &[("protocol", protocol), ("reason", reason)],
        want,
        std::time::Duration::from_secs(5),
    );
}

#[test]
fn client_approval_over_udp_and_http_both_families_and_reload() {
    let t = start_tracker_http(
        2,
        "",
        "[metrics]\naddress = \"127.0.0.1:0\"\ninterval_ms = 100\n\
         [client_list]\nmode = \"deny\"\nprefixes = [\"-XX\", \"-HT\"]\n",
    );
    let hash = [61; 20];
    for (udp, http) in [(v4(&t), http_v4(&t)), (v6(&t), http_v6(&t))] {
        assert_eq!(
            refused(&udp_announce(udp, hash, 1000, b"-XX1", "")),
            "client not allowed"
        );
        served(&udp_announce(udp, hash, 1001, b"-TT1", ""));
        // The HTTP helper's clients are "-HT0001-...": denied too.
        let (status, body) = http_announce(http, &hash, 1002, 5, "");
        assert_eq!(status, 200);
        assert!(body.contains("client not allowed"), "{body}");
    }
    wait_errors(&t, "udp", "client_not_allowed", 2.0);
    wait_errors(&t, "http", "client_not_allowed", 2.0);
    // Reloaded as an allow list of "-XX": the other way round.
    let mut config = t.config().clone();
    config.client_list.mode = hayate_tracker::policy::client_list::Mode::Allow;
    config.client_list.prefixes = vec!["-XX".into()];
    t.reload(&config).unwrap();
    served(&udp_announce(v4(&t), hash, 1003, b"-XX1", ""));
    assert_eq!(
        refused(&udp_announce(v6(&t), hash, 1004, b"-TT1", "")),
        "client not allowed"
    );
    t.stop().unwrap();
}

fn jwt_tracker() -> Tracker {
    let jwks = jwt_tokens::data_dir().join("jwks.json");
    start_tracker_http(
        2,
        "",
        &format!(
            "{FAST_METRICS}[jwt]\nmode = \"required\"\njwks_path = {jwks:?}\nissuer = {:?}\naudience = {:?}\n",
            jwt_tokens::ISSUER,
            jwt_tokens::AUDIENCE
        ),
    )
}

fn token(alg: jsonwebtoken::Algorithm, kid: &str, hash: &[u8; 20], exp_from_now: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": jwt_tokens::ISSUER,
        "aud": jwt_tokens::AUDIENCE,
        "exp": now + exp_from_now,
        "infohash": jwt_tokens::hex(hash),
    });
    jwt_tokens::sign(alg, kid, &claims)
}

#[test]
fn jwt_approval_over_udp_bep41_and_http_both_families() {
    use jsonwebtoken::Algorithm::{EdDSA, ES256, RS256};
    let t = jwt_tracker();
    let hash = [62; 20];
    let other = [63; 20];
    let rsa = token(RS256, "rsa-1", &hash, 600);
    let url = format!("/announce?jwt={rsa}");
    assert!(
        url.len() > 2 * 255,
        "an RS256 token takes three URL-data options"
    );
    for (udp, http) in [(v4(&t), http_v4(&t)), (v6(&t), http_v6(&t))] {
        served(&udp_announce(udp, hash, 2000, b"-TT1", &url));
        // Cached now: the same token again.
        served(&udp_announce(udp, hash, 2000, b"-TT1", &url));
        for alg_kid in [(ES256, "p256-1"), (EdDSA, "ed-1")] {
            let tok = token(alg_kid.0, alg_kid.1, &hash, 600);
            served(&udp_announce(
                udp,
                hash,
                2001,
                b"-TT1",
                &format!("/announce?jwt={tok}"),
            ));
        }
        let cases = [
            (String::new(), "jwt required: the announce URL has no jwt"),
            (
                format!("/announce?jwt={}", token(EdDSA, "ed-1", &hash, -600)),
                "jwt expired",
            ),
            (
                format!("/announce?jwt={}", token(EdDSA, "ed-1", &other, 600)),
                "jwt is not for this info hash",
            ),
            ("/announce?jwt=garbage".to_string(), "jwt malformed"),
        ];
        for (url, why) in &cases {
            assert_eq!(
                refused(&udp_announce(udp, hash, 2002, b"-TT1", url)),
                *why,
                "{url}"
            );
        }
        let (_, body) = http_announce(http, &hash, 2003, 5, &format!("&jwt={rsa}"));
        assert!(!body.contains("failure reason"), "{body}");
        let (_, body) = http_announce(http, &hash, 2004, 5, "");
        assert!(body.contains("jwt required"), "{body}");
    }
    // Four refusals per family over UDP, one per family over HTTP.
    wait_errors(&t, "udp", "jwt_refused", 8.0);
    wait_errors(&t, "http", "jwt_refused", 2.0);
    // Off by reload: no token needed any more.
    let mut config = t.config().clone();
    config.jwt.mode = hayate_tracker::policy::jwt::Mode::Off;
    t.reload(&config).unwrap();
    served(&udp_announce(v4(&t), hash, 2005, b"-TT1", ""));
    t.stop().unwrap();
}

#[test]
fn malformed_bep41_options_are_refused_not_read_past() {
    let t = start_tracker(1, "");
    let mut c = Client::new(v4(&t));
    let cid = c.connect();
    let mut p = announce_packet(cid, 5, [64; 20], 3000, 1, EVENT_NONE, -1);
    // URL data claiming 200 bytes with 3 left.
    p.extend_from_slice(&[2, 200, b'/', b'a', b'n']);
    c.send(&p);
    assert_eq!(refused(&c.recv()), "malformed BEP 41 options");
    t.stop().unwrap();
}
