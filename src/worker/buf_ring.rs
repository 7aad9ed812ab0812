//! A provided-buffer ring (io_uring "pbuf ring"): a pool of receive buffers the kernel picks
//! from, so one multishot receive per socket serves every datagram without being re-armed and
//! without a buffer being tied up in a pending receive. The kernel takes buffers from the head;
//! the worker hands them back at the tail once a datagram has been handled, publishing the new
//! tail once per batch.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

pub struct BufRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    mask: u16,
    /// Tail as the worker has written it; published to the kernel by `publish`.
    tail: u16,
    bufs: Box<[u8]>,
    buf_len: usize,
    pub group: u16,
    /// Set when the kernel may still hold buffers at drop: then nothing is freed.
    leaked: bool,
}

impl BufRing {
    /// `count` buffers (a power of two, at most 32768) of `buf_len` bytes, all given to the kernel.
    pub fn new(count: u16, buf_len: usize, group: u16) -> std::io::Result<Self> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(std::io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(std::io::Error::other("out of memory for the buffer ring"));
        }
        let mut ring = Self {
            entries,
            layout,
            mask: count - 1,
            tail: 0,
            bufs: vec![0u8; count as usize * buf_len].into_boxed_slice(),
            buf_len,
            group,
            leaked: false,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with an io_uring.
    pub fn register(&self, submitter: &Submitter<'_>) -> std::io::Result<()> {
        // SAFETY: the entries stay allocated until `self` is dropped, which the owner does only
        // after the io_uring is closed.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries as u64,
                self.mask + 1,
                self.group,
                0,
            )
        }
    }

    /// The buffer the kernel filled for `bid`, `len` bytes long.
    pub fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let at = bid as usize * self.buf_len;
        &self.bufs[at..at + len.min(self.buf_len)]
    }

    /// Gives buffer `bid` back to the kernel (seen once `publish` runs).
    pub fn recycle(&mut self, bid: u16) {
        let addr = self.bufs[bid as usize * self.buf_len..].as_ptr() as u64;
        // SAFETY: the index is masked into the allocation.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        entry.set_addr(addr);
        entry.set_len(self.buf_len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field lives in the first entry, which is allocated and aligned for
        // a u16; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl BufRing {
    /// Gives up the memory for good: for a shutdown where the kernel did not confirm it was done.
    pub fn leak(&mut self) {
        self.leaked = true;
        std::mem::forget(std::mem::take(&mut self.bufs));
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.entries.cast(), self.layout) };
        }
    }
}
