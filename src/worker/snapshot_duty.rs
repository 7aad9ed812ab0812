//! A worker's part in a snapshot: when the state thread asks for a round, the worker walks its
//! own shard into a section a slice at a time between batches of requests (a slice is bounded
//! work, well under a millisecond, so no request waits long), then hands the section over. At
//! shutdown it writes its whole shard at once, since nothing else runs then.

use crate::state::keeper::{Section, WorkerLink, FINAL};
use crate::state::snapshot::SectionWriter;
use crate::swarm::{Shard, Walk};

/// Torrents plus peers one slice writes at most.
const SLICE: usize = 4096;

pub struct SnapshotDuty {
    me: usize,
    link: WorkerLink,
    /// The newest round this worker has begun.
    begun: u64,
    walk: Option<Walk>,
    section: SectionWriter,
}

impl SnapshotDuty {
    pub fn new(me: usize, link: WorkerLink) -> Self {
        Self {
            me,
            link,
            begun: 0,
            walk: None,
            section: SectionWriter::new(),
        }
    }

    /// Does one slice of a requested snapshot, beginning one if asked for. True while a walk
    /// is under way (the worker should come back soon).
    pub fn step(&mut self, shard: &Shard, now: u32) -> bool {
        let requested = self.link.requested();
        if self.walk.is_none() && requested > self.begun {
            self.begun = requested;
            self.section.clear();
            self.walk = Some(shard.start_walk());
        }
        let Some(walk) = &mut self.walk else {
            return false;
        };
        if !shard.walk_slice(walk, now, SLICE, &mut self.section) {
            return true;
        }
        let restarts = walk.restarts;
        self.walk = None;
        self.hand_over(self.begun, restarts);
        false
    }

    /// Writes the whole shard and hands it in as this worker's part of the final snapshot.
    pub fn finish(&mut self, shard: &Shard, now: u32) {
        self.walk = None;
        self.section.clear();
        shard.write_all(now, &mut self.section);
        self.hand_over(FINAL, 0);
    }

    fn hand_over(&mut self, round: u64, restarts: u32) {
        let writer = std::mem::replace(&mut self.section, SectionWriter::new());
        // The state thread gone means the tracker is stopping anyway.
        let _ = self.link.sections.send(Section {
            worker: self.me,
            round,
            writer,
            restarts,
        });
    }
}
