//! Floods of UDP announces for the limit tests: distinct info hashes spread over the workers,
//! and announces pipelined 256 at a time so a flood of millions takes seconds.

use crate::common::*;

/// Distinct info hash number `n`, spread over the workers (the first 4 bytes pick one).
pub fn hash(n: u32) -> [u8; 20] {
    let mut h = [7u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[4..8].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    h
}

/// Announces each of `announces` (hash, port, left, event) from `c`, 256 in flight at a time,
/// asking for one peer each (so the replies fit the client's receive buffer); returns the
/// replies in order of arrival (announce replies and error messages).
pub fn pipeline(c: &mut Client, cid: u64, announces: &[(u32, u16, u64, u32)]) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(announces.len());
    for chunk in announces.chunks(256) {
        for &(n, port, left, event) in chunk {
            let txid = c.txid();
            c.send(&announce_packet(cid, txid, hash(n), port, left, event, 1));
        }
        for _ in chunk {
            match c.recv_raw() {
                Some(d) => replies.push(decode(&d, true)),
                None => break,
            }
        }
    }
    replies
}

pub fn refusals(replies: &[Reply], message: &str) -> usize {
    replies
        .iter()
        .filter(|r| matches!(r, Reply::Error { message: m, .. } if m == message))
        .count()
}
