//! JWT verification on arbitrary tokens against the committed test JWKS: never a panic; a
//! refusal's message fits a BEP 15 error packet; the verdict is the same from a fresh cache,
//! from the cache that just saw the token (a hit), and from a cache under another key; an
//! accepted token is refused once it has expired.
//!
//! Input: byte 0 moves the clock by 600 s steps around the test tokens' moment, byte 1 (when
//! not 0) flips the info hash's first byte, the rest is the token (tests/jwt.rs reads the seeds
//! the same way, and checks the `seed-valid-*` ones are accepted).
#![no_main]

use std::sync::OnceLock;

use hayate_tracker::policy::jwt::{JwtRefusal, Keys, TokenCache, Verifier};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_900_000_000;
const HASH: [u8; 20] = *b"\x12\x34\x56\x78\x9a\xbc\xde\xf1\x23\x45\x67\x89\xab\xcd\xef\x12 +%&";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let jwks = include_str!("../../tests/data/jwt/jwks.json");
        let keys = Keys::parse(jwks, "tests/data/jwt/jwks.json").expect("test JWKS");
        Verifier::new(keys, "https://auth.example.test", "hayate-test")
    })
}

fuzz_target!(|data: &[u8]| {
    let (shift, flip, token) = match data {
        [s, f, rest @ ..] => (*s as i8, *f, rest),
        _ => (0, 0, data),
    };
    let now = NOW.wrapping_add_signed(i64::from(shift) * 600);
    let mut hash = HASH;
    hash[0] ^= flip;
    let v = verifier();

    let mut cache = TokenCache::with_key([1; 16], 8);
    let first = v.check(token, &hash, now, &mut cache);
    let again = v.check(token, &hash, now, &mut cache);
    let other = v.check(token, &hash, now, &mut TokenCache::with_key([2; 16], 8));
    assert_eq!(first, again, "cache hit agrees");
    assert_eq!(first, other, "another cache agrees");
    match first {
        Err(r) => assert!(!r.message().is_empty() && r.message().len() <= 60),
        Ok(()) => {
            assert_eq!(
                v.check(token, &hash, u64::MAX, &mut cache),
                Err(JwtRefusal::Expired),
                "every accepted token expires"
            );
            assert!(token.split(|&b| b == b'.').count() == 3);
        }
    }
});
