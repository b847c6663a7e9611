//! Retention. Raw events: past `COLLECTOR_RETENTION_DAYS`, whole daily partitions of `comm_logs` are dropped
//! (the default partition's old rows deleted) and dead letters pruned. Rollups: each tier keeps its own days
//! (`COLLECTOR_ROLLUP_MINUTE_DAYS`, `_5MIN_DAYS`, `_HOUR_DAYS`), so trends outlive the events they came from.
//! Answers that read raw events (`/api/logs`, IP filters combined with other dimensions) cover only the days
//! kept; a rollup answer reaching before a tier's bound is read from a coarser tier
//! (db/migrations/0013_rollup_pruned.sql). Several collectors on one database take turns (an advisory lock):
//! one applies it while the others pass.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, DurationRound, TimeDelta, Utc};
use deadpool_postgres::{Object, Pool};
use tokio_util::sync::CancellationToken;

use crate::db::{locks, partitions, DbError};
use crate::rollup::catalog::SHAPES;
use crate::telemetry::Stats;

/// Days kept of raw events and of each rollup tier; 0 keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub raw_days: u32,
    /// (tier in seconds, days kept) for the minute, 5-minute and hour rows.
    pub rollup_days: [(i32, u32); 3],
}

impl Retention {
    fn is_off(&self) -> bool {
        self.raw_days == 0 && self.rollup_days.iter().all(|(_, d)| *d == 0)
    }
}

/// Applies the retention once, unless another collector on the database is applying it now (then this one
/// passes its turn: `Ok(false)`).
pub async fn once(pool: &Pool, retention: &Retention, stats: &Stats) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let ours: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&locks::RETENTION])
        .await?
        .get(0);
    if !ours {
        tracing::debug!("Another collector is applying the retention");
        return Ok(false);
    }
    let applied = apply(&client, retention, stats).await;
    // A connection that broke took its lock with it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::RETENTION])
        .await;
    applied.map(|()| true)
}

async fn apply(client: &Object, retention: &Retention, stats: &Stats) -> Result<(), DbError> {
    if retention.raw_days > 0 {
        raw(client, retention.raw_days, stats).await?;
    }
    for (res, days) in retention.rollup_days {
        if days > 0 {
            let now = Utc::now();
            // Whole hours: every tier's buckets start on one.
            let before = (now - TimeDelta::days(i64::from(days)))
                .duration_trunc(TimeDelta::hours(1))
                .unwrap_or(now);
            let deleted = prune_tier(client, res, before).await?;
            stats.rollup_rows_pruned.add(deleted);
            if deleted > 0 {
                tracing::info!(
                    tier_secs = res,
                    rows = deleted,
                    before = %before,
                    "Retention: rollup rows older than their tier's retention removed"
                );
            }
        }
    }
    Ok(())
}

/// Raw events and dead letters from before today − `days` (UTC) go.
async fn raw(client: &Object, days: u32, stats: &Stats) -> Result<(), DbError> {
    let today = Utc::now().date_naive();
    let Some(cutoff) = today.checked_sub_days(Days::new(u64::from(days))) else {
        return Ok(());
    };
    let (dropped, deleted) = partitions::drop_before(client, cutoff).await?;
    let pruned = super::ledger::prune_rejects(client, cutoff).await?;
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

/// Deletes tier `res`'s rows before `before` from every rollup table (and its top lists), once the bound is
/// recorded: from then on no read uses those rows, so none sees a bucket half deleted.
async fn prune_tier(client: &Object, res: i32, before: DateTime<Utc>) -> Result<u64, DbError> {
    client
        .execute(
            "INSERT INTO rollup_pruned (res, before) VALUES ($1, $2)
             ON CONFLICT (res) DO UPDATE SET before = GREATEST(rollup_pruned.before, EXCLUDED.before)",
            &[&res, &before],
        )
        .await?;
    let mut deleted = 0;
    for shape in SHAPES.iter().filter(|s| s.tiers.contains(&res)) {
        let mut tables = vec![shape.table.to_string()];
        if shape.top_lists.is_some() {
            for suffix in ["_top", "_top_floor", "_top_pending"] {
                tables.push(format!("{}{suffix}", shape.table));
            }
        }
        for table in tables {
            // Table names come from the catalog, not from input.
            deleted += client
                .execute(
                    &format!("DELETE FROM {table} WHERE res = $1 AND bucket < $2"),
                    &[&res, &before],
                )
                .await?;
        }
    }
    Ok(deleted)
}

/// Applies the retention now and then every `every` until cancelled.
pub async fn maintain(
    pool: Pool,
    retention: Retention,
    every: Duration,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    if retention.is_off() {
        return;
    }
    loop {
        if let Err(e) = once(&pool, &retention, &stats).await {
            tracing::warn!(error = %e, "Retention failed; retried later");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
