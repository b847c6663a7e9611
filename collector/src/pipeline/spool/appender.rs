//! The one thread that writes the spool. Requests hand it their records; it takes every record waiting, writes
//! them with one `write` and makes them durable with one `fdatasync` (group commit: under load, one fsync
//! covers many requests, and a lone request waits for one fsync only), then answers each request.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::format::{self, Record};
use super::{Position, Segment, Shared, SpoolError, Ticket};
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
    first_seq: u64,
    file: File,
    len: usize,
}

pub(super) struct Appender {
    pub shared: Arc<Shared>,
    pub queue: Queue,
    pub next_seq: u64,
    active: Option<Active>,
    buf: BytesMut,
    last_error_log: Option<Instant>,
    errors_unlogged: u64,
}

impl Appender {
    pub fn new(shared: Arc<Shared>, queue: Queue, next_seq: u64) -> Appender {
        Appender {
            shared,
            queue,
            next_seq,
            active: None,
            buf: BytesMut::new(),
            last_error_log: None,
            errors_unlogged: 0,
        }
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
            self.seal(active.first_seq);
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
                self.seal(old.first_seq);
            }
            self.active = Some(self.create(group[0].record.seq)?);
        }
        let Some(active) = self.active.as_mut() else {
            return Err(std::io::Error::other("no segment to append to"));
        };
        self.buf.clear();
        let mut offsets = Vec::with_capacity(group.len());
        for a in group.iter() {
            offsets.push(active.len + self.buf.len());
            format::encode(&mut self.buf, &a.record);
        }
        let written = active
            .file
            .write_all(&self.buf)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            // What the failed write left is cut off, when the disk lets us, and the segment is not used again:
            // after a failed fsync its pages' state is unknown.
            let _ = active.file.set_len(active.len as u64);
            let _ = active.file.sync_data();
            let first = active.first_seq;
            self.active = None;
            self.seal(first);
            return Err(e);
        }
        active.len += self.buf.len();
        if self.buf.capacity() > 2 * GROUP_BYTES {
            self.buf = BytesMut::new();
        }
        Ok((active.first_seq, offsets, active.len))
    }

    /// Whether `active` holds only committed batches and should go now: its bytes are needed for the budget,
    /// or its first batch is old enough that the identities a replay would look up can be pruned.
    fn spent(&self, active: &Active, adding: usize) -> bool {
        let state = self.shared.lock();
        let Some(s) = state.segments.get(&active.first_seq) else {
            return false;
        };
        let old_us = chrono::Utc::now().timestamp_micros() - SPENT_AFTER.as_micros() as i64;
        s.pending == 0
            && s.len > format::SEGMENT_HEADER_LEN
            && (state.bytes + adding as u64 > self.shared.cfg.max_bytes
                || s.first_us.is_some_and(|t| t < old_us))
    }

    /// A new segment whose first record is `seq`: created, its header written and synced, and its directory
    /// entry synced, so the file is found after a crash.
    fn create(&mut self, seq: u64) -> std::io::Result<Active> {
        let path = self.shared.cfg.dir.join(format::segment_name(seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let header = format::segment_header();
        file.write_all(&header)
            .and_then(|()| file.sync_data())
            .and_then(|()| File::open(&self.shared.cfg.dir)?.sync_all())
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
        let mut state = self.shared.lock();
        state.segments.insert(
            seq,
            Segment {
                path,
                len: header.len(),
                pending: 0,
                active: true,
                first_us: None,
            },
        );
        state.bytes += header.len() as u64;
        Ok(Active {
            first_seq: seq,
            file,
            len: header.len(),
        })
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
            for (a, offset) in group.into_iter().zip(offsets) {
                let Append {
                    record,
                    mut batch,
                    reply,
                } = a;
                if state.backlog.is_none() {
                    batch.spooled = Some(Ticket {
                        shared: self.shared.clone(),
                        segment,
                    });
                    batch.identity = Some(record.identity);
                    if self.queue.try_submit(batch).is_err() {
                        state.backlog = Some(Position { segment, offset });
                        started_backlog = true;
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
