//! Who may open one more HTTP connection: at most `http.max_connections` in all, and at most
//! `http.max_connections_per_ip` from one client address (the TCP peer's: a proxy's header is
//! read later and can be forged), so one host holding thousands of idle sockets cannot starve
//! everybody else. A refused connection is closed at once and counted by cap. Each admitted
//! connection holds a [`Slot`] that gives its place back when the connection ends, however it
//! ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::cidr::Networks;
use crate::stats::ErrorReason;

pub struct Connections {
    max: usize,
    max_per_ip: u32,
    exempt: Networks,
    /// Open connections in all, and per address holding any. Only the HTTP thread touches it
    /// (accepts and connection ends run there), so the lock is never contended.
    open: Mutex<(usize, HashMap<IpAddr, u32>)>,
}

/// One admitted connection's place.
pub struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// `max_per_ip` 0 is no per-address cap; `exempt` addresses are held only to `max`.
    pub fn new(max: u32, max_per_ip: u32, exempt: Networks) -> Arc<Connections> {
        Arc::new(Connections {
            max: max as usize,
            max_per_ip,
            exempt,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, or the cap it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, ErrorReason> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        if *total >= self.max {
            return Err(ErrorReason::ConnectionsFull);
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *mine >= self.max_per_ip && !self.exempt.contains(ip) {
            return Err(ErrorReason::ConnectionsPerIp);
        }
        *mine += 1;
        *total += 1;
        Ok(Slot {
            connections: self.clone(),
            ip,
        })
    }

    /// Connections open in all.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().map_or(0, |o| o.0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_is_held_to_its_share_and_gets_it_back() {
        let c = Connections::new(10, 2, Networks::default());
        let a1 = c.admit(ip("192.0.2.1")).unwrap();
        let _a2 = c.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            c.admit(ip("192.0.2.1")).err(),
            Some(ErrorReason::ConnectionsPerIp)
        );
        let _b = c.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(c.open(), 3);
        drop(a1);
        assert!(
            c.admit(ip("192.0.2.1")).is_ok(),
            "a closed connection frees its place"
        );
        assert_eq!(c.open(), 2, "the temporary slot was given back on drop");
    }

    #[test]
    fn the_total_cap_holds_for_everyone_and_exempt_addresses_skip_only_the_per_ip_one() {
        let c = Connections::new(3, 1, Networks::new(["127.0.0.0/8".parse().unwrap()]));
        let held: Vec<_> = (0..3).map(|_| c.admit(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(
            c.admit(ip("192.0.2.1")).err(),
            Some(ErrorReason::ConnectionsFull)
        );
        drop(held);
        assert_eq!(c.open(), 0);
        assert!(
            c.open.lock().unwrap().1.is_empty(),
            "no entry outlives its connections"
        );
        let unlimited = Connections::new(100, 0, Networks::default());
        let _many: Vec<_> = (0..50)
            .map(|_| unlimited.admit(ip("192.0.2.1")).unwrap())
            .collect();
    }
}
