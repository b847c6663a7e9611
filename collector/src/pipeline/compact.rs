//! Moves rollup deltas into the keyed rollup rows.
//!
//! Writers append each flush's rollup contributions to the `_delta` tables inside the COPY's transaction, which
//! costs them neither row locks nor histogram merges; they append only each shape's finest tier. This task, the
//! only one updating the keyed rows, takes every delta (`DELETE ... RETURNING`), sums them per key and tier here,
//! and adds the sums to the keyed rows in the same transaction: a contribution is in exactly one of the two
//! places at any moment, and queries read both.
//!
//! Source × destination pairs are instead sealed from `comm_logs` a few seconds behind now (see
//! `db/migrations/0008_pairs.sql`), here too, after each compaction ([`seal`]).

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::cost::{self, Step};
use super::{seal, store, top_lists};
use crate::db::{locks, DbError};
use crate::rollup::catalog;

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
            if let Err(e) = seal::seal_pairs(&pool, lag).await {
                tracing::warn!(error = %e, "Sealing pairs failed; retried at the next compaction");
            }
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
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::COMPACTOR])
        .await?;
    let deltas = store::take_rollup_deltas(&tx).await?;
    if !deltas.is_empty() {
        let groups = super::cpu_bound(|| deltas.groups().map(|g| g.expand()))?;
        store::merge_rollup(&tx, &groups).await?;
    }
    // After the merge, in its transaction: lists are made from the rows as merged; a later merge into a listed
    // bucket marks it pending again.
    let mut listed = 0;
    for shape in catalog::SHAPES.iter().filter(|s| s.top_lists.is_some()) {
        let started = Instant::now();
        listed += top_lists::make_top_lists(&tx, shape).await?;
        cost::record(Some(shape), Step::TopLists, started);
    }
    if deltas.is_empty() && listed == 0 {
        return Ok(0);
    }
    tx.commit().await?;
    tracing::debug!(rows = deltas.len(), "Rollup deltas compacted");
    Ok(deltas.len())
}
