//! The write-ahead spool: a request is appended to a checksummed log on disk and fsynced before it is answered
//! 202, so an acknowledged batch survives a crash, a PostgreSQL outage longer than the queue, and a restart.
//!
//! - [`appender`]: one thread appends what concurrent requests hand it and fsyncs once for all of them (group
//!   commit), then hands each batch, already decoded, to the in-memory queue; writers COPY from memory.
//! - When the queue is full (the database is slow or down), batches are kept on disk only, up to
//!   COLLECTOR_SPOOL_MAX_BYTES, and [`feeder`] reads them back oldest first as the queue empties. Past the
//!   budget, or under COLLECTOR_SPOOL_MIN_FREE_BYTES of free disk, requests are answered 503 + Retry-After.
//! - A segment is deleted once every batch in it is committed: writers report each commit ([`Ticket`]).
//! - [`recover`]: at start the directory is locked, every segment read back (a torn or corrupt tail cut at the
//!   last whole record, and said), the batches PostgreSQL already has (their identity is recorded with their
//!   COPY, `pipeline::dedup`) are passed over, and the rest are replayed while the collector serves.
//!
//! What `--durability memory` gives up instead: README, "Durability".

mod appender;
mod feeder;
pub mod format;
mod recover;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::db::DbError;
use crate::pipeline::batch::Batch;
use crate::telemetry::{Histogram, SPOOL_SYNC_SECONDS};
pub use format::Record;
pub use recover::open;

/// Where the spool is and how much it may hold.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes of segments at most; past it, 503.
    pub max_bytes: u64,
    /// Free bytes the spool leaves on its disk; under it, 503.
    pub min_free_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Bytes of decoded batches kept in memory while they wait behind a backlog, so that the feeder queues
    /// them without decoding them again; past it, a batch waits on disk only and is decoded when its turn comes.
    pub park_bytes: usize,
}

/// Why a batch was not appended: the request is answered 503 with Retry-After, never 202.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "the spool holds {held} bytes of acknowledged batches not yet in PostgreSQL, at its limit of {max} \
         (COLLECTOR_SPOOL_MAX_BYTES); retry shortly"
    )]
    Full { held: u64, max: u64 },
    #[error(
        "the disk of the spool has {free} bytes free, under the {min} it keeps free \
         (COLLECTOR_SPOOL_MIN_FREE_BYTES); retry shortly"
    )]
    DiskLow { free: u64, min: u64 },
    #[error("the spool could not be written ({0}); retry shortly")]
    Io(String),
    #[error("the collector is shutting down")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolOpenError {
    #[error(
        "the spool directory {dir} is in use by another collector ({holder}): give this one its own \
         COLLECTOR_SPOOL_DIR (--spool-dir), or stop the other"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
    #[error("reading which spooled batches PostgreSQL has: {0}")]
    Db(#[from] DbError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpoolOpenError {
    let what = what.into();
    move |error| SpoolOpenError::Io { what, error }
}

/// The handle requests and writers share.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    appends: std::sync::mpsc::Sender<appender::Append>,
}

struct Shared {
    cfg: SpoolConfig,
    state: Mutex<State>,
    /// Wakes the feeder when a backlog starts.
    backlog_started: tokio::sync::Notify,
    counters: Counters,
    /// Held open, locked, for the life of the process.
    _lock: File,
}

struct Counters {
    /// Each group commit's write and fsync.
    sync_seconds: Histogram,
    fsyncs: AtomicU64,
    records: AtomicU64,
    events: AtomicU64,
    replayed: AtomicU64,
    /// Batches queued behind a backlog as they were decoded when appended.
    kept_decoded: AtomicU64,
    replay_skipped: AtomicU64,
    append_errors: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            sync_seconds: Histogram::new(SPOOL_SYNC_SECONDS),
            fsyncs: AtomicU64::default(),
            records: AtomicU64::default(),
            events: AtomicU64::default(),
            replayed: AtomicU64::default(),
            kept_decoded: AtomicU64::default(),
            replay_skipped: AtomicU64::default(),
            append_errors: AtomicU64::default(),
        }
    }
}

#[derive(Default)]
struct State {
    segments: BTreeMap<u64, Segment>,
    /// The first record not handed to the queue: from here on records are fed from disk. `None`: every record
    /// appended so far has been handed over.
    backlog: Option<Position>,
    /// Bytes of all segments.
    bytes: u64,
    /// Free bytes on the spool's disk, last measured.
    free_bytes: u64,
    /// Records found at start that PostgreSQL already has: the feeder passes over them.
    committed_before: HashSet<Position>,
    /// Batches appended while a backlog lasts, already decoded, by their record's position, with the offset of
    /// the record after theirs: the feeder queues them as they are (a second decode cost as much CPU as the first,
    /// under sustained load), and a run of them without reading their bytes back.
    parked: HashMap<Position, Parked>,
    /// Their text and rows, in bytes (at most `SpoolConfig::park_bytes`).
    parked_bytes: usize,
}

/// A batch kept decoded behind a backlog (`State::parked`).
struct Parked {
    batch: Batch,
    /// Where the next record of its segment starts.
    next: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Position {
    segment: u64,
    offset: usize,
}

struct Segment {
    path: PathBuf,
    /// Bytes written and fsynced.
    len: usize,
    /// Records not yet committed in PostgreSQL.
    pending: usize,
    /// Still appended to.
    active: bool,
    /// When its first record was received.
    first_us: Option<i64>,
}

/// A spooled batch's claim on its segment, given back by the writer once the batch is committed.
#[derive(Clone)]
pub struct Ticket {
    shared: Arc<Shared>,
    segment: u64,
}

impl Ticket {
    /// The batch is in PostgreSQL: its segment may go once all its batches are.
    pub fn committed(self) {
        self.shared.committed(self.segment);
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.segment)
    }
}

/// The spool's state, for /readyz and /metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpoolStatus {
    pub bytes: u64,
    pub max_bytes: u64,
    pub segments: usize,
    pub free_disk_bytes: u64,
    /// Age of the oldest segment still holding a batch not in PostgreSQL, in seconds.
    pub oldest_unflushed_secs: f64,
    /// Batches are waiting on disk for room in the queue.
    pub backlog: bool,
    pub fsyncs: u64,
    pub records: u64,
    pub events: u64,
    pub replayed: u64,
    /// Batches that waited behind a backlog decoded, and were queued without a second decode.
    pub kept_decoded: u64,
    pub replay_skipped: u64,
    pub append_errors: u64,
}

impl Spool {
    /// Checks, before a request is read, that a body of `announced` bytes may be appended: when the spool or
    /// its disk is full the answer is 503 before the request costs anything.
    pub fn admit(&self, announced: usize) -> Result<(), SpoolError> {
        let state = self.shared.lock();
        self.shared.room_for(&state, announced as u64)
    }

    /// Appends `record` (its sequence is assigned here) and waits for it to be on disk; `batch` is what it
    /// decoded to, handed to the queue once the record is durable (or dropped, to be read back from disk, when
    /// the queue is full).
    pub async fn append(&self, record: Record, batch: Batch) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(appender::Append {
                record,
                batch,
                reply,
            })
            .map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    pub fn status(&self) -> SpoolStatus {
        Spool::status_of(&self.shared)
    }

    fn status_of(shared: &Shared) -> SpoolStatus {
        let state = shared.lock();
        let now_us = chrono::Utc::now().timestamp_micros();
        let oldest = state
            .segments
            .values()
            .filter(|s| s.pending > 0)
            .filter_map(|s| s.first_us)
            .min();
        let c = &shared.counters;
        SpoolStatus {
            bytes: state.bytes,
            max_bytes: shared.cfg.max_bytes,
            segments: state.segments.len(),
            free_disk_bytes: state.free_bytes,
            oldest_unflushed_secs: oldest.map_or(0.0, |t| (now_us - t).max(0) as f64 / 1e6),
            backlog: state.backlog.is_some(),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            kept_decoded: c.kept_decoded.load(Ordering::Relaxed),
            replay_skipped: c.replay_skipped.load(Ordering::Relaxed),
            append_errors: c.append_errors.load(Ordering::Relaxed),
        }
    }

    /// When the oldest record still on disk was received: batch identities younger than this must be kept,
    /// for a replay to know what is already stored.
    pub fn oldest_record_us(&self) -> Option<i64> {
        let state = self.shared.lock();
        state.segments.values().filter_map(|s| s.first_us).min()
    }

    /// The group commits' durations, in the Prometheus text format.
    pub fn render_sync_histogram(&self, out: &mut String) {
        self.shared.counters.sync_seconds.render(
            out,
            "collector_spool_sync_seconds",
            "One spool group commit: its write and fsync.",
        );
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn room_for(&self, state: &State, bytes: u64) -> Result<(), SpoolError> {
        // The segment being appended to goes at the next append when all its batches are committed.
        let reclaimable = state
            .segments
            .values()
            .find(|s| s.active && s.pending == 0)
            .map_or(0, |s| s.len as u64);
        let held = state.bytes - reclaimable.min(state.bytes);
        if held + bytes > self.cfg.max_bytes {
            return Err(SpoolError::Full {
                held,
                max: self.cfg.max_bytes,
            });
        }
        if state.free_bytes < self.cfg.min_free_bytes.saturating_add(bytes) {
            return Err(SpoolError::DiskLow {
                free: state.free_bytes,
                min: self.cfg.min_free_bytes,
            });
        }
        Ok(())
    }

    fn committed(&self, segment: u64) {
        let mut state = self.lock();
        let Some(s) = state.segments.get_mut(&segment) else {
            return;
        };
        s.pending = s.pending.saturating_sub(1);
        // A segment the feeder is in goes when the feeder leaves it.
        let feeding = state.backlog.is_some_and(|p| p.segment == segment);
        if state.segments[&segment].pending == 0 && !state.segments[&segment].active && !feeding {
            remove_segment(&mut state, segment);
        }
    }

    fn measure_free(&self) {
        if let Some(free) = free_bytes(&self.cfg.dir) {
            self.lock().free_bytes = free;
        }
    }
}

/// Deletes a segment none of whose batches is waiting; a failure is logged (the file is read again at the next
/// start and its batches found committed).
fn remove_segment(state: &mut State, segment: u64) {
    if let Some(s) = state.segments.remove(&segment) {
        state.bytes = state.bytes.saturating_sub(s.len as u64);
        state.committed_before.retain(|p| p.segment != segment);
        if let Err(e) = std::fs::remove_file(&s.path) {
            tracing::warn!(path = %s.path.display(), error = %e, "Deleting a written spool segment failed");
        }
    }
}

/// Free bytes for an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
