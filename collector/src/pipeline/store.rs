//! Rollup rows as the write side stores them: a writer appends its flush's groups to the `_delta` tables in the
//! COPY's transaction; the compactor takes every delta back, sums it per key and tier, and adds the sums into the
//! keyed rows (with the service percentiles, in the same transaction). Which table and columns each shape has
//! comes from `rollup::catalog`.

use std::net::IpAddr;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::cost::{self, Step};
use super::deltas::{Agg, Flush, Groups, Key, KeyValues, Value};
use super::{copy, top_lists};
use crate::db::sql::Sql;
use crate::db::{us_to_datetime, DbError};
use crate::rollup::catalog::{ColumnType, Shape, COUNT_COLUMNS, MAX_ROW_BYTES, SHAPES};
use crate::rollup::histogram as latency;

/// How rollup groups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Appended to the `_delta` tables: a writer's rows of a sealed shape (its own deltas go by COPY, see
    /// [`insert_rollup_deltas`]).
    Delta,
    /// Added into the keyed rows: what the compactor does with the deltas it takes.
    Merge,
}

/// The key columns of `groups` of `shape`, one array per column in the catalog's order, typed as the column is.
pub fn key_arrays<'a>(
    shape: &Shape,
    groups: &'a Groups<'_>,
) -> Vec<Box<dyn ToSql + Sync + Send + 'a>> {
    shape
        .keys
        .iter()
        .enumerate()
        .map(|(j, c)| -> Box<dyn ToSql + Sync + Send + 'a> {
            let values = groups.iter().map(move |(k, _)| k.dims[j]);
            match c.source.column_type() {
                ColumnType::Text => Box::new(values.map(Value::text).collect::<Vec<_>>()),
                ColumnType::Int4 => Box::new(values.map(Value::int).collect::<Vec<_>>()),
                ColumnType::Int8 => Box::new(values.map(Value::int8).collect::<Vec<_>>()),
                ColumnType::Inet => Box::new(values.map(Value::inet).collect::<Vec<_>>()),
            }
        })
        .collect()
}

/// The key of `shape` in the columns of `r` after `res, bucket`.
fn key_of_row<'r>(shape: &Shape, r: &'r Row) -> Result<KeyValues<'r>, tokio_postgres::Error> {
    KeyValues::of(shape, |j, c| {
        let at = 2 + j;
        Ok(match c.source.column_type() {
            ColumnType::Text => r
                .try_get::<_, Option<&str>>(at)?
                .map_or(Value::Null, Value::Text),
            ColumnType::Int4 => r
                .try_get::<_, Option<i32>>(at)?
                .map_or(Value::Null, Value::Int),
            ColumnType::Int8 => r
                .try_get::<_, Option<i64>>(at)?
                .map_or(Value::Null, Value::Int8),
            ColumnType::Inet => r
                .try_get::<_, Option<IpAddr>>(at)?
                .map_or(Value::Null, Value::Inet),
        })
    })
}

fn refs<'a>(arrays: &'a [Box<dyn ToSql + Sync + Send + 'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    arrays.iter().map(|b| &**b as _).collect()
}

/// Appends one flush's rollup groups to the `_delta` tables (see `pipeline::compact`), a binary COPY a shape.
/// COPY rather than an insert from bound arrays: PostgreSQL took a third of the time per row (measured on the
/// minute rollup's deltas, 0.8 against 2.6 µs), and the rows are encoded straight from the groups, where the
/// arrays took one allocation a column and a histogram spelled out in decimal.
pub async fn insert_rollup_deltas(
    tx: &deadpool_postgres::Transaction<'_>,
    flush: &Flush<'_>,
) -> Result<(), DbError> {
    for shape in SHAPES {
        let groups = flush.of(shape);
        if groups.is_empty() {
            continue;
        }
        let rows = encode_deltas(shape, groups)?;
        let started = Instant::now();
        let sql = format!(
            "COPY {}_delta (res, bucket, {}, {COUNT_COLUMNS}{}) FROM STDIN (FORMAT BINARY)",
            shape.table,
            shape.key_list(),
            shape.latency_columns()
        );
        let sink = tx.copy_in::<_, bytes::Bytes>(&sql).await?;
        futures_util::pin_mut!(sink);
        futures_util::SinkExt::feed(&mut sink, bytes::Bytes::from(rows)).await?;
        sink.as_mut().finish().await?;
        cost::record(Some(shape), Step::Append, started);
    }
    Ok(())
}

/// The COPY data of `groups` of `shape`: header, a row a group in the column order of
/// [`insert_rollup_deltas`], trailer.
fn encode_deltas(shape: &Shape, groups: &Groups<'_>) -> Result<Vec<u8>, DbError> {
    let columns = 2 + shape.keys.len() + 5 + if shape.latency { 4 } else { 0 };
    let mut buf = Vec::with_capacity(copy::HEADER.len() + groups.len() * (16 + columns * 12));
    buf.extend_from_slice(copy::HEADER);
    for (k, a) in groups {
        buf.extend_from_slice(&(columns as i16).to_be_bytes());
        copy::put_i32(&mut buf, Some(k.res));
        copy::put_ts(&mut buf, k.bucket_us);
        for (c, v) in shape.keys.iter().zip(k.dims.iter()) {
            match c.source.column_type() {
                ColumnType::Text => copy::put_text(&mut buf, v.text()),
                ColumnType::Int4 => copy::put_i32(&mut buf, v.int()),
                ColumnType::Int8 => copy::put_i64(&mut buf, v.int8()),
                ColumnType::Inet => copy::put_inet(&mut buf, v.inet()),
            }
        }
        for n in [a.events, a.bytes_in, a.bytes_out, a.errors, a.client_errors] {
            copy::put_i64(&mut buf, Some(n));
        }
        if shape.latency {
            copy::put_i64(&mut buf, Some(a.latency_n));
            copy::put_f64(&mut buf, Some(a.latency_sum));
            copy::put_f64(&mut buf, a.latency_max);
            let hist = latency::to_stored(&a.hist).ok_or_else(|| {
                DbError::Corrupt("a latency bucket counts 2^48 events or more".into())
            })?;
            copy::put_i64_array(&mut buf, hist);
        }
    }
    buf.extend_from_slice(copy::TRAILER);
    Ok(buf)
}

/// Adds groups into the keyed rollup rows (each shape sorted by key), stores the percentiles of the rows whose
/// histograms changed, and voids the top lists of the buckets changed.
pub async fn merge_rollup(client: &impl GenericClient, flush: &Flush<'_>) -> Result<(), DbError> {
    write_rollup(client, flush).await?;
    for shape in SHAPES {
        let groups = flush.of(shape);
        if shape.percentiles {
            let started = Instant::now();
            store_percentiles(client, shape, groups).await?;
            cost::record(Some(shape), Step::Merge, started);
        }
        if shape.top_lists.is_some() {
            let mut touched: Vec<(i32, DateTime<Utc>)> = groups
                .iter()
                .map(|(k, _)| (k.res, us_to_datetime(k.bucket_us)))
                .collect();
            touched.dedup();
            let started = Instant::now();
            top_lists::void(client, shape, touched).await?;
            cost::record(Some(shape), Step::TopLists, started);
        }
    }
    Ok(())
}

/// Every shape of `flush` added into the keyed rows, in catalog order.
async fn write_rollup(client: &impl GenericClient, flush: &Flush<'_>) -> Result<(), DbError> {
    for shape in SHAPES {
        let groups = flush.of(shape);
        let keys = key_arrays(shape, groups);
        let columns = Columns::of(groups, shape.latency)?;
        let started = Instant::now();
        write_shape(client, shape, Write::Merge, &refs(&keys), &[], &columns).await?;
        cost::record(Some(shape), Step::Merge, started);
    }
    Ok(())
}

/// Computes and stores the percentiles of the rows of `shape` just merged into, from their merged histograms
/// (db/migrations/0010_service_percentiles.sql). Every row whose histogram a merge changes is recomputed here in
/// its transaction, so stored percentiles never disagree with the histogram.
async fn store_percentiles(
    client: &impl GenericClient,
    shape: &Shape,
    groups: &Groups<'_>,
) -> Result<(), DbError> {
    let changed: Groups<'_> = groups
        .iter()
        .filter(|(_, a)| a.latency_n > 0)
        .cloned()
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let res: Vec<i32> = changed.iter().map(|(k, _)| k.res).collect();
    let bucket: Vec<DateTime<Utc>> = changed
        .iter()
        .map(|(k, _)| us_to_datetime(k.bucket_us))
        .collect();
    let keys = key_arrays(shape, &changed);
    let table = shape.table;
    let same_key: String = shape
        .keys
        .iter()
        .map(|c| format!(" AND r.{0} IS NOT DISTINCT FROM k.{0}", c.name))
        .collect();
    let mut q = Sql::new();
    let sql = format!(
        "SELECT r.res, r.bucket, r.latency_hist, k.ord
         FROM {} JOIN {table} r ON r.res = k.res AND r.bucket = k.bucket{same_key}",
        numbered(&mut q, shape, &res, &bucket, &keys)
    );
    let rows = client.query(&sql, &q.params()).await?;
    let mut ord = Vec::new();
    let mut pcts: [Vec<f64>; 4] = Default::default();
    for r in &rows {
        let mut hist = latency::Histogram::default();
        let stored: latency::StoredHistogram<'_> = r.try_get(2)?;
        stored
            .for_each(|b, n| hist.add(b, n))
            .map_err(DbError::Corrupt)?;
        let Some(p) = latency::percentiles(&hist, &latency::PERCENTILES) else {
            continue;
        };
        ord.push(r.try_get::<_, i64>(3)?);
        for (column, v) in pcts.iter_mut().zip(p) {
            column.push(v);
        }
    }
    let [p50, p90, p95, p99] = &pcts;
    let mut q = Sql::new();
    let sql = format!(
        "UPDATE {table} r SET latency_pcts = ARRAY[p.p50, p.p90, p.p95, p.p99]
         FROM {numbered},
              unnest({ord}::int8[], {p50}::float8[], {p90}::float8[], {p95}::float8[], {p99}::float8[])
              AS p(ord, p50, p90, p95, p99)
         WHERE p.ord = k.ord AND r.res = k.res AND r.bucket = k.bucket{same_key}",
        numbered = numbered(&mut q, shape, &res, &bucket, &keys),
        ord = q.bind_ref(&ord),
        p50 = q.bind_ref(p50),
        p90 = q.bind_ref(p90),
        p95 = q.bind_ref(p95),
        p99 = q.bind_ref(p99),
    );
    client.execute(&sql, &q.params()).await?;
    Ok(())
}

/// Rows of `shape` by key as a numbered set `k(res, bucket, <keys>, ord)`, its arrays bound in `q`.
fn numbered<'a>(
    q: &mut Sql<'a>,
    shape: &Shape,
    res: &'a Vec<i32>,
    bucket: &'a Vec<DateTime<Utc>>,
    keys: &'a [Box<dyn ToSql + Sync + Send + 'a>],
) -> String {
    let (res_at, bucket_at) = (q.bind_ref(res), q.bind_ref(bucket));
    let arrays: Vec<String> = shape
        .keys
        .iter()
        .zip(keys)
        .map(|(c, v)| format!("{}::{}[]", q.bind_ref(&**v), c.source.column_type().sql()))
        .collect();
    format!(
        "unnest({res_at}::int4[], {bucket_at}::timestamptz[], {}) WITH ORDINALITY AS k(res, bucket, {}, ord)",
        arrays.join(", "),
        shape.key_list()
    )
}

/// Rows of the `_delta` tables, deleted as they are read (the caller's transaction decides whether for good),
/// one list per shape in [`SHAPES`] order.
pub struct Deltas {
    rows: Vec<Vec<Row>>,
}

/// Deletes and returns every delta row that counts now: `res, bucket, <keys>, <counts>[, <latency>]`.
pub async fn take_rollup_deltas(client: &impl GenericClient) -> Result<Deltas, DbError> {
    let mut rows = Vec::with_capacity(SHAPES.len());
    for shape in SHAPES {
        let sql = format!(
            "DELETE FROM {table}_delta WHERE {valid} RETURNING res, bucket, {keys}, {COUNT_COLUMNS}{latency}",
            table = shape.table,
            valid = shape.valid_deltas("(SELECT sealed_to FROM comm_pair_seal)"),
            keys = shape.key_list(),
            latency = shape.latency_columns(),
        );
        let started = Instant::now();
        rows.push(client.query(&sql, &[]).await?);
        cost::record(Some(shape), Step::Take, started);
    }
    Ok(Deltas { rows })
}

impl Deltas {
    pub fn len(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The delta rows as groups, one a row, unsorted: [`Flush::expand`] sums them per key and tier, and sorts.
    pub fn groups(&self) -> Result<Flush<'_>, DbError> {
        Ok(Flush {
            groups: SHAPES
                .iter()
                .zip(&self.rows)
                .map(|(shape, rows)| delta_groups(rows, shape))
                .collect::<Result<_, _>>()?,
            earliest_us: i64::MAX,
        })
    }
}

/// The delta rows of `shape`, read. Not summed here: the compactor's expansion sums them into every tier in
/// one pass, and summing (and sorting) them first too was a third of the compactor's CPU.
fn delta_groups<'r>(rows: &'r [Row], shape: &Shape) -> Result<Groups<'r>, DbError> {
    let mut groups = Vec::with_capacity(rows.len());
    for r in rows {
        let bucket: DateTime<Utc> = r.try_get(1)?;
        let key = Key {
            res: r.try_get(0)?,
            bucket_us: bucket.timestamp_micros(),
            dims: key_of_row(shape, r)?,
        };
        let at = 2 + shape.keys.len();
        let mut a = Agg {
            events: r.try_get(at)?,
            bytes_in: r.try_get(at + 1)?,
            bytes_out: r.try_get(at + 2)?,
            errors: r.try_get(at + 3)?,
            client_errors: r.try_get(at + 4)?,
            ..Default::default()
        };
        if shape.latency {
            a.latency_n = r.try_get(at + 5)?;
            a.latency_sum = r.try_get(at + 6)?;
            a.latency_max = r.try_get(at + 7)?;
            let stored: latency::StoredHistogram<'_> = r.try_get(at + 8)?;
            stored
                .for_each(|b, n| a.hist.add(b, n))
                .map_err(DbError::Corrupt)?;
        }
        groups.push((key, a));
    }
    Ok(groups)
}

/// The key time and the summed values of a shape's groups, as arrays to bind.
pub struct Columns {
    res: Vec<i32>,
    bucket: Vec<DateTime<Utc>>,
    events: Vec<i64>,
    bytes_in: Vec<i64>,
    bytes_out: Vec<i64>,
    errors: Vec<i64>,
    client_errors: Vec<i64>,
    /// For the shapes with latency.
    latency: Option<LatencyColumns>,
}

/// Count, sum, max and histogram per group.
type LatencyColumns = (Vec<i64>, Vec<f64>, Vec<Option<f64>>, Vec<String>);

impl Columns {
    pub fn of(groups: &[(Key<'_>, Agg)], latency: bool) -> Result<Columns, DbError> {
        let mut c = Columns {
            res: Vec::with_capacity(groups.len()),
            bucket: Vec::with_capacity(groups.len()),
            events: Vec::with_capacity(groups.len()),
            bytes_in: Vec::with_capacity(groups.len()),
            bytes_out: Vec::with_capacity(groups.len()),
            errors: Vec::with_capacity(groups.len()),
            client_errors: Vec::with_capacity(groups.len()),
            latency: latency.then(Default::default),
        };
        for (k, a) in groups {
            c.res.push(k.res);
            c.bucket.push(us_to_datetime(k.bucket_us));
            c.events.push(a.events);
            c.bytes_in.push(a.bytes_in);
            c.bytes_out.push(a.bytes_out);
            c.errors.push(a.errors);
            c.client_errors.push(a.client_errors);
            if let Some((n, sum, max, hist)) = &mut c.latency {
                n.push(a.latency_n);
                sum.push(a.latency_sum);
                max.push(a.latency_max);
                hist.push(latency::to_stored_literal(&a.hist).ok_or_else(|| {
                    DbError::Corrupt("a latency bucket counts 2^48 events or more".into())
                })?);
            }
        }
        Ok(c)
    }
}

/// Writes one shape: `keys` are its key arrays in catalog order, `extra` (column, element type, values) further
/// columns of the delta table.
pub async fn write_shape(
    client: &impl GenericClient,
    shape: &Shape,
    how: Write,
    keys: &[&(dyn ToSql + Sync)],
    extra: &[(&str, &str, &(dyn ToSql + Sync))],
    c: &Columns,
) -> Result<(), DbError> {
    if c.res.is_empty() {
        return Ok(());
    }
    // (column, element type bound, values)
    let mut columns: Vec<(&str, &str, &(dyn ToSql + Sync))> = vec![
        ("res", "int4", &c.res),
        ("bucket", "timestamptz", &c.bucket),
    ];
    columns.extend(
        shape
            .keys
            .iter()
            .zip(keys)
            .map(|(k, v)| (k.name, k.source.column_type().sql(), *v)),
    );
    let key: Vec<&str> = columns.iter().map(|(n, _, _)| *n).collect();
    columns.extend(extra.iter().copied());
    columns.extend([
        ("events", "int8", &c.events as &(dyn ToSql + Sync)),
        ("bytes_in", "int8", &c.bytes_in),
        ("bytes_out", "int8", &c.bytes_out),
        ("errors", "int8", &c.errors),
        ("client_errors", "int8", &c.client_errors),
    ]);
    let mut sums = vec!["events", "bytes_in", "bytes_out", "errors", "client_errors"];
    let mut latency_sets = String::new();
    if let Some((n, sum, max, hist)) = &c.latency {
        columns.extend([
            ("latency_n", "int8", n as &(dyn ToSql + Sync)),
            ("latency_sum", "float8", sum),
            ("latency_max", "float8", max),
            // Histograms travel as array literals: unnest cannot return an array per row from an array.
            ("latency_hist", "text", hist),
        ]);
        sums.extend(["latency_n", "latency_sum"]);
        latency_sets = ", latency_max = greatest(r.latency_max, excluded.latency_max), \
                        latency_hist = latency_hist_merge(r.latency_hist, excluded.latency_hist)"
            .into();
    }
    let mut q = Sql::new();
    let arrays: Vec<String> = columns
        .iter()
        .map(|(_, t, v)| format!("{}::{t}[]", q.bind_ref(*v)))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _, _)| *n).collect();
    let values: Vec<&str> = names
        .iter()
        .map(|n| {
            if *n == "latency_hist" {
                "latency_hist::int8[]"
            } else {
                n
            }
        })
        .collect();
    let sets: Vec<String> = sums
        .iter()
        .map(|n| match *n {
            "bytes_in" | "bytes_out" => {
                format!("{n} = least(r.{n} + excluded.{n}, {MAX_ROW_BYTES})")
            }
            _ => format!("{n} = r.{n} + excluded.{n}"),
        })
        .collect();
    let insert = format!(
        "SELECT {values} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, ord) ORDER BY ord",
        names = names.join(", "),
        values = values.join(", "),
        arrays = arrays.join(", "),
    );
    let table = shape.table;
    let sql = match how {
        Write::Delta => format!(
            "INSERT INTO {table}_delta ({names}) {insert}",
            names = names.join(", ")
        ),
        Write::Merge => format!(
            "INSERT INTO {table} AS r ({names}) {insert}
             ON CONFLICT ({key}) DO UPDATE SET {sets}{latency_sets}",
            names = names.join(", "),
            key = key.join(", "),
            sets = sets.join(", "),
        ),
    };
    client.execute(&sql, &q.params()).await?;
    Ok(())
}
