//! A worker's I/O loop on io_uring. Every buffer and address the kernel reads or writes is
//! allocated once at start-up and keeps its address until the ring is gone, so a packet costs no
//! allocation. Each socket has one multishot receive drawing from a ring of provided buffers
//! (`buf_ring`), so receiving needs no re-arming per datagram; replies go out as sends with a
//! destination address, from a pool of `send_depth` send slots. Completions are reaped in
//! batches and every submission of a batch goes to the kernel in one `io_uring_enter`, so the
//! syscall count is per batch, not per packet. Besides packets the ring waits on the inbox's
//! eventfd (forwarded work, shutdown) and a one-second timeout (the clock for expiry sweeps).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::stats::ErrorReason;

use super::buf_ring::BufRing;
use super::handler::{Handler, Reply};
use super::sockaddr;
use super::LoopSetup;
use crate::mesh::Inbox;

/// Bytes per receive buffer: the kernel's recvmsg header, the sender's address, and the
/// datagram (a full 74-hash scrape is 1496 bytes).
const RECV_BUF_LEN: usize = 2048;
/// Room for the sender's address in each receive buffer: a sockaddr_in6 (IPv4 fits too).
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;

const RECV: u64 = 1;
const SEND: u64 = 2;
const WAKE: u64 = 3;
const TICK: u64 = 4;
const CANCEL: u64 = 5;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << 32) | index as u64
}

/// Builds the ring with the cheapest completion mode the kernel offers: with DEFER_TASKRUN
/// (Linux 6.1) completions are run only when this thread asks for them, in a batch, instead of
/// interrupting it per packet; COOP_TASKRUN (5.19) at least avoids the interrupts.
fn build_ring(sq: u32, cq: u32) -> std::io::Result<IoUring> {
    let deferred = IoUring::builder()
        .setup_cqsize(cq)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(sq);
    if let Ok(ring) = deferred {
        return Ok(ring);
    }
    let cooperative = IoUring::builder()
        .setup_cqsize(cq)
        .setup_coop_taskrun()
        .build(sq);
    if let Ok(ring) = cooperative {
        return Ok(ring);
    }
    IoUring::builder().setup_cqsize(cq).build(sq)
}

/// Send slots: a reply buffer and its destination each, never resized.
struct SendSlots {
    addrs: Box<[(libc::sockaddr_storage, libc::socklen_t)]>,
    /// When the request each slot answers was received (µs since `epoch`), for latency.
    received_us: Box<[u64]>,
    bufs: Box<[u8]>,
    buf_len: usize,
    free: Vec<u32>,
}

impl SendSlots {
    fn new(count: usize, buf_len: usize) -> Self {
        Self {
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: (0..count)
                .map(|_| (unsafe { std::mem::zeroed() }, 0))
                .collect(),
            received_us: vec![0; count].into_boxed_slice(),
            bufs: vec![0u8; count * buf_len].into_boxed_slice(),
            buf_len,
            free: (0..count as u32).rev().collect(),
        }
    }

    fn buf_mut(&mut self, s: u32) -> &mut [u8] {
        let at = s as usize * self.buf_len;
        &mut self.bufs[at..at + self.buf_len]
    }
}

pub struct RingLoop {
    // Declared first so it is dropped first: the kernel must be done with every buffer before
    // the buffers are freed (see `finish`).
    ring: IoUring,
    handler: Handler,
    inbox: Inbox,
    sockets: Vec<UdpSocket>,
    /// The multishot receives' template: only its name and control lengths are read.
    recv_msg: Box<libc::msghdr>,
    recv_bufs: BufRing,
    send: SendSlots,
    wake_buf: Box<u64>,
    tick: Box<types::Timespec>,
    sqes: Vec<squeue::Entry>,
    cqes: Vec<(u64, i32, u32)>,
    in_flight: usize,
    epoch: Instant,
    shutdown: Arc<AtomicBool>,
}

impl RingLoop {
    pub fn new(s: LoopSetup) -> std::io::Result<Self> {
        let buffers = (s.recv_depth * s.sockets.len().max(1))
            .next_power_of_two()
            .clamp(16, 32768);
        let sq = (s.sockets.len() + s.send_depth + 8).next_power_of_two() as u32;
        // Every completion holds a receive buffer or a send slot or is one of the few others,
        // so the completion queue cannot overflow.
        let cq = (buffers + s.send_depth + 8).next_power_of_two() as u32;
        let ring = build_ring(sq, cq)?;
        let recv_bufs = BufRing::new(buffers as u16, RECV_BUF_LEN, 0)?;
        recv_bufs.register(&ring.submitter())?;
        // SAFETY: all-zero is a valid msghdr.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN;
        Ok(Self {
            ring,
            handler: s.handler,
            inbox: s.inbox,
            sockets: s.sockets,
            recv_msg,
            recv_bufs,
            send: SendSlots::new(s.send_depth, s.send_buf_len),
            wake_buf: Box::new(0),
            tick: Box::new(types::Timespec::new().sec(1)),
            sqes: Vec::with_capacity(sq as usize),
            cqes: Vec::with_capacity(cq as usize),
            in_flight: 0,
            epoch: s.epoch,
            shutdown: s.shutdown,
        })
    }

    /// Serves until shutdown is signalled.
    pub fn run(mut self) -> std::io::Result<()> {
        for socket in 0..self.sockets.len() {
            self.arm_recv(socket);
        }
        self.arm_wake();
        let next = self.handler.tick(self.epoch.elapsed().as_micros() as u64);
        self.arm_tick(next);
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
        // Shutdown: what other workers forwarded is answered too; `finish` sends it all before
        // cancelling the receives.
        let now = self.epoch.elapsed().as_secs() as u32;
        self.drain_inbox(now);
        self.finish();
        // Last, so the final snapshot holds every announce answered.
        self.handler.stop(now);
        Ok(())
    }

    fn reap(&mut self) {
        self.cqes.clear();
        for cqe in self.ring.completion() {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        for &(data, result, flags) in &self.cqes {
            if data >> 32 == RECV && result >= 0 {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let buf = self.recv_bufs.buf(bid, result as usize);
                    if let Ok(msg) = types::RecvMsgOut::parse(buf, &self.recv_msg) {
                        self.handler.prefetch(msg.payload_data());
                    }
                }
            }
        }
        // One clock read per batch: the receive time of every request in it.
        let batch_us = self.epoch.elapsed().as_micros() as u64;
        let now = (batch_us / 1_000_000) as u32;
        self.handler.received_us = batch_us;
        for k in 0..self.cqes.len() {
            let (data, result, flags) = self.cqes[k];
            if !cqueue::more(flags) {
                self.in_flight -= 1;
            }
            let index = (data & 0xffff_ffff) as usize;
            match data >> 32 {
                RECV => self.on_recv(now, index, result, flags),
                SEND => {
                    let udp = &self.handler.stats.udp;
                    if result < 0 {
                        udp.error(ErrorReason::SendFailed);
                    } else {
                        udp.latency(batch_us.saturating_sub(self.send.received_us[index]));
                    }
                    self.send.free.push(index as u32);
                }
                WAKE => {
                    self.inbox.wake.rearm();
                    self.arm_wake();
                }
                TICK => {
                    let next = self.handler.tick(batch_us);
                    self.arm_tick(next);
                }
                _ => {}
            }
        }
        self.drain_inbox(now);
        self.recv_bufs.publish();
    }

    fn on_recv(&mut self, now: u32, socket: usize, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            // The multishot receive ended (no buffer was free, or an error): start another;
            // it goes in after this batch has handed its buffers back.
            self.arm_recv(socket);
        }
        if result < 0 {
            if result == -libc::ENOBUFS {
                self.handler
                    .stats
                    .udp
                    .error(ErrorReason::ReceiveBuffersFull);
            } else if result != -libc::ECANCELED {
                self.handler.stats.udp.error(ErrorReason::ReceiveFailed);
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        self.handle_buffer(now, socket as u8, bid, result as usize);
        self.recv_bufs.recycle(bid);
    }

    fn handle_buffer(&mut self, now: u32, socket: u8, bid: u16, len: usize) {
        let data = self.recv_bufs.buf(bid, len);
        let Ok(msg) = types::RecvMsgOut::parse(data, &self.recv_msg) else {
            return;
        };
        let Some(client) = name_to_addr(msg.name_data()) else {
            return;
        };
        if msg.is_payload_truncated() {
            // Longer than a receive buffer, so longer than any tracker request: the payload is
            // only its start, and answering that as if it were whole would be wrong.
            let udp = &self.handler.stats.udp;
            udp.received(msg.payload_data().len());
            udp.error(ErrorReason::NotTracker);
            return;
        }
        let Some(s) = self.send.free.pop() else {
            self.handler.stats.udp.error(ErrorReason::SendBuffersFull);
            return;
        };
        let at = s as usize * self.send.buf_len;
        let out = &mut self.send.bufs[at..at + self.send.buf_len];
        let len = self
            .handler
            .handle_datagram(now, client, socket, msg.payload_data(), out);
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
        self.handler.drain_http(&self.inbox, now);
        while let Some(&s) = self.send.free.last() {
            let out = self.send.buf_mut(s);
            let Some((reply, received_us)) = self.handler.next_forwarded(&self.inbox, now, out)
            else {
                return;
            };
            self.send.free.pop();
            match reply {
                Some(reply) => self.send_or_free(s, reply, received_us),
                None => self.send.free.push(s),
            }
        }
    }

    fn send_or_free(&mut self, s: u32, reply: Reply, received_us: u64) {
        if reply.len == 0 {
            self.send.free.push(s);
            return;
        }
        self.send.received_us[s as usize] = received_us;
        let (addr, addr_len) = &mut self.send.addrs[s as usize];
        *addr_len = sockaddr::to_storage(reply.client, addr);
        let buf = self.send.bufs[s as usize * self.send.buf_len..].as_ptr();
        let fd = self.sockets[reply.socket as usize].as_raw_fd();
        let sqe = opcode::Send::new(types::Fd(fd), buf, reply.len as u32)
            .dest_addr((addr as *const libc::sockaddr_storage).cast())
            .dest_addr_len(*addr_len)
            .build()
            .user_data(user_data(SEND, s as usize));
        self.sqes.push(sqe);
    }

    fn arm_recv(&mut self, socket: usize) {
        let fd = self.sockets[socket].as_raw_fd();
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, self.recv_bufs.group)
            .build()
            .user_data(user_data(RECV, socket));
        self.sqes.push(sqe);
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.inbox.wake.raw_fd()), buf.cast(), 8)
            .build()
            .user_data(user_data(WAKE, 0));
        self.sqes.push(sqe);
    }

    fn arm_tick(&mut self, after_us: u64) {
        // The kernel copies the timespec when the entry is submitted; one tick is armed at a time.
        *self.tick = types::Timespec::new()
            .sec(after_us / 1_000_000)
            .nsec((after_us % 1_000_000) as u32 * 1000);
        let sqe = opcode::Timeout::new(&*self.tick)
            .build()
            .user_data(user_data(TICK, 0));
        self.sqes.push(sqe);
    }

    fn submit_pending(&mut self) {
        if self.sqes.is_empty() {
            return;
        }
        // SAFETY: every entry points into buffers owned by `self`, which outlive the ring's use
        // of them (`finish`); the ring was sized for every operation in flight at once.
        unsafe {
            self.ring
                .submission()
                .push_multiple(&self.sqes)
                .expect("ring sized for every operation");
        }
        self.in_flight += self.sqes.len();
        self.sqes.clear();
    }

    /// Cancels everything in flight and waits, boundedly, for the kernel to let go of the
    /// buffers. If it does not in time, they are leaked rather than freed under the kernel.
    fn finish(&mut self) {
        self.submit_pending();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(CANCEL, 0));
        // SAFETY: the cancel entry refers to no memory.
        if unsafe { self.ring.submission().push(&cancel).is_ok() } {
            self.in_flight += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let wait = types::Timespec::new().nsec(50_000_000);
        while self.in_flight > 0 && Instant::now() < deadline {
            let args = types::SubmitArgs::new().timespec(&wait);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
            }
        }
        if self.in_flight > 0 {
            tracing::warn!(
                worker = self.handler.me,
                in_flight = self.in_flight,
                "io_uring operations still in flight at shutdown; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.send.bufs));
            self.recv_bufs.leak();
        }
    }
}

/// The sender's address from the name field of a receive buffer.
fn name_to_addr(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage; the name is at most NAME_LEN bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = name
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are valid for n bytes and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    sockaddr::from_storage(&storage)
}
