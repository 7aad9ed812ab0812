//! What a tracker asks of the machine at start, checked before it serves so a shortfall is a
//! clear line in the log rather than a symptom under load: open files (`RLIMIT_NOFILE`, raised
//! to its hard limit, against `http.max_connections` plus every socket), the memory reserved up
//! front for the workers' inboxes and I/O buffers (which some settings make gigabytes), and the
//! UDP receive buffer the kernel actually granted.

use std::net::UdpSocket;

use crate::config::Config;
use crate::mesh::{ForwardedAnnounce, HttpWork, ScrapeChain};
use crate::worker::handler::Handler;

/// Descriptors beyond connections and sockets: rings, eventfds, the state directory, logs.
const SPARE_DESCRIPTORS: u64 = 64;

/// Reserved memory past which start-up warns (and `--check-config` says so).
pub const RESERVED_WARNING_BYTES: u64 = 1 << 30;

/// Descriptors a tracker with `config` and `workers` workers may hold at once.
pub fn descriptors_needed(config: &Config, workers: usize) -> u64 {
    let sockets =
        (workers * config.udp.addresses.len() + config.http.listen_addresses().count() + 1) as u64;
    // Each worker's ring or epoll, its inbox eventfd, and a duplicate of each socket to hand on.
    u64::from(config.http.max_connections) + 2 * sockets + 2 * workers as u64 + SPARE_DESCRIPTORS
}

/// Raises the soft open-files limit to the hard one. Returns the limit in force and whether it
/// covers `needed`.
pub fn raise_open_files(needed: u64) -> std::io::Result<(u64, bool)> {
    // SAFETY: getrlimit and setrlimit read and write a plain struct we own.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_cur >= needed))
}

/// Bytes allocated at start, before any peer: every worker's three inbox channels (allocated
/// whole by crossbeam's bounded channels) and its receive and send buffers.
pub fn reserved_bytes(config: &Config, workers: usize) -> u64 {
    // crossbeam's array channel keeps a stamp beside each slot.
    let slot = |size: usize| (size + std::mem::size_of::<usize>()) as u64;
    let capacity = config.workers.inbox_capacity as u64;
    let inbox = capacity * slot(std::mem::size_of::<ForwardedAnnounce>())
        + (capacity / 16).max(16) * slot(std::mem::size_of::<ScrapeChain>())
        + (capacity / 8).max(16) * slot(std::mem::size_of::<HttpWork>());
    let sockets = config.udp.addresses.len().max(1) as u64;
    let receive = u64::from(config.udp.recv_depth).next_power_of_two() * sockets * 2048;
    let send = u64::from(config.udp.send_depth) * Handler::max_reply_len(config) as u64;
    workers as u64 * (inbox + receive + send)
}

/// The receive buffer the kernel granted `socket` (it reports twice what was asked, for its
/// own bookkeeping), when under `wanted`: the sysctl caps it.
pub fn recv_buffer_shortfall(socket: &UdpSocket, wanted: u32) -> Option<u64> {
    let granted = socket2::SockRef::from(socket).recv_buffer_size().ok()? as u64 / 2;
    (granted < u64::from(wanted)).then_some(granted)
}

/// Runs the checks for a tracker about to start, logging each shortfall with what fixes it.
pub fn check(config: &Config, workers: usize, udp: Option<&UdpSocket>) {
    let needed = descriptors_needed(config, workers);
    match raise_open_files(needed) {
        Ok((_, true)) => {}
        Ok((limit, false)) => tracing::error!(
            limit,
            needed,
            "the open-files limit (RLIMIT_NOFILE) is below http.max_connections plus every \
             socket: connections past it will fail. Raise it (LimitNOFILE= in the unit, \
             `ulimit -n` in a shell) or lower http.max_connections"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
    let reserved = reserved_bytes(config, workers);
    if reserved > RESERVED_WARNING_BYTES {
        tracing::warn!(
            mib = reserved >> 20,
            workers,
            inbox_capacity = config.workers.inbox_capacity,
            "inboxes and I/O buffers reserve this much memory at start: lower \
             workers.inbox_capacity, workers.count or udp.recv_depth/send_depth if unintended"
        );
    }
    if let Some(granted) = udp.and_then(|s| recv_buffer_shortfall(s, config.udp.recv_buffer_bytes))
    {
        tracing::warn!(
            granted,
            wanted = config.udp.recv_buffer_bytes,
            "the kernel capped the UDP receive buffer (udp.recv_buffer_bytes) at \
             net.core.rmem_max: bursts and restarts drop datagrams sooner. Raise it with \
             `sysctl -w net.core.rmem_max={}`",
            config.udp.recv_buffer_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_memory_grows_with_workers_and_inbox_capacity() {
        let base = Config::default_config();
        let small = reserved_bytes(&base, 2);
        assert_eq!(reserved_bytes(&base, 4), 2 * small);
        let big = Config::from_toml_str("[workers]\ninbox_capacity = 1048576\n", "t").unwrap();
        // The case found: a mebislot inbox holds a 2.4 KB scrape chain per 16 slots, gigabytes
        // over a few workers.
        assert!(reserved_bytes(&big, 4) > RESERVED_WARNING_BYTES);
        assert!(small < RESERVED_WARNING_BYTES / 8, "{small}");
    }

    #[test]
    fn descriptors_cover_connections_and_every_socket() {
        let c = Config::default_config();
        let n = descriptors_needed(&c, 4);
        let connections = u64::from(c.http.max_connections);
        assert!(n > connections + 2 * (4 * 2 + 2 + 1), "{n}");
    }

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        let (limit, covers) = raise_open_files(16).unwrap();
        let mut now: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: getrlimit fills a struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, now.rlim_max);
        assert_eq!(limit, now.rlim_cur);
        assert!(covers);
        assert!(!raise_open_files(u64::MAX).unwrap().1);
    }
}
