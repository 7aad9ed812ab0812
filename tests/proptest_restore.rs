//! Property test of the swarm across a restart: any shard built by random announces (both
//! families, seeders and leechers, completions, stops, a swarm emptied and kept for its count),
//! walked into a snapshot in random slice sizes, written, read and restored into a new shard,
//! is the same swarm: the same torrents with the same counts, and, walked again, the same
//! peers with the same flags and time left.

use hayate_tracker::protocol::{Announce, AnnounceEvent};
use hayate_tracker::state::snapshot::{decode, encode_file, Header, SectionWriter, TorrentRecord};
use hayate_tracker::swarm::Shard;
use proptest::prelude::*;

const LIFETIME: u32 = 100;

#[derive(Debug, Clone)]
struct Op {
    torrent: u8,
    v6: bool,
    host: u8,
    port: u16,
    left: u64,
    event: u8,
    at: u32,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..12,
        any::<bool>(),
        0u8..40,
        1u16..4,
        0u64..3,
        0u8..4,
        0u32..60,
    )
        .prop_map(|(torrent, v6, host, port, left, event, at)| Op {
            torrent,
            v6,
            host,
            port,
            left,
            event,
            at,
        })
}

fn build(ops: &[Op]) -> Shard {
    let mut s = Shard::new(LIFETIME);
    s.keep_downloaded(30);
    for o in ops {
        let a = Announce {
            info_hash: [o.torrent; 20],
            peer_id: [o.host ^ o.port as u8; 20],
            port: o.port,
            left: o.left,
            event: [
                AnnounceEvent::None,
                AnnounceEvent::Completed,
                AnnounceEvent::Started,
                AnnounceEvent::Stopped,
            ][usize::from(o.event)],
            num_want: 0,
        };
        if o.v6 {
            let mut ip = [0u8; 16];
            ip[0] = 0x20;
            ip[15] = o.host;
            let _ = s.announce(ip, &a, 0, o.at, |_| {});
        } else {
            let _ = s.announce([10, 0, 0, o.host], &a, 0, o.at, |_| {});
        }
    }
    s
}

/// The shard walked at `now` in slices of `slice`, through a file, as sorted records.
fn walked(s: &Shard, now: u32, slice: usize) -> Vec<TorrentRecord> {
    let mut out = SectionWriter::new();
    let mut walk = s.start_walk();
    while !s.walk_slice(&mut walk, now, slice, &mut out) {}
    let mut file = Vec::new();
    let header = Header {
        written_unix: 0,
        clock_origin_unix: 0,
        connection_key: [0; 16],
    };
    encode_file(&header, &[out.as_bytes()], &mut file);
    let mut torrents = decode(&file).expect("a file just written decodes").torrents;
    for t in &mut torrents {
        t.v4.sort_by_key(|p| (p.ip, p.port));
        t.v6.sort_by_key(|p| (p.ip, p.port));
    }
    torrents.sort_by_key(|t| t.info_hash);
    torrents
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn snapshot_then_restore_is_the_same_swarm(
        ops in prop::collection::vec(op(), 0..300),
        slice in 1usize..50,
        now in 55u32..70,
    ) {
        let mut s = build(&ops);
        s.sweep(now);
        let records = walked(&s, now, slice);
        let mut back = Shard::new(LIFETIME);
        back.keep_downloaded(30);
        for t in &records {
            back.restore(t, now);
        }
        back.check_invariants();
        prop_assert_eq!(back.totals(), s.totals());
        for t in 0..12u8 {
            prop_assert_eq!(back.counts(&[t; 20]), s.counts(&[t; 20]), "torrent {}", t);
        }
        prop_assert_eq!(walked(&back, now, slice), records);
    }
}
