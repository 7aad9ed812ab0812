//! A JWT cache hit allocates nothing: a counting global allocator watches re-announces of
//! tokens already verified (accepted, and refused for time or info hash), which is what a worker
//! does on every announce once JWT approval is on. The one test in this binary is alone, so no
//! other test's allocations are counted.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/jwt_tokens.rs"]
mod jwt_tokens;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

use hayate_tracker::policy::jwt::{JwtRefusal, TokenCache};
use jsonwebtoken::Algorithm;
use jwt_tokens::*;

#[test]
fn cache_hits_allocate_nothing() {
    let v = verifier();
    let mut cache = TokenCache::new(4096).unwrap();
    let tokens: Vec<String> = [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "p256-1"),
        (Algorithm::EdDSA, "ed-1"),
    ]
    .iter()
    .map(|(alg, kid)| sign(*alg, kid, &good_claims()))
    .collect();
    let mut other = HASH;
    other[7] ^= 0x55;

    // First sight of each token: verified, which allocates (JSON, base64, big numbers).
    let before_miss = counting_alloc::allocations();
    for t in &tokens {
        assert_eq!(v.check(t.as_bytes(), &HASH, NOW, &mut cache), Ok(()));
    }
    assert!(
        counting_alloc::allocations() > before_miss,
        "the counter sees the verification's allocations"
    );

    let start = counting_alloc::allocations();
    let mut accepted = 0u32;
    for round in 0..1000u64 {
        for t in &tokens {
            let t = t.as_bytes();
            if v.check(t, &HASH, NOW + round, &mut cache).is_ok() {
                accepted += 1;
            }
            assert_eq!(
                v.check(t, &other, NOW, &mut cache),
                Err(JwtRefusal::WrongInfoHash)
            );
            assert_eq!(
                v.check(t, &HASH, NOW + 1_000_000, &mut cache),
                Err(JwtRefusal::Expired)
            );
        }
    }
    let allocated = counting_alloc::allocations() - start;
    assert_eq!(accepted, 3000);
    assert_eq!(cache.misses(), 3, "every check after the first was a hit");
    assert_eq!(allocated, 0, "{allocated} allocations in 9000 cache hits");
}
