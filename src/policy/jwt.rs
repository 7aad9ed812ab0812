//! JWT approval (chihaya's `jwt` hook, the Quay use): an announce must carry a token, signed by a
//! key from the operator's JWKS file, for this tracker (`iss`, `aud`), still valid (`exp`, `nbf`),
//! and naming the announced torrent in its `infohash` claim.
//!
//! What is accepted, and why:
//! - Only asymmetric signatures: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA (Ed25519).
//!   `alg: none` and every HMAC algorithm are refused before any key is looked at, and a token
//!   must use an algorithm its key's type allows (an RSA key never verifies an ES256 or HS256
//!   token), so a public key can never be used as an HMAC secret. `oct` (symmetric) keys are
//!   refused when the JWKS is loaded.
//! - The header's `kid` picks the key; a token without one names no key.
//! - `exp` is required: a token without one would be valid forever. `nbf` is optional. Both are
//!   checked with [`LEEWAY_SECS`] of slack, because the token issuer's clock and the tracker's are
//!   not the same clock, and a token minted with `nbf = now` is announced at once.
//! - `infohash` names the torrent as chihaya accepts it (the 20 raw bytes as a JSON string, or
//!   their percent-escaped form) or as 40 hex digits in either case. A JSON string cannot hold
//!   raw bytes past 0x7f, so "the 20 raw bytes" is read both as the string's UTF-8 bytes and,
//!   when it has 20 characters all below U+0100, as one byte per character.
//!
//! A signature check costs tens of microseconds, and a client re-announces the same token every
//! interval, so each worker keeps a [`TokenCache`]: a bounded, 2-way set-associative table keyed
//! by a keyed 128-bit hash of the token bytes. It remembers what a re-check needs (`exp`, `nbf`,
//! the info hash the token names); a hit re-checks those and allocates nothing. Only tokens
//! whose signature, issuer and audience passed are cached, and a cache drops everything it holds
//! when it is used with another [`Verifier`] (a reload), so a key removed from the JWKS stops
//! working at once.

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::protocol::hex_digit as hex;
use crate::protocol::InfoHash;

/// Seconds of clock difference forgiven on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Longest token considered; anything longer is malformed (and never hashed or parsed).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Entries a worker's cache holds (about 80 bytes each: 5 MiB a worker). Sized well above the
/// tokens a worker sees in an announce interval: a 2-way cache filled near its size loses
/// tokens to conflicts, and every miss is a signature check (measured: 2,000 tokens in 4,096
/// entries cost 1.6x the CPU per announce of a tracker without JWT; in 65,536, see README).
pub const DEFAULT_CACHE_ENTRIES: usize = 1 << 16;

/// Whether announces need a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Off,
    Required,
}

/// The `[jwt]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    pub mode: Mode,
    /// The JWKS file (`{"keys": [...]}`) holding the public keys tokens are signed with.
    pub jwks_path: String,
    /// The `iss` a token must carry.
    pub issuer: String,
    /// A value the token's `aud` must contain.
    pub audience: String,
}

/// Why an announce's token was refused. Each has a short message for the client (a BEP 15 error
/// packet or an HTTP `failure reason`) and a label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtRefusal {
    MissingToken,
    Malformed,
    UnknownKey,
    BadSignature,
    AlgorithmNotAllowed,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    WrongInfoHash,
}

impl JwtRefusal {
    pub const ALL: [JwtRefusal; 10] = [
        JwtRefusal::MissingToken,
        JwtRefusal::Malformed,
        JwtRefusal::UnknownKey,
        JwtRefusal::BadSignature,
        JwtRefusal::AlgorithmNotAllowed,
        JwtRefusal::Expired,
        JwtRefusal::NotYetValid,
        JwtRefusal::WrongIssuer,
        JwtRefusal::WrongAudience,
        JwtRefusal::WrongInfoHash,
    ];

    /// What the client is told (at most 60 bytes).
    pub fn message(self) -> &'static str {
        match self {
            JwtRefusal::MissingToken => "jwt required: the announce URL has no jwt",
            JwtRefusal::Malformed => "jwt malformed",
            JwtRefusal::UnknownKey => "jwt signed by an unknown key (kid)",
            JwtRefusal::BadSignature => "jwt signature does not verify",
            JwtRefusal::AlgorithmNotAllowed => "jwt algorithm not allowed for its key",
            JwtRefusal::Expired => "jwt expired",
            JwtRefusal::NotYetValid => "jwt not yet valid (nbf)",
            JwtRefusal::WrongIssuer => "jwt issuer not accepted",
            JwtRefusal::WrongAudience => "jwt audience does not include this tracker",
            JwtRefusal::WrongInfoHash => "jwt is not for this info hash",
        }
    }

    /// A metric label value.
    pub fn label(self) -> &'static str {
        match self {
            JwtRefusal::MissingToken => "jwt_missing",
            JwtRefusal::Malformed => "jwt_malformed",
            JwtRefusal::UnknownKey => "jwt_unknown_key",
            JwtRefusal::BadSignature => "jwt_bad_signature",
            JwtRefusal::AlgorithmNotAllowed => "jwt_algorithm",
            JwtRefusal::Expired => "jwt_expired",
            JwtRefusal::NotYetValid => "jwt_not_yet_valid",
            JwtRefusal::WrongIssuer => "jwt_issuer",
            JwtRefusal::WrongAudience => "jwt_audience",
            JwtRefusal::WrongInfoHash => "jwt_info_hash",
        }
    }
}

impl std::fmt::Display for JwtRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A JWKS file or a `[jwt]` section that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot read JWKS {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("JWKS {file} is not a JSON key set ({{\"keys\": [...]}}): {source}")]
    Json {
        file: String,
        source: serde_json::Error,
    },
    #[error("JWKS {file}, key {index}{}: {message}", kid.as_deref().map(|k| format!(" (kid {k:?})")).unwrap_or_default())]
    Key {
        file: String,
        index: usize,
        kid: Option<String>,
        message: String,
    },
    #[error("JWKS {file} holds no keys")]
    NoKeys { file: String },
    #[error("jwt: {0}")]
    Config(&'static str),
}

/// One public key and the algorithms its type allows.
#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    /// One signature-only validation per allowed algorithm: claims are checked here, against
    /// the caller's clock, not jsonwebtoken's.
    allowed: Vec<(Algorithm, Validation)>,
}

/// The public keys tokens may be signed with, by `kid`.
#[derive(Clone, Default)]
pub struct Keys {
    by_kid: HashMap<String, VerifyingKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("Keys").field("kids", &kids).finish()
    }
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<serde_json::Value>,
}

impl Keys {
    /// Reads a JWKS file.
    pub fn load(path: &Path) -> Result<Keys, JwtError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| JwtError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses JWKS text (named `file` in errors). Every key must be usable: one bad key refuses
    /// the whole set, so a reload never silently drops a key.
    pub fn parse(text: &str, file: &str) -> Result<Keys, JwtError> {
        let set: JwksFile = serde_json::from_str(text).map_err(|source| JwtError::Json {
            file: file.to_string(),
            source,
        })?;
        if set.keys.is_empty() {
            return Err(JwtError::NoKeys {
                file: file.to_string(),
            });
        }
        let mut by_kid = HashMap::with_capacity(set.keys.len());
        for (index, value) in set.keys.into_iter().enumerate() {
            let kid = value
                .get("kid")
                .and_then(|k| k.as_str())
                .map(str::to_string);
            let error = |message: String| JwtError::Key {
                file: file.to_string(),
                index,
                kid: kid.clone(),
                message,
            };
            let Some(kid_str) = kid.clone() else {
                return Err(error(
                    "no \"kid\": a token picks its key by kid".to_string(),
                ));
            };
            let key = verifying_key(value).map_err(error)?;
            if by_kid.insert(kid_str, key).is_some() {
                return Err(error("the same kid appears twice".to_string()));
            }
        }
        Ok(Keys { by_kid })
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn verifying_key(value: serde_json::Value) -> Result<VerifyingKey, String> {
    if value.get("d").is_some() {
        return Err("holds private key material (\"d\"); publish only the public key".into());
    }
    let jwk: Jwk = serde_json::from_value(value)
        .map_err(|e| format!("not a public key JWK this tracker understands: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("is an encryption key (\"use\": \"enc\"), not a signing key".into());
    }
    let b64 = |field: &str, v: &str| {
        URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|e| format!("\"{field}\" is not base64url: {e}"))
    };
    let exact = |field: &str, v: &str, len: usize| -> Result<(), String> {
        let bytes = b64(field, v)?;
        if bytes.len() == len {
            Ok(())
        } else {
            Err(format!(
                "\"{field}\" is {} bytes, expected {len}",
                bytes.len()
            ))
        }
    };
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64("n", &p.n)?;
            let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA modulus of about {bits} bits; at least 2048 are required"
                ));
            }
            if b64("e", &p.e)?.is_empty() {
                return Err("RSA exponent \"e\" is empty".into());
            }
            &RSA_ALGORITHMS
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => {
                exact("x", &p.x, 32)?;
                exact("y", &p.y, 32)?;
                &[Algorithm::ES256]
            }
            EllipticCurve::P384 => {
                exact("x", &p.x, 48)?;
                exact("y", &p.y, 48)?;
                &[Algorithm::ES384]
            }
            EllipticCurve::P521 => return Err("P-521 (ES512) keys are not supported".into()),
            EllipticCurve::Ed25519 => {
                return Err("an Ed25519 key must have \"kty\": \"OKP\", not \"EC\"".into())
            }
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => {
                exact("x", &p.x, 32)?;
                &[Algorithm::EdDSA]
            }
            _ => return Err("only Ed25519 is supported for \"kty\": \"OKP\"".into()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "symmetric (\"kty\": \"oct\") keys are refused: HMAC tokens are never accepted"
                    .into(),
            )
        }
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(declared) => {
            let alg = signing_algorithm(declared)
                .filter(|a| by_type.contains(a))
                .ok_or_else(|| format!("\"alg\" {declared:?} does not fit this key's type"))?;
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    let allowed = algorithms
        .into_iter()
        .map(|alg| {
            let mut v = Validation::new(alg);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            (alg, v)
        })
        .collect();
    Ok(VerifyingKey { key, allowed })
}

fn signing_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The header's `alg`, if it is one this tracker verifies at all.
fn header_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// RFC 7515: extensions the verifier must understand. This tracker understands none.
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    infohash: Option<String>,
}

/// A NumericDate as whole seconds: fractions dropped, negative as 0.
fn seconds(n: &serde_json::Number) -> u64 {
    match (n.as_u64(), n.as_f64()) {
        (Some(s), _) => s,
        (None, Some(f)) if f > 0.0 => f as u64, // saturates above u64::MAX
        _ => 0,
    }
}

/// What a verified token says that a re-check needs: the only part of a token the cache keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)] // field order kept: see `Slot`
struct Verified {
    exp: u64,
    nbf: u64,
    hash_count: u8,
    /// The distinct readings of the `infohash` claim as 20 bytes (at most two differ: see
    /// `claimed_hashes`); `hash_count` of them are set.
    hashes: [InfoHash; 2],
}

impl Verified {
    /// The checks that depend on the moment and the announce, run on every use of a token.
    #[inline]
    fn admits(&self, info_hash: &InfoHash, now: u64) -> Result<(), JwtRefusal> {
        if now >= self.exp.saturating_add(LEEWAY_SECS) {
            return Err(JwtRefusal::Expired);
        }
        if now.saturating_add(LEEWAY_SECS) < self.nbf {
            return Err(JwtRefusal::NotYetValid);
        }
        if self.hashes[..usize::from(self.hash_count)].contains(info_hash) {
            Ok(())
        } else {
            Err(JwtRefusal::WrongInfoHash)
        }
    }
}

/// Every 20-byte value the `infohash` claim can name: its UTF-8 bytes; one byte per character
/// (all below U+0100); percent-decoded (with `+` as a space, as a query unescape does); 40 hex
/// digits. Byte and character readings agree unless the claim has non-ASCII characters, and a
/// claim with escapes is longer than 20 bytes, so at most two distinct readings exist.
fn claimed_hashes(claim: &str) -> ([InfoHash; 2], u8) {
    let mut out = [[0u8; 20]; 2];
    let mut n = 0usize;
    let mut add = |h: InfoHash| {
        if n < 2 && !out[..n].contains(&h) {
            out[n] = h;
            n += 1;
        }
    };
    if let Ok(h) = <InfoHash>::try_from(claim.as_bytes()) {
        add(h);
    }
    if claim.chars().count() == 20 && claim.chars().all(|c| (c as u32) < 0x100) {
        let mut h = [0u8; 20];
        for (slot, c) in h.iter_mut().zip(claim.chars()) {
            *slot = c as u32 as u8;
        }
        add(h);
    }
    if let Some(h) = unescaped_twenty(claim.as_bytes()) {
        add(h);
    }
    if claim.len() == 40 {
        let mut h = [0u8; 20];
        let ok = claim
            .as_bytes()
            .chunks(2)
            .zip(h.iter_mut())
            .all(|(pair, slot)| match (hex(pair[0]), hex(pair[1])) {
                (Some(hi), Some(lo)) => {
                    *slot = hi << 4 | lo;
                    true
                }
                _ => false,
            });
        if ok {
            add(h);
        }
    }
    (out, n as u8)
}

/// `raw` query-unescaped, if that is exactly 20 bytes and every escape is well formed.
fn unescaped_twenty(raw: &[u8]) -> Option<InfoHash> {
    let mut h = [0u8; 20];
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' => {
                let b = hex(*raw.get(i + 1)?)? << 4 | hex(*raw.get(i + 2)?)?;
                i += 3;
                b
            }
            b'+' => {
                i += 1;
                b' '
            }
            b => {
                i += 1;
                b
            }
        };
        *h.get_mut(len)? = byte;
        len += 1;
    }
    (len == 20).then_some(h)
}

/// Tells each verifier apart, so a cache notices it is used with a new one (a reload).
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// Checks announce tokens against one set of keys and one issuer and audience. Shared by all
/// workers (it is immutable); replaced whole on reload.
#[derive(Debug)]
pub struct Verifier {
    keys: Keys,
    issuer: String,
    audience: String,
    id: u64,
}

impl Verifier {
    pub fn new(keys: Keys, issuer: impl Into<String>, audience: impl Into<String>) -> Verifier {
        Verifier {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The verifier the `[jwt]` section describes, reading its JWKS; `None` when the mode is off.
    pub fn load(config: &JwtConfig) -> Result<Option<Verifier>, JwtError> {
        if config.mode == Mode::Off {
            return Ok(None);
        }
        if config.jwks_path.is_empty() {
            return Err(JwtError::Config(
                "mode = \"required\" needs jwks_path (the JWKS file of signing keys)",
            ));
        }
        if config.issuer.is_empty() {
            return Err(JwtError::Config(
                "mode = \"required\" needs issuer (the iss tokens must carry)",
            ));
        }
        if config.audience.is_empty() {
            return Err(JwtError::Config(
                "mode = \"required\" needs audience (a value tokens' aud must contain)",
            ));
        }
        let keys = Keys::load(Path::new(&config.jwks_path))?;
        Ok(Some(Verifier::new(keys, &config.issuer, &config.audience)))
    }

    /// Whether `token` (the raw bytes of the announce's `jwt` parameter, already
    /// percent-decoded; empty when the announce had none) lets this announce of `info_hash`
    /// through at `now_unix`. A token seen before is answered from `cache` without allocating.
    pub fn check(
        &self,
        token: &[u8],
        info_hash: &InfoHash,
        now_unix: u64,
        cache: &mut TokenCache,
    ) -> Result<(), JwtRefusal> {
        if token.is_empty() {
            return Err(JwtRefusal::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtRefusal::Malformed);
        }
        cache.bind(self.id);
        let tag = cache.tag(token);
        let verified = match cache.get(tag) {
            Some(v) => v,
            None => {
                let v = self.verify(token)?;
                cache.insert(tag, v);
                v
            }
        };
        verified.admits(info_hash, now_unix)
    }

    /// The slow path: signature, issuer and audience, and the claims a re-check needs.
    fn verify(&self, token: &[u8]) -> Result<Verified, JwtRefusal> {
        let token = std::str::from_utf8(token).map_err(|_| JwtRefusal::Malformed)?;
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtRefusal::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtRefusal::Malformed)?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| JwtRefusal::Malformed)?;
        if header.crit.is_some() {
            return Err(JwtRefusal::Malformed);
        }
        let alg = header_algorithm(&header.alg).ok_or(JwtRefusal::AlgorithmNotAllowed)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.by_kid.get(kid))
            .ok_or(JwtRefusal::UnknownKey)?;
        let (_, validation) = key
            .allowed
            .iter()
            .find(|(a, _)| *a == alg)
            .ok_or(JwtRefusal::AlgorithmNotAllowed)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => JwtRefusal::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    JwtRefusal::AlgorithmNotAllowed
                }
                _ => JwtRefusal::Malformed,
            })?
            .claims;
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(JwtRefusal::WrongIssuer);
        }
        let audience_ok = match &claims.aud {
            Some(Audience::One(a)) => *a == self.audience,
            Some(Audience::Many(all)) => all.contains(&self.audience),
            None => false,
        };
        if !audience_ok {
            return Err(JwtRefusal::WrongAudience);
        }
        let exp = claims
            .exp
            .as_ref()
            .map(seconds)
            .ok_or(JwtRefusal::Malformed)?;
        let nbf = claims.nbf.as_ref().map(seconds).unwrap_or(0);
        let (hashes, hash_count) = claims
            .infohash
            .as_deref()
            .map(claimed_hashes)
            .unwrap_or_default();
        Ok(Verified {
            exp,
            nbf,
            hash_count,
            hashes,
        })
    }
}

/// One cached verdict. A cache hit is a memory access that misses the CPU caches (the slots are
/// megabytes, touched at random), so the slot is laid out for it to be one cache line: the tag
/// and everything a hit reads for a token naming one info hash fits the first 64 bytes.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot {
    tag: u128,
    live: bool,
    verified: Verified,
}

/// One worker's memory of verified tokens: a fixed number of slots, 2-way set-associative with
/// least-recently-used replacement inside a set, so it never grows and a hot token is not pushed
/// out by one new token. Keyed by SipHash-1-3-128 of the token under a random per-cache key, so
/// a client cannot craft a token that collides with a verified one.
pub struct TokenCache {
    key: [u8; 16],
    /// `2 * sets` slots; the two ways of set `s` are `2s` (most recently used) and `2s + 1`.
    slots: Box<[Slot]>,
    set_mask: usize,
    /// The verifier whose verdicts the slots hold.
    verifier: u64,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.slots.len())
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at least `entries` slots (rounded up to a power of two, at least 2) under a
    /// random key.
    pub fn new(entries: usize) -> std::io::Result<TokenCache> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::with_key(key, entries))
    }

    /// A cache under a given key (tests, fuzzing).
    pub fn with_key(key: [u8; 16], entries: usize) -> TokenCache {
        let slots = entries.max(2).next_power_of_two();
        TokenCache {
            key,
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            set_mask: slots / 2 - 1,
            verifier: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Slots held (the most tokens it remembers).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.live).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks answered from the cache, and checks that had to verify a signature (or refused
    /// the token before that).
    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Forgets everything verified by another verifier (its keys or issuer may differ).
    fn bind(&mut self, verifier: u64) {
        if self.verifier != verifier {
            for s in self.slots.iter_mut() {
                s.live = false;
            }
            self.verifier = verifier;
        }
    }

    fn tag(&self, token: &[u8]) -> u128 {
        let mut h = SipHasher13::new_with_key(&self.key);
        h.write(token);
        h.finish128().as_u128()
    }

    fn get(&mut self, tag: u128) -> Option<Verified> {
        let first = (tag as usize & self.set_mask) * 2;
        let [a, b] = &mut self.slots[first..first + 2] else {
            unreachable!("a set is two slots")
        };
        if a.live && a.tag == tag {
            self.hits += 1;
            return Some(a.verified);
        }
        if b.live && b.tag == tag {
            std::mem::swap(a, b);
            self.hits += 1;
            return Some(a.verified);
        }
        self.misses += 1;
        None
    }

    fn insert(&mut self, tag: u128, verified: Verified) {
        let first = (tag as usize & self.set_mask) * 2;
        let [a, b] = &mut self.slots[first..first + 2] else {
            unreachable!("a set is two slots")
        };
        *b = *a;
        *a = Slot {
            tag,
            live: true,
            verified,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_messages_fit_an_error_packet_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in JwtRefusal::ALL {
            assert!(r.message().len() <= 60, "{r:?}: {}", r.message());
            assert!(!r.message().is_empty());
            assert!(seen.insert(r.message()), "{r:?} message repeated");
            assert!(seen.insert(r.label()), "{r:?} label repeated");
            assert_eq!(r.to_string(), r.message());
        }
    }

    const HASH: InfoHash = *b"\x01\x02abc\xff\x80 +%&=\x00\x7fxyz\xe9\xaa\x10";

    fn readings(claim: &str) -> Vec<InfoHash> {
        let (h, n) = claimed_hashes(claim);
        h[..n as usize].to_vec()
    }

    #[test]
    fn infohash_claim_forms() {
        // 40 hex digits, either case.
        let hex_lower: String = HASH.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(readings(&hex_lower), vec![HASH]);
        assert_eq!(readings(&hex_lower.to_uppercase()), vec![HASH]);
        // Percent-escaped, every byte or only the unsafe ones.
        let escaped: String = HASH.iter().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(readings(&escaped), vec![HASH]);
        let mixed = "%01%02abc%FF%80+%2B%25%26%3D%00%7Fxyz%E9%AA%10";
        assert_eq!(readings(mixed), vec![HASH]);
        // One character per byte (a JSON string holding the raw bytes).
        let chars: String = HASH.iter().map(|&b| b as char).collect();
        assert!(readings(&chars).contains(&HASH));
        // 20 ASCII bytes: the bytes themselves, and the same with + read as a space.
        assert_eq!(
            readings("abcdefghijklmnopqrst"),
            vec![*b"abcdefghijklmnopqrst"]
        );
        assert_eq!(
            readings("abcdefghijklmnopqr+t"),
            vec![*b"abcdefghijklmnopqr+t", *b"abcdefghijklmnopqr t"]
        );
        // Not 20 bytes in any reading.
        assert!(readings("").is_empty());
        assert!(readings("abc").is_empty());
        assert!(readings(&hex_lower[..38]).is_empty());
        assert!(readings(&format!("{}zz", &hex_lower[..38])).is_empty());
        assert!(readings("%zz%01%02abc%FF%80+%2B%25%26%3D%00%7Fxyz").is_empty());
        assert!(readings(&"é".repeat(21)).is_empty());
    }

    #[test]
    fn a_hit_on_a_one_hash_token_reads_one_cache_line() {
        use std::mem::{align_of, offset_of};
        assert_eq!(align_of::<Slot>(), 64);
        let first_hash_end = offset_of!(Slot, verified) + offset_of!(Verified, hashes) + 20;
        assert!(
            first_hash_end <= 64,
            "first hash ends at byte {first_hash_end}"
        );
        assert!(offset_of!(Slot, live) < 64 && offset_of!(Slot, tag) < 64);
    }

    #[test]
    fn admits_checks_time_with_leeway_and_the_hash() {
        let v = Verified {
            exp: 1000,
            nbf: 500,
            hashes: [HASH, HASH],
            hash_count: 1,
        };
        assert_eq!(v.admits(&HASH, 700), Ok(()));
        assert_eq!(v.admits(&HASH, 1000 + LEEWAY_SECS - 1), Ok(()));
        assert_eq!(
            v.admits(&HASH, 1000 + LEEWAY_SECS),
            Err(JwtRefusal::Expired)
        );
        assert_eq!(v.admits(&HASH, 500 - LEEWAY_SECS), Ok(()));
        assert_eq!(
            v.admits(&HASH, 500 - LEEWAY_SECS - 1),
            Err(JwtRefusal::NotYetValid)
        );
        assert_eq!(v.admits(&[0; 20], 700), Err(JwtRefusal::WrongInfoHash));
        let none = Verified { hash_count: 0, ..v };
        assert_eq!(none.admits(&HASH, 700), Err(JwtRefusal::WrongInfoHash));
        let far = Verified { exp: u64::MAX, ..v };
        assert_eq!(far.admits(&HASH, u64::MAX - 1), Ok(()), "no overflow");
    }

    #[test]
    fn numeric_dates() {
        let n = |s: &str| seconds(&serde_json::from_str(s).unwrap());
        assert_eq!(n("1700000000"), 1_700_000_000);
        assert_eq!(n("1700000000.9"), 1_700_000_000);
        assert_eq!(n("-5"), 0);
        assert_eq!(n("1e30"), u64::MAX);
    }

    fn verified(exp: u64) -> Verified {
        Verified {
            exp,
            nbf: 0,
            hashes: [HASH, HASH],
            hash_count: 1,
        }
    }

    #[test]
    fn cache_is_bounded_two_way_lru() {
        let mut c = TokenCache::with_key([7; 16], 8);
        assert_eq!(c.capacity(), 8);
        assert_eq!(TokenCache::with_key([7; 16], 5).capacity(), 8, "rounded up");
        assert_eq!(TokenCache::with_key([7; 16], 0).capacity(), 2);
        c.bind(1);
        // Three tags in the same set (same low bits): the least recently used one goes.
        let (t1, t2, t3) = (0x10u128 << 64, 0x20u128 << 64, 0x30u128 << 64);
        c.insert(t1, verified(1));
        c.insert(t2, verified(2));
        assert_eq!(c.get(t1), Some(verified(1)), "t1 now most recent");
        c.insert(t3, verified(3));
        assert_eq!(c.get(t2), None, "t2 was least recently used");
        assert_eq!(c.get(t1), Some(verified(1)));
        assert_eq!(c.get(t3), Some(verified(3)));
        assert_eq!(c.len(), 2);
        // Thousands of tokens never hold more than the capacity.
        for i in 0..10_000u128 {
            c.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), verified(9));
        }
        assert_eq!(c.len(), 8);
        assert_eq!((c.hits(), c.misses()), (3, 1));
    }

    #[test]
    fn cache_forgets_when_bound_to_another_verifier() {
        let mut c = TokenCache::with_key([7; 16], 8);
        c.bind(1);
        c.insert(5, verified(1));
        c.bind(1);
        assert_eq!(c.get(5), Some(verified(1)));
        c.bind(2);
        assert_eq!(c.get(5), None);
        assert!(c.is_empty());
    }

    #[test]
    fn cache_tags_are_keyed() {
        let a = TokenCache::with_key([1; 16], 8);
        let b = TokenCache::with_key([2; 16], 8);
        assert_eq!(a.tag(b"token"), a.tag(b"token"));
        assert_ne!(a.tag(b"token"), b.tag(b"token"));
        assert_ne!(a.tag(b"token"), a.tag(b"token2"));
    }

    #[test]
    fn config_requires_path_issuer_and_audience() {
        assert!(Verifier::load(&JwtConfig::default()).unwrap().is_none());
        let full = JwtConfig {
            mode: Mode::Required,
            jwks_path: "/nonexistent/jwks.json".into(),
            issuer: "iss".into(),
            audience: "aud".into(),
        };
        for (field, config) in [
            (
                "jwks_path",
                JwtConfig {
                    jwks_path: String::new(),
                    ..full.clone()
                },
            ),
            (
                "issuer",
                JwtConfig {
                    issuer: String::new(),
                    ..full.clone()
                },
            ),
            (
                "audience",
                JwtConfig {
                    audience: String::new(),
                    ..full.clone()
                },
            ),
        ] {
            let e = Verifier::load(&config).unwrap_err().to_string();
            assert!(e.contains(&format!("needs {field}")), "{e}");
        }
        let e = Verifier::load(&full).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read JWKS /nonexistent/jwks.json"),
            "{e}"
        );

        let c: JwtConfig = toml::from_str(
            "mode = \"required\"\njwks_path = \"/etc/hayate/jwks.json\"\nissuer = \"i\"\naudience = \"a\"\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Required);
        assert_eq!(c.jwks_path, "/etc/hayate/jwks.json");
        let e = toml::from_str::<JwtConfig>("mode = \"required\"\njwks = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `jwks`"), "{e}");
    }

    #[test]
    fn jwks_problems_name_the_file_and_key() {
        let err = |json: &str| Keys::parse(json, "keys.json").unwrap_err().to_string();
        assert!(err("{").starts_with("JWKS keys.json is not a JSON key set"));
        assert!(err("{\"keys\": []}").contains("holds no keys"));
        let e = err(
            r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "M3QmVkg4VblA1V8wuj-0QJQhFrbSL3zMFizdERN5r_8"}]}"#,
        );
        assert!(e.contains("key 0") && e.contains("no \"kid\""), "{e}");
        let e = err(r#"{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}"#);
        assert!(e.contains("key 0 (kid \"h\")") && e.contains("HMAC"), "{e}");
        let e = err(r#"{"keys": [{"kty": "OKP", "kid": "e", "crv": "Ed25519", "x": "AAAA"}]}"#);
        assert!(e.contains("\"x\" is 3 bytes, expected 32"), "{e}");
        let e = err(r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}"#);
        assert!(e.contains("at least 2048"), "{e}");
        let ed = r#"{"kty": "OKP", "kid": "e", "crv": "Ed25519", "x": "M3QmVkg4VblA1V8wuj-0QJQhFrbSL3zMFizdERN5r_8"}"#;
        let e = err(&format!("{{\"keys\": [{ed}, {ed}]}}"));
        assert!(
            e.contains("key 1 (kid \"e\")") && e.contains("twice"),
            "{e}"
        );
        let e = err(
            r#"{"keys": [{"kty": "OKP", "kid": "e", "crv": "Ed25519", "alg": "ES256", "x": "M3QmVkg4VblA1V8wuj-0QJQhFrbSL3zMFizdERN5r_8"}]}"#,
        );
        assert!(e.contains("does not fit"), "{e}");
        let e = err(
            r#"{"keys": [{"kty": "OKP", "kid": "e", "crv": "Ed25519", "d": "AAAA", "x": "M3QmVkg4VblA1V8wuj-0QJQhFrbSL3zMFizdERN5r_8"}]}"#,
        );
        assert!(e.contains("private key"), "{e}");
        let e = err(
            r#"{"keys": [{"kty": "OKP", "kid": "e", "use": "enc", "crv": "Ed25519", "x": "M3QmVkg4VblA1V8wuj-0QJQhFrbSL3zMFizdERN5r_8"}]}"#,
        );
        assert!(e.contains("encryption key"), "{e}");
        let e = err(r#"{"keys": [{"kty": "XYZ", "kid": "z"}]}"#);
        assert!(
            e.contains("key 0 (kid \"z\")") && e.contains("not a public key JWK"),
            "{e}"
        );
    }
}
