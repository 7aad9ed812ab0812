//! A worker's I/O loop on epoll, for hosts where io_uring cannot be set up (an old kernel, a
//! container whose seccomp profile forbids it). It serves exactly as the io_uring loop does, with
//! the same `Handler` and the same inbox: readable sockets are read in batches with `recvmmsg`,
//! replies are gathered and sent in batches with `sendmmsg`, so the syscall count is per batch,
//! not per packet. Every header, address and buffer is allocated once at start-up. Besides the
//! sockets, epoll waits on the inbox's eventfd (forwarded work, shutdown), and its timeout is the
//! one-second clock for expiry sweeps and the heartbeat.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::stats::ErrorReason;

use super::handler::{Handler, Reply};
use super::sockaddr;
use super::LoopSetup;
use crate::mesh::Inbox;

/// Bytes per receive buffer: the largest BEP 15 request (a 74-hash scrape) is 1496 bytes.
const RECV_BUF_LEN: usize = 2048;
/// The epoll token of the inbox's eventfd; sockets use their index.
const WAKE: u64 = u64::MAX;
/// Receive batches taken from one socket per wake-up before the others get a turn.
const BATCHES_PER_WAKE: usize = 4;

/// A reply waiting for the next `sendmmsg`.
#[derive(Clone, Copy)]
struct Pending {
    slot: u32,
    socket: u8,
    len: u32,
    client: SocketAddr,
}

pub struct EpollLoop {
    epoll: OwnedFd,
    handler: Handler,
    inbox: Inbox,
    sockets: Vec<UdpSocket>,
    events: Box<[libc::epoll_event]>,
    // Receive batch: headers, their one iovec each, the senders' addresses, the datagrams.
    recv_msgs: Box<[libc::mmsghdr]>,
    recv_iovs: Box<[libc::iovec]>,
    recv_names: Box<[libc::sockaddr_storage]>,
    recv_bufs: Box<[u8]>,
    // Send slots: a reply buffer, its destination and its request's receive time each.
    send_bufs: Box<[u8]>,
    send_buf_len: usize,
    send_addrs: Box<[libc::sockaddr_storage]>,
    received_us: Box<[u64]>,
    free: Vec<u32>,
    pending: Vec<Pending>,
    // Send batch, rebuilt per socket at each flush.
    send_msgs: Box<[libc::mmsghdr]>,
    send_iovs: Box<[libc::iovec]>,
    send_order: Box<[u32]>,
    epoch: Instant,
    shutdown: Arc<AtomicBool>,
    next_tick_us: u64,
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl EpollLoop {
    pub fn new(s: LoopSetup) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let epoll =
            unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let add = |fd: i32, token: u64| {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: both fds are open; `ev` is read during the call only.
            check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
        };
        for (i, socket) in s.sockets.iter().enumerate() {
            add(socket.as_raw_fd(), i as u64)?;
        }
        add(s.inbox.wake.raw_fd(), WAKE)?;

        let batch = s.recv_depth.clamp(1, 1024);
        // SAFETY (all `zeroed` below): all-zero is a valid value of these plain C structs.
        let zero_msg = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let zero_iov = || libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let zero_addr = || unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        let mut this = Self {
            epoll,
            handler: s.handler,
            inbox: s.inbox,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; s.sockets.len() + 1]
                .into_boxed_slice(),
            sockets: s.sockets,
            recv_msgs: (0..batch).map(|_| zero_msg()).collect(),
            recv_iovs: (0..batch).map(|_| zero_iov()).collect(),
            recv_names: (0..batch).map(|_| zero_addr()).collect(),
            recv_bufs: vec![0u8; batch * RECV_BUF_LEN].into_boxed_slice(),
            send_bufs: vec![0u8; s.send_depth * s.send_buf_len].into_boxed_slice(),
            send_buf_len: s.send_buf_len,
            send_addrs: (0..s.send_depth).map(|_| zero_addr()).collect(),
            received_us: vec![0; s.send_depth].into_boxed_slice(),
            free: (0..s.send_depth as u32).rev().collect(),
            pending: Vec::with_capacity(s.send_depth),
            send_msgs: (0..s.send_depth).map(|_| zero_msg()).collect(),
            send_iovs: (0..s.send_depth).map(|_| zero_iov()).collect(),
            send_order: vec![0; s.send_depth].into_boxed_slice(),
            epoch: s.epoch,
            shutdown: s.shutdown,
            next_tick_us: 0,
        };
        // The receive headers point into boxed slices that never move or resize.
        for k in 0..batch {
            this.recv_iovs[k] = libc::iovec {
                iov_base: this.recv_bufs[k * RECV_BUF_LEN..].as_mut_ptr().cast(),
                iov_len: RECV_BUF_LEN,
            };
            let hdr = &mut this.recv_msgs[k].msg_hdr;
            hdr.msg_name = (&mut this.recv_names[k] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut this.recv_iovs[k];
            hdr.msg_iovlen = 1;
        }
        Ok(this)
    }

    /// Serves until shutdown is signalled, then sends the replies already made.
    pub fn run(mut self) -> std::io::Result<()> {
        let start_us = self.epoch.elapsed().as_micros() as u64;
        self.tick(start_us);
        while !self.shutdown.load(Ordering::Acquire) {
            let until_tick_us = self
                .next_tick_us
                .saturating_sub(self.epoch.elapsed().as_micros() as u64);
            let timeout_ms = until_tick_us.div_ceil(1000).min(1000) as i32;
            // SAFETY: `events` is valid for its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    self.events.len() as i32,
                    timeout_ms,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            // One clock read per wake-up: the receive time of every request it reads.
            let batch_us = self.epoch.elapsed().as_micros() as u64;
            let now = (batch_us / 1_000_000) as u32;
            self.handler.received_us = batch_us;
            for k in 0..n as usize {
                match self.events[k].u64 {
                    WAKE => self.take_wake(),
                    socket => self.receive(now, socket as usize),
                }
            }
            self.drain_inbox(now);
            self.flush();
            if batch_us >= self.next_tick_us {
                self.tick(batch_us);
            }
        }
        // Shutdown: what other workers forwarded is answered, whatever was answered goes out;
        // nothing new is read.
        let now = (self.epoch.elapsed().as_secs()) as u32;
        self.drain_inbox(now);
        self.flush();
        // Last, so the final snapshot holds every announce answered.
        self.handler.stop(now);
        Ok(())
    }

    /// Resets the inbox's eventfd; the drain that follows sees everything sent before.
    fn take_wake(&mut self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into `value`. Epoll said the counter is non-zero, so the read
        // (on a blocking eventfd) returns at once.
        unsafe { libc::read(self.inbox.wake.raw_fd(), (&mut value as *mut u64).cast(), 8) };
        self.inbox.wake.rearm();
    }

    /// Reads and answers batches of datagrams from one readable socket.
    fn receive(&mut self, now: u32, socket: usize) {
        let fd = self.sockets[socket].as_raw_fd();
        let batch = self.recv_msgs.len();
        for _ in 0..BATCHES_PER_WAKE {
            for m in self.recv_msgs.iter_mut() {
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                m.msg_hdr.msg_flags = 0;
            }
            // SAFETY: every header points at its own iovec, buffer and address, all alive.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.recv_msgs.as_mut_ptr(),
                    batch as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error().raw_os_error();
                if e != Some(libc::EAGAIN) && e != Some(libc::EINTR) {
                    self.handler.stats.udp.error(ErrorReason::ReceiveFailed);
                }
                return;
            }
            let got = r as usize;
            for k in 0..got {
                let len = (self.recv_msgs[k].msg_len as usize).min(RECV_BUF_LEN);
                let at = k * RECV_BUF_LEN;
                self.handler.prefetch(&self.recv_bufs[at..at + len]);
            }
            for k in 0..got {
                self.answer(now, socket as u8, k);
            }
            if got < batch {
                return;
            }
        }
    }

    /// Hands received datagram `k` to the handler and queues its reply.
    fn answer(&mut self, now: u32, socket: u8, k: usize) {
        let Some(client) = sockaddr::from_storage(&self.recv_names[k]) else {
            return;
        };
        let len = (self.recv_msgs[k].msg_len as usize).min(RECV_BUF_LEN);
        if self.recv_msgs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            // Longer than a receive buffer, so longer than any tracker request: what was read
            // is only its start, and answering that as if it were whole would be wrong. The
            // bytes counted are those read, as the io_uring loop (which cannot learn the real
            // length) counts them.
            let udp = &self.handler.stats.udp;
            udp.received(len);
            udp.error(ErrorReason::NotTracker);
            return;
        }
        if self.free.is_empty() {
            self.flush();
        }
        let Some(slot) = self.free.pop() else {
            self.handler.stats.udp.error(ErrorReason::SendBuffersFull);
            return;
        };
        let packet = &self.recv_bufs[k * RECV_BUF_LEN..k * RECV_BUF_LEN + len];
        let at = slot as usize * self.send_buf_len;
        let out = &mut self.send_bufs[at..at + self.send_buf_len];
        let len = self
            .handler
            .handle_datagram(now, client, socket, packet, out);
        let received_us = self.handler.received_us;
        self.queue(
            slot,
            Reply {
                client,
                socket,
                len,
            },
            received_us,
        );
    }

    /// Answers everything other workers and the HTTP frontend forwarded.
    fn drain_inbox(&mut self, now: u32) {
        self.handler.drain_http(&self.inbox, now);
        loop {
            if self.free.is_empty() {
                self.flush();
            }
            let Some(slot) = self.free.pop() else {
                return;
            };
            let at = slot as usize * self.send_buf_len;
            let out = &mut self.send_bufs[at..at + self.send_buf_len];
            let Some((reply, received_us)) = self.handler.next_forwarded(&self.inbox, now, out)
            else {
                self.free.push(slot);
                return;
            };
            match reply {
                Some(reply) => self.queue(slot, reply, received_us),
                None => self.free.push(slot),
            }
        }
    }

    fn queue(&mut self, slot: u32, reply: Reply, received_us: u64) {
        if reply.len == 0 {
            self.free.push(slot);
            return;
        }
        self.received_us[slot as usize] = received_us;
        self.pending.push(Pending {
            slot,
            socket: reply.socket,
            len: reply.len as u32,
            client: reply.client,
        });
    }

    /// Sends every queued reply, one `sendmmsg` batch per socket, and frees their slots.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let sent_us = self.epoch.elapsed().as_micros() as u64;
        for socket in 0..self.sockets.len() {
            let mut m = 0;
            for p in self.pending.iter().filter(|p| p.socket as usize == socket) {
                let slot = p.slot as usize;
                let addr = &mut self.send_addrs[slot];
                let addr_len = sockaddr::to_storage(p.client, addr);
                self.send_iovs[m] = libc::iovec {
                    iov_base: self.send_bufs[slot * self.send_buf_len..]
                        .as_mut_ptr()
                        .cast(),
                    iov_len: p.len as usize,
                };
                let hdr = &mut self.send_msgs[m].msg_hdr;
                hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = addr_len;
                hdr.msg_iov = &mut self.send_iovs[m];
                hdr.msg_iovlen = 1;
                self.send_order[m] = p.slot;
                m += 1;
            }
            let fd = self.sockets[socket].as_raw_fd();
            let mut i = 0;
            while i < m {
                // SAFETY: headers i..m point at live iovecs, buffers and addresses.
                let r = unsafe {
                    libc::sendmmsg(fd, self.send_msgs[i..].as_mut_ptr(), (m - i) as u32, 0)
                };
                let udp = &self.handler.stats.udp;
                if r < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    // This one datagram was refused (e.g. an unreachable address): skip it.
                    udp.error(ErrorReason::SendFailed);
                    i += 1;
                    continue;
                }
                for j in i..i + r as usize {
                    let received = self.received_us[self.send_order[j] as usize];
                    udp.latency(sent_us.saturating_sub(received));
                }
                i += r as usize;
            }
        }
        for p in self.pending.drain(..) {
            self.free.push(p.slot);
        }
    }

    /// The handler's duties (sweep, snapshot slices, gauges, heartbeat), when it asks.
    fn tick(&mut self, batch_us: u64) {
        self.next_tick_us = batch_us + self.handler.tick(batch_us);
    }
}
