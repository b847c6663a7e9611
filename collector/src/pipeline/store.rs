//! Rollup rows as the write side stores them: a writer appends its flush's groups to the `_delta` tables in the
//! COPY's transaction; the compactor takes every delta back, sums it per key and tier, and adds the sums into the
//! keyed rows (with the service percentiles, in the same transaction). Which table and columns each shape has
//! comes from `rollup::catalog`.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::deltas::{Agg, Flush, Full, Groups, Key, Pair};
use super::top_lists;
use crate::db::sql::Sql;
use crate::db::{us_to_datetime, DbError};
use crate::rollup::catalog::{self, Shape, COUNT_COLUMNS};
use crate::rollup::histogram as latency;

/// How rollup groups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Appended to the `_delta` tables: what a writer does in its COPY's transaction.
    Delta,
    /// Added into the keyed rows: what the compactor does with the deltas it takes.
    Merge,
}

/// A shape's typed key: its columns as arrays to bind, and read back from a delta row.
pub trait ShapeKey<'r>: Sized + Copy + Ord + std::hash::Hash {
    /// One array per key column, in the catalog's order.
    fn columns<'a>(
        keys: impl Iterator<Item = &'a Self> + Clone,
    ) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>
    where
        Self: 'a;
    /// The key from the columns after `res, bucket`.
    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error>;
}

impl<'r> ShapeKey<'r> for Full<'r> {
    fn columns<'a>(
        keys: impl Iterator<Item = &'a Self> + Clone,
    ) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>
    where
        Self: 'a,
    {
        vec![
            Box::new(keys.clone().map(|k| k.producer).collect::<Vec<_>>()),
            Box::new(keys.clone().map(|k| k.service).collect::<Vec<_>>()),
            Box::new(keys.clone().map(|k| k.protocol).collect::<Vec<_>>()),
            Box::new(keys.clone().map(|k| k.host).collect::<Vec<_>>()),
            Box::new(keys.clone().map(|k| k.dst_port).collect::<Vec<_>>()),
            Box::new(keys.map(|k| k.status).collect::<Vec<_>>()),
        ]
    }

    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Full {
            producer: r.try_get(2)?,
            service: r.try_get(3)?,
            protocol: r.try_get(4)?,
            host: r.try_get(5)?,
            dst_port: r.try_get(6)?,
            status: r.try_get(7)?,
        })
    }
}

impl<'r> ShapeKey<'r> for Option<&'r str> {
    fn columns<'a>(
        keys: impl Iterator<Item = &'a Self> + Clone,
    ) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>
    where
        Self: 'a,
    {
        vec![Box::new(keys.copied().collect::<Vec<_>>())]
    }

    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error> {
        r.try_get(2)
    }
}

impl<'r> ShapeKey<'r> for Option<IpAddr> {
    fn columns<'a>(
        keys: impl Iterator<Item = &'a Self> + Clone,
    ) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>
    where
        Self: 'a,
    {
        vec![Box::new(keys.copied().collect::<Vec<_>>())]
    }

    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error> {
        r.try_get(2)
    }
}

impl<'r> ShapeKey<'r> for Pair {
    fn columns<'a>(
        keys: impl Iterator<Item = &'a Self> + Clone,
    ) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>
    where
        Self: 'a,
    {
        vec![
            Box::new(keys.clone().map(|k| k.0).collect::<Vec<_>>()),
            Box::new(keys.map(|k| k.1).collect::<Vec<_>>()),
        ]
    }

    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error> {
        Ok((r.try_get(2)?, r.try_get(3)?))
    }
}

/// Appends one flush's rollup groups to the `_delta` tables (see `pipeline::compact`).
pub async fn insert_rollup_deltas(
    client: &impl GenericClient,
    flush: &Flush<'_>,
) -> Result<(), DbError> {
    write_rollup(client, flush, Write::Delta).await
}

/// Adds groups into the keyed rollup rows (each shape sorted by key), stores the percentiles of the rows whose
/// histograms changed, and voids the top lists of the buckets changed.
pub async fn merge_rollup(client: &impl GenericClient, flush: &Flush<'_>) -> Result<(), DbError> {
    write_rollup(client, flush, Write::Merge).await?;
    store_service_percentiles(client, &flush.service).await?;
    let touched = |g: &mut dyn Iterator<Item = (i32, i64)>| -> Vec<(i32, DateTime<Utc>)> {
        let mut v: Vec<_> = g.map(|(res, us)| (res, us_to_datetime(us))).collect();
        v.dedup();
        v
    };
    let src = touched(&mut flush.src.iter().map(|(k, _)| (k.res, k.bucket_us)));
    let pair = touched(&mut flush.pair.iter().map(|(k, _)| (k.res, k.bucket_us)));
    top_lists::void(client, &catalog::SRC, src).await?;
    top_lists::void(client, &catalog::PAIR, pair).await?;
    Ok(())
}

/// Every shape of `flush`, each to its catalog entry.
async fn write_rollup(
    client: &impl GenericClient,
    flush: &Flush<'_>,
    how: Write,
) -> Result<(), DbError> {
    write_groups(client, &catalog::SERVICE, how, &flush.service).await?;
    write_groups(client, &catalog::SRC_NET, how, &flush.src_net).await?;
    write_groups(client, &catalog::SRC, how, &flush.src).await?;
    write_groups(client, &catalog::DST, how, &flush.dst).await?;
    write_groups(client, &catalog::PAIR, how, &flush.pair).await?;
    write_groups(client, &catalog::FULL, how, &flush.full).await?;
    Ok(())
}

async fn write_groups<'r, D: ShapeKey<'r>>(
    client: &impl GenericClient,
    shape: &Shape,
    how: Write,
    groups: &Groups<D>,
) -> Result<(), DbError> {
    let keys = D::columns(groups.iter().map(|(k, _)| &k.dims));
    let keys: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|b| &**b as _).collect();
    write_shape(
        client,
        shape,
        how,
        &keys,
        &[],
        &Columns::of(groups, shape.latency)?,
    )
    .await
}

/// Computes and stores the percentiles of the service rows just merged into, from their merged histograms
/// (db/migrations/0010_service_percentiles.sql). Every row whose histogram a merge changes is recomputed here in
/// its transaction, so stored percentiles never disagree with the histogram.
async fn store_service_percentiles(
    client: &impl GenericClient,
    groups: &Groups<Option<&str>>,
) -> Result<(), DbError> {
    let keys = groups.iter().filter(|(_, a)| a.latency_n > 0);
    let res: Vec<i32> = keys.clone().map(|(k, _)| k.res).collect();
    if res.is_empty() {
        return Ok(());
    }
    let bucket: Vec<DateTime<Utc>> = keys
        .clone()
        .map(|(k, _)| us_to_datetime(k.bucket_us))
        .collect();
    let service: Vec<Option<&str>> = keys.map(|(k, _)| k.dims).collect();
    let rows = client
        .query(
            "SELECT r.res, r.bucket, r.service, r.latency_hist
             FROM unnest($1::int4[], $2::timestamptz[], $3::text[]) AS k(res, bucket, service)
             JOIN comm_rollup_service r
               ON r.res = k.res AND r.bucket = k.bucket AND r.service IS NOT DISTINCT FROM k.service",
            &[&res, &bucket, &service],
        )
        .await?;
    let (mut res, mut bucket, mut service) = (Vec::new(), Vec::new(), Vec::new());
    let mut pcts: [Vec<f64>; 4] = Default::default();
    for r in &rows {
        let mut hist = latency::Histogram::default();
        let stored: latency::StoredHistogram<'_> = r.try_get(3)?;
        stored
            .for_each(|b, n| hist.add(b, n))
            .map_err(DbError::Corrupt)?;
        let Some(p) = latency::percentiles(&hist, &latency::PERCENTILES) else {
            continue;
        };
        res.push(r.try_get::<_, i32>(0)?);
        bucket.push(r.try_get::<_, DateTime<Utc>>(1)?);
        service.push(r.try_get::<_, Option<&str>>(2)?);
        for (column, v) in pcts.iter_mut().zip(p) {
            column.push(v);
        }
    }
    let [p50, p90, p95, p99] = &pcts;
    client
        .execute(
            "UPDATE comm_rollup_service r SET latency_pcts = ARRAY[k.p50, k.p90, k.p95, k.p99]
             FROM unnest($1::int4[], $2::timestamptz[], $3::text[], $4::float8[], $5::float8[], $6::float8[],
                         $7::float8[]) AS k(res, bucket, service, p50, p90, p95, p99)
             WHERE r.res = k.res AND r.bucket = k.bucket AND r.service IS NOT DISTINCT FROM k.service",
            &[&res, &bucket, &service, p50, p90, p95, p99],
        )
        .await?;
    Ok(())
}

/// Rows of the `_delta` tables, deleted as they are read (the caller's transaction decides whether for good),
/// one list per shape in [`catalog::SHAPES`] order.
pub struct Deltas {
    rows: Vec<Vec<Row>>,
}

/// Deletes and returns every delta row that counts now: `res, bucket, <keys>, <counts>[, <latency>]`.
pub async fn take_rollup_deltas(client: &impl GenericClient) -> Result<Deltas, DbError> {
    let mut rows = Vec::with_capacity(catalog::SHAPES.len());
    for shape in catalog::SHAPES {
        let sql = format!(
            "DELETE FROM {table}_delta WHERE {valid} RETURNING res, bucket, {keys}, {COUNT_COLUMNS}{latency}",
            table = shape.table,
            valid = shape.valid_deltas("(SELECT sealed_to FROM comm_pair_seal)"),
            keys = shape.key_list(),
            latency = shape.latency_columns(),
        );
        rows.push(client.query(&sql, &[]).await?);
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

    fn of(&self, shape: &Shape) -> &[Row] {
        catalog::SHAPES
            .iter()
            .position(|s| *s == shape)
            .map_or(&[], |i| &self.rows[i])
    }

    /// The deltas summed per key.
    pub fn groups(&self) -> Result<Flush<'_>, DbError> {
        Ok(Flush {
            full: delta_groups(self.of(&catalog::FULL), &catalog::FULL)?,
            service: delta_groups(self.of(&catalog::SERVICE), &catalog::SERVICE)?,
            src: delta_groups(self.of(&catalog::SRC), &catalog::SRC)?,
            dst: delta_groups(self.of(&catalog::DST), &catalog::DST)?,
            src_net: delta_groups(self.of(&catalog::SRC_NET), &catalog::SRC_NET)?,
            pair: delta_groups(self.of(&catalog::PAIR), &catalog::PAIR)?,
            earliest_us: i64::MAX,
        })
    }
}

/// Sums the delta rows of `shape` into sorted groups.
fn delta_groups<'r, D: ShapeKey<'r>>(rows: &'r [Row], shape: &Shape) -> Result<Groups<D>, DbError> {
    let mut groups: HashMap<Key<D>, Agg> = HashMap::new();
    for r in rows {
        let bucket: DateTime<Utc> = r.try_get(1)?;
        let key = Key {
            res: r.try_get(0)?,
            bucket_us: bucket.timestamp_micros(),
            dims: D::from_row(r)?,
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
                .for_each(|b, n| *a.hist.entry(b).or_default() += n)
                .map_err(DbError::Corrupt)?;
        }
        groups.entry(key).or_default().merge(&a);
    }
    let mut v: Groups<D> = groups.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
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
    pub fn of<D>(groups: &[(Key<D>, Agg)], latency: bool) -> Result<Columns, DbError> {
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
            .map(|(k, v)| (k.name, k.sql_type, *v)),
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
        .map(|n| format!("{n} = r.{n} + excluded.{n}"))
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
