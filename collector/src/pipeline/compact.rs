//! Moves rollup deltas into the keyed rollup rows.
//!
//! Writers append each flush's rollup contributions to the `_delta` tables inside the COPY's transaction, which
//! costs them neither row locks nor histogram merges; they append only each shape's finest tier. This task, the
//! only one updating the keyed rows, takes every delta (`DELETE ... RETURNING`), sums them per key and tier here,
//! and adds the sums to the keyed rows in the same transaction: a contribution is in exactly one of the two
//! places at any moment, and queries read both.
//!
//! Source × destination pairs are instead sealed from `comm_logs` a few seconds behind now (see
//! `db/migrations/0008_pairs.sql`), here too, after each compaction.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::db::{queries, DbError};

/// The advisory lock held by a compaction (any number unused by others).
const COMPACTOR_LOCK: i64 = 0x0063_6f6d_7061_6374;

/// Compacts every `every` until `shutdown`, then once more (after the writers have drained, when the caller
/// cancels last). Each time, seals pairs up to `seal_lag` before now, when given.
pub async fn run(
    pool: Pool,
    every: Duration,
    seal_lag: Option<Duration>,
    shutdown: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(every) => false,
        };
        if let Err(e) = once(&pool).await {
            tracing::warn!(error = %e, "Rollup compaction failed; the deltas stay and are retried");
        }
        if let Some(lag) = seal_lag {
            if let Err(e) = seal_pairs(&pool, lag).await {
                tracing::warn!(error = %e, "Sealing pairs failed; retried at the next compaction");
            }
        }
        if stop {
            return;
        }
    }
}

/// Seals the pair rollup up to `lag` before now, an hour of events at most; returns whether it moved.
pub async fn seal_pairs(pool: &Pool, lag: Duration) -> Result<bool, DbError> {
    let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
    let mut client = pool.get().await?;
    if queries::pair_seal_span(&client, lag_ms).await?.is_none() {
        return Ok(false);
    }
    let sealed = seal_with(&mut client, lag_ms).await;
    if sealed.is_err() {
        // It may still hold session locks or an open transaction: it must not go back to the pool. Dropped,
        // the connection closes and the server releases them.
        drop(deadpool_postgres::Object::take(client));
    }
    sealed
}

/// The steps of db/migrations/0008_pairs.sql, on one connection, with session-level locks: the writers' lock is
/// let go in the middle of the transaction, right after its snapshot is taken.
async fn seal_with(client: &mut deadpool_postgres::Object, lag_ms: i64) -> Result<bool, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&COMPACTOR_LOCK])
        .await?;
    // With the compactor lock held, no other collector seals: the span read now stays.
    let Some((from, to)) = queries::pair_seal_span(&*client, lag_ms).await? else {
        unlock(client).await?;
        return Ok(false);
    };
    queries::summarize_new_events(&*client, from, to).await?;
    // Waits for the writers that read the old bound to commit, and keeps new ones waiting.
    client
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&queries::SEAL_WRITERS_LOCK],
        )
        .await?;
    queries::pair_seal_begin(&*client, to).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    // The snapshot: every writer that used the old bound has committed, none using the new one has started.
    client.query_one("SELECT 1", &[]).await?;
    client
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&queries::SEAL_WRITERS_LOCK],
        )
        .await?;
    let rows = queries::pair_seal_commit(&*client, from, to).await?;
    client.batch_execute("COMMIT").await?;
    unlock(client).await?;
    tracing::debug!(%from, %to, rows, "Pairs sealed");
    Ok(true)
}

async fn unlock(client: &deadpool_postgres::Object) -> Result<(), DbError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&COMPACTOR_LOCK])
        .await?;
    Ok(())
}

/// One compaction; returns the delta rows moved.
pub async fn once(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // One compactor at a time, however many collectors share the database: a top list made while another
    // compactor merges into its bucket would miss that merge.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMPACTOR_LOCK])
        .await?;
    let deltas = queries::take_rollup_deltas(&tx).await?;
    if !deltas.is_empty() {
        let groups = super::cpu_bound(|| deltas.groups().map(|g| g.expand()))?;
        queries::merge_rollup(&tx, &groups).await?;
    }
    // After the merge, in its transaction: lists are made from the rows as merged; a later merge into a listed
    // bucket marks it pending again.
    let listed = queries::make_top_lists(&tx, queries::TopShape::SRC).await?
        + queries::make_top_lists(&tx, queries::TopShape::PAIR).await?;
    if deltas.is_empty() && listed == 0 {
        return Ok(0);
    }
    tx.commit().await?;
    tracing::debug!(rows = deltas.len(), "Rollup deltas compacted");
    Ok(deltas.len())
}
