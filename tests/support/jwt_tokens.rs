//! Signs JWTs with the committed test keys (tests/data/jwt/, made by its make.sh with openssl),
//! for the JWT tests and the policy bench. A test binary includes it with
//! `#[path = "support/jwt_tokens.rs"] mod jwt_tokens;`.

#![allow(dead_code)] // each binary uses only some of it
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hayate_tracker::policy::jwt::{Keys, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://auth.example.test";
pub const AUDIENCE: &str = "hayate-test";
/// The clock every test token is judged at.
pub const NOW: u64 = 1_900_000_000;
pub const HASH: [u8; 20] = *b"\x12\x34\x56\x78\x9a\xbc\xde\xf1\x23\x45\x67\x89\xab\xcd\xef\x12 +%&";

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt")
}

pub fn keys() -> Keys {
    Keys::load(&data_dir().join("jwks.json")).expect("committed JWKS loads")
}

pub fn verifier() -> Verifier {
    Verifier::new(keys(), ISSUER, AUDIENCE)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims that pass every check for `HASH` at `NOW`.
pub fn good_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": NOW + 3600,
        "nbf": NOW - 60,
        "iat": NOW - 60,
        "sub": "user-42",
        "infohash": hex(&HASH),
    })
}

/// The private key file whose public half has this kid in the JWKS.
pub fn key_file(kid: &str) -> &'static str {
    match kid {
        "rsa-1" => "rsa.pem",
        "p256-1" => "p256.pem",
        "ed-1" => "ed25519.pem",
        "ed-2" => "ed25519-other.pem",
        other => panic!("no test key {other}"),
    }
}

/// A token signed with `alg` by the private key in `file`, its header naming `kid`.
pub fn sign_with(alg: Algorithm, file: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(data_dir().join(file)).expect("test key");
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Ok(EncodingKey::from_secret(&pem))
        }
    }
    .expect("test key parses");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

/// A token signed by the key the JWKS lists under `kid`, with `alg`.
pub fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    sign_with(alg, key_file(kid), Some(kid), claims)
}

/// A token whose header is `header` as given (e.g. `alg: none`) and whose signature is `sig`.
pub fn raw_token(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}
