//! The snapshot thread: asks the workers for a snapshot every `[state] snapshot_interval_secs`,
//! gathers the section each worker writes of its own shard, and writes the file (atomically,
//! off the workers' threads: a worker never waits on the disk). At shutdown it writes the
//! sections the workers hand in as they stop, so a SIGTERM loses nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::files::write_atomic;
use super::snapshot::{encode_file, Header, SectionWriter, FILE_NAME};

/// The round number of the sections workers write as they stop.
pub const FINAL: u64 = u64::MAX;

/// One worker's shard, written for one round.
pub struct Section {
    pub worker: usize,
    pub round: u64,
    pub writer: SectionWriter,
    /// Times the walk started over because the table was packed under it.
    pub restarts: u32,
}

/// What a worker needs to take part: the round asked for, and where its sections go.
#[derive(Clone)]
pub struct WorkerLink {
    pub requested: Arc<AtomicU64>,
    pub sections: Sender<Section>,
}

impl WorkerLink {
    /// The newest round asked for (0: none yet).
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }
}

/// What the file's header carries besides the time of writing.
#[derive(Clone, Copy)]
pub struct Identity {
    pub clock_origin_unix: u64,
    pub connection_key: [u8; 16],
}

pub struct Keeper {
    thread: Option<JoinHandle<()>>,
    stop: Sender<()>,
}

/// Starts the thread for `workers` workers; returns it and the link each worker gets.
pub fn spawn(
    directory: PathBuf,
    interval: Duration,
    workers: usize,
    identity: Identity,
) -> anyhow::Result<(Keeper, WorkerLink)> {
    let requested = Arc::new(AtomicU64::new(0));
    let (tx, rx) = crossbeam_channel::unbounded();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let link = WorkerLink {
        requested: requested.clone(),
        sections: tx,
    };
    let mut run = Run {
        directory,
        workers,
        identity,
        requested,
        sections: rx,
        stop: stop_rx,
        interval,
        round: 0,
        gathered: (0..workers).map(|_| None).collect(),
        finals: (0..workers).map(|_| None).collect(),
        file: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("hayate-state".into())
        .spawn(move || run.serve())?;
    Ok((
        Keeper {
            thread: Some(thread),
            stop: stop_tx,
        },
        link,
    ))
}

impl Keeper {
    /// Writes the final snapshot from the sections the stopping workers handed in (call after
    /// the workers have ended) and ends the thread.
    pub fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Run {
    directory: PathBuf,
    workers: usize,
    identity: Identity,
    requested: Arc<AtomicU64>,
    sections: Receiver<Section>,
    stop: Receiver<()>,
    interval: Duration,
    round: u64,
    gathered: Vec<Option<SectionWriter>>,
    finals: Vec<Option<SectionWriter>>,
    file: Vec<u8>,
}

impl Run {
    fn serve(&mut self) {
        let mut next = Instant::now() + self.interval;
        loop {
            // Stopped, or the tracker that owns the thread is gone.
            if !matches!(self.stop.try_recv(), Err(TryRecvError::Empty)) {
                break;
            }
            let wait = next.saturating_duration_since(Instant::now());
            match self
                .sections
                .recv_timeout(wait.min(Duration::from_millis(200)))
            {
                Ok(s) => self.take(s),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next {
                // A round still incomplete is abandoned: its late sections are dropped.
                self.round += 1;
                self.gathered.iter_mut().for_each(|g| *g = None);
                self.requested.store(self.round, Ordering::Release);
                next = Instant::now() + self.interval;
            }
        }
        // The workers have stopped: what they handed in is all there will be.
        while let Ok(s) = self.sections.try_recv() {
            self.take(s);
        }
        let missing = self.finals.iter().filter(|f| f.is_none()).count();
        if missing > 0 {
            tracing::warn!(
                missing,
                "not every worker handed in its shard at shutdown; the snapshot on disk is kept as it was"
            );
            return;
        }
        let finals: Vec<SectionWriter> = self.finals.iter_mut().filter_map(Option::take).collect();
        self.write(&finals, "at shutdown");
    }

    fn take(&mut self, s: Section) {
        if s.restarts > 0 {
            tracing::debug!(
                worker = s.worker,
                restarts = s.restarts,
                "snapshot walk restarted"
            );
        }
        let Some(worker) = (s.worker < self.workers).then_some(s.worker) else {
            return;
        };
        if s.round == FINAL {
            self.finals[worker] = Some(s.writer);
            return;
        }
        if s.round != self.round {
            return;
        }
        self.gathered[worker] = Some(s.writer);
        if self.gathered.iter().all(Option::is_some) {
            let sections: Vec<SectionWriter> =
                self.gathered.iter_mut().filter_map(Option::take).collect();
            self.write(&sections, "periodic");
        }
    }

    fn write(&mut self, sections: &[SectionWriter], when: &str) {
        let started = Instant::now();
        let header = Header {
            written_unix: unix_now(),
            clock_origin_unix: self.identity.clock_origin_unix,
            connection_key: self.identity.connection_key,
        };
        let bytes: Vec<&[u8]> = sections.iter().map(SectionWriter::as_bytes).collect();
        encode_file(&header, &bytes, &mut self.file);
        let torrents: u64 = sections.iter().map(SectionWriter::torrents).sum();
        let peers: u64 = sections.iter().map(SectionWriter::peers).sum();
        match write_atomic(&self.directory, FILE_NAME, &self.file) {
            Ok(()) => tracing::info!(
                when,
                torrents,
                peers,
                bytes = self.file.len(),
                ms = started.elapsed().as_millis() as u64,
                path = %self.directory.join(FILE_NAME).display(),
                "snapshot written"
            ),
            Err(e) => tracing::error!(when, "snapshot not written: {e:#}"),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
