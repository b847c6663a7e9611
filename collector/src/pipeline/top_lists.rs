//! Top lists: for each closed bucket of a shape with `top_lists` in the catalog, its rows from the
//! `TOP_ROWS`-th largest up (by events and by bytes), so that top talkers read a bucket's largest rows instead of
//! all of them (db/migrations/0007_src_top.sql, 0008_pairs.sql). A merge into a bucket voids its list until the
//! compactor makes it again.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use crate::db::DbError;
use crate::rollup::catalog::{Shape, TopLists};

/// Marks `buckets` (res, start) of `shape` for new lists, and voids their current ones: without its floor a
/// list is not used (the bucket is read whole) until it is made again, however many buckets wait for that.
pub async fn void(
    client: &impl GenericClient,
    shape: &Shape,
    buckets: Vec<(i32, DateTime<Utc>)>,
) -> Result<(), DbError> {
    if buckets.is_empty() || shape.top_lists.is_none() {
        return Ok(());
    }
    let (res, bucket): (Vec<i32>, Vec<DateTime<Utc>>) = buckets.into_iter().unzip();
    let table = shape.table;
    let sql = format!(
        "INSERT INTO {table}_top_pending SELECT DISTINCT * FROM unnest($1::int4[], $2::timestamptz[])
         ON CONFLICT DO NOTHING"
    );
    client.execute(&sql, &[&res, &bucket]).await?;
    let sql = format!(
        "DELETE FROM {table}_top_floor t USING unnest($1::int4[], $2::timestamptz[]) AS p(res, bucket)
         WHERE t.res = p.res AND t.bucket = p.bucket"
    );
    client.execute(&sql, &[&res, &bucket]).await?;
    Ok(())
}

/// Rows of a closed source bucket kept in its top list, by events and by bytes each (ties beyond included).
const TOP_ROWS: i64 = 200;

/// Lists made by one compaction at most, newest buckets first: after a migration over months of data, the
/// backlog is worked off a little every second instead of holding up the merges.
const TOP_LISTS_PER_COMPACTION: i64 = 64;

/// Makes the top lists of (some) pending buckets of `shape` that have closed (see db/migrations/0007_src_top.sql);
/// returns how many.
pub async fn make_top_lists(client: &impl GenericClient, shape: &Shape) -> Result<u64, DbError> {
    let Some(TopLists { closed_at }) = shape.top_lists else {
        return Ok(0);
    };
    let table = shape.table;
    let sql = format!(
        "DELETE FROM {table}_top_pending
         WHERE (res, bucket) IN (SELECT res, bucket FROM {table}_top_pending
                                 WHERE bucket + res * interval '1 second' <= {closed_at}
                                 ORDER BY bucket DESC LIMIT $1)
         RETURNING res, bucket"
    );
    let rows = client.query(&sql, &[&TOP_LISTS_PER_COMPACTION]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let res: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let bucket: Vec<DateTime<Utc>> = rows.iter().map(|r| r.get(1)).collect();
    list_buckets(client, shape, &res, &bucket).await?;
    Ok(rows.len() as u64)
}

/// Makes the top lists of these buckets of `shape` from their rows as they are now.
pub async fn list_buckets(
    client: &impl GenericClient,
    shape: &Shape,
    res: &[i32],
    bucket: &[DateTime<Utc>],
) -> Result<(), DbError> {
    let table = shape.table;
    // Any list left from before is replaced.
    for t in ["top", "top_floor"] {
        let sql = format!(
            "DELETE FROM {table}_{t} t USING unnest($1::int4[], $2::timestamptz[]) AS p(res, bucket)
             WHERE t.res = p.res AND t.bucket = p.bucket"
        );
        client.execute(&sql, &[&res, &bucket]).await?;
    }
    // The floor is the TOP_ROWS-th largest value (0 when fewer rows): every row at or above it is listed.
    let sql = format!(
        "INSERT INTO {table}_top_floor
         SELECT p.res, p.bucket,
                coalesce((SELECT events FROM {table} s WHERE s.res = p.res AND s.bucket = p.bucket
                          ORDER BY events DESC OFFSET $3::int8 - 1 LIMIT 1), 0),
                coalesce((SELECT bytes_in + bytes_out FROM {table} s
                          WHERE s.res = p.res AND s.bucket = p.bucket
                          ORDER BY 1 DESC OFFSET $3::int8 - 1 LIMIT 1), 0)
         FROM unnest($1::int4[], $2::timestamptz[]) AS p(res, bucket)"
    );
    client.execute(&sql, &[&res, &bucket, &TOP_ROWS]).await?;
    let sql = format!(
        "INSERT INTO {table}_top
         SELECT s.res, s.bucket, {s_keys}, s.events, s.bytes_in + s.bytes_out
         FROM unnest($1::int4[], $2::timestamptz[]) AS p(res, bucket)
         JOIN {table}_top_floor f ON f.res = p.res AND f.bucket = p.bucket
         JOIN {table} s ON s.res = p.res AND s.bucket = p.bucket
         WHERE s.events >= f.events OR s.bytes_in + s.bytes_out >= f.bytes",
        s_keys = shape
            .keys
            .iter()
            .map(|k| format!("s.{}", k.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    client.execute(&sql, &[&res, &bucket]).await?;
    Ok(())
}
