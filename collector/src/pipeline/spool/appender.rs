//! The one thread that writes the spool. Requests hand it their records; it takes every record waiting, writes
//! them with one `write` and makes them durable with one `fdatasync` (group commit: under load, one fsync
//! covers many requests, and a lone request waits for one fsync only), then answers each request.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::fs::Advice;
use tokio::sync::oneshot;

use super::format::{self, Record};
use super::{Parked, Position, Segment, Shared, SpoolError, Ticket};
use crate::pipeline::batch::Batch;
use crate::pipeline::queue::Queue;

/// A request's record, what it decoded to, and where its answer goes.
pub(super) struct Append {
    pub record: Record,
    pub batch: Batch,
    pub reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// Bytes of records written with one fsync at most: larger groups add latency without saving fsyncs.
const GROUP_BYTES: usize = 8 << 20;

/// Age after which a fully committed segment is not appended to any more.
const SPENT_AFTER: Duration = Duration::from_secs(60);

/// The segment being appended to.
struct Active {
    /// Its number: segments are numbered in the order they are made, which is the log's order.
    segment: u64,
    file: File,
    len: usize,
}

pub(super) struct Appender {
    pub shared: Arc<Shared>,
    pub queue: Queue,
    pub next_seq: u64,
    active: Option<Active>,
    /// The number of the last segment started.
    last_segment: Option<u64>,
    spare: Spare,
    buf: BytesMut,
    last_error_log: Option<Instant>,
    errors_unlogged: u64,
}

impl Appender {
    /// `next_seq` and `next_segment` continue what the spool directory holds.
    pub fn new(
        shared: Arc<Shared>,
        queue: Queue,
        next_seq: u64,
        next_segment: u64,
    ) -> std::io::Result<Appender> {
        let spare = Spare::start(
            shared.cfg.dir.clone(),
            shared.cfg.segment_bytes,
            next_segment,
        )?;
        Ok(Appender {
            shared,
            queue,
            next_seq,
            active: None,
            last_segment: None,
            spare,
            buf: BytesMut::new(),
            last_error_log: None,
            errors_unlogged: 0,
        })
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, appends: Receiver<Append>) {
        while let Ok(first) = appends.recv() {
            let mut bytes = first.record.body.len();
            let mut group = vec![first];
            while bytes < GROUP_BYTES {
                match appends.try_recv() {
                    Ok(next) => {
                        bytes += next.record.body.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.append_group(group);
        }
        if let Some(active) = self.active.take() {
            self.seal(active.segment);
        }
    }

    fn append_group(&mut self, group: Vec<Append>) {
        // Within the budget, in order; the rest are refused.
        let mut taken = Vec::with_capacity(group.len());
        {
            let state = self.shared.lock();
            let mut adding = 0u64;
            for a in group {
                let frame = format::frame_len(&a.record) as u64;
                let room = self.shared.room_for(&state, adding + frame);
                match room {
                    Ok(()) => {
                        adding += frame;
                        taken.push(a);
                    }
                    Err(e) => {
                        let _ = a.reply.send(Err(e));
                    }
                }
            }
        }
        if taken.is_empty() {
            return;
        }
        match self.write(&mut taken) {
            Ok((segment, offsets, end)) => self.hand_over(taken, segment, offsets, end),
            Err(e) => {
                self.shared
                    .counters
                    .append_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.log_error(&e);
                let e = SpoolError::Io(e.to_string());
                for a in taken {
                    let _ = a.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes and fsyncs `group`'s records; returns their segment, their offsets in it and its new length.
    fn write(&mut self, group: &mut [Append]) -> std::io::Result<(u64, Vec<usize>, usize)> {
        for a in group.iter_mut() {
            a.record.seq = self.next_seq;
            self.next_seq += 1;
        }
        let group_bytes: usize = group.iter().map(|a| format::frame_len(&a.record)).sum();
        let roll = match &self.active {
            None => true,
            Some(a) => a.len as u64 >= self.shared.cfg.segment_bytes || self.spent(a, group_bytes),
        };
        if roll {
            if let Some(old) = self.active.take() {
                self.seal(old.segment);
            }
            self.active = Some(self.create()?);
        }
        let Some(active) = self.active.as_mut() else {
            return Err(std::io::Error::other("no segment to append to"));
        };
        // The frames' heads in one buffer; each body is written from the request's own bytes, not copied
        // (a copy of every body was most of the spool's CPU at full speed).
        self.buf.clear();
        let mut offsets = Vec::with_capacity(group.len());
        let mut heads = Vec::with_capacity(group.len());
        let mut at = active.len;
        for a in group.iter() {
            offsets.push(at);
            let start = self.buf.len();
            at += format::encode_head(&mut self.buf, &a.record);
            heads.push(start..self.buf.len());
        }
        let total = at - active.len;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(group.len() * 2);
        for (a, head) in group.iter().zip(heads) {
            slices.push(IoSlice::new(&self.buf[head]));
            if !a.record.body.is_empty() {
                slices.push(IoSlice::new(&a.record.body));
            }
        }
        let started = Instant::now();
        // A segment whose directory entry is gone (its directory removed under it) would take writes that no
        // restart finds: an error, as a failed write is.
        let linked = active.file.metadata().and_then(|m| {
            use std::os::unix::fs::MetadataExt;
            if m.nlink() == 0 {
                Err(std::io::Error::other(
                    "the spool segment was removed from its directory",
                ))
            } else {
                Ok(())
            }
        });
        let written = linked
            .and_then(|()| write_all_vectored_at(&active.file, &mut slices, active.len as u64))
            .and_then(|()| active.file.sync_data());
        self.shared
            .counters
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = written {
            // What the failed write left is cut off, when the disk lets us, and the segment is not used again:
            // after a failed fsync its pages' state is unknown.
            let _ = active.file.set_len(active.len as u64);
            let _ = active.file.sync_data();
            let first = active.segment;
            self.active = None;
            self.seal(first);
            return Err(e);
        }
        drop(slices);
        active.len += total;
        if self.buf.capacity() > 2 * GROUP_BYTES {
            self.buf = BytesMut::new();
        }
        Ok((active.segment, offsets, active.len))
    }

    /// Whether `active` holds only committed batches and should go now: its bytes are needed for the budget,
    /// or its first batch is old enough that the identities a replay would look up can be pruned.
    fn spent(&self, active: &Active, adding: usize) -> bool {
        let state = self.shared.lock();
        let Some(s) = state.segments.get(&active.segment) else {
            return false;
        };
        let old_us = chrono::Utc::now().timestamp_micros() - SPENT_AFTER.as_micros() as i64;
        s.pending == 0
            && s.len > format::SEGMENT_HEADER_LEN
            && (state.bytes + adding as u64 > self.shared.cfg.max_bytes
                || s.first_us.is_some_and(|t| t < old_us))
    }

    /// The next segment: the one made ahead of time (zero-filled, its header and directory entry synced) when
    /// it is ready, else one made now (its header and directory entry synced here, so that it is found after a
    /// crash).
    fn create(&mut self) -> std::io::Result<Active> {
        let dir = self.shared.cfg.dir.clone();
        let prepared = match self.spare.take() {
            // Made before one the appender had to make itself: out of order, so not used.
            Some((n, file)) if self.last_segment.is_some_and(|last| n < last) => {
                drop(file);
                let _ = std::fs::remove_file(dir.join(format::segment_name(n)));
                None
            }
            other => other,
        };
        let made = match prepared {
            Some(ready) => Ok(ready),
            None => {
                let segment = self.spare.next.fetch_add(1, Ordering::AcqRel);
                let path = dir.join(format::segment_name(segment));
                new_segment(&dir, &path, 0).map(|file| (segment, file))
            }
        };
        let _ = self.spare.requests.send(());
        let (segment, file) = made?;
        self.last_segment = Some(segment);
        let path = dir.join(format::segment_name(segment));
        let len = format::SEGMENT_HEADER_LEN;
        let mut state = self.shared.lock();
        state.segments.insert(
            segment,
            Segment {
                path,
                len,
                pending: 0,
                active: true,
                first_us: None,
            },
        );
        state.bytes += len as u64;
        Ok(Active { segment, file, len })
    }

    /// No more appends to this segment: it goes once its batches are committed (or now, if they are).
    fn seal(&self, segment: u64) {
        let mut state = self.shared.lock();
        let Some(s) = state.segments.get_mut(&segment) else {
            return;
        };
        s.active = false;
        // The feeder may be reading it: it moves on by itself once it reaches the end.
        let feeding = state.backlog.is_some_and(|p| p.segment == segment);
        if state.segments[&segment].pending == 0 && !feeding {
            super::remove_segment(&mut state, segment);
        }
    }

    /// The records are durable: account for them, hand each batch to the queue (unless batches are already
    /// waiting on disk, or the queue is full: then from here on the feeder reads them back in order), answer.
    fn hand_over(&mut self, group: Vec<Append>, segment: u64, offsets: Vec<usize>, end: usize) {
        let c = &self.shared.counters;
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(group.len() as u64, Ordering::Relaxed);
        let events: usize = group.iter().map(|a| a.batch.weight()).sum();
        c.events.fetch_add(events as u64, Ordering::Relaxed);
        let mut started_backlog = false;
        {
            let mut state = self.shared.lock();
            let written = {
                let Some(s) = state.segments.get_mut(&segment) else {
                    return;
                };
                let written = end - s.len;
                s.len = end;
                s.pending += group.len();
                s.first_us.get_or_insert(group[0].record.received_at_us);
                written
            };
            state.bytes += written as u64;
            // Each record's successor starts where the next one in the group does; the last's, at the end.
            let nexts = offsets.iter().skip(1).copied().chain([end]);
            for ((a, &offset), next) in group.into_iter().zip(&offsets).zip(nexts) {
                let Append {
                    record,
                    mut batch,
                    reply,
                } = a;
                batch.spooled = Some(Ticket {
                    shared: self.shared.clone(),
                    segment,
                });
                batch.identity = Some(record.identity);
                let waiting = if state.backlog.is_none() {
                    match self.queue.try_submit_or_return(batch) {
                        Ok(()) => None,
                        Err(batch) => {
                            state.backlog = Some(Position { segment, offset });
                            started_backlog = true;
                            Some(batch)
                        }
                    }
                } else {
                    Some(Box::new(batch))
                };
                // Behind a backlog: kept decoded for the feeder while there is room, else read back from disk.
                if let Some(mut batch) = waiting {
                    let size = batch.source.len() + batch.rows.len();
                    if state.parked_bytes + size <= self.shared.cfg.park_bytes {
                        state.parked_bytes += size;
                        let batch = *batch;
                        state
                            .parked
                            .insert(Position { segment, offset }, Parked { batch, next });
                    } else {
                        // Its ticket is not given back: the feeder's copy carries the segment's claim.
                        batch.spooled = None;
                    }
                }
                let _ = reply.send(Ok(()));
            }
        }
        if started_backlog {
            self.shared.backlog_started.notify_one();
        }
        self.shared.measure_free();
    }

    /// One line per failure at most every ten seconds, with the count since the last.
    fn log_error(&mut self, e: &std::io::Error) {
        self.errors_unlogged += 1;
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::error!(
                dir = %self.shared.cfg.dir.display(),
                error = %e,
                failures = self.errors_unlogged,
                "Writing the spool failed: ingest is answered 503 until it works again"
            );
            self.last_error_log = Some(Instant::now());
            self.errors_unlogged = 0;
        }
    }
}

/// Writes every slice at `offset` on, in order, however the kernel splits the writes (at most `IOV_MAX`, 1024
/// slices, a call).
fn write_all_vectored_at(
    file: &File,
    slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> std::io::Result<()> {
    for chunk in slices.chunks_mut(1024) {
        let mut left: &mut [IoSlice<'_>] = chunk;
        while !left.is_empty() {
            let n = rustix::io::pwritev(file, left, offset).map_err(std::io::Error::from)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            offset += n as u64;
            IoSlice::advance_slices(&mut left, n);
        }
    }
    Ok(())
}

/// The next segment, made by a thread of its own before it is needed, under its final name: zero-filled to its
/// full size, so that a write overwrites zeros and its fsync has no new file size to commit to the filesystem's
/// journal (which waits behind every other writer on the disk: PostgreSQL's own, under load; measured here
/// under a full-speed COPY load: fdatasync p50 2.4 ms when appending, 0.3 ms when overwriting zeros), and with
/// its directory entry already synced, so that starting it costs the acknowledgements nothing.
struct Spare {
    /// The next segment number, shared with the appender when it has to make one itself.
    next: Arc<AtomicU64>,
    ready: Arc<Mutex<Option<(u64, File)>>>,
    requests: Sender<()>,
}

impl Spare {
    fn start(dir: PathBuf, size: u64, next_segment: u64) -> std::io::Result<Spare> {
        let next = Arc::new(AtomicU64::new(next_segment));
        let ready: Arc<Mutex<Option<(u64, File)>>> = Arc::default();
        let (requests, rx) = std::sync::mpsc::channel::<()>();
        let (counter, slot) = (next.clone(), ready.clone());
        std::thread::Builder::new()
            .name("spool-spare".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if slot.lock().is_ok_and(|s| s.is_some()) {
                        continue;
                    }
                    let segment = counter.fetch_add(1, Ordering::AcqRel);
                    let path = dir.join(format::segment_name(segment));
                    match new_segment(&dir, &path, size) {
                        Ok(file) => {
                            if let Ok(mut s) = slot.lock() {
                                *s = Some((segment, file));
                            }
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            tracing::warn!(dir = %dir.display(), error = %e, "Preparing the next spool segment failed; the next one is made when needed");
                        }
                    }
                }
            })?;
        let _ = requests.send(());
        Ok(Spare {
            next,
            ready,
            requests,
        })
    }

    /// The prepared segment, if it is ready.
    fn take(&mut self) -> Option<(u64, File)> {
        self.ready.lock().ok()?.take()
    }
}

/// A segment file at `path`: its header, zeros up to `size`, synced with its directory entry. It must not exist:
/// an existing file is an error, and left as it is.
fn new_segment(dir: &std::path::Path, path: &std::path::Path, size: u64) -> std::io::Result<File> {
    let opened = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    let (created, direct) = match opened {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => (
            OpenOptions::new().write(true).create_new(true).open(path)?,
            false,
        ),
        other => (other?, true),
    };
    // From here on the file is the one just created: a failure removes it.
    let made = (|| {
        let written = if direct {
            zero_fill_direct(&created, size)?
        } else {
            0
        };
        let mut file = if direct {
            OpenOptions::new().write(true).open(path)?
        } else {
            created
        };
        file.seek(SeekFrom::Start(written))?;
        write_zeros(&mut file, size.saturating_sub(written))?;
        file.write_all_at(&format::segment_header(), 0)?;
        file.sync_all()?;
        if written > 0 {
            // An append that ends inside a page must read the page first, unless it is cached: read ahead
            // now, off the acknowledgements' path.
            let _ =
                rustix::fs::fadvise(&file, 0, std::num::NonZeroU64::new(size), Advice::WillNeed);
        }
        File::open(dir)?.sync_all()?;
        Ok(file)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Bytes of zeros a direct write takes at once; a multiple of any block size.
const DIRECT_CHUNK: usize = 1 << 20;
const DIRECT_ALIGN: usize = 4096;

/// Writes zeros into `file` (opened with O_DIRECT) around the page cache, from its start as far as whole
/// blocks go; returns the bytes written, fewer (even 0) where the filesystem refuses a direct write, and the
/// caller writes the rest through the cache. Through the cache, a segment's zeros were copied into pages (3.8%
/// of the collector's CPU samples at full speed, 2.4% written this way) and their writeback competed with
/// PostgreSQL's pages for memory.
fn zero_fill_direct(mut file: &File, size: u64) -> std::io::Result<u64> {
    let buf = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
    let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let zeros = &buf[at..at + DIRECT_CHUNK];
    let whole = size - size % DIRECT_ALIGN as u64;
    let mut written = 0u64;
    while written < whole {
        let n = (whole - written).min(DIRECT_CHUNK as u64) as usize;
        match file.write(&zeros[..n]) {
            Ok(w) if w > 0 && w % DIRECT_ALIGN == 0 => written += w as u64,
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn write_zeros(file: &mut File, mut left: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; (left as usize).min(DIRECT_CHUNK)];
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new segment is its header then zeros, to its full size, whether its zeros went around the page cache
    /// (whole blocks), through it (the tail past them), or both.
    #[test]
    fn a_new_segment_is_its_header_then_zeros() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (i, size) in [
            3 * DIRECT_CHUNK as u64 + 100,
            DIRECT_ALIGN as u64 * 5,
            1000,
            4,
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{i}.spool"));
            drop(new_segment(dir.path(), &path, size).expect("a new segment"));
            let bytes = std::fs::read(&path).expect("the segment");
            let header = format::segment_header();
            assert_eq!(
                bytes.len() as u64,
                size.max(header.len() as u64),
                "size {size}"
            );
            assert_eq!(bytes[..header.len()], header, "size {size}");
            assert!(bytes[header.len()..].iter().all(|&b| b == 0), "size {size}");
            // A second segment under the same name is refused: it would overwrite acknowledged batches.
            assert!(new_segment(dir.path(), &path, size).is_err(), "size {size}");
            assert_eq!(std::fs::read(&path).expect("the segment"), bytes);
        }
    }
}
