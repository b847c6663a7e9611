//! Moves rollup deltas into the keyed rollup rows.
//!
//! Writers append each flush's rollup contributions to the `_delta` tables inside the COPY's transaction, which
//! costs them neither row locks nor histogram merges; they append only each shape's finest tier. This task, the
//! only one updating the keyed rows, takes every delta (`DELETE ... RETURNING`), sums them per key and tier here,
//! and adds the sums to the keyed rows in the same transaction: a contribution is in exactly one of the two
//! places at any moment, and queries read both.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::db::{queries, DbError};

/// The advisory lock held by a compaction (any number unused by others).
const COMPACTOR_LOCK: i64 = 0x0063_6f6d_7061_6374;

/// Compacts every `every` until `shutdown`, then once more (after the writers have drained, when the caller
/// cancels last).
pub async fn run(pool: Pool, every: Duration, shutdown: CancellationToken) {
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(every) => false,
        };
        if let Err(e) = once(&pool).await {
            tracing::warn!(error = %e, "Rollup compaction failed; the deltas stay and are retried");
        }
        if stop {
            return;
        }
    }
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
    let listed = queries::make_src_top_lists(&tx).await?;
    if deltas.is_empty() && listed == 0 {
        return Ok(0);
    }
    tx.commit().await?;
    tracing::debug!(rows = deltas.len(), "Rollup deltas compacted");
    Ok(deltas.len())
}
