//! Every SQL statement the collector runs outside migrations, each in a named function.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::DbError;
use crate::pipeline::batch::Reject;
use crate::pipeline::rollup;
use crate::query::filters::Filters;
use crate::query::latency;

#[tracing::instrument(skip(client))]
pub async fn ensure_partition(client: &Object, day: NaiveDate) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT comm_logs_ensure_partition($1)", &[&day])
        .await?
        .get(0))
}

/// The flush ledger only has to outlive a writer's retry loop; a day is plenty.
pub async fn prune_flush_ledger(client: &Object) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM ingest_flushes WHERE committed_at < now() - interval '1 day'",
            &[],
        )
        .await?)
}

pub async fn flush_committed(client: &impl GenericClient, flush_id: Uuid) -> Result<bool, DbError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM ingest_flushes WHERE flush_id = $1",
            &[&flush_id],
        )
        .await?
        .is_some())
}

pub async fn record_flush(
    client: &impl GenericClient,
    flush_id: Uuid,
    rows: usize,
    rejects: usize,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO ingest_flushes (flush_id, rows, rejects) VALUES ($1, $2, $3)",
            &[&flush_id, &(rows as i32), &(rejects as i32)],
        )
        .await?;
    Ok(())
}

pub async fn insert_rejects<'a>(
    client: &impl GenericClient,
    rejects: impl Iterator<Item = &'a Reject>,
) -> Result<u64, DbError> {
    let mut received = Vec::new();
    let mut producers = Vec::new();
    let mut indexes = Vec::new();
    let mut reasons = Vec::new();
    let mut raws = Vec::new();
    let mut truncated = Vec::new();
    for r in rejects {
        received.push(us_to_datetime(r.received_at_us));
        producers.push(&*r.producer);
        indexes.push(r.event_index);
        reasons.push(r.reason.as_str());
        raws.push(&r.raw[..]);
        truncated.push(r.raw_truncated);
    }
    if received.is_empty() {
        return Ok(0);
    }
    Ok(client
        .execute(
            "INSERT INTO ingest_rejects (received_at, producer, event_index, reason, raw, raw_truncated)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int4[], $4::text[], $5::bytea[], $6::bool[])",
            &[&received, &producers, &indexes, &reasons, &raws, &truncated],
        )
        .await?)
}

pub async fn ping(client: &Object) -> Result<(), DbError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

pub fn us_to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A WHERE clause built from typed filters; every value is a bind parameter.
#[derive(Default)]
struct Where {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    /// Adds `condition`, where `$` stands for the next parameter (once per value, in order).
    fn and(&mut self, condition: &str, values: Vec<Box<dyn ToSql + Sync + Send>>) {
        self.sql.push_str(if self.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        let mut rest = condition;
        for v in values {
            let at = rest.find('$').unwrap_or(rest.len());
            self.sql.push_str(&rest[..at]);
            self.params.push(v);
            self.sql.push_str(&format!("${}", self.params.len()));
            rest = rest.get(at + 1..).unwrap_or("");
        }
        self.sql.push_str(rest);
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }
}

fn filter_sql(f: &Filters) -> Where {
    filter_sql_on(f, Table::Raw)
}

/// Where an aggregate is read from: the rollup when the filters allow it, else the raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Rollup,
    Raw,
}

impl Table {
    /// The rollup has no IP dimensions and no per-event latency.
    pub fn for_filters(f: &Filters) -> Table {
        if f.src.is_some() || f.dst.is_some() || f.min_latency_ms.is_some() {
            Table::Raw
        } else {
            Table::Rollup
        }
    }

    fn time_column(self) -> &'static str {
        match self {
            Table::Rollup => "bucket",
            Table::Raw => "ts",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Rollup => "comm_rollup_1m",
            Table::Raw => "comm_logs",
        }
    }

    /// SQL for: events, bytes in, bytes out, errors (≥ 500), client errors (4xx).
    fn counts(self) -> &'static str {
        match self {
            Table::Rollup => {
                "sum(events)::int8, sum(bytes_in)::int8, sum(bytes_out)::int8, \
                 coalesce(sum(events) FILTER (WHERE status >= 500), 0)::int8, \
                 coalesce(sum(events) FILTER (WHERE status BETWEEN 400 AND 499), 0)::int8"
            }
            Table::Raw => {
                "count(*)::int8, coalesce(sum(bytes_in), 0)::int8, coalesce(sum(bytes_out), 0)::int8, \
                 count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)"
            }
        }
    }
}

fn filter_sql_on(f: &Filters, table: Table) -> Where {
    let mut w = Where::default();
    w.and(
        &format!("{0} >= $ AND {0} < $", table.time_column()),
        vec![Box::new(f.from), Box::new(f.to)],
    );
    for (column, value) in [
        ("service", &f.service),
        ("protocol", &f.protocol),
        ("host", &f.host),
        ("producer", &f.producer),
    ] {
        if let Some(v) = value {
            w.and(&format!("{column} = $"), vec![Box::new(v.clone())]);
        }
    }
    // ipnetwork has no driver mapping: bind the text form and let PostgreSQL parse it as inet.
    if let Some(net) = f.src {
        w.and("src_ip <<= $::text::inet", vec![Box::new(net.to_string())]);
    }
    if let Some(net) = f.dst {
        w.and("dst_ip <<= $::text::inet", vec![Box::new(net.to_string())]);
    }
    if let Some(port) = f.dst_port {
        w.and("dst_port = $", vec![Box::new(i32::from(port))]);
    }
    if let Some(status) = f.status {
        let (lo, hi) = status.range();
        w.and("status BETWEEN $ AND $", vec![Box::new(lo), Box::new(hi)]);
    }
    if let Some(ms) = f.min_latency_ms {
        w.and("latency_ms >= $", vec![Box::new(ms)]);
    }
    w
}

/// One raw event as /api/logs returns it; `position` is its keyset position for the next page.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LogRow {
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub producer: String,
    #[schema(value_type = Option<String>, example = "10.1.2.3")]
    pub src_ip: Option<std::net::IpAddr>,
    pub src_port: Option<i32>,
    #[schema(value_type = Option<String>, example = "2001:db8::1")]
    pub dst_ip: Option<std::net::IpAddr>,
    pub dst_port: Option<i32>,
    pub protocol: Option<String>,
    pub service: Option<String>,
    pub status: Option<i32>,
    pub bytes_in: Option<i64>,
    pub bytes_out: Option<i64>,
    pub latency_ms: Option<f64>,
    pub host: Option<String>,
    pub message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub tags: Option<serde_json::Value>,
    #[serde(skip)]
    #[schema(ignore)]
    pub position: LogPosition,
}

/// Keyset position: newest first by `ts`, then by `ctid`, which is unique within the one partition a `ts`
/// belongs to. (A row moved out of the default partition while a client pages may be seen twice or not.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogPosition {
    pub ts_us: i64,
    pub ctid: String,
}

/// Raw events matching `f`, newest first, after `after`; at most `limit`.
#[tracing::instrument(skip(client))]
pub async fn logs(
    client: &impl GenericClient,
    f: &Filters,
    after: Option<&LogPosition>,
    limit: i64,
) -> Result<Vec<LogRow>, DbError> {
    // Newest first with only BRIN on ts means sorting every row of the window. Instead, look at the newest
    // minute first and widen ×8 until a window holds a full page (its newest rows are then the newest overall)
    // or covers the whole range: each try scans a narrow, BRIN-selected slice.
    let top = after.map_or(f.to, |p| us_to_datetime(p.ts_us + 1).min(f.to));
    let mut span = chrono::Duration::minutes(1);
    loop {
        let window_from = (top - span).max(f.from);
        let rows = logs_since(client, f, window_from, after, limit).await?;
        if rows.len() as i64 >= limit || window_from == f.from {
            return Ok(rows);
        }
        span = span * 8;
    }
}

/// The newest `limit` events matching `f` at or after `window_from` (and before `after`).
async fn logs_since(
    client: &impl GenericClient,
    f: &Filters,
    window_from: DateTime<Utc>,
    after: Option<&LogPosition>,
    limit: i64,
) -> Result<Vec<LogRow>, DbError> {
    let mut narrowed = f.clone();
    narrowed.from = window_from;
    let mut w = filter_sql(&narrowed);
    if let Some(p) = after {
        w.and(
            "(ts, ctid) < ($, $::text::tid)",
            vec![Box::new(us_to_datetime(p.ts_us)), Box::new(p.ctid.clone())],
        );
    }
    w.params.push(Box::new(limit));
    let sql = format!(
        "SELECT ts, received_at, producer, src_ip, src_port, dst_ip, dst_port, protocol, service, status, bytes_in,
                bytes_out, latency_ms, host, message, tags, ctid::text AS position
         FROM comm_logs{} ORDER BY comm_logs.ts DESC, comm_logs.ctid DESC LIMIT ${}",
        w.sql,
        w.params.len()
    );
    let rows = client.query(&sql, &w.refs()).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let timestamp: DateTime<Utc> = r.get(0);
            LogRow {
                timestamp,
                received_at: r.get(1),
                producer: r.get(2),
                src_ip: r.get(3),
                src_port: r.get(4),
                dst_ip: r.get(5),
                dst_port: r.get(6),
                protocol: r.get(7),
                service: r.get(8),
                status: r.get(9),
                bytes_in: r.get(10),
                bytes_out: r.get(11),
                latency_ms: r.get(12),
                host: r.get(13),
                message: r.get(14),
                tags: r.get(15),
                position: LogPosition {
                    ts_us: timestamp.timestamp_micros(),
                    ctid: r.get(16),
                },
            }
        })
        .collect())
}

/// Adds one flush's rollup groups to `comm_rollup_1m` (groups sorted by key, see `pipeline::rollup`).
pub async fn upsert_rollup(
    client: &impl GenericClient,
    groups: &[(rollup::Key<'_>, rollup::Agg)],
) -> Result<(), DbError> {
    if groups.is_empty() {
        return Ok(());
    }
    let mut bucket = Vec::with_capacity(groups.len());
    let (mut producer, mut service, mut protocol, mut host) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut dst_port, mut status) = (Vec::new(), Vec::new());
    let (mut events, mut bytes_in, mut bytes_out, mut latency_n) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut latency_sum, mut latency_max, mut hist) = (Vec::new(), Vec::new(), Vec::new());
    for (k, a) in groups {
        bucket.push(us_to_datetime(k.bucket_us));
        producer.push(k.producer);
        service.push(k.service);
        protocol.push(k.protocol);
        host.push(k.host);
        dst_port.push(k.dst_port);
        status.push(k.status);
        events.push(a.events);
        bytes_in.push(a.bytes_in);
        bytes_out.push(a.bytes_out);
        latency_n.push(a.latency_n);
        latency_sum.push(a.latency_sum);
        latency_max.push(a.latency_max);
        hist.push(latency::to_json(&a.hist));
    }
    client
        .execute(
            "INSERT INTO comm_rollup_1m AS r (bucket, producer, service, protocol, host, dst_port, status, events,
                 bytes_in, bytes_out, latency_n, latency_sum, latency_max, latency_hist)
             SELECT bucket, producer, service, protocol, host, dst_port, status, events, bytes_in, bytes_out,
                    latency_n, latency_sum, latency_max, latency_hist
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[],
                         $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::float8[], $13::float8[], $14::jsonb[])
                  WITH ORDINALITY AS u(bucket, producer, service, protocol, host, dst_port, status, events, bytes_in,
                                       bytes_out, latency_n, latency_sum, latency_max, latency_hist, ord)
             ORDER BY ord
             ON CONFLICT ON CONSTRAINT comm_rollup_1m_key DO UPDATE SET
                 events = r.events + excluded.events,
                 bytes_in = r.bytes_in + excluded.bytes_in,
                 bytes_out = r.bytes_out + excluded.bytes_out,
                 latency_n = r.latency_n + excluded.latency_n,
                 latency_sum = r.latency_sum + excluded.latency_sum,
                 latency_max = greatest(r.latency_max, excluded.latency_max),
                 latency_hist = latency_hist_merge(r.latency_hist, excluded.latency_hist)",
            &[
                &bucket, &producer, &service, &protocol, &host, &dst_port, &status, &events, &bytes_in, &bytes_out,
                &latency_n, &latency_sum, &latency_max, &hist,
            ],
        )
        .await?;
    Ok(())
}

/// Counts of one group (a time bucket, a service, a talker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub events: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub errors: i64,
    pub client_errors: i64,
}

fn counts_at(r: &tokio_postgres::Row, first: usize) -> Counts {
    Counts {
        events: r.get(first),
        bytes_in: r.get(first + 1),
        bytes_out: r.get(first + 2),
        errors: r.get(first + 3),
        client_errors: r.get(first + 4),
    }
}

/// Counts per time bucket of `bucket_secs` (aligned to the Unix epoch), optionally per service.
#[tracing::instrument(skip(client))]
pub async fn counts_by_bucket(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    by_service: bool,
) -> Result<Vec<BucketCounts>, DbError> {
    let mut w = filter_sql_on(f, table);
    w.params.push(Box::new(bucket_secs as f64));
    let service = if by_service { "service" } else { "NULL::text" };
    let sql = format!(
        "SELECT date_bin(${n} * interval '1 second', {time}, to_timestamp(0)) AS t, {service} AS s, {counts}
         FROM {table}{where_} GROUP BY 1, 2 ORDER BY 1, 2",
        n = w.params.len(),
        time = table.time_column(),
        counts = table.counts(),
        table = table.name(),
        where_ = w.sql,
    );
    let rows = client.query(&sql, &w.refs()).await?;
    Ok(rows
        .iter()
        .map(|r| BucketCounts {
            t: r.get(0),
            service: r.get(1),
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

/// Counts of one time bucket (and service, when grouped).
#[derive(Debug, Clone)]
pub struct BucketCounts {
    pub t: DateTime<Utc>,
    pub service: Option<String>,
    pub counts: Counts,
}

/// The merged latency histogram of one time bucket (and service).
#[derive(Debug, Clone)]
pub struct BucketHistogram {
    pub t: DateTime<Utc>,
    pub service: Option<String>,
    pub hist: BTreeMap<i16, i64>,
    pub max: Option<f64>,
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

#[tracing::instrument(skip(client))]
pub async fn latency_by_bucket(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    by_service: bool,
    percentiles: &[f64],
) -> Result<LatencyRows, DbError> {
    let mut w = filter_sql_on(f, table);
    w.params.push(Box::new(bucket_secs as f64));
    let n = w.params.len();
    let service = if by_service { "service" } else { "NULL::text" };
    match table {
        Table::Rollup => {
            // Sum bucket counts in SQL so only one row per histogram bucket crosses the wire.
            let sql = format!(
                "WITH g AS (
                     SELECT date_bin(${n} * interval '1 second', bucket, to_timestamp(0)) AS t, {service} AS s,
                            latency_hist, latency_max
                     FROM comm_rollup_1m{where_} AND latency_n > 0)
                 SELECT t, s, jsonb_object_agg(k, c), max(m)
                 FROM (SELECT t, s, k, sum(v::int8) AS c, max(latency_max) AS m
                       FROM g, jsonb_each_text(latency_hist) AS h(k, v) GROUP BY 1, 2, 3) x
                 GROUP BY 1, 2 ORDER BY 1, 2",
                where_ = w.sql
            );
            let rows = client.query(&sql, &w.refs()).await?;
            Ok(LatencyRows::Histograms(
                rows.iter()
                    .map(|r| {
                        let mut hist = BTreeMap::new();
                        latency::from_json(&r.get::<_, serde_json::Value>(2), &mut hist);
                        BucketHistogram {
                            t: r.get(0),
                            service: r.get(1),
                            hist,
                            max: r.get(3),
                        }
                    })
                    .collect(),
            ))
        }
        Table::Raw => {
            w.params.push(Box::new(percentiles.to_vec()));
            let sql = format!(
                "SELECT date_bin(${n} * interval '1 second', ts, to_timestamp(0)) AS t, {service} AS s, count(*),
                        percentile_disc(${p}::float8[]) WITHIN GROUP (ORDER BY latency_ms), max(latency_ms)
                 FROM comm_logs{where_} AND latency_ms IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
                p = n + 1,
                where_ = w.sql
            );
            let rows = client.query(&sql, &w.refs()).await?;
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
    }
}

/// What top talkers are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkerKey {
    SrcIp,
    DstIp,
    Pair,
    DstPort,
    Service,
    Protocol,
}

impl TalkerKey {
    /// Output columns naming the talker (text), and whether the rollup has them.
    fn columns(self) -> (&'static [&'static str], &'static str, bool) {
        match self {
            TalkerKey::SrcIp => (&["src_ip"], "host(src_ip)", false),
            TalkerKey::DstIp => (&["dst_ip"], "host(dst_ip)", false),
            TalkerKey::Pair => (&["src_ip", "dst_ip"], "host(src_ip), host(dst_ip)", false),
            TalkerKey::DstPort => (&["dst_port"], "dst_port::text", true),
            TalkerKey::Service => (&["service"], "service", true),
            TalkerKey::Protocol => (&["protocol"], "protocol", true),
        }
    }

    pub fn names(self) -> &'static [&'static str] {
        self.columns().0
    }

    pub fn in_rollup(self) -> bool {
        self.columns().2
    }
}

/// One ranked talker: its key values (text, null when the events had none) and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Talker {
    pub key: Vec<Option<String>>,
    pub counts: Counts,
}

/// The `limit` largest talkers by events or by bytes (in + out), ties broken by key; and the total.
#[tracing::instrument(skip(client))]
pub async fn top_talkers(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    by: TalkerKey,
    by_bytes: bool,
    limit: i64,
) -> Result<(Vec<Talker>, Counts), DbError> {
    let mut w = filter_sql_on(f, table);
    let (names, select, _) = by.columns();
    let keys: Vec<String> = (1..=names.len()).map(|i| format!("k{i}")).collect();
    let metric = if by_bytes {
        "bytes_in + bytes_out"
    } else {
        "events"
    };
    w.params.push(Box::new(limit));
    let sql = format!(
        "SELECT * FROM (SELECT {select}, {counts} FROM {table}{where_} GROUP BY {group})
                      AS g({keys}, events, bytes_in, bytes_out, errors, client_errors)
         ORDER BY {metric} DESC, {order_keys} LIMIT ${lim}",
        counts = table.counts(),
        table = table.name(),
        where_ = w.sql,
        group = (1..=names.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        keys = keys.join(", "),
        order_keys = keys
            .iter()
            .map(|k| format!("{k} ASC NULLS LAST"))
            .collect::<Vec<_>>()
            .join(", "),
        lim = w.params.len(),
    );
    let rows = client.query(&sql, &w.refs()).await?;
    let top = rows
        .iter()
        .map(|r| Talker {
            key: (0..names.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect(),
            counts: counts_at(r, names.len()),
        })
        .collect();
    w.params.pop();
    let total_sql = format!("SELECT {} FROM {}{}", table.counts(), table.name(), w.sql);
    let total = counts_at(&client.query_one(&total_sql, &w.refs()).await?, 0);
    Ok((top, total))
}
