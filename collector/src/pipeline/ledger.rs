//! The flush ledger and the dead letters: how a writer knows whether a flush it retries already committed, and
//! where the events PostgreSQL refused are kept raw with the reason.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{us_to_datetime, DbError};
use crate::pipeline::batch::Reject;

/// The flush ledger only has to outlive a writer's retry loop; a day is plenty.
pub async fn prune_flush_ledger(client: &Object) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM ingest_flushes WHERE committed_at < now() - interval '1 day'",
            &[],
        )
        .await?)
}

/// Deletes dead letters received before `cutoff` (UTC midnight); returns how many.
pub async fn prune_rejects(
    client: &impl GenericClient,
    cutoff: chrono::NaiveDate,
) -> Result<u64, DbError> {
    let cutoff = cutoff.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    Ok(client
        .execute(
            "DELETE FROM ingest_rejects WHERE received_at < $1",
            &[&cutoff],
        )
        .await?)
}

/// Whether the flush `flush_id` committed (its transaction records it, see [`record_flush`]).
pub async fn flush_committed(client: &impl GenericClient, flush_id: Uuid) -> Result<bool, DbError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM ingest_flushes WHERE flush_id = $1",
            &[&flush_id],
        )
        .await?
        .is_some())
}

/// Records, in the flush's own transaction, that it committed with `rows` rows and `rejects` dead letters.
pub async fn record_flush(
    client: &impl GenericClient,
    flush_id: Uuid,
    rows: usize,
    rejects: usize,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO ingest_flushes (flush_id, rows, rejects) VALUES ($1, $2, $3)",
            &[&flush_id, &(rows as i32), &(rejects as i32)],
        )
        .await?;
    Ok(())
}

/// Keeps `rejects` in ingest_rejects, raw, with their reason; returns how many.
pub async fn insert_rejects<'a>(
    client: &impl GenericClient,
    rejects: impl Iterator<Item = &'a Reject>,
) -> Result<u64, DbError> {
    let mut received = Vec::new();
    let mut producers = Vec::new();
    let mut indexes = Vec::new();
    let mut reasons = Vec::new();
    let mut raws = Vec::new();
    let mut truncated = Vec::new();
    for r in rejects {
        received.push(us_to_datetime(r.received_at_us));
        producers.push(&*r.producer);
        indexes.push(r.event_index);
        reasons.push(r.reason.as_str());
        raws.push(&r.raw[..]);
        truncated.push(r.raw_truncated);
    }
    if received.is_empty() {
        return Ok(0);
    }
    Ok(client
        .execute(
            "INSERT INTO ingest_rejects (received_at, producer, event_index, reason, raw, raw_truncated)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int4[], $4::text[], $5::bytea[], $6::bool[])",
            &[&received, &producers, &indexes, &reasons, &raws, &truncated],
        )
        .await?)
}

/// Prunes the ledger, and batch identities older than `dedup_window`, now and then every `every` until
/// cancelled.
pub async fn maintain(
    pool: Pool,
    every: Duration,
    dedup_window: Duration,
    spool: Option<crate::pipeline::spool::Spool>,
    shutdown: CancellationToken,
) {
    loop {
        if let Ok(client) = pool.get().await {
            if let Err(e) = prune_flush_ledger(&client).await {
                tracing::warn!(error = %e, "Pruning the flush ledger failed");
            }
            // Identities of batches still in the spool are kept: a replay looks for them.
            let keep = spool
                .as_ref()
                .and_then(|s| s.oldest_record_us())
                .map(|oldest| {
                    let age = chrono::Utc::now()
                        .timestamp_micros()
                        .saturating_sub(oldest)
                        .max(0);
                    Duration::from_micros(age as u64 + 60_000_000)
                });
            let window = keep.map_or(dedup_window, |k| k.max(dedup_window));
            if let Err(e) = crate::pipeline::dedup::prune(&client, window).await {
                tracing::warn!(error = %e, "Pruning batch identities failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
