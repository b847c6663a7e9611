//! Time series: counts and latency per time bucket (optionally per service), from the table the planner chose.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::filters::Filters;
use super::plan::{self, Table, Tail};
use crate::db::DbError;
use crate::rollup::histogram as latency;

/// Counts of one group (a time bucket, a service, a talker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub events: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub errors: i64,
    pub client_errors: i64,
}

/// The five counts of [`Table::counts`] at columns `first..first + 5` of `r`.
pub fn counts_at(r: &tokio_postgres::Row, first: usize) -> Counts {
    Counts {
        events: r.get(first),
        bytes_in: r.get(first + 1),
        bytes_out: r.get(first + 2),
        errors: r.get(first + 3),
        client_errors: r.get(first + 4),
    }
}

/// Counts per time bucket of `bucket_secs` (aligned to the Unix epoch), per value of `group` (SQL text,
/// `NULL::text` for none).
#[tracing::instrument(skip(client))]
pub async fn counts_by_bucket(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    group: &str,
) -> Result<Vec<BucketCounts>, DbError> {
    let tail = Tail::read(client, table).await?;
    let mut w = plan::filter(f, table, bucket_secs);
    let width = w.bind(bucket_secs as f64);
    let sql = format!(
        "SELECT date_bin({width} * interval '1 second', {time}, to_timestamp(0)) AS t, {group} AS s, {counts}
         FROM {table}{where_} GROUP BY 1, 2 ORDER BY 1, 2",
        time = table.time_column(),
        counts = table.counts(),
        table = table.reading(tail, w.where_clause()),
        where_ = w.where_clause(),
    );
    let rows = client.query(&sql, &w.params()).await?;
    Ok(rows
        .iter()
        .map(|r| BucketCounts {
            t: r.get(0),
            group: r.get(1),
            counts: counts_at(r, 2),
        })
        .collect())
}

/// Latency per time bucket (optionally per service): the merged histogram from the rollup, or the exact
/// nearest-rank percentiles (`percentile_disc`) from the raw events.
pub enum LatencyRows {
    Histograms(Vec<BucketHistogram>),
    Exact(Vec<BucketExact>),
}

/// Counts of one time bucket (and group's value, when grouped).
#[derive(Debug, Clone)]
pub struct BucketCounts {
    pub t: DateTime<Utc>,
    pub group: Option<String>,
    pub counts: Counts,
}

/// The merged latency histogram of one time bucket (and service).
#[derive(Debug, Clone)]
pub struct BucketHistogram {
    pub t: DateTime<Utc>,
    pub service: Option<String>,
    pub hist: latency::Histogram,
    pub max: Option<f64>,
    /// The count and percentiles ([`latency::PERCENTILES`]) stored with the one rollup row that is this whole
    /// bucket, read instead of its histogram (`hist` is then empty; db/migrations/0010_service_percentiles.sql).
    pub stored: Option<(i64, Vec<f64>)>,
}

/// Exact latency figures of one time bucket (and service).
#[derive(Debug, Clone)]
pub struct BucketExact {
    pub t: DateTime<Utc>,
    pub service: Option<String>,
    pub count: i64,
    pub percentiles: Vec<f64>,
    pub max: f64,
}

/// Latency per time bucket of `bucket_secs`, optionally per service.
#[tracing::instrument(skip(client))]
pub async fn latency_by_bucket(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    by_service: bool,
) -> Result<LatencyRows, DbError> {
    let mut w = plan::filter(f, table, bucket_secs);
    let width = w.bind(bucket_secs as f64);
    let service = if by_service { "service" } else { "NULL::text" };
    if table.is_rollup() {
        // Histograms are summed here rather than in SQL, where each would be expanded into a row per bucket.
        // A row that is a whole answer bucket by itself sends its stored percentiles instead, when it has them.
        let t = format!("date_bin({width} * interval '1 second', bucket, to_timestamp(0))");
        let (pcts, alone) = if table.shape().is_some_and(|s| s.percentiles) {
            (
                "latency_pcts",
                format!(
                    "latency_pcts IS NOT NULL AND count(*) OVER (PARTITION BY {t}, {service}) = 1"
                ),
            )
        } else {
            ("NULL::float8[]", "false".into())
        };
        let sql = format!(
            "SELECT t, s, CASE WHEN alone THEN NULL ELSE latency_hist END, latency_max,
                    CASE WHEN alone THEN latency_pcts END, latency_n
             FROM (SELECT {t} AS t, {service} AS s, latency_hist, latency_max, latency_n,
                          {pcts} AS latency_pcts, {alone} AS alone
                   FROM {table}{where_} AND latency_n > 0) AS q",
            table = table.reading(Tail::default(), w.where_clause()),
            where_ = w.where_clause()
        );
        let rows = client.query(&sql, &w.params()).await?;
        let mut merged: BTreeMap<(DateTime<Utc>, Option<String>), BucketHistogram> =
            BTreeMap::new();
        for r in &rows {
            let (t, s): (DateTime<Utc>, Option<String>) = (r.get(0), r.get(1));
            let h = merged
                .entry((t, s.clone()))
                .or_insert_with(|| BucketHistogram {
                    t,
                    service: s,
                    hist: latency::Histogram::default(),
                    max: None,
                    stored: None,
                });
            if let Some(stored) = r.try_get::<_, Option<latency::StoredHistogram<'_>>>(2)? {
                stored
                    .for_each(|b, n| h.hist.add(b, n))
                    .map_err(DbError::Corrupt)?;
            }
            if let Some(p) = r.try_get::<_, Option<Vec<f64>>>(4)? {
                h.stored = Some((r.try_get(5)?, p));
            }
            if let Some(m) = r.get::<_, Option<f64>>(3) {
                h.max = Some(h.max.map_or(m, |x: f64| x.max(m)));
            }
        }
        return Ok(LatencyRows::Histograms(merged.into_values().collect()));
    }
    let p = w.bind(latency::PERCENTILES.to_vec());
    let sql = format!(
        "SELECT date_bin({width} * interval '1 second', ts, to_timestamp(0)) AS t, {service} AS s, count(*),
                percentile_disc({p}::float8[]) WITHIN GROUP (ORDER BY latency_ms), max(latency_ms)
         FROM comm_logs{where_} AND latency_ms IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        where_ = w.where_clause()
    );
    let rows = client.query(&sql, &w.params()).await?;
    Ok(LatencyRows::Exact(
        rows.iter()
            .map(|r| BucketExact {
                t: r.get(0),
                service: r.get(1),
                count: r.get(2),
                percentiles: r.get(3),
                max: r.get(4),
            })
            .collect(),
    ))
}
