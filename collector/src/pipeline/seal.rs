//! The seal: source × destination pairs and sources × ports are rolled up from `comm_logs` a few seconds behind
//! now rather than by each writer (with thousands of them a flush, per-flush deltas would cost more than the
//! COPY). Writers roll up only the late events the seal has already passed. The protocol, its locks and bounds
//! are described in `db/migrations/0008_pairs.sql`; both sealed shapes share one bound (0018_src_ports.sql).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;

use super::cost::{self, Step};
use super::deltas::Groups;
use super::store::{key_arrays, write_shape, Columns, Write};
use super::top_lists;
use crate::db::{locks, us_to_datetime, DbError};
use crate::rollup::catalog::{self, Shape, MAX_ROW_BYTES};

/// Seals the sealed rollups up to `lag` before now, an hour of events at most; returns whether it moved.
pub async fn seal_pairs(pool: &Pool, lag: Duration) -> Result<bool, DbError> {
    let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
    let mut client = pool.get().await?;
    if pair_seal_span(&client, lag_ms).await?.is_none() {
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
        .execute("SELECT pg_advisory_lock($1)", &[&locks::COMPACTOR])
        .await?;
    // With the compactor lock held, no other collector seals: the span read now stays.
    let Some((from, to)) = pair_seal_span(&*client, lag_ms).await? else {
        unlock(client).await?;
        return Ok(false);
    };
    let started = Instant::now();
    summarize_new_events(&*client, from, to).await?;
    cost::record(None, Step::Summarize, started);
    // Waits for the writers that read the old bound to commit, and keeps new ones waiting.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&locks::SEAL_WRITERS])
        .await?;
    pair_seal_begin(&*client, to).await?;
    // On Citus each worker takes its snapshot when the seal's statements first reach it, not at the first
    // statement: the writers wait until those statements have run.
    let distributed = crate::db::migrate::is_citus(&*client).await?;
    // The statistics of a partition being filled lag far behind its rows: planned with them, a span of 8M events
    // (a backlog after a burst) was expected to hold 13,000, read through the (src_ip, ts) btree in src_ip
    // order (4.6M random page reads) and sorted on disk to be grouped: 24 s for the sources-by-port rollup alone.
    // So no plain index scan, and the events are grouped in a hash, in memory up to a stated bound (beyond it
    // the hash spills to disk): 10 s, most of it the upsert. No sequential scan either: without statistics (a
    // day's partition before autovacuum first analyzes it) the planner cannot tell that the BRIN on ts narrows
    // the span, and read the whole day at every seal. Measured after 4M events: each seal, even of an empty
    // span, took 0.7 s, and an idle collector kept PostgreSQL half busy; through the BRIN, the empty span's
    // index and heap scans took 0.2 ms each. No JIT: a path turned off counts as vastly expensive, so every
    // statement here that sorts was compiled with inlining and optimization, 0.19 s each time (of 1.6 s for a
    // pair seal of 500,000 events).
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ;
             SET LOCAL jit = off;
             SET LOCAL work_mem = '32MB';
             SET LOCAL enable_indexscan = off;
             SET LOCAL enable_seqscan = off;
             SET LOCAL enable_sort = off",
        )
        .await?;
    // The snapshot: every writer that used the old bound has committed, none using the new one has started.
    client.query_one("SELECT 1", &[]).await?;
    if !distributed {
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&locks::SEAL_WRITERS])
            .await?;
    }
    let rows = pair_seal_commit(&*client, from, to).await?;
    client.batch_execute("COMMIT").await?;
    if distributed {
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&locks::SEAL_WRITERS])
            .await?;
    }
    unlock(client).await?;
    tracing::debug!(%from, %to, rows, "Sealed");
    Ok(true)
}

async fn unlock(client: &deadpool_postgres::Object) -> Result<(), DbError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::COMPACTOR])
        .await?;
    Ok(())
}

/// In a writer's transaction, before its COPY: the pair seal's bounds `(sealing_to, sealed_to)`, Unix
/// microseconds. Rows older than `sealing_to` are the writer's to roll up as pair deltas; the shared lock keeps a
/// seal from moving the bounds until commit.
pub async fn pair_seal_bounds(client: &impl GenericClient) -> Result<(i64, i64), DbError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1)",
            &[&locks::SEAL_WRITERS],
        )
        .await?;
    // A statement of its own: in READ COMMITTED it sees bounds committed while this one waited for the lock.
    let r = client
        .query_one("SELECT sealing_to, sealed_to FROM comm_pair_seal", &[])
        .await?;
    let (sealing, sealed): (DateTime<Utc>, DateTime<Utc>) = (r.get(0), r.get(1));
    Ok((sealing.timestamp_micros(), sealed.timestamp_micros()))
}

/// Appends a writer's deltas of a sealed `shape`; `gen` marks those of a seal in progress, which count once it
/// has committed.
pub async fn insert_sealed_deltas(
    client: &impl GenericClient,
    shape: &Shape,
    groups: &Groups<'_>,
    gen: Option<i64>,
) -> Result<(), DbError> {
    let keys = key_arrays(shape, groups);
    let keys: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|b| &**b as _).collect();
    let gen = vec![gen.map(us_to_datetime); groups.len()];
    let started = Instant::now();
    write_shape(
        client,
        shape,
        Write::Delta,
        &keys,
        &[("gen", "timestamptz", &gen)],
        &Columns::of(groups, shape.latency)?,
    )
    .await?;
    cost::record(Some(shape), Step::Append, started);
    Ok(())
}

/// The next seal's span: from the current bound to `lag_ms` before now, an hour at most (a backlog, as after
/// a bulk load, is worked off step by step). `None` when there is nothing to seal.
async fn pair_seal_span(
    client: &impl GenericClient,
    lag_ms: i64,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, DbError> {
    let r = client
        .query_one(
            "SELECT sealed_to, least(date_trunc('second', now() - $1 * interval '1 millisecond'),
                                     sealed_to + interval '1 hour')
             FROM comm_pair_seal",
            &[&(lag_ms as f64)],
        )
        .await?;
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (r.get(0), r.get(1));
    Ok((to > from).then_some((from, to)))
}

/// Summarizes the BRIN ranges of comm_logs filled since the last call, in the days of [from, now] (see
/// `comm_logs_summarize` in db/migrations/0008_pairs.sql); returns how many.
async fn summarize_new_events(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbError> {
    Ok(client
        .query_one(
            "SELECT comm_logs_summarize($1, greatest($2, now()))",
            &[&from, &to],
        )
        .await?
        .get(0))
}

/// The first half of a seal, holding the writers' lock exclusively: drops the deltas a failed seal left (their
/// events are in the span about to be sealed, see db/migrations/0008_pairs.sql), and publishes the new bound.
async fn pair_seal_begin(client: &impl GenericClient, to: DateTime<Utc>) -> Result<(), DbError> {
    for shape in catalog::sealed() {
        let sql = format!(
            "DELETE FROM {}_delta WHERE gen > (SELECT sealed_to FROM comm_pair_seal)",
            shape.table
        );
        client.execute(&sql, &[]).await?;
    }
    client
        .execute("UPDATE comm_pair_seal SET sealing_to = $1", &[&to])
        .await?;
    Ok(())
}

/// The seal's work, in the snapshot it took: each sealed shape's rows of [from, to) from comm_logs into its
/// rollup, their buckets marked for new top lists, and the bound moved. Returns the rows written.
async fn pair_seal_commit(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, DbError> {
    let mut rows = 0;
    for shape in catalog::sealed() {
        let sql = format!(
            "INSERT INTO {table} AS r {events}
             ON CONFLICT (res, bucket, {keys}) DO UPDATE SET
                 events = r.events + excluded.events,
                 bytes_in = least(r.bytes_in + excluded.bytes_in, {MAX_ROW_BYTES}),
                 bytes_out = least(r.bytes_out + excluded.bytes_out, {MAX_ROW_BYTES}),
                 errors = r.errors + excluded.errors,
                 client_errors = r.client_errors + excluded.client_errors",
            table = shape.table,
            events = shape.seal_sql("$1", "$2"),
            keys = shape.key_list(),
        );
        let started = Instant::now();
        let written = client.execute(&sql, &[&from, &to]).await?;
        cost::record(Some(shape), Step::Seal, started);
        rows += written;
        // A span without events changed no bucket: listing the open ones again would read them whole for
        // nothing, every second an idle collector seals (after 6M events, PostgreSQL was busy 70% of the time).
        if shape.top_lists.is_some() && written > 0 {
            let started = Instant::now();
            list_sealed_buckets(client, shape, from, to).await?;
            cost::record(Some(shape), Step::TopLists, started);
        }
    }
    client
        .execute("UPDATE comm_pair_seal SET sealed_to = $1", &[&to])
        .await?;
    Ok(rows)
}

/// Marks the buckets of `shape` that [from, to) touched for new top lists, in the seal's transaction.
async fn list_sealed_buckets(
    client: &impl GenericClient,
    shape: &Shape,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), DbError> {
    let tiers: Vec<String> = shape.tiers.iter().map(|t| format!("({t})")).collect();
    // The buckets just changed, the open ones included, are listed again in this transaction: the latest hour
    // of a 24-hour window is open, and reading it whole would cost a query ~40 ms at 100M events a day.
    let sql = format!(
        "SELECT t.res, b
         FROM (VALUES {tiers}) AS t(res),
              generate_series(date_bin(t.res * interval '1 second', $1::timestamptz, to_timestamp(0)),
                              $2::timestamptz - interval '1 microsecond', t.res * interval '1 second') AS b",
        tiers = tiers.join(", "),
    );
    let touched = client.query(&sql, &[&from, &to]).await?;
    let res: Vec<i32> = touched.iter().map(|r| r.get(0)).collect();
    let bucket: Vec<DateTime<Utc>> = touched.iter().map(|r| r.get(1)).collect();
    top_lists::list_buckets(client, shape, &res, &bucket).await?;
    Ok(())
}
