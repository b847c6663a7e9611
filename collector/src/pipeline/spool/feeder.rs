//! Reads batches back from disk into the queue, oldest first, while a backlog lasts: after a restart (the
//! batches not yet in PostgreSQL) and whenever the queue was full when a batch was appended. Each record is
//! decoded again exactly as its request was, and waits for room in the queue and in the memory budget.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::format;
use super::{Parked, Position, Shared, Ticket};
use crate::decode::DecodeError;
use crate::pipeline::batch::{Batch, Reject};
use crate::pipeline::intake::{BodyHeaders, Intake};
use crate::pipeline::queue::{Queue, SubmitError};

pub(super) struct Feeder {
    pub shared: Arc<Shared>,
    pub queue: Queue,
    pub intake: Intake,
}

/// Seconds between the log lines that say a backlog is being fed.
const REPORT_EVERY: Duration = Duration::from_secs(5);

impl Feeder {
    pub async fn run(self, stop: CancellationToken) {
        let mut last_report = tokio::time::Instant::now();
        loop {
            let next = self.shared.lock().backlog;
            let Some(at) = next else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.shared.backlog_started.notified() => {}
                    // Free space is measured now and then even when nothing is appended (it may have come back).
                    () = tokio::time::sleep(Duration::from_secs(1)) => self.shared.measure_free(),
                }
                continue;
            };
            if last_report.elapsed() >= REPORT_EVERY {
                self.report();
                last_report = tokio::time::Instant::now();
            }
            tokio::select! {
                () = stop.cancelled() => return,
                fed = self.feed_from(at) => {
                    if let Err(e) = fed {
                        tracing::error!(error = %e, "Reading the spool back failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn report(&self) {
        let status = super::Spool::status_of(&self.shared);
        tracing::info!(
            spool_bytes = status.bytes,
            oldest_unflushed_secs = status.oldest_unflushed_secs as u64,
            queue_depth = self.queue.depth(),
            replayed = status.replayed,
            "Acknowledged batches are waiting in the spool for PostgreSQL; feeding them oldest first"
        );
    }

    /// Feeds the records from `at` to what is written of its segment now, then moves the backlog on.
    async fn feed_from(&self, mut at: Position) -> std::io::Result<()> {
        // A run of batches kept decoded is queued without reading its bytes back: reading and checksumming them
        // only to find where each record ends was 2–3% of the collector's CPU during a 2M-event backlog.
        while let Some(parked) = self.take_parked(at) {
            self.queue_parked(parked.batch).await;
            at.offset = parked.next;
            self.shared.lock().backlog = Some(at);
        }
        let (path, len) = {
            let state = self.shared.lock();
            match state.segments.get(&at.segment) {
                Some(s) => (s.path.clone(), s.len),
                None => (Default::default(), 0),
            }
        };
        let mut end = at.offset;
        if len > at.offset {
            let bytes = read_range(path, at.offset, len - at.offset).await?;
            let scan = format::scan_records(&bytes, 0);
            for d in &scan.damage {
                tracing::debug!(segment = at.segment, offset = at.offset + d.offset, bytes = d.bytes, reason = %d.reason, "Spool damage passed over");
            }
            let ends: Vec<usize> = scan
                .records
                .iter()
                .skip(1)
                .map(|(offset, _)| *offset)
                .chain([scan.end])
                .collect();
            for ((offset, record), next) in scan.records.into_iter().zip(ends) {
                let here = Position {
                    segment: at.segment,
                    offset: at.offset + offset,
                };
                let skip = self.shared.lock().committed_before.remove(&here);
                if skip {
                    self.shared
                        .counters
                        .replay_skipped
                        .fetch_add(1, Ordering::Relaxed);
                } else if let Some(parked) = self.take_parked(here) {
                    self.queue_parked(parked.batch).await;
                } else {
                    self.feed(record, at.segment).await;
                }
                self.shared.lock().backlog = Some(Position {
                    segment: at.segment,
                    offset: at.offset + next,
                });
            }
            // Damage at the end is passed over: the appender only writes whole records.
            end = len;
        }
        let mut state = self.shared.lock();
        let now = state
            .segments
            .get(&at.segment)
            .map(|s| (s.len, s.active, s.pending));
        match now {
            // More was appended meanwhile: the next round reads it.
            Some((len_now, _, _)) if len_now > end => {
                state.backlog = Some(Position {
                    segment: at.segment,
                    offset: end,
                });
            }
            // Caught up with the appender: new batches go straight to the queue again.
            Some((_, true, _)) => state.backlog = None,
            done => {
                // This segment is read to its end and no longer appended to: on to the next one, if any. It
                // goes now if its batches are all committed (else with the last commit).
                if let Some((_, _, 0)) = done {
                    super::remove_segment(&mut state, at.segment);
                }
                state.backlog =
                    state
                        .segments
                        .range(at.segment + 1..)
                        .next()
                        .map(|(&segment, _)| Position {
                            segment,
                            offset: format::SEGMENT_HEADER_LEN,
                        });
            }
        }
        Ok(())
    }

    /// The batch kept decoded for the record at `at`, if it was.
    fn take_parked(&self, at: Position) -> Option<Parked> {
        let mut state = self.shared.lock();
        let parked = state.parked.remove(&at)?;
        state.parked_bytes -= parked.batch.source.len() + parked.batch.rows.len();
        Some(parked)
    }

    /// Queues a batch as it was decoded when it was appended, waiting for room.
    async fn queue_parked(&self, batch: Batch) {
        if self.queue.submit(batch).await.is_ok() {
            self.shared
                .counters
                .kept_decoded
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decodes `record` and queues it, waiting for room.
    async fn feed(&self, record: format::Record, segment: u64) {
        let producer: Arc<str> = Arc::from(record.producer.as_str());
        let headers = BodyHeaders {
            content_type: record.content_type.as_deref(),
            content_encoding: record.content_encoding.as_deref(),
        };
        let mut batch = loop {
            let mut memory = self.intake.memory.reservation();
            if record.kind == format::Kind::Batch {
                // Built (and redacted) before it was spooled: queued as it is.
                if memory.grow_to(record.body.len()).is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                match format::decode_batch(&record.body, producer.clone(), record.received_at_us) {
                    Ok(mut batch) => {
                        batch.memory = Some(memory);
                        break batch;
                    }
                    Err(e) => break self.whole_body(&record, &producer, e),
                }
            }
            let built = crate::pipeline::cpu_bound(|| {
                self.intake.prepare(
                    &record.body,
                    headers,
                    &producer,
                    record.received_at_us,
                    &mut memory,
                )
            });
            match built {
                Ok((mut batch, _)) => {
                    batch.memory = Some(memory);
                    break batch;
                }
                // Memory comes back as the writers commit.
                Err(DecodeError::OverBudget) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break self.whole_body(&record, &producer, e.to_string()),
            }
        };
        if batch.weight() > self.queue.capacity() {
            let e = SubmitError::TooLarge {
                weight: batch.weight(),
                capacity: self.queue.capacity(),
            };
            batch = self.whole_body(&record, &producer, e.to_string());
        }
        batch.identity = Some(record.identity);
        batch.spooled = Some(Ticket {
            shared: self.shared.clone(),
            segment,
        });
        let events = batch.row_count();
        if self.queue.submit(batch).await.is_ok() {
            self.shared
                .counters
                .replayed
                .fetch_add(1, Ordering::Relaxed);
            tracing::trace!(events, "Spooled batch fed to the queue");
        }
    }

    /// A record that no longer decodes (the limits changed since it was accepted): kept whole as a dead letter.
    fn whole_body(&self, record: &format::Record, producer: &Arc<str>, reason: String) -> Batch {
        tracing::warn!(producer = %producer, reason = %reason, "A spooled batch no longer decodes; kept in ingest_rejects");
        let reject = Reject::new(
            producer.clone(),
            record.received_at_us,
            None,
            reason,
            record.body.clone(),
            self.intake.limits.dead_letter_max_bytes,
        );
        Batch::rejects_only(producer.clone(), record.received_at_us, vec![reject])
    }
}

async fn read_range(path: std::path::PathBuf, offset: usize, len: usize) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}
