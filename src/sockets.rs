//! The tracker's listening sockets: one UDP socket per worker on each `udp.addresses` entry (a
//! SO_REUSEPORT group), the HTTP listeners and the metrics listener. Each is either taken over
//! from a previous process (sockets handed on by `handover`: a predecessor's, or systemd's fd
//! store) or bound afresh. Taking over is what lets datagrams and connections that arrive while
//! no process serves wait in the kernel for the next one, so inherited sockets are matched to the
//! configuration by kind and address, never by position, and a socket still holding datagrams is
//! served even when the worker count shrank.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// What each kind of socket is called where it is handed on (systemd's `FDNAME`, the log).
pub const UDP: &str = "udp";
pub const HTTP: &str = "http";
pub const METRICS: &str = "metrics";

/// Every socket a tracker serves on.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Per worker: its sockets, in `udp.addresses` order, then any extra inherited ones.
    pub udp: Vec<Vec<UdpSocket>>,
    pub http: Vec<TcpListener>,
    pub metrics: Option<TcpListener>,
    /// How many of them were taken over rather than bound.
    pub inherited: usize,
}

/// An inherited socket waiting to be matched.
struct Held {
    /// The name it was handed on with: one of ours, or another (a socket unit's).
    name: String,
    socket: Socket,
    address: SocketAddr,
    kind: Type,
}

impl Sockets {
    /// The sockets `config` asks for, `workers` UDP sockets per address: taken from `inherited`
    /// where one of the same kind is bound to the configured address (any port when it asks
    /// for port 0), bound otherwise. A socket handed on under one of our names only serves that
    /// kind (two listeners on port 0 of one address are told apart so). Inherited sockets
    /// nothing asks for any more are closed, each logged.
    pub fn open(
        config: &Config,
        workers: usize,
        inherited: Vec<(String, OwnedFd)>,
    ) -> anyhow::Result<Self> {
        let mut pool = hold(inherited);
        let mut sockets = Sockets {
            udp: (0..workers).map(|_| Vec::new()).collect(),
            ..Sockets::default()
        };
        let before = pool.len();
        for &configured in &config.udp.addresses {
            let taken = take_group(&mut pool, Type::DGRAM, configured);
            if taken.is_empty() && configured.port() != 0 {
                refuse_if_served(configured)?;
            }
            let mut address = taken.first().map_or(configured, |h| h.address);
            let mut taken = taken.into_iter();
            for own in sockets.udp.iter_mut() {
                let socket = match taken.next() {
                    Some(held) => {
                        // Best effort, as when binding.
                        let _ = held
                            .socket
                            .set_recv_buffer_size(config.udp.recv_buffer_bytes as usize);
                        held.socket.into()
                    }
                    None => udp_socket(address, config.udp.recv_buffer_bytes)
                        .with_context(|| format!("binding UDP {configured} (udp.addresses)"))?,
                };
                address = socket.local_addr()?;
                own.push(socket);
            }
            if let Some(group) = sockets.udp[0].last() {
                steer(group, workers, config.udp.steer_announces);
            }
            // Fewer workers than the process that bound them: the rest still hold datagrams.
            for (i, held) in taken.enumerate() {
                sockets.udp[i % workers].push(held.socket.into());
            }
        }
        for configured in config.http.listen_addresses() {
            let listener = match take_one(&mut pool, HTTP, configured) {
                Some(socket) => socket.into(),
                None => crate::http::listener(configured).with_context(|| {
                    format!("binding TCP {configured} (http.addresses or [[http.tls]])")
                })?,
            };
            listener.set_nonblocking(true)?;
            sockets.http.push(listener);
        }
        if let Some(configured) = config.metrics_address() {
            let listener = match take_one(&mut pool, METRICS, configured) {
                Some(socket) => socket.into(),
                None => TcpListener::bind(configured)
                    .with_context(|| format!("binding metrics {configured} (metrics.address)"))?,
            };
            listener.set_nonblocking(true)?;
            sockets.metrics = Some(listener);
        }
        sockets.inherited = before - pool.len();
        for held in pool {
            tracing::warn!(
                address = %held.address,
                kind = if held.kind == Type::DGRAM { UDP } else { "tcp" },
                "an inherited socket is no longer configured: closed"
            );
        }
        Ok(sockets)
    }

    /// A duplicate of every socket with its kind's name, to hand on to a successor or to the
    /// service manager. Holding them also keeps the sockets open after the workers stop, until
    /// the next process has its own.
    pub fn duplicates(&self) -> std::io::Result<Vec<(&'static str, OwnedFd)>> {
        let udp = self.udp.iter().flatten().map(|s| (UDP, s.as_fd()));
        let http = self.http.iter().map(|s| (HTTP, s.as_fd()));
        let metrics = self.metrics.iter().map(|s| (METRICS, s.as_fd()));
        udp.chain(http)
            .chain(metrics)
            .map(|(name, fd)| Ok((name, fd.try_clone_to_owned()?)))
            .collect()
    }
}

/// Sockets among `fds` with an internet address; anything else is closed, logged.
fn hold(fds: Vec<(String, OwnedFd)>) -> Vec<Held> {
    fds.into_iter()
        .filter_map(|(name, fd)| {
            let socket = Socket::from(fd);
            let described = socket.r#type().and_then(|kind| {
                let address = socket.local_addr()?.as_socket().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an internet socket")
                })?;
                Ok((kind, address))
            });
            match described {
                Ok((kind, address)) if kind == Type::DGRAM || kind == Type::STREAM => Some(Held {
                    name,
                    socket,
                    address,
                    kind,
                }),
                Ok((kind, address)) => {
                    tracing::warn!(%address, ?kind, "inherited socket of an unknown kind: closed");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inherited descriptor is not a usable socket: closed");
                    None
                }
            }
        })
        .collect()
}

fn matches(configured: SocketAddr, bound: SocketAddr) -> bool {
    configured.ip() == bound.ip() && (configured.port() == 0 || configured.port() == bound.port())
}

/// Every held socket of `kind` bound to `configured`; with port 0 configured, those sharing the
/// first match's port (one reuseport group).
fn take_group(pool: &mut Vec<Held>, kind: Type, configured: SocketAddr) -> Vec<Held> {
    let Some(port) = pool
        .iter()
        .find(|h| h.kind == kind && may_serve(&h.name, UDP) && matches(configured, h.address))
        .map(|h| h.address.port())
    else {
        return Vec::new();
    };
    let group = SocketAddr::new(configured.ip(), port);
    let (taken, rest) = std::mem::take(pool)
        .into_iter()
        .partition(|h| h.kind == kind && may_serve(&h.name, UDP) && h.address == group);
    *pool = rest;
    taken
}

/// Whether a socket handed on as `name` may serve as `kind`.
fn may_serve(name: &str, kind: &str) -> bool {
    name == kind || ![UDP, HTTP, METRICS].contains(&name)
}

/// The first held TCP listener bound to `configured` that may serve as `kind`.
fn take_one(pool: &mut Vec<Held>, kind: &str, configured: SocketAddr) -> Option<Socket> {
    let at = pool.iter().position(|h| {
        h.kind == Type::STREAM && may_serve(&h.name, kind) && matches(configured, h.address)
    })?;
    Some(pool.remove(at).socket)
}

/// Steers announces on the group `socket` is in when `wanted` and there is more than one
/// worker, saying whether it is in force; otherwise removes the steering a predecessor may
/// have left on an inherited group, which would go on steering by its own worker count.
fn steer(socket: &UdpSocket, workers: usize, wanted: bool) {
    let address = socket.local_addr().ok();
    if !wanted || workers == 1 {
        match crate::steering::detach(socket) {
            Ok(false) => {}
            Ok(true) => tracing::info!(
                address = ?address,
                "announce steering off: the program a predecessor attached is removed"
            ),
            Err(e) => tracing::warn!(
                address = ?address,
                error = %e,
                "the announce steering a predecessor attached could not be removed"
            ),
        }
        return;
    }
    match crate::steering::attach(socket, workers) {
        Ok(()) => tracing::info!(
            address = ?address,
            workers,
            "announces steered to the worker owning their torrent by the kernel"
        ),
        Err(e) => tracing::warn!(
            address = ?address,
            error = %e,
            "announce steering unavailable: announces reaching another worker are forwarded"
        ),
    }
}

/// SO_REUSEPORT would let a second tracker join the first one's group and take half of every
/// swarm's traffic, silently. A socket bound without it fails where any socket serves `addr`.
fn refuse_if_served(addr: SocketAddr) -> anyhow::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "UDP {addr} (udp.addresses) is already served by another process: two trackers on \
             one port would split every swarm between them. Stop the other one, or replace it \
             with SIGUSR2 or `systemctl restart`, which hand the socket over"
        ),
        Err(e) => Err(e).with_context(|| format!("binding UDP {addr} (udp.addresses)")),
    }
}

fn udp_socket(addr: SocketAddr, recv_buffer: u32) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max, for root too (`resources` warns).
    let _ = socket.set_recv_buffer_size(recv_buffer as usize);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(udp: &str, http: &str, metrics: &str) -> Config {
        Config::from_toml_str(
            &format!(
                "[udp]\naddresses = [{udp}]\n[http]\naddresses = [{http}]\n\
                 [metrics]\naddress = \"{metrics}\"\n"
            ),
            "t",
        )
        .unwrap()
    }

    fn fds(s: &Sockets) -> Vec<(String, OwnedFd)> {
        s.duplicates()
            .unwrap()
            .into_iter()
            .map(|(name, fd)| (name.to_string(), fd))
            .collect()
    }

    #[test]
    fn fresh_sockets_share_one_port_per_address() {
        let c = config("\"127.0.0.1:0\"", "\"127.0.0.1:0\"", "127.0.0.1:0");
        let s = Sockets::open(&c, 3, Vec::new()).unwrap();
        assert_eq!(s.inherited, 0);
        let ports: Vec<u16> = s
            .udp
            .iter()
            .map(|w| w[0].local_addr().unwrap().port())
            .collect();
        assert!(ports.iter().all(|&p| p == ports[0] && p != 0), "{ports:?}");
        let names: Vec<_> = s.duplicates().unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [UDP, UDP, UDP, HTTP, METRICS]);
    }

    #[test]
    fn inherited_sockets_are_matched_by_kind_and_address_and_none_is_lost() {
        let c = config("\"127.0.0.1:0\"", "\"127.0.0.1:0\"", "127.0.0.1:0");
        let first = Sockets::open(&c, 3, Vec::new()).unwrap();
        let udp = first.udp[0][0].local_addr().unwrap();
        let http = first.http[0].local_addr().unwrap();
        let metrics = first.metrics.as_ref().unwrap().local_addr().unwrap();
        // In the reverse order, as if the manager had shuffled them.
        let mut handed = fds(&first);
        handed.reverse();
        // Two workers now: the third socket goes to a worker as an extra.
        let second = Sockets::open(&c, 2, handed).unwrap();
        assert_eq!(second.inherited, 5);
        assert_eq!(second.udp[0].len() + second.udp[1].len(), 3);
        for s in second.udp.iter().flatten() {
            assert_eq!(s.local_addr().unwrap(), udp);
        }
        assert_eq!(second.http[0].local_addr().unwrap(), http);
        assert_eq!(
            second.metrics.as_ref().unwrap().local_addr().unwrap(),
            metrics
        );
        // A datagram queued in the first run's sockets reaches the second run's.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"queued", udp).unwrap();
        drop(first);
        let mut got = 0;
        let mut buf = [0u8; 16];
        for s in second.udp.iter().flatten() {
            s.set_nonblocking(true).unwrap();
            if let Ok(n) = s.recv(&mut buf) {
                assert_eq!(&buf[..n], b"queued");
                got += 1;
            }
        }
        assert_eq!(got, 1);
    }

    #[test]
    fn more_workers_bind_more_sockets_into_the_inherited_group() {
        let c = config("\"127.0.0.1:0\"", "", "");
        let first = Sockets::open(&c, 1, Vec::new()).unwrap();
        let udp = first.udp[0][0].local_addr().unwrap();
        let second = Sockets::open(&c, 3, fds(&first)).unwrap();
        assert_eq!(second.inherited, 1);
        for w in &second.udp {
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].local_addr().unwrap(), udp);
        }
    }

    #[test]
    fn a_successor_steers_its_inherited_group_or_takes_the_steering_off() {
        let steered = config("\"127.0.0.1:0\"", "", "");
        let mut unsteered = steered.clone();
        unsteered.udp.steer_announces = false;
        let first = Sockets::open(&steered, 2, Vec::new()).unwrap();
        // A successor with steering on (3 workers now) keeps the group steered.
        let second = Sockets::open(&steered, 3, fds(&first)).unwrap();
        assert!(crate::steering::detach(&second.udp[0][0]).unwrap());
        crate::steering::attach(&second.udp[0][0], 3).unwrap();
        // One with it off, or with one worker, leaves none behind.
        for (config, workers) in [(&unsteered, 3), (&steered, 1)] {
            let next = Sockets::open(config, workers, fds(&second)).unwrap();
            assert!(!crate::steering::detach(&next.udp[0][0]).unwrap());
            crate::steering::attach(&second.udp[0][0], 3).unwrap();
        }
    }

    #[test]
    fn sockets_no_longer_configured_are_closed_and_new_ones_bound() {
        let c = config("\"127.0.0.1:0\"", "\"127.0.0.1:0\"", "");
        let first = Sockets::open(&c, 1, Vec::new()).unwrap();
        let old_http = first.http[0].local_addr().unwrap();
        // Only UDP now, on another address: nothing inherited fits.
        let other = config("\"127.0.0.2:0\"", "", "");
        let handed = fds(&first);
        drop(first);
        let second = Sockets::open(&other, 1, handed).unwrap();
        assert_eq!(second.inherited, 0);
        assert_eq!(
            second.udp[0][0].local_addr().unwrap().ip(),
            "127.0.0.2".parse::<std::net::IpAddr>().unwrap()
        );
        // The old listener was closed: its port refuses connections.
        assert!(std::net::TcpStream::connect(old_http).is_err());
    }

    #[test]
    fn a_port_another_process_serves_is_refused_unless_handed_over() {
        let c = config("\"127.0.0.1:0\"", "", "");
        let first = Sockets::open(&c, 2, Vec::new()).unwrap();
        let port = first.udp[0][0].local_addr().unwrap().port();
        let same = config(&format!("\"127.0.0.1:{port}\""), "", "");
        let e = Sockets::open(&same, 1, Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("already served by another process"),
            "{e:#}"
        );
        // Handed over, the same sockets are simply taken.
        let second = Sockets::open(&same, 1, fds(&first)).unwrap();
        assert_eq!(second.inherited, 2);
    }

    #[test]
    fn a_descriptor_that_is_no_socket_is_closed() {
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let c = config("", "", "");
        let s = Sockets::open(&c, 1, vec![("stored".into(), file)]).unwrap();
        assert_eq!(s.inherited, 0);
    }
}
