//! JWT approval end to end at the policy level: tokens signed here with the committed test keys
//! (RS256, ES256, EdDSA; tests/data/jwt/make.sh made them with openssl) are verified against the
//! committed JWKS, and every way a token can be wrong is refused with its own reason. Also: the
//! per-worker cache answers a re-announce, still re-checks time and info hash, and forgets
//! everything on reload; the committed fuzz seeds for valid tokens really verify.

#[path = "support/jwt_tokens.rs"]
mod jwt_tokens;

use hayate_tracker::policy::jwt::{
    JwtConfig, JwtRefusal, Keys, Mode, TokenCache, Verifier, LEEWAY_SECS, MAX_TOKEN_LEN,
};
use jsonwebtoken::Algorithm;
use jwt_tokens::*;
use serde_json::{json, Value};

fn cache() -> TokenCache {
    TokenCache::new(64).unwrap()
}

/// The verdict on `token` for `HASH` at `NOW`, from a fresh cache.
fn verdict(v: &Verifier, token: &str) -> Result<(), JwtRefusal> {
    v.check(token.as_bytes(), &HASH, NOW, &mut cache())
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[test]
fn valid_tokens_of_each_algorithm_are_accepted() {
    let v = verifier();
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "p256-1"),
        (Algorithm::EdDSA, "ed-1"),
        (Algorithm::EdDSA, "ed-2"),
    ] {
        let token = sign(alg, kid, &good_claims());
        assert_eq!(verdict(&v, &token), Ok(()), "{alg:?} {kid}");
    }
}

#[test]
fn every_infohash_form_is_accepted_and_another_hash_refused() {
    let v = verifier();
    let pct_all: String = HASH.iter().map(|b| format!("%{b:02X}")).collect();
    let latin1: String = HASH.iter().map(|&b| b as char).collect();
    for claim in [hex(&HASH), hex(&HASH).to_uppercase(), pct_all, latin1] {
        let token = sign(
            Algorithm::EdDSA,
            "ed-1",
            &with(good_claims(), "infohash", json!(claim)),
        );
        assert_eq!(verdict(&v, &token), Ok(()), "infohash {claim:?}");
        let mut other = HASH;
        other[19] ^= 1;
        assert_eq!(
            v.check(token.as_bytes(), &other, NOW, &mut cache()),
            Err(JwtRefusal::WrongInfoHash),
            "infohash {claim:?} for another torrent"
        );
    }
    for bad in [json!(hex(&HASH[..19])), json!("")] {
        let token = sign(
            Algorithm::EdDSA,
            "ed-1",
            &with(good_claims(), "infohash", bad),
        );
        assert_eq!(verdict(&v, &token), Err(JwtRefusal::WrongInfoHash));
    }
    let token = sign(
        Algorithm::EdDSA,
        "ed-1",
        &without(good_claims(), "infohash"),
    );
    assert_eq!(
        verdict(&v, &token),
        Err(JwtRefusal::WrongInfoHash),
        "no claim"
    );
}

#[test]
fn time_claims_are_checked_with_the_documented_leeway() {
    let v = verifier();
    let at = |exp: u64, nbf: u64| {
        let claims = with(with(good_claims(), "exp", json!(exp)), "nbf", json!(nbf));
        verdict(&v, &sign(Algorithm::ES256, "p256-1", &claims))
    };
    assert_eq!(at(NOW - 3600, NOW - 7200), Err(JwtRefusal::Expired));
    assert_eq!(at(NOW - LEEWAY_SECS, 0), Err(JwtRefusal::Expired));
    assert_eq!(at(NOW - LEEWAY_SECS + 1, 0), Ok(()));
    assert_eq!(at(NOW + 7200, NOW + 3600), Err(JwtRefusal::NotYetValid));
    assert_eq!(
        at(NOW + 7200, NOW + LEEWAY_SECS + 1),
        Err(JwtRefusal::NotYetValid)
    );
    assert_eq!(at(NOW + 7200, NOW + LEEWAY_SECS), Ok(()));
    let no_nbf = sign(Algorithm::ES256, "p256-1", &without(good_claims(), "nbf"));
    assert_eq!(verdict(&v, &no_nbf), Ok(()), "nbf is optional");
    let no_exp = sign(Algorithm::ES256, "p256-1", &without(good_claims(), "exp"));
    assert_eq!(
        verdict(&v, &no_exp),
        Err(JwtRefusal::Malformed),
        "exp is required"
    );
    let text_exp = sign(
        Algorithm::ES256,
        "p256-1",
        &with(good_claims(), "exp", json!("soon")),
    );
    assert_eq!(verdict(&v, &text_exp), Err(JwtRefusal::Malformed));
}

#[test]
fn issuer_and_audience_must_match() {
    let v = verifier();
    let check = |claims: Value| verdict(&v, &sign(Algorithm::RS256, "rsa-1", &claims));
    assert_eq!(
        check(with(good_claims(), "iss", json!("https://evil.test"))),
        Err(JwtRefusal::WrongIssuer)
    );
    assert_eq!(
        check(with(good_claims(), "iss", json!(ISSUER.to_uppercase()))),
        Err(JwtRefusal::WrongIssuer)
    );
    assert_eq!(
        check(without(good_claims(), "iss")),
        Err(JwtRefusal::WrongIssuer)
    );
    assert_eq!(
        check(with(good_claims(), "aud", json!("another-tracker"))),
        Err(JwtRefusal::WrongAudience)
    );
    assert_eq!(
        check(with(good_claims(), "aud", json!(["a", "b"]))),
        Err(JwtRefusal::WrongAudience)
    );
    assert_eq!(
        check(without(good_claims(), "aud")),
        Err(JwtRefusal::WrongAudience)
    );
    assert_eq!(
        check(with(good_claims(), "aud", json!(["a", AUDIENCE]))),
        Ok(()),
        "aud list"
    );
}

#[test]
fn wrong_or_unknown_keys_are_refused() {
    let v = verifier();
    // Signed by the second Ed25519 key but naming the first: the signature does not verify.
    let wrong = sign_with(
        Algorithm::EdDSA,
        key_file("ed-2"),
        Some("ed-1"),
        &good_claims(),
    );
    assert_eq!(verdict(&v, &wrong), Err(JwtRefusal::BadSignature));
    let unknown = sign_with(
        Algorithm::EdDSA,
        key_file("ed-1"),
        Some("ed-9"),
        &good_claims(),
    );
    assert_eq!(verdict(&v, &unknown), Err(JwtRefusal::UnknownKey));
    let no_kid = sign_with(Algorithm::EdDSA, key_file("ed-1"), None, &good_claims());
    assert_eq!(verdict(&v, &no_kid), Err(JwtRefusal::UnknownKey));
    // The key of another type: an ES256 token naming the RSA key.
    let mismatched = sign_with(
        Algorithm::ES256,
        key_file("p256-1"),
        Some("rsa-1"),
        &good_claims(),
    );
    assert_eq!(
        verdict(&v, &mismatched),
        Err(JwtRefusal::AlgorithmNotAllowed)
    );
    // The JWKS pins rsa-1 to RS256: a PS256 token from the same key is refused.
    let pss = sign(Algorithm::PS256, "rsa-1", &good_claims());
    assert_eq!(verdict(&v, &pss), Err(JwtRefusal::AlgorithmNotAllowed));
}

#[test]
fn tampered_tokens_are_refused() {
    let v = verifier();
    let good = sign(Algorithm::RS256, "rsa-1", &good_claims());
    let other = sign(
        Algorithm::RS256,
        "rsa-1",
        &with(good_claims(), "infohash", json!(hex(&[0u8; 20]))),
    );
    // The other token's claims under this token's signature.
    let g: Vec<&str> = good.split('.').collect();
    let o: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", g[0], o[1], g[2]);
    assert_eq!(verdict(&v, &spliced), Err(JwtRefusal::BadSignature));
    // One bit of the signature flipped.
    let mut sig = g[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{}.{}.{}", g[0], g[1], String::from_utf8(sig).unwrap());
    assert_eq!(verdict(&v, &flipped), Err(JwtRefusal::BadSignature));
}

#[test]
fn alg_none_and_hmac_confusion_are_refused() {
    let v = verifier();
    let good = sign(Algorithm::RS256, "rsa-1", &good_claims());
    let good_sig = good.rsplit('.').next().unwrap();
    for kid in ["rsa-1", "ed-1"] {
        for alg in ["none", "None", "NONE", ""] {
            let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
            let unsigned = raw_token(&header, &good_claims(), b"");
            assert_eq!(
                verdict(&v, &unsigned),
                Err(JwtRefusal::AlgorithmNotAllowed),
                "{alg}"
            );
            let with_sig = format!("{}{good_sig}", unsigned);
            assert_eq!(
                verdict(&v, &with_sig),
                Err(JwtRefusal::AlgorithmNotAllowed),
                "{alg}"
            );
        }
    }
    // HS256 keyed with the RSA public key as a published PEM and as the JWKS modulus: the
    // classic confusion attack, refused before any HMAC is computed.
    let jwks = std::fs::read_to_string(data_dir().join("jwks.json")).unwrap();
    let public_pem = std::fs::read(data_dir().join("rsa.pub.pem")).unwrap();
    for secret in [public_pem, jwks.into_bytes()] {
        let key = jsonwebtoken::EncodingKey::from_secret(&secret);
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = jsonwebtoken::Header::new(alg);
            header.kid = Some("rsa-1".into());
            let forged = jsonwebtoken::encode(&header, &good_claims(), &key).unwrap();
            assert_eq!(
                verdict(&v, &forged),
                Err(JwtRefusal::AlgorithmNotAllowed),
                "{alg:?}"
            );
        }
    }
    // An unknown alg and a critical header extension.
    let odd = raw_token(
        &json!({"alg": "ES512", "kid": "p256-1"}),
        &good_claims(),
        b"x",
    );
    assert_eq!(verdict(&v, &odd), Err(JwtRefusal::AlgorithmNotAllowed));
    let crit = raw_token(
        &json!({"alg": "EdDSA", "kid": "ed-1", "crit": ["b64"], "b64": false}),
        &good_claims(),
        b"x",
    );
    assert_eq!(verdict(&v, &crit), Err(JwtRefusal::Malformed));
}

#[test]
fn garbage_is_refused_not_a_panic() {
    let v = verifier();
    let mut c = cache();
    let check = |t: &[u8], c: &mut TokenCache| v.check(t, &HASH, NOW, c);
    assert_eq!(check(b"", &mut c), Err(JwtRefusal::MissingToken));
    let long = vec![b'a'; MAX_TOKEN_LEN + 1];
    assert_eq!(check(&long, &mut c), Err(JwtRefusal::Malformed));
    let good = sign(Algorithm::EdDSA, "ed-1", &good_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"a.b".to_vec(),
        b"a.b.c".to_vec(),
        b"..".to_vec(),
        b"a.b.c.d".to_vec(),
        format!("{}.{}", parts[0], parts[1]).into_bytes(),
        format!("{good}.").into_bytes(),
        format!("{good}=").into_bytes(),
        format!("{}.{}.{}", parts[0], "!!", parts[2]).into_bytes(),
        format!("{}.{}.{}", "e30", parts[1], parts[2]).into_bytes(), // header {}
        format!("{}.{}.{}", parts[0], parts[1], "").into_bytes(),
        [b"\xff\xfe.".as_slice(), good.as_bytes()].concat(),
        raw_token(
            &json!({"alg": "EdDSA", "kid": "ed-1"}),
            &json!([1, 2]),
            b"x",
        )
        .into_bytes(),
        raw_token(&json!(["EdDSA"]), &good_claims(), b"x").into_bytes(),
        raw_token(&json!({"alg": 5, "kid": "ed-1"}), &good_claims(), b"x").into_bytes(),
    ];
    for t in &cases {
        let r = check(t, &mut c);
        assert!(
            matches!(r, Err(JwtRefusal::Malformed | JwtRefusal::BadSignature)),
            "{:?}: {r:?}",
            String::from_utf8_lossy(t)
        );
    }
    assert_eq!(
        check(good.as_bytes(), &mut c),
        Ok(()),
        "the cache is still fine"
    );
}

#[test]
fn cache_answers_re_announces_and_still_rechecks() {
    let v = verifier();
    let mut c = cache();
    let claims = with(good_claims(), "exp", json!(NOW + 100));
    let token = sign(Algorithm::RS256, "rsa-1", &claims);
    assert_eq!(v.check(token.as_bytes(), &HASH, NOW, &mut c), Ok(()));
    assert_eq!((c.hits(), c.misses()), (0, 1));
    for _ in 0..10 {
        assert_eq!(v.check(token.as_bytes(), &HASH, NOW + 50, &mut c), Ok(()));
    }
    assert_eq!(
        (c.hits(), c.misses()),
        (10, 1),
        "re-announces never re-verify"
    );
    let mut other = HASH;
    other[0] ^= 0x80;
    assert_eq!(
        v.check(token.as_bytes(), &other, NOW, &mut c),
        Err(JwtRefusal::WrongInfoHash),
        "a cached token is still bound to its torrent"
    );
    assert_eq!(
        v.check(token.as_bytes(), &HASH, NOW + 100 + LEEWAY_SECS, &mut c),
        Err(JwtRefusal::Expired),
        "a cached token still expires"
    );
    assert_eq!(c.misses(), 1);
    // A token that fails its signature is never remembered: each try verifies again.
    let bad = sign_with(Algorithm::EdDSA, key_file("ed-2"), Some("ed-1"), &claims);
    for _ in 0..3 {
        assert_eq!(
            v.check(bad.as_bytes(), &HASH, NOW, &mut c),
            Err(JwtRefusal::BadSignature)
        );
    }
    assert_eq!(c.misses(), 4);
}

#[test]
fn a_reload_invalidates_every_cached_token() {
    let mut c = cache();
    let before = verifier();
    let token = sign(Algorithm::EdDSA, "ed-2", &good_claims());
    assert_eq!(before.check(token.as_bytes(), &HASH, NOW, &mut c), Ok(()));
    assert_eq!(before.check(token.as_bytes(), &HASH, NOW, &mut c), Ok(()));
    assert_eq!(c.hits(), 1);

    // The operator removes ed-2 from the JWKS and reloads.
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("jwks.json")).unwrap())
            .unwrap();
    let kept: Vec<Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"] != "ed-2")
        .cloned()
        .collect();
    let keys = Keys::parse(&json!({ "keys": kept }).to_string(), "reloaded.json").unwrap();
    assert_eq!(keys.len(), 3);
    let after = Verifier::new(keys, ISSUER, AUDIENCE);
    assert_eq!(
        after.check(token.as_bytes(), &HASH, NOW, &mut c),
        Err(JwtRefusal::UnknownKey),
        "the removed key's tokens stop working at once"
    );
    // A changed audience likewise applies to tokens verified before.
    let strict = Verifier::new(jwt_tokens::keys(), ISSUER, "another-tracker");
    let ed1 = sign(Algorithm::EdDSA, "ed-1", &good_claims());
    assert_eq!(after.check(ed1.as_bytes(), &HASH, NOW, &mut c), Ok(()));
    assert_eq!(
        strict.check(ed1.as_bytes(), &HASH, NOW, &mut c),
        Err(JwtRefusal::WrongAudience)
    );
}

#[test]
fn verifier_loads_from_config() {
    let config = JwtConfig {
        mode: Mode::Required,
        jwks_path: data_dir().join("jwks.json").display().to_string(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
    };
    let v = Verifier::load(&config)
        .unwrap()
        .expect("required mode builds a verifier");
    assert_eq!(
        verdict(&v, &sign(Algorithm::ES256, "p256-1", &good_claims())),
        Ok(())
    );
    let off = JwtConfig {
        mode: Mode::Off,
        ..config
    };
    assert!(Verifier::load(&off).unwrap().is_none());
}

/// Reads a JWT fuzz seed as the fuzz target does: byte 0 moves the clock by 600 s steps, byte 1
/// (when not 0) flips the info hash's first byte, the rest is the token.
fn seed_case(seed: &[u8]) -> (u64, [u8; 20], &[u8]) {
    let (shift, flip, token) = match seed {
        [s, f, rest @ ..] => (*s as i8, *f, rest),
        _ => (0, 0, seed),
    };
    let mut hash = HASH;
    hash[0] ^= flip;
    (NOW.wrapping_add_signed(i64::from(shift) * 600), hash, token)
}

#[test]
fn fuzz_seeds_of_valid_tokens_verify() {
    let v = verifier();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jwt");
    let mut valid = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let seed = std::fs::read(&path).unwrap();
        let (now, hash, token) = seed_case(&seed);
        let r = v.check(token, &hash, now, &mut cache());
        if name.starts_with("seed-valid-") {
            assert_eq!(r, Ok(()), "{name}");
            valid += 1;
        } else {
            assert!(r.is_err(), "{name} was meant to be refused");
        }
    }
    assert!(valid >= 4, "seeds for each algorithm and claim form");
}

/// Writes fuzz/corpus/jwt/seed-*: run after tests/data/jwt/make.sh changed the keys, with
/// `cargo test --release --test jwt -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jwt");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = |name: &str, shift: i8, flip: u8, token: &str| {
        let mut bytes = vec![shift as u8, flip];
        bytes.extend_from_slice(token.as_bytes());
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let pct: String = HASH.iter().map(|b| format!("%{b:02X}")).collect();
    seed(
        "valid-rs256",
        0,
        0,
        &sign(Algorithm::RS256, "rsa-1", &good_claims()),
    );
    seed(
        "valid-es256",
        0,
        0,
        &sign(Algorithm::ES256, "p256-1", &good_claims()),
    );
    seed(
        "valid-eddsa",
        0,
        0,
        &sign(Algorithm::EdDSA, "ed-1", &good_claims()),
    );
    seed(
        "valid-eddsa-escaped-hash",
        0,
        0,
        &sign(
            Algorithm::EdDSA,
            "ed-2",
            &with(good_claims(), "infohash", json!(pct)),
        ),
    );
    seed(
        "expired",
        10,
        0,
        &sign(Algorithm::EdDSA, "ed-1", &good_claims()),
    );
    seed(
        "not-yet-valid",
        -10,
        0,
        &sign(Algorithm::EdDSA, "ed-1", &good_claims()),
    );
    seed(
        "wrong-hash",
        0,
        1,
        &sign(Algorithm::EdDSA, "ed-1", &good_claims()),
    );
    seed(
        "alg-none",
        0,
        0,
        &raw_token(&json!({"alg": "none", "kid": "ed-1"}), &good_claims(), b""),
    );
    seed(
        "wrong-key",
        0,
        0,
        &sign_with(
            Algorithm::EdDSA,
            key_file("ed-2"),
            Some("ed-1"),
            &good_claims(),
        ),
    );
    seed("garbage", 0, 0, "eyJhbGciOiJFUzI1NiJ9.e30.AAAA");
}
