//! Retention of raw events: past `COLLECTOR_RETENTION_DAYS`, whole daily partitions of `comm_logs` are dropped
//! (the default partition's old rows deleted) and dead letters pruned. Rollups are kept: the trends outlive the
//! events they came from, and every answer from a rollup stays what it was; answers that read raw events
//! (`/api/logs`, IP filters combined with other dimensions) cover only the days kept.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, Utc};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::db::{partitions, DbError};
use crate::telemetry::Stats;

/// Applies the retention once: raw events and dead letters from before today − `days` (UTC) go.
pub async fn once(pool: &Pool, days: u32, stats: &Stats) -> Result<(), DbError> {
    let today = Utc::now().date_naive();
    let Some(cutoff) = today.checked_sub_days(Days::new(u64::from(days))) else {
        return Ok(());
    };
    let client = pool.get().await?;
    let (dropped, deleted) = partitions::drop_before(&client, cutoff).await?;
    let pruned = super::ledger::prune_rejects(&client, cutoff).await?;
    if !dropped.is_empty() || deleted > 0 || pruned > 0 {
        tracing::info!(
            partitions = ?dropped,
            default_partition_rows = deleted,
            dead_letters = pruned,
            before = %cutoff,
            "Retention: raw events and dead letters older than COLLECTOR_RETENTION_DAYS removed"
        );
    }
    stats.partitions_dropped.add(dropped.len() as u64);
    stats.retention_rows_deleted.add(deleted);
    stats.dead_letters_pruned.add(pruned);
    Ok(())
}

/// Applies the retention now and then every `every` until cancelled; `days` 0 keeps everything.
pub async fn maintain(
    pool: Pool,
    days: u32,
    every: Duration,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    if days == 0 {
        return;
    }
    loop {
        if let Err(e) = once(&pool, days, &stats).await {
            tracing::warn!(error = %e, "Retention failed; retried later");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
