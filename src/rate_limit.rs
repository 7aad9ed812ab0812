//! Per-source request budgets: a token bucket per source (an IPv4 address, or an IPv6 /64,
//! which one subscriber usually holds whole), refilled at `per_sec` up to `burst`. Each UDP
//! worker and the HTTP thread keep their own limiter, so nothing is shared or locked; a source
//! whose datagrams reach several workers (steered announces go to their torrent's owner) has a
//! budget at each.
//!
//! The buckets live in a fixed table whatever the number of sources, so a flood from millions
//! of addresses costs no memory: the table is 4-way set-associative, and a source that finds
//! its set full takes the place of the fullest bucket in it. A source evicted that way starts
//! again with a full bucket — the limiter fails open for quiet sources, never for the busy one
//! it exists to slow, whose bucket is the emptiest in its set. Sources on the exempt networks
//! (loopback by default) are never refused; the network lookup is paid only when a bucket runs
//! dry.

use std::net::IpAddr;

use ahash::RandomState;

use crate::cidr::Networks;
use crate::swarm::Family;

/// Buckets per table: 16 bytes each, so a limiter costs 1 MiB.
pub const SLOTS: usize = 1 << 16;

const WAYS: usize = 4;

/// Tokens are counted in thousandths of a request, so a budget of a few requests a second
/// refills smoothly from a millisecond clock.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The source's hash; 0 marks a free slot (a source hashing to 0 is stored as 1).
    source: u64,
    /// Thousandths of a request left.
    tokens: u32,
    /// Millisecond (the caller's clock, wrapping) of the last refill.
    at_ms: u32,
}

pub struct RateLimiter {
    buckets: Box<[Bucket]>,
    hasher: RandomState,
    /// Thousandths of a request added per millisecond: the requests allowed per second.
    per_ms: u64,
    /// Most thousandths a bucket holds.
    full: u64,
    exempt: Networks,
}

impl RateLimiter {
    /// A limiter allowing each source `per_sec` requests a second with bursts of `burst`;
    /// `None` when `per_sec` is 0 (limits off).
    pub fn new(per_sec: u32, burst: u32, exempt: Networks) -> Option<RateLimiter> {
        (per_sec > 0).then(|| RateLimiter {
            buckets: vec![Bucket::default(); SLOTS].into_boxed_slice(),
            hasher: RandomState::new(),
            per_ms: u64::from(per_sec),
            // At least one request, or nobody would ever pass.
            full: u64::from(burst.max(1))
                .saturating_mul(MILLI)
                .min(u32::MAX as u64),
            exempt,
        })
    }

    /// Whether a request from `ip` at `now_ms` (any millisecond clock) is within its source's
    /// budget; takes one request from the budget if so.
    #[inline]
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        // One source as the swarm's quotas count it: the address, or its IPv6 /64.
        let source = match ip.to_canonical() {
            IpAddr::V4(v4) => self.hasher.hash_one(v4.octets().source()),
            IpAddr::V6(v6) => self.hasher.hash_one(v6.octets().source()),
        }
        .max(1);
        let now = now_ms as u32;
        let set = (source as usize) & (SLOTS / WAYS - 1);
        let set = &mut self.buckets[set * WAYS..set * WAYS + WAYS];
        let (per_ms, full) = (self.per_ms, self.full);
        let refilled = |b: &Bucket| {
            let elapsed = u64::from(now.wrapping_sub(b.at_ms));
            (u64::from(b.tokens) + elapsed * per_ms).min(full)
        };
        let bucket = match set.iter().position(|b| b.source == source) {
            Some(i) => &mut set[i],
            None => {
                // A free slot if any, else the fullest bucket: its source has been quiet
                // longest, and a full bucket loses nothing by starting over.
                let i = (0..WAYS)
                    .max_by_key(|&i| match set[i].source {
                        0 => u64::MAX,
                        _ => refilled(&set[i]),
                    })
                    .unwrap_or(0);
                set[i] = Bucket {
                    source,
                    tokens: full as u32,
                    at_ms: now,
                };
                &mut set[i]
            }
        };
        let tokens = refilled(bucket);
        bucket.at_ms = now;
        if tokens >= MILLI {
            bucket.tokens = (tokens - MILLI) as u32;
            return true;
        }
        bucket.tokens = tokens as u32;
        self.exempt.contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn allowed(l: &mut RateLimiter, who: &str, now_ms: u64, n: usize) -> usize {
        (0..n).filter(|_| l.allow(ip(who), now_ms)).count()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = RateLimiter::new(10, 5, Networks::default()).unwrap();
        assert_eq!(allowed(&mut l, "192.0.2.1", 0, 20), 5, "the burst");
        // 10 a second: one more every 100 ms, none before.
        assert_eq!(allowed(&mut l, "192.0.2.1", 99, 5), 0);
        assert_eq!(allowed(&mut l, "192.0.2.1", 100, 5), 1);
        assert_eq!(allowed(&mut l, "192.0.2.1", 400, 5), 3);
        // Idle for long: back to the burst, never more.
        assert_eq!(allowed(&mut l, "192.0.2.1", 60_000, 20), 5);
        // Other sources have their own budget.
        assert_eq!(allowed(&mut l, "192.0.2.2", 60_000, 20), 5);
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_a_mapped_address_is_ipv4() {
        let mut l = RateLimiter::new(1, 3, Networks::default()).unwrap();
        assert_eq!(allowed(&mut l, "2001:db8:1:2::1", 0, 2), 2);
        assert_eq!(allowed(&mut l, "2001:db8:1:2:ffff::9", 0, 5), 1);
        assert_eq!(allowed(&mut l, "2001:db8:1:3::1", 0, 5), 3, "another /64");
        assert_eq!(allowed(&mut l, "198.51.100.4", 0, 2), 2);
        assert_eq!(allowed(&mut l, "::ffff:198.51.100.4", 0, 5), 1);
    }

    #[test]
    fn exempt_networks_are_never_refused() {
        let exempt = Networks::new(["127.0.0.0/8".parse().unwrap()]);
        let mut l = RateLimiter::new(1, 1, exempt).unwrap();
        assert_eq!(allowed(&mut l, "127.0.0.9", 0, 100), 100);
        assert_eq!(allowed(&mut l, "192.0.2.1", 0, 100), 1);
    }

    #[test]
    fn a_flood_of_sources_keeps_the_busy_one_limited_in_fixed_memory() {
        let mut l = RateLimiter::new(1, 10, Networks::default()).unwrap();
        let busy = "203.0.113.7";
        assert_eq!(allowed(&mut l, busy, 0, 10), 10);
        // Four million other sources, one request each, interleaved with the busy one: the
        // table never grows, and the busy source, whose bucket is the emptiest, keeps it.
        let mut busy_passed = 0;
        for n in 0..4_000_000u32 {
            assert!(l.allow(IpAddr::from(n.to_be_bytes()), 1));
            if n % 4 == 0 {
                busy_passed += usize::from(l.allow(ip(busy), 1));
            }
        }
        assert_eq!(busy_passed, 0);
        assert_eq!(l.buckets.len(), SLOTS);
    }

    #[test]
    fn off_at_zero() {
        assert!(RateLimiter::new(0, 10, Networks::default()).is_none());
    }
}
