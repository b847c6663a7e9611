//! Writer tasks: take batches off the queue, group them until the flush is big or old enough, and commit each
//! group as one transaction: `COPY comm_logs FROM STDIN (FORMAT BINARY)`, the group's dead letters, and a row in
//! the flush ledger.
//!
//! Failure handling, so that an acknowledged event is neither lost nor duplicated:
//! - Transient failures (connection lost, server restarting, any error but a data error) are retried with
//!   exponential backoff for as long as it takes. Before each retry the flush ledger is checked: if the lost
//!   answer was to a COMMIT that succeeded, the flush is done and is not written twice.
//! - A data error (PostgreSQL refusing a value despite validation) would fail every retry, so the group is
//!   bisected until the refused rows are isolated; those go to `ingest_rejects` with the server's message. So
//!   is an error that may come from the rows (raised in a function, or internal) when it persists for
//!   [`REFUSED_AFTER`] attempts; errors that say nothing about the rows (connection, server state, resources,
//!   a broken schema) are retried for as long as it takes.
//! - A flush failing three times or more shows in /readyz (not ready), /metrics (`collector_failing_flushes`)
//!   and the log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use futures_util::SinkExt;
use tokio::time::Instant;
use uuid::Uuid;

use crate::db::DbError;
use crate::pipeline::batch::{Batch, Reject, SingleRow};
use crate::pipeline::cost::{self, Step};
use crate::pipeline::dedup::{self, Digest};
use crate::pipeline::queue::QueueReceiver;
use crate::pipeline::{copy, deltas, ledger, seal, store};
use crate::rollup::catalog;
use crate::telemetry::Stats;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Rows that trigger a flush.
    pub flush_rows: usize,
    /// Longest a batch waits for others to join its flush.
    pub flush_age: Duration,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
    /// Dead-letter raw payload cap, for rows isolated after a data error.
    pub dead_letter_max_bytes: usize,
}

/// Starts `n` writers on `rx` (at least one); each ends when the queue is closed and drained.
pub fn spawn(
    n: usize,
    pool: &Pool,
    rx: &QueueReceiver,
    cfg: WriterConfig,
    stats: &Arc<Stats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n.max(1))
        .map(|_| tokio::spawn(run(pool.clone(), rx.clone(), cfg, stats.clone())))
        .collect()
}

/// Runs one writer until the queue is closed and drained.
pub async fn run(pool: Pool, rx: QueueReceiver, cfg: WriterConfig, stats: Arc<Stats>) {
    let copy_sql = copy::copy_statement();
    while let Ok(first) = rx.recv().await {
        let deadline = Instant::now() + cfg.flush_age;
        let mut rows = first.row_count();
        let mut group = vec![first];
        while rows < cfg.flush_rows {
            // Take what is already waiting without sleeping; only wait when the queue is empty.
            let next = match rx.try_recv() {
                Ok(b) => Some(b),
                Err(async_channel::TryRecvError::Closed) => None,
                Err(async_channel::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Ok(b)) => Some(b),
                        _ => None,
                    }
                }
            };
            match next {
                Some(b) => {
                    rows += b.row_count();
                    group.push(b);
                }
                None => break,
            }
        }
        let started = std::time::Instant::now();
        commit_group(&pool, &copy_sql, &group, &cfg, &stats).await;
        // Committed: their spool segments may go.
        for ticket in group.iter_mut().filter_map(|b| b.spooled.take()) {
            ticket.committed();
        }
        for (hub, events) in group.iter_mut().filter_map(|b| b.tail.take()) {
            hub.publish(events);
        }
        stats.record_flush(rows, started.elapsed());
        tracing::debug!(
            rows,
            batches = group.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Flushed"
        );
        // Dropping the group releases its queue capacity.
    }
}

async fn commit_group(
    pool: &Pool,
    copy_sql: &str,
    group: &[Batch],
    cfg: &WriterConfig,
    stats: &Stats,
) {
    let chunks: Vec<Bytes> = group
        .iter()
        .filter(|b| !b.rows.is_empty())
        .map(|b| b.rows.clone())
        .collect();
    let rows: usize = group.iter().map(Batch::row_count).sum();
    let rejects: Vec<&Reject> = group.iter().flat_map(|b| b.rejects.iter()).collect();
    let identities: Vec<(&str, Digest)> = group
        .iter()
        .filter_map(|b| Some((&*b.producer, b.identity?)))
        .collect();
    let side = Bookkeeping {
        rejects: &rejects,
        identities: &identities,
    };
    match write_with_retry(pool, copy_sql, &chunks, rows, &side, cfg, stats).await {
        Ok(()) => {
            stats.rows_written.add(rows as u64);
            stats.dead_letters.add(rejects.len() as u64);
        }
        Err(e) => {
            tracing::warn!(error = %e, rows, "PostgreSQL refused a value; isolating the refused rows");
            // Dead letters (and the batches' identities) first, in a transaction of their own, then the rows
            // by bisection.
            if write_with_retry(pool, copy_sql, &[], 0, &side, cfg, stats)
                .await
                .is_ok()
            {
                stats.dead_letters.add(rejects.len() as u64);
            }
            let singles: Vec<SingleRow> = group.iter().flat_map(Batch::single_rows).collect();
            isolate(pool, copy_sql, singles, cfg, stats).await;
        }
    }
}

/// Bisects `rows` until each refused row stands alone, writing every accepted half as it goes.
async fn isolate(
    pool: &Pool,
    copy_sql: &str,
    rows: Vec<SingleRow>,
    cfg: &WriterConfig,
    stats: &Stats,
) {
    let total = rows.len();
    let mut refused = 0usize;
    let mut first_reason: Option<String> = None;
    let mut stack = vec![rows];
    while let Some(part) = stack.pop() {
        if part.is_empty() {
            continue;
        }
        let chunks: Vec<Bytes> = part.iter().map(|r| r.row.clone()).collect();
        let none = Bookkeeping::default();
        match write_with_retry(pool, copy_sql, &chunks, part.len(), &none, cfg, stats).await {
            Ok(()) => stats.rows_written.add(part.len() as u64),
            Err(e) if part.len() == 1 => {
                let r = &part[0];
                let reject = Reject::new(
                    r.producer.clone(),
                    r.received_at_us,
                    Some(r.event_index),
                    format!("refused by PostgreSQL: {}", db_message(&e)),
                    r.source.clone(),
                    cfg.dead_letter_max_bytes,
                );
                // One summary line at the end, not one per row: a batch of bad rows must not flood the log.
                tracing::debug!(event_index = r.event_index, error = %e, "Row refused by PostgreSQL");
                refused += 1;
                first_reason.get_or_insert_with(|| db_message(&e));
                let side = Bookkeeping {
                    rejects: &[&reject],
                    identities: &[],
                };
                if write_with_retry(pool, copy_sql, &[], 0, &side, cfg, stats)
                    .await
                    .is_ok()
                {
                    stats.dead_letters.add(1);
                }
            }
            Err(_) => {
                let mut left = part;
                let right = left.split_off(left.len() / 2);
                stack.push(right);
                stack.push(left);
            }
        }
    }
    if refused > 0 {
        tracing::error!(
            refused,
            rows = total,
            first_reason = first_reason.as_deref().unwrap_or_default(),
            "Rows refused by PostgreSQL were dead-lettered (ingest_rejects)"
        );
    }
}

fn db_message(e: &DbError) -> String {
    match e {
        DbError::Postgres(pg) => pg
            .as_db_error()
            .map_or_else(|| pg.to_string(), |d| d.message().to_string()),
        other => other.to_string(),
    }
}

/// What a flush commits besides its rows: dead letters, and the identities of the batches it completes.
#[derive(Default)]
struct Bookkeeping<'a> {
    rejects: &'a [&'a Reject],
    identities: &'a [(&'a str, Digest)],
}

/// Attempts after which an error that may come from the rows is taken as theirs (see the module doc).
const REFUSED_AFTER: u32 = 5;

/// Writes one flush, retrying transient errors forever. Returns only success or an error of the rows.
async fn write_with_retry(
    pool: &Pool,
    copy_sql: &str,
    chunks: &[Bytes],
    rows: usize,
    side: &Bookkeeping<'_>,
    cfg: &WriterConfig,
    stats: &Stats,
) -> Result<(), DbError> {
    let flush_id = Uuid::new_v4();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    // Counted in /readyz and /metrics from the third failure until this flush ends, however it ends.
    let mut failing = FailingFlush { stats, on: false };
    loop {
        attempt += 1;
        let err = match write_once(pool, copy_sql, chunks, rows, side, flush_id).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_data_error() => return Err(e),
            Err(e) if attempt >= REFUSED_AFTER && e.may_be_the_rows() => {
                tracing::error!(error = %e, attempt, rows, "PostgreSQL keeps refusing this flush; isolating its rows");
                return Err(e);
            }
            Err(e) => e,
        };
        stats.write_retries.add(1);
        // After a few quick retries this needs an operator: say so once per attempt at that level.
        if attempt >= 3 {
            failing.set(err.to_string());
            tracing::error!(error = %err, attempt, rows, "Writing to PostgreSQL keeps failing; retrying");
        } else {
            tracing::warn!(error = %err, attempt, rows, "Writing to PostgreSQL failed; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.max_backoff);
        // The error may have hidden a successful COMMIT.
        if let Ok(client) = pool.get().await {
            if let Ok(true) = ledger::flush_committed(&client, flush_id).await {
                return Ok(());
            }
        }
    }
}

/// A flush's place in [`Stats::failing`], taken at its third failure and given back when it ends.
struct FailingFlush<'s> {
    stats: &'s Stats,
    on: bool,
}

impl FailingFlush<'_> {
    fn set(&mut self, error: String) {
        self.stats.flush_failing(!self.on, error);
        self.on = true;
    }
}

impl Drop for FailingFlush<'_> {
    fn drop(&mut self) {
        if self.on {
            self.stats.flush_recovered();
        }
    }
}

async fn write_once(
    pool: &Pool,
    copy_sql: &str,
    chunks: &[Bytes],
    rows: usize,
    side: &Bookkeeping<'_>,
    flush_id: Uuid,
) -> Result<(), DbError> {
    // The rollup of exactly these rows, computed before the transaction opens.
    let rollups = super::cpu_bound(|| deltas::of_chunks(chunks))
        .map_err(|e| DbError::MalformedRows(e.to_string()))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if rows > 0 {
        // Rows the seal has passed are this writer's to roll up (db/migrations/0008_pairs.sql); usually
        // none, so only then are the rows read again.
        let (sealing, sealed) = seal::pair_seal_bounds(&tx).await?;
        if rollups.earliest_us < sealing {
            for shape in catalog::sealed() {
                let (late, in_flight) = super::cpu_bound(|| {
                    Ok::<_, deltas::MalformedRow>((
                        deltas::late(chunks, shape, i64::MIN, sealed)?,
                        deltas::late(chunks, shape, sealed, sealing)?,
                    ))
                })
                .map_err(|e| DbError::MalformedRows(e.to_string()))?;
                seal::insert_sealed_deltas(&tx, shape, &late, None).await?;
                seal::insert_sealed_deltas(&tx, shape, &in_flight, Some(sealing)).await?;
            }
        }
        let started = std::time::Instant::now();
        let sink = tx.copy_in::<_, Bytes>(copy_sql).await?;
        futures_util::pin_mut!(sink);
        sink.feed(Bytes::from_static(copy::HEADER)).await?;
        for chunk in chunks {
            sink.feed(chunk.clone()).await?;
        }
        sink.feed(Bytes::from_static(copy::TRAILER)).await?;
        sink.as_mut().finish().await?;
        cost::record(None, Step::Copy, started);
    }
    store::insert_rollup_deltas(&tx, &rollups).await?;
    ledger::insert_rejects(&tx, side.rejects.iter().copied()).await?;
    dedup::record(&tx, side.identities).await?;
    ledger::record_flush(&tx, flush_id, rows, side.rejects.len()).await?;
    let started = std::time::Instant::now();
    tx.commit().await?;
    cost::record(None, Step::Commit, started);
    Ok(())
}
