//! BEP 15 connection ids, kept without state: an id is the coarse time it was made (seconds since
//! the process started, 32 bits) and a 32-bit SipHash tag of that time and the client's IP under
//! a random key drawn at start-up. Any worker can check any id, nothing is stored per client,
//! and a flood of connects costs no memory. Restarting the process invalidates every id, which
//! clients handle by connecting again.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionIdError {
    #[error("connection id was not issued to this address")]
    Forged,
    #[error("connection id expired")]
    Expired,
    #[error("connection id is from the future")]
    FromTheFuture,
}

/// The key and lifetime ids are made and checked with. Cheap to copy to every worker.
#[derive(Clone)]
pub struct ConnectionIds {
    key: [u8; 16],
    lifetime_secs: u32,
}

impl ConnectionIds {
    /// A fresh random key.
    pub fn new(lifetime_secs: u32) -> std::io::Result<Self> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::with_key(key, lifetime_secs))
    }

    pub fn with_key(key: [u8; 16], lifetime_secs: u32) -> Self {
        Self { key, lifetime_secs }
    }

    /// The id for `ip` at `now` (seconds on the process clock).
    pub fn make(&self, ip: IpAddr, now: u32) -> u64 {
        (u64::from(now) << 32) | u64::from(self.tag(ip, now))
    }

    /// Accepts ids made for `ip` no more than the lifetime ago.
    pub fn check(&self, id: u64, ip: IpAddr, now: u32) -> Result<(), ConnectionIdError> {
        let made = (id >> 32) as u32;
        if self.tag(ip, made) != id as u32 {
            return Err(ConnectionIdError::Forged);
        }
        // Workers read the clock at slightly different moments: allow one second of skew.
        if made > now.saturating_add(1) {
            return Err(ConnectionIdError::FromTheFuture);
        }
        if now.saturating_sub(made) > self.lifetime_secs {
            return Err(ConnectionIdError::Expired);
        }
        Ok(())
    }

    fn tag(&self, ip: IpAddr, made: u32) -> u32 {
        let mut h = SipHasher24::new_with_key(&self.key);
        match ip.to_canonical() {
            IpAddr::V4(v4) => h.write(&v4.octets()),
            IpAddr::V6(v6) => h.write(&v6.octets()),
        }
        h.write_u32(made);
        h.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> ConnectionIds {
        ConnectionIds::new(120).unwrap()
    }

    #[test]
    fn accepted_for_its_lifetime() {
        let c = ids();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = c.make(ip, 1000);
        assert_eq!(c.check(id, ip, 1000), Ok(()));
        assert_eq!(c.check(id, ip, 1120), Ok(()));
        assert_eq!(c.check(id, ip, 1121), Err(ConnectionIdError::Expired));
    }

    #[test]
    fn refused_from_another_ip_or_altered() {
        let c = ids();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let id = c.make(ip, 50);
        assert_eq!(c.check(id, other, 50), Err(ConnectionIdError::Forged));
        assert_eq!(c.check(id ^ 1, ip, 50), Err(ConnectionIdError::Forged));
        // Moving the timestamp without the key breaks the tag.
        assert_eq!(
            c.check(id + (1 << 32), ip, 50),
            Err(ConnectionIdError::Forged)
        );
    }

    #[test]
    fn refused_under_another_key() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let id = ids().make(ip, 10);
        assert_eq!(ids().check(id, ip, 10), Err(ConnectionIdError::Forged));
    }

    #[test]
    fn one_second_of_skew_is_allowed_two_are_not() {
        // A worker whose clock read is a second behind the one that made the id accepts it.
        let c = ids();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(c.check(c.make(ip, 1001), ip, 1000), Ok(()));
        assert_eq!(
            c.check(c.make(ip, 1002), ip, 1000),
            Err(ConnectionIdError::FromTheFuture)
        );
        // At the end of the clock nothing wraps into the future or the past.
        assert_eq!(c.check(c.make(ip, u32::MAX), ip, u32::MAX), Ok(()));
        assert_eq!(c.check(c.make(ip, u32::MAX), ip, u32::MAX - 1), Ok(()));
        assert_eq!(c.check(c.make(ip, 0), ip, 120), Ok(()));
        assert_eq!(
            c.check(c.make(ip, 0), ip, 121),
            Err(ConnectionIdError::Expired)
        );
    }

    #[test]
    fn far_future_refused() {
        let c = ids();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = c.make(ip, 5000);
        assert_eq!(c.check(id, ip, 10), Err(ConnectionIdError::FromTheFuture));
    }

    #[test]
    fn ipv4_mapped_is_the_same_client() {
        let c = ids();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(c.check(c.make(v4, 7), mapped, 7), Ok(()));
    }
}
