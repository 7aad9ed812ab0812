//! Criterion micro-benchmarks of the announce policies, next to the BEP 15 parse they add to:
//! BEP 41 URL extraction, a client-list check, and a JWT check answered from the per-worker
//! cache versus one that verifies the signature. `cargo bench --bench policy`; quote a policy's
//! cost as a ratio to `udp_parse_announce_bep41` from the same run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hayate_tracker::policy::client_list::{ClientList, Mode};
use hayate_tracker::policy::jwt::TokenCache;
use hayate_tracker::protocol::bep41::{self, Url, URL_CAPACITY};
use hayate_tracker::protocol::udp::{self, parse_request};
use jsonwebtoken::Algorithm;

#[path = "../tests/support/jwt_tokens.rs"]
mod jwt_tokens;
use jwt_tokens::*;

/// A libtorrent-style announce: 98 bytes and a URLData option carrying `url`.
fn announce_packet(url: &[u8]) -> Vec<u8> {
    let mut p = 0x0102_0304_0506_0708u64.to_be_bytes().to_vec();
    p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&HASH);
    p.extend_from_slice(b"-qB4650-abcdefghijkl");
    p.extend_from_slice(&[0; 24]); // downloaded, left, uploaded
    p.extend_from_slice(&2u32.to_be_bytes()); // started
    p.extend_from_slice(&[0; 8]); // ip, key
    p.extend_from_slice(&30i32.to_be_bytes());
    p.extend_from_slice(&6881u16.to_be_bytes());
    assert_eq!(p.len(), udp::ANNOUNCE_LEN);
    for part in url.chunks(255) {
        p.extend_from_slice(&[bep41::OPTION_URL_DATA, part.len() as u8]);
        p.extend_from_slice(part);
    }
    p
}

fn policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    g.measurement_time(Duration::from_secs(3));

    let libtorrent = announce_packet(b"/announce");
    g.bench_function("udp_parse_announce_bep41", |b| {
        b.iter(|| parse_request(black_box(&libtorrent), 74).is_ok())
    });

    let token = sign(Algorithm::RS256, "rsa-1", &good_claims());
    let with_jwt = announce_packet(format!("/announce?jwt={token}").as_bytes());
    let mut url_buf = [0u8; URL_CAPACITY];
    g.bench_function("bep41_jwt_from_3_options", |b| {
        b.iter(|| {
            let url =
                bep41::url_data(bep41::options_of(black_box(&with_jwt)), &mut url_buf).unwrap();
            Url::split(url).param(b"jwt").map(<[u8]>::len)
        })
    });

    let prefixes: Vec<String> = (0..50).map(|i| format!("-X{i:02}")).collect();
    let clients = ClientList::parse(Mode::Deny, &prefixes, None).unwrap();
    g.bench_function("client_list_deny_50", |b| {
        b.iter(|| clients.allows(black_box(b"-qB4650-abcdefghijkl")))
    });

    let v = verifier();
    for (name, alg, kid) in [
        ("rs256", Algorithm::RS256, "rsa-1"),
        ("es256", Algorithm::ES256, "p256-1"),
        ("eddsa", Algorithm::EdDSA, "ed-1"),
    ] {
        let token = sign(alg, kid, &good_claims());
        let mut cache = TokenCache::new(4096).unwrap();
        assert!(v.check(token.as_bytes(), &HASH, NOW, &mut cache).is_ok());
        g.bench_function(format!("jwt_cache_hit_{name}_{}b", token.len()), |b| {
            b.iter(|| v.check(black_box(token.as_bytes()), &HASH, NOW, &mut cache))
        });
        g.bench_function(format!("jwt_verify_{name}"), |b| {
            b.iter(|| {
                let mut cold = TokenCache::with_key([0; 16], 2);
                v.check(black_box(token.as_bytes()), &HASH, NOW, &mut cold)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = policy
}
criterion_main!(benches);
