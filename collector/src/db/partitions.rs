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
