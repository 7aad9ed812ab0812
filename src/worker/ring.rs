//! A worker's I/O loop on io_uring. Every buffer, msghdr and address the kernel reads or writes
//! is allocated once at start-up and keeps its address until the ring is gone, so a packet costs
//! no allocation. Each socket keeps `recv_depth` receives in flight; replies go out through a
//! pool of `send_depth` send slots. Completions are reaped in batches and every submission of a
//! batch goes to the kernel in one `io_uring_enter`, so the syscall count is per batch, not per
//! packet. Besides packets the ring waits on the inbox's eventfd (forwarded work, shutdown) and a
//! one-second timeout (the clock for expiry sweeps).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use crate::stats::ErrorReason;

use super::handler::{Handler, Reply};
use super::inbox::Inbox;
use super::sockaddr;

/// Largest datagram read; a full 74-hash scrape is 1496 bytes.
const RECV_BUF_LEN: usize = 2048;

const RECV: u64 = 1;
const SEND: u64 = 2;
const WAKE: u64 = 3;
const TICK: u64 = 4;
const CANCEL: u64 = 5;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << 32) | index as u64
}

/// One in-flight message: the kernel reads or writes these fields in place.
struct Slot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    socket: u8,
}

/// Slots and their buffers; never resized, so the pointers inside stay valid.
struct Slots {
    slots: Box<[Slot]>,
    bufs: Box<[u8]>,
    buf_len: usize,
}

impl Slots {
    fn new(count: usize, buf_len: usize) -> Self {
        let mut bufs = vec![0u8; count * buf_len].into_boxed_slice();
        let mut slots: Box<[Slot]> = (0..count)
            .map(|_| Slot {
                // SAFETY: all-zero is a valid msghdr, iovec and sockaddr_storage.
                msg: unsafe { std::mem::zeroed() },
                iov: unsafe { std::mem::zeroed() },
                addr: unsafe { std::mem::zeroed() },
                socket: 0,
            })
            .collect();
        for (i, s) in slots.iter_mut().enumerate() {
            s.iov.iov_base = bufs[i * buf_len..].as_mut_ptr().cast();
            s.iov.iov_len = buf_len;
            s.msg.msg_iov = &mut s.iov;
            s.msg.msg_iovlen = 1;
            s.msg.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
        }
        Self {
            slots,
            bufs,
            buf_len,
        }
    }

    fn buf(&self, i: usize, len: usize) -> &[u8] {
        &self.bufs[i * self.buf_len..i * self.buf_len + len]
    }
}

pub struct RingLoop {
    // Declared first so it is dropped first: the kernel must be done with every slot before
    // the slots are freed (see `finish`).
    ring: IoUring,
    handler: Handler,
    inbox: Inbox,
    sockets: Vec<UdpSocket>,
    recv: Slots,
    send: Slots,
    free_send: Vec<u32>,
    /// When the request each send slot answers was received (µs since `epoch`), for latency.
    send_received_us: Box<[u64]>,
    wake_buf: Box<u64>,
    tick: Box<types::Timespec>,
    sqes: Vec<squeue::Entry>,
    cqes: Vec<(u64, i32)>,
    in_flight: usize,
    epoch: Instant,
    shutdown: Arc<AtomicBool>,
    sweep_every: u32,
    next_sweep: u32,
}

/// What a worker loop is given.
pub struct RingSetup {
    pub handler: Handler,
    pub inbox: Inbox,
    /// One per configured UDP address, in config order.
    pub sockets: Vec<UdpSocket>,
    pub recv_depth: usize,
    pub send_depth: usize,
    pub send_buf_len: usize,
    pub epoch: Instant,
    pub shutdown: Arc<AtomicBool>,
    pub sweep_every_secs: u32,
}

impl RingLoop {
    pub fn new(s: RingSetup) -> std::io::Result<Self> {
        let recv_count = s.recv_depth * s.sockets.len();
        let total = recv_count + s.send_depth + 4;
        let entries = (total as u32).next_power_of_two();
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        let mut recv = Slots::new(recv_count, RECV_BUF_LEN);
        for (i, slot) in recv.slots.iter_mut().enumerate() {
            slot.socket = (i / s.recv_depth) as u8;
        }
        let now = s.epoch.elapsed().as_secs() as u32;
        Ok(Self {
            ring,
            handler: s.handler,
            inbox: s.inbox,
            sockets: s.sockets,
            recv,
            send: Slots::new(s.send_depth, s.send_buf_len),
            free_send: (0..s.send_depth as u32).rev().collect(),
            send_received_us: vec![0; s.send_depth].into_boxed_slice(),
            wake_buf: Box::new(0),
            tick: Box::new(types::Timespec::new().sec(1)),
            sqes: Vec::with_capacity(total),
            cqes: Vec::with_capacity(entries as usize * 2),
            in_flight: 0,
            epoch: s.epoch,
            shutdown: s.shutdown,
            sweep_every: s.sweep_every_secs,
            next_sweep: now + s.sweep_every_secs,
        })
    }

    /// Serves until shutdown is signalled.
    pub fn run(mut self) -> std::io::Result<()> {
        for i in 0..self.recv.slots.len() {
            self.arm_recv(i);
        }
        self.arm_wake();
        self.arm_tick();
        self.publish_tick(self.epoch.elapsed().as_micros() as u64);
        while !self.shutdown.load(Ordering::Acquire) {
            self.submit_pending();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            self.reap();
        }
        self.finish();
        Ok(())
    }

    fn reap(&mut self) {
        self.cqes.clear();
        for cqe in self.ring.completion() {
            self.cqes.push((cqe.user_data(), cqe.result()));
        }
        self.in_flight -= self.cqes.len();
        // One clock read per batch: the receive time of every request in it.
        let batch_us = self.epoch.elapsed().as_micros() as u64;
        let now = (batch_us / 1_000_000) as u32;
        self.handler.received_us = batch_us;
        for k in 0..self.cqes.len() {
            let (data, result) = self.cqes[k];
            let index = (data & 0xffff_ffff) as usize;
            match data >> 32 {
                RECV => self.on_recv(now, index, result),
                SEND => {
                    let udp = &self.handler.stats.udp;
                    if result < 0 {
                        udp.error(ErrorReason::SendFailed);
                    } else {
                        udp.latency(batch_us.saturating_sub(self.send_received_us[index]));
                    }
                    self.free_send.push(index as u32);
                }
                WAKE => {
                    self.inbox.wake.rearm();
                    self.arm_wake();
                }
                TICK => {
                    if now >= self.next_sweep {
                        self.handler.shard.sweep(now);
                        self.next_sweep = now + self.sweep_every;
                    }
                    self.publish_tick(batch_us);
                    self.arm_tick();
                }
                _ => {}
            }
        }
        self.drain_inbox(now);
    }

    fn on_recv(&mut self, now: u32, i: usize, result: i32) {
        if result < 0 {
            if result != -libc::ECANCELED {
                self.handler.stats.udp.error(ErrorReason::ReceiveFailed);
            }
            self.arm_recv(i);
            return;
        }
        let slot = &self.recv.slots[i];
        let socket = slot.socket;
        let Some(client) = sockaddr::from_storage(&slot.addr) else {
            self.arm_recv(i);
            return;
        };
        let Some(s) = self.free_send.pop() else {
            self.handler.stats.udp.error(ErrorReason::SendBuffersFull);
            self.arm_recv(i);
            return;
        };
        let packet = self.recv.buf(i, result as usize);
        let at = s as usize * self.send.buf_len;
        let out = &mut self.send.bufs[at..at + self.send.buf_len];
        let len = self
            .handler
            .handle_datagram(now, client, socket, packet, out);
        self.arm_recv(i);
        let received_us = self.handler.received_us;
        self.send_or_free(
            s,
            Reply {
                client,
                socket,
                len,
            },
            received_us,
        );
    }

    /// Answers what other workers forwarded, while send slots last; the rest waits in the inbox.
    /// HTTP work answers through its own reply slot, not a send slot, so it is always drained.
    fn drain_inbox(&mut self, now: u32) {
        while let Ok(work) = self.inbox.http.try_recv() {
            self.handler.http_work(now, work);
        }
        while let Some(&s) = self.free_send.last() {
            let at = s as usize * self.send.buf_len;
            let out = &mut self.send.bufs[at..at + self.send.buf_len];
            let (reply, received_us) = if let Ok(m) = self.inbox.announces.try_recv() {
                let reply = self.handler.forwarded_announce(now, &m, out);
                (Some(reply), m.received_us)
            } else if let Ok(chain) = self.inbox.scrapes.try_recv() {
                let received_us = chain.received_us;
                (self.handler.scrape_leg(chain, out), received_us)
            } else {
                return;
            };
            self.free_send.pop();
            match reply {
                Some(reply) => self.send_or_free(s, reply, received_us),
                None => self.free_send.push(s),
            }
        }
    }

    /// Publishes what the stats thread reads once a second: the heartbeat `/health` checks and
    /// the shard's size (kept incrementally by the shard, so this costs nothing to compute).
    fn publish_tick(&self, batch_us: u64) {
        let stats = &self.handler.stats;
        let totals = self.handler.shard.totals();
        stats.torrents.set(totals.torrents as u64);
        stats.seeders.set(totals.seeders as u64);
        stats.leechers.set(totals.leechers as u64);
        stats.heartbeat_ms.set(batch_us / 1000);
    }

    fn send_or_free(&mut self, s: u32, reply: Reply, received_us: u64) {
        if reply.len == 0 {
            self.free_send.push(s);
            return;
        }
        self.send_received_us[s as usize] = received_us;
        let slot = &mut self.send.slots[s as usize];
        slot.msg.msg_namelen = sockaddr::to_storage(reply.client, &mut slot.addr);
        slot.iov.iov_len = reply.len;
        let fd = self.sockets[reply.socket as usize].as_raw_fd();
        let sqe = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
            .build()
            .user_data(user_data(SEND, s as usize));
        self.sqes.push(sqe);
    }

    fn arm_recv(&mut self, i: usize) {
        let slot = &mut self.recv.slots[i];
        slot.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        slot.msg.msg_flags = 0;
        slot.iov.iov_len = self.recv.buf_len;
        let fd = self.sockets[slot.socket as usize].as_raw_fd();
        let sqe = opcode::RecvMsg::new(types::Fd(fd), &mut slot.msg)
            .build()
            .user_data(user_data(RECV, i));
        self.sqes.push(sqe);
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.inbox.wake.raw_fd()), buf.cast(), 8)
            .build()
            .user_data(user_data(WAKE, 0));
        self.sqes.push(sqe);
    }

    fn arm_tick(&mut self) {
        let sqe = opcode::Timeout::new(&*self.tick)
            .build()
            .user_data(user_data(TICK, 0));
        self.sqes.push(sqe);
    }

    fn submit_pending(&mut self) {
        if self.sqes.is_empty() {
            return;
        }
        // SAFETY: every entry points into slots owned by `self`, which outlive the ring's use
        // of them (`finish`); the ring was sized for every slot in flight at once, so it has room.
        unsafe {
            self.ring
                .submission()
                .push_multiple(&self.sqes)
                .expect("ring sized for every slot");
        }
        self.in_flight += self.sqes.len();
        self.sqes.clear();
    }

    /// Cancels everything in flight and waits, boundedly, for the kernel to let go of the slots.
    /// If it does not in time, the slots are leaked rather than freed under the kernel.
    fn finish(&mut self) {
        self.submit_pending();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(CANCEL, 0));
        // SAFETY: the cancel entry refers to no memory.
        let pushed = unsafe { self.ring.submission().push(&cancel).is_ok() };
        if pushed {
            self.in_flight += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let wait = types::Timespec::new().nsec(50_000_000);
        while self.in_flight > 0 && Instant::now() < deadline {
            let args = types::SubmitArgs::new().timespec(&wait);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let n = self.ring.completion().count();
            self.in_flight -= n;
        }
        if self.in_flight > 0 {
            tracing::warn!(
                worker = self.handler.me,
                in_flight = self.in_flight,
                "io_uring operations still in flight at shutdown; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.recv.bufs));
            std::mem::forget(std::mem::take(&mut self.send.bufs));
            std::mem::forget(std::mem::take(&mut self.recv.slots));
            std::mem::forget(std::mem::take(&mut self.send.slots));
        }
    }
}
