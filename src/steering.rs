//! Announce steering: a classic BPF program on each UDP SO_REUSEPORT group that has the kernel
//! deliver a BEP 15 announce straight to the socket of the worker owning its info hash, so the
//! worker that receives it answers it rather than forwarding it over a channel (a wake-up, a
//! copy and a second worker's cache misses). Connects and scrapes keep the kernel's hash spread.
//!
//! The program picks the group's socket by index, and the kernel numbers a group's sockets in
//! the order they joined it: `sockets` binds (and a successor inherits) worker 0's first, then
//! worker 1's, so index `i` is worker `i`. Nothing depends on it for correctness: an announce
//! that lands elsewhere (a group whose order differs, a kernel without the program) is
//! forwarded as before, and counted, which is how an operator sees steering fail.
//!
//! `SO_ATTACH_REUSEPORT_CBPF` needs no privileges. The program's choice must be the owner that
//! [`crate::mesh::shard_of`] computes, which is why that function is plain 32-bit arithmetic
//! on the hash's first four bytes, the most classic BPF can do.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` and `SO_DETACH_REUSEPORT_BPF` of asm-generic/socket.h (libc
/// does not define them for Linux), on the architectures known to number them so; elsewhere
/// steering is unavailable.
const OPTIONS: Option<(libc::c_int, libc::c_int)> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)) {
    Some((51, 68))
} else {
    None
};

/// BEP 15: an announce is at least 98 bytes, its action (1) at offset 8, its info hash at 16.
const ANNOUNCE_LEN: u32 = 98;
const ACTION_AT: u32 = 8;
const ACTION_ANNOUNCE: u32 = 1;
const INFO_HASH_AT: u32 = 16;
/// A socket index past any group's end: the kernel then picks by its usual hash.
const KERNEL_CHOICE: u32 = u32::MAX;

fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The program for `workers` workers. It sees the datagram from its UDP payload on: anything
/// shorter than an announce, or not one, is left to the kernel.
fn program(workers: u32) -> [libc::sock_filter; 8] {
    use libc::{BPF_A, BPF_RET, BPF_W};
    use libc::{BPF_ABS, BPF_ALU, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LEN, BPF_MOD};
    [
        op(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        op(BPF_JMP | BPF_JGE | BPF_K, 0, 5, ANNOUNCE_LEN),
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, ACTION_AT),
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, ACTION_ANNOUNCE),
        // Network order, as `shard_of` reads it.
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, INFO_HASH_AT),
        op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers),
        op(BPF_RET | BPF_A, 0, 0, 0),
        op(BPF_RET | BPF_K, 0, 0, KERNEL_CHOICE),
    ]
}

/// Attaches the steering program for `workers` workers to the reuseport group `socket` is in.
/// Replaces any program a predecessor attached (its worker count may differ).
pub fn attach(socket: &UdpSocket, workers: usize) -> std::io::Result<()> {
    let workers = u32::try_from(workers).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    if workers == 0 {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let (attach, _) = OPTIONS.ok_or(std::io::ErrorKind::Unsupported)?;
    let code = program(workers);
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // The kernel copies the program: `code` need only outlive the call.
    set(socket, attach, &prog)
}

/// Removes the steering program from the group `socket` is in, so a group a predecessor
/// steered is spread by the kernel again; whether there was one.
pub fn detach(socket: &UdpSocket) -> std::io::Result<bool> {
    let Some((_, detach)) = OPTIONS else {
        return Ok(false); // never attached here
    };
    match set(socket, detach, &0 as &libc::c_int) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn set<T>(socket: &UdpSocket, name: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed, read by the kernel during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program as the kernel would on `payload` (the subset of classic BPF it uses).
    fn run(code: &[libc::sock_filter], payload: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = code[pc];
            pc += 1;
            let code = u32::from(i.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_LEN => a = payload.len() as u32,
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let at = i.k as usize;
                    let Some(w) = payload.get(at..at + 4) else {
                        return 0; // the kernel's answer to a load past the end
                    };
                    a = u32::from_be_bytes(w.try_into().unwrap());
                }
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                    pc += usize::from(if a >= i.k { i.jt } else { i.jf });
                }
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= i.k,
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    fn announce(info_hash: [u8; 20]) -> Vec<u8> {
        let mut p = vec![0u8; 98];
        p[..8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        p[8..12].copy_from_slice(&1u32.to_be_bytes());
        p[16..36].copy_from_slice(&info_hash);
        p
    }

    #[test]
    fn an_announce_goes_to_the_worker_owning_its_hash() {
        for workers in [1, 2, 3, 7, 64] {
            let code = program(workers);
            for n in 0..2000u32 {
                let mut h = [n as u8; 20];
                h[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
                let owner = crate::mesh::shard_of(&h, workers as usize);
                assert_eq!(
                    run(&code, &announce(h)) as usize,
                    owner,
                    "{workers} workers"
                );
                // BEP 15 allows more after the fixed part (BEP 41 options).
                let mut long = announce(h);
                long.extend_from_slice(&[2, 9, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c']);
                assert_eq!(run(&code, &long) as usize, owner);
            }
        }
    }

    #[test]
    fn everything_else_is_left_to_the_kernel() {
        let code = program(4);
        let mut connect = vec![0u8; 16];
        connect[..8].copy_from_slice(&0x41727101980u64.to_be_bytes());
        assert_eq!(run(&code, &connect), KERNEL_CHOICE);
        let mut scrape = announce([9; 20]);
        scrape[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(run(&code, &scrape), KERNEL_CHOICE);
        // A truncated announce is no announce: it must not all land on socket 0.
        assert_eq!(run(&code, &announce([9; 20])[..97]), KERNEL_CHOICE);
        assert_eq!(run(&code, &[]), KERNEL_CHOICE);
    }

    #[test]
    fn the_kernel_takes_the_program_and_gives_it_back() {
        let a = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        a.set_reuse_port(true).unwrap();
        a.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let a: UdpSocket = a.into();
        assert!(!detach(&a).unwrap(), "nothing attached yet");
        attach(&a, 2).expect("SO_ATTACH_REUSEPORT_CBPF needs no privileges");
        assert!(attach(&a, 0).is_err());
        assert!(detach(&a).unwrap(), "the program goes");
        assert!(!detach(&a).unwrap(), "and is gone");
    }
}
