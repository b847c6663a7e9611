//! Daily partitions of `comm_logs`, created ahead of time so that COPY never waits on DDL. Events for days
//! without a partition land in the default partition; creating their day later moves them out.

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use deadpool_postgres::Object;

use super::DbError;

/// Ensures partitions for yesterday through `days_ahead` days from today (UTC). Returns how many were created.
pub async fn ensure(pool: &Pool, days_ahead: u32) -> Result<usize, DbError> {
    let today = Utc::now().date_naive();
    let first = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let days: Vec<NaiveDate> = (0..=u64::from(days_ahead) + 1)
        .filter_map(|d| first.checked_add_days(Days::new(d)))
        .collect();
    let client = pool.get().await?;
    let mut created = 0;
    for day in days {
        if ensure_partition(&client, day).await? {
            tracing::info!(%day, "Created partition");
            created += 1;
        }
    }
    Ok(created)
}

/// Runs [`ensure`] now and then every `every` until cancelled.
pub async fn maintain(pool: Pool, days_ahead: u32, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = ensure(&pool, days_ahead).await {
            tracing::warn!(error = %e, "Partition maintenance failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Creates `day`'s partition unless it exists (moving its events out of the default partition); whether it did.
#[tracing::instrument(skip(client))]
pub async fn ensure_partition(client: &Object, day: NaiveDate) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT comm_logs_ensure_partition($1)", &[&day])
        .await?
        .get(0))
}

/// Drops the daily partitions of `comm_logs` whose whole day is before `cutoff` (UTC), and deletes the rows of the
/// default partition before it; returns the partitions dropped and the rows deleted. Rollups are not touched.
pub async fn drop_before(
    client: &Object,
    cutoff: NaiveDate,
) -> Result<(Vec<String>, u64), DbError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'comm_logs'::regclass AND c.relname ~ '^comm_logs_p[0-9]{8}$'",
            &[],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let Ok(day) = NaiveDate::parse_from_str(&name["comm_logs_p".len()..], "%Y%m%d") else {
            continue;
        };
        // The partition holds [day, day + 1): all of it is older than the cutoff when day + 1 <= cutoff.
        if day
            .checked_add_days(Days::new(1))
            .is_some_and(|end| end <= cutoff)
        {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
                .await?;
            dropped.push(name);
        }
    }
    let cutoff_ts = cutoff.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let deleted = client
        .execute("DELETE FROM comm_logs_default WHERE ts < $1", &[&cutoff_ts])
        .await?;
    Ok((dropped, deleted))
}
