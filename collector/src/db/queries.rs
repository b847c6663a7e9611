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
    filter_sql_on(f, Table::CommLogs, 0)
}

/// Dimensions a query filters or groups on, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dims(u16);

impl Dims {
    pub const NONE: Dims = Dims(0);
    pub const SERVICE: Dims = Dims(1);
    pub const PROTOCOL: Dims = Dims(1 << 1);
    pub const HOST: Dims = Dims(1 << 2);
    pub const PRODUCER: Dims = Dims(1 << 3);
    pub const DST_PORT: Dims = Dims(1 << 4);
    pub const STATUS: Dims = Dims(1 << 5);
    pub const SRC_IP: Dims = Dims(1 << 6);
    pub const DST_IP: Dims = Dims(1 << 7);
    const ALL: Dims = Dims(u16::MAX);

    pub const fn with(self, o: Dims) -> Dims {
        Dims(self.0 | o.0)
    }

    const fn covers(self, o: Dims) -> bool {
        self.0 & o.0 == o.0
    }

    /// The dimensions `f` filters on.
    pub fn of_filters(f: &Filters) -> Dims {
        [
            (f.service.is_some(), Dims::SERVICE),
            (f.protocol.is_some(), Dims::PROTOCOL),
            (f.host.is_some(), Dims::HOST),
            (f.producer.is_some(), Dims::PRODUCER),
            (f.dst_port.is_some(), Dims::DST_PORT),
            (f.status.is_some(), Dims::STATUS),
            (f.src.is_some(), Dims::SRC_IP),
            (f.dst.is_some(), Dims::DST_IP),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(Dims::NONE, |a, (_, d)| a.with(d))
    }
}

/// Where an answer is read from: the narrowest rollup holding every dimension the query needs (see
/// `db/migrations/0003_rollup_tiers.sql`), else the raw events.
/// The pair seal's bound as of a query's snapshot: answers from the pair rollup add the events from it on
/// (db/migrations/0008_pairs.sql). Named in the SQL as a literal, so that the scan of those events is planned
/// knowing it and a filter on addresses reaches the btree (src_ip, ts) (0009); unknown, a subquery reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tail {
    sealed_to: Option<DateTime<Utc>>,
}

impl Tail {
    /// Reads the bound when `table` needs it, in the snapshot of the statements that will use it.
    pub async fn read(client: &impl GenericClient, table: Table) -> Result<Tail, DbError> {
        if table != Table::CommRollupPair {
            return Ok(Tail::default());
        }
        let row = client
            .query_one("SELECT sealed_to FROM comm_pair_seal", &[])
            .await?;
        Ok(Tail {
            sealed_to: Some(row.get(0)),
        })
    }

    fn bound(self) -> String {
        match self.sealed_to {
            // The database's own value, formatted here: nothing from a request is spliced into the SQL.
            Some(at) => format!(
                "'{}'::timestamptz",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            None => "(SELECT sealed_to FROM comm_pair_seal)".into(),
        }
    }

    /// Pair deltas of a seal in progress wait for it (db/migrations/0008_pairs.sql).
    fn valid_pair_deltas(self) -> String {
        format!("gen IS NULL OR gen <= {}", self.bound())
    }

    /// At most how many rows of the tail one key has in `segs` (res, from, to): one per bucket ending after
    /// the bound, at the tier each segment reads.
    fn rows_in(self, segs: &[(i32, i64, i64)]) -> i64 {
        let Some(at) = self.sealed_to else {
            return segs.iter().map(|(r, a, b)| (b - a) / i64::from(*r)).sum();
        };
        let s = at.timestamp();
        segs.iter()
            .map(|&(r, a, b)| {
                let (r, n) = (i64::from(r), (b - a) / i64::from(r));
                n - (s - a).div_euclid(r).clamp(0, n)
            })
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    CommRollupService,
    CommRollupSrcNet,
    CommRollupSrc,
    CommRollupDst,
    CommRollupPair,
    CommRollup,
    CommLogs,
}

impl Table {
    /// Narrowest first.
    const ALL: [Table; 7] = [
        Table::CommRollupService,
        Table::CommRollupSrcNet,
        Table::CommRollupSrc,
        Table::CommRollupDst,
        Table::CommRollupPair,
        Table::CommRollup,
        Table::CommLogs,
    ];

    /// The table answering a query on `dims` (filters and grouping), with latency histograms when `latency`,
    /// in buckets of `grain` seconds. A per-event latency filter needs the raw events. Source networks answer
    /// for a `src` network no longer than theirs, when sources are not grouped.
    pub fn choose(f: &Filters, group: Dims, latency: bool, grain: i64) -> Table {
        let need = Dims::of_filters(f).with(group);
        if f.min_latency_ms.is_some() {
            return Table::CommLogs;
        }
        let by_network = !group.covers(Dims::SRC_IP)
            && f.src
                .is_some_and(|n| n.prefix() <= rollup::src_network_prefix(n.is_ipv4()));
        Table::ALL
            .into_iter()
            .find(|t| {
                t.dims().covers(need)
                    && (!latency || t.has_latency())
                    && grain % i64::from(t.finest()) == 0
                    && (*t != Table::CommRollupSrcNet || by_network)
            })
            .unwrap_or(Table::CommLogs)
    }

    /// Bucket widths this table is kept at (seconds, finest first; see `pipeline::rollup`).
    fn tiers(self) -> &'static [i32] {
        match self {
            Table::CommRollupSrcNet
            | Table::CommRollupSrc
            | Table::CommRollupDst
            | Table::CommRollupPair => &rollup::IP_TIERS,
            Table::CommRollupService | Table::CommRollup => &rollup::TIERS,
            Table::CommLogs => &[1],
        }
    }

    /// Its finest grain in seconds: windows it answers start and end on a multiple.
    pub fn finest(self) -> i32 {
        self.tiers()[0]
    }

    fn dims(self) -> Dims {
        match self {
            Table::CommRollupService => Dims::SERVICE,
            Table::CommRollupSrcNet | Table::CommRollupSrc => Dims::SRC_IP,
            Table::CommRollupDst => Dims::DST_IP,
            Table::CommRollupPair => Dims::SRC_IP.with(Dims::DST_IP),
            Table::CommRollup => Dims::SERVICE
                .with(Dims::PROTOCOL)
                .with(Dims::HOST)
                .with(Dims::PRODUCER)
                .with(Dims::DST_PORT)
                .with(Dims::STATUS),
            Table::CommLogs => Dims::ALL,
        }
    }

    fn has_latency(self) -> bool {
        matches!(
            self,
            Table::CommRollupService | Table::CommRollup | Table::CommLogs
        )
    }

    pub fn is_rollup(self) -> bool {
        self != Table::CommLogs
    }

    /// What a query reads: a rollup together with its deltas not yet compacted (see `pipeline::compact`). A
    /// delta row holds its shape's finest tier; it is presented at every tier, so that whichever tier a
    /// segment reads (see [`segments`]) counts it exactly once. Pairs add the raw events not yet sealed
    /// (db/migrations/0008_pairs.sql), presented the same way.
    fn name(self, tail: Tail) -> String {
        match self.stored() {
            None => "comm_logs".into(),
            Some((table, _)) => format!(
                "(SELECT * FROM {table} UNION ALL SELECT * FROM {}) AS r",
                self.pending(tail)
            ),
        }
    }

    /// What a rollup has not merged yet, as a subquery at every tier: its deltas, and for pairs the raw tail.
    fn pending(self, tail: Tail) -> String {
        let events = if self == Table::CommRollupPair {
            format!(
                "UNION ALL SELECT * FROM comm_pair_events({}, 'infinity')",
                tail.bound()
            )
        } else {
            String::new()
        };
        self.unmerged(tail, &events)
    }

    /// Its deltas alone, presented at every tier.
    fn deltas(self, tail: Tail) -> String {
        self.unmerged(tail, "")
    }

    fn unmerged(self, tail: Tail, events: &str) -> String {
        let Some((table, columns)) = self.stored() else {
            return "comm_logs".into();
        };
        let latency = self.latency_columns();
        let tiers: Vec<String> = self.tiers().iter().map(|t| format!("({t})")).collect();
        let tiers = tiers.join(", ");
        // Pair deltas of a seal in progress wait for it (db/migrations/0008_pairs.sql).
        let valid = if self == Table::CommRollupPair {
            format!("WHERE {}", tail.valid_pair_deltas())
        } else {
            String::new()
        };
        // Deltas have no stored percentiles (db/migrations/0010_service_percentiles.sql).
        let pcts = if self == Table::CommRollupService {
            ", NULL::float8[] AS latency_pcts"
        } else {
            ""
        };
        format!(
            "(SELECT t.res, date_bin(t.res * interval '1 second', d.bucket, to_timestamp(0)) AS bucket, {columns},
                     {COUNT_COLUMNS}{latency}{pcts}
              FROM {table}_delta AS d, (VALUES {tiers}) AS t(res)
              {valid}
              {events}) AS p"
        )
    }

    /// A rollup's table and the key columns after `res, bucket`.
    fn stored(self) -> Option<(&'static str, &'static str)> {
        match self {
            Table::CommLogs => None,
            Table::CommRollupService => Some(("comm_rollup_service", "service")),
            Table::CommRollupSrcNet => Some(("comm_rollup_src_net", "src_net")),
            Table::CommRollupSrc => Some(("comm_rollup_src", "src_ip")),
            Table::CommRollupDst => Some(("comm_rollup_dst", "dst_ip")),
            Table::CommRollupPair => Some(("comm_rollup_pair", "src_ip, dst_ip")),
            Table::CommRollup => Some((
                "comm_rollup",
                "producer, service, protocol, host, dst_port, status",
            )),
        }
    }

    /// `, <latency columns>` for the rollups that have them, else nothing.
    fn latency_columns(self) -> String {
        if self.has_latency() {
            format!(", {LATENCY_COLUMNS}")
        } else {
            String::new()
        }
    }

    fn time_column(self) -> &'static str {
        if self.is_rollup() {
            "bucket"
        } else {
            "ts"
        }
    }

    /// SQL for: events, bytes in, bytes out, errors (≥ 500), client errors (4xx).
    fn counts(self) -> &'static str {
        if self.is_rollup() {
            "coalesce(sum(events), 0)::int8, coalesce(sum(bytes_in), 0)::int8, coalesce(sum(bytes_out), 0)::int8, \
             coalesce(sum(errors), 0)::int8, coalesce(sum(client_errors), 0)::int8"
        } else {
            "count(*)::int8, coalesce(sum(bytes_in), 0)::int8, coalesce(sum(bytes_out), 0)::int8, \
             count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)"
        }
    }
}

/// Splits [from, to) (Unix seconds, whole minutes) into spans each read from one rollup tier: whole hours from
/// the hourly rows, whole 5-minute spans from the 5-minute rows, the rest from the minute rows. Only `tiers` that
/// divide `max_res` are used, so that no rollup row straddles an answer's bucket; [from, to) must be a multiple
/// of the finest.
pub fn segments(from: i64, to: i64, max_res: i64, tiers: &[i32]) -> Vec<(i32, i64, i64)> {
    fn split(from: i64, to: i64, tiers: &[i32], out: &mut Vec<(i32, i64, i64)>) {
        let Some((&res, finer)) = tiers.split_last() else {
            return;
        };
        if from >= to {
            return;
        }
        let r = i64::from(res);
        let (a, b) = ((from + r - 1).div_euclid(r) * r, to.div_euclid(r) * r);
        if finer.is_empty() {
            out.push((res, from, to));
        } else if a < b {
            split(from, a, finer, out);
            out.push((res, a, b));
            split(b, to, finer, out);
        } else {
            split(from, to, finer, out);
        }
    }
    let tiers: Vec<i32> = tiers
        .iter()
        .copied()
        .filter(|t| i64::from(*t) <= max_res.max(60) && max_res.max(60) % i64::from(*t) == 0)
        .collect();
    let mut out = Vec::new();
    split(from, to, &tiers, &mut out);
    out
}

/// The WHERE clause of `f` on `table`; a rollup is read in the tiers [`segments`] picks under `max_res` seconds.
fn filter_sql_on(f: &Filters, table: Table, max_res: i64) -> Where {
    let mut w = Where::default();
    if table.is_rollup() {
        let segs = segments(f.from.timestamp(), f.to.timestamp(), max_res, table.tiers());
        let mut cond = String::from("(");
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        for (i, (res, from, to)) in segs.iter().enumerate() {
            if i > 0 {
                cond.push_str(" OR ");
            }
            cond.push_str("(res = $ AND bucket >= $ AND bucket < $)");
            values.push(Box::new(*res));
            values.push(Box::new(
                DateTime::from_timestamp(*from, 0).unwrap_or_default(),
            ));
            values.push(Box::new(
                DateTime::from_timestamp(*to, 0).unwrap_or_default(),
            ));
        }
        if segs.is_empty() {
            cond.push_str("false");
        }
        cond.push(')');
        w.and(&cond, values);
    } else {
        w.and("ts >= $ AND ts < $", vec![Box::new(f.from), Box::new(f.to)]);
    }
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
        // A network row is in `net` exactly when its addresses are (`Table::choose` checks the prefix).
        let column = if table == Table::CommRollupSrcNet {
            "src_net"
        } else {
            "src_ip"
        };
        w.and(
            &format!("{column} <<= $::text::inet"),
            vec![Box::new(net.to_string())],
        );
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
    // minute that has events first and widen ×8 until a window holds a full page (its newest rows are then the
    // newest overall) or covers the whole range: each try scans a narrow, BRIN-selected slice. The per-minute
    // rollup says which minute that is, so a stretch without events costs nothing.
    let top = after.map_or(f.to, |p| us_to_datetime(p.ts_us + 1).min(f.to));
    let first_minute =
        us_to_datetime(f.from.timestamp_micros().div_euclid(60_000_000) * 60_000_000);
    let newest: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(bucket) FROM (SELECT bucket, res FROM comm_rollup_service
                                     UNION ALL SELECT bucket, res FROM comm_rollup_service_delta) AS r
             WHERE res = 60 AND bucket >= $1 AND bucket < $2",
            &[&first_minute, &top],
        )
        .await?
        .get(0);
    let Some(newest) = newest else {
        return Ok(Vec::new());
    };
    let top = top.min(newest + chrono::Duration::minutes(1));
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

/// How rollup groups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Appended to the `_delta` tables: what a writer does in its COPY's transaction.
    Delta,
    /// Added into the keyed rows: what the compactor does with the deltas it takes.
    Merge,
}

/// Appends one flush's rollup groups to the `_delta` tables (see `pipeline::compact`).
pub async fn insert_rollup_deltas(
    client: &impl GenericClient,
    flush: &rollup::Flush<'_>,
) -> Result<(), DbError> {
    write_rollup(client, flush, Write::Delta).await
}

/// Adds groups into the keyed rollup rows (each shape sorted by key, the shapes always in this order).
pub async fn merge_rollup(
    client: &impl GenericClient,
    flush: &rollup::Flush<'_>,
) -> Result<(), DbError> {
    write_rollup(client, flush, Write::Merge).await?;
    store_service_percentiles(client, &flush.service).await?;
    // The buckets just changed wait to be listed again (`make_top_lists`, next in the same transaction, lists
    // some of them).
    let src = flush.src.iter().map(|(k, _)| (k.res, k.bucket_us));
    let pair = flush.pair.iter().map(|(k, _)| (k.res, k.bucket_us));
    for (shape, keys) in [
        (TopShape::SRC, src.collect::<Vec<_>>()),
        (TopShape::PAIR, pair.collect()),
    ] {
        let mut touched: Vec<(i32, DateTime<Utc>)> = keys
            .into_iter()
            .map(|(res, us)| (res, us_to_datetime(us)))
            .collect();
        touched.dedup();
        if touched.is_empty() {
            continue;
        }
        let (res, bucket): (Vec<i32>, Vec<DateTime<Utc>>) = touched.into_iter().unzip();
        let table = shape.table;
        let sql = format!(
            "INSERT INTO {table}_top_pending SELECT DISTINCT * FROM unnest($1::int4[], $2::timestamptz[])
             ON CONFLICT DO NOTHING"
        );
        client.execute(&sql, &[&res, &bucket]).await?;
        // Without its floor a list is not used (the bucket is read whole) until it is made again, however many
        // buckets wait for that.
        let sql = format!(
            "DELETE FROM {table}_top_floor t USING unnest($1::int4[], $2::timestamptz[]) AS p(res, bucket)
             WHERE t.res = p.res AND t.bucket = p.bucket"
        );
        client.execute(&sql, &[&res, &bucket]).await?;
    }
    Ok(())
}

/// Computes and stores the percentiles of the service rows just merged into, from their merged histograms
/// (db/migrations/0010_service_percentiles.sql). Every row whose histogram a merge changes is recomputed here in
/// its transaction, so stored percentiles never disagree with the histogram.
async fn store_service_percentiles(
    client: &impl GenericClient,
    groups: &rollup::Groups<Option<&str>>,
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

/// A rollup whose buckets keep top lists (db/migrations/0007_src_top.sql, 0008_pairs.sql).
#[derive(Debug, Clone, Copy)]
pub struct TopShape {
    table: &'static str,
    keys: &'static str,
    /// When a bucket has closed: it ends at or before this.
    closed_at: &'static str,
}

impl TopShape {
    pub const SRC: TopShape = TopShape {
        table: "comm_rollup_src",
        keys: "src_ip",
        closed_at: "now() - interval '1 minute'",
    };
    /// Pair buckets change only by late deltas once the seal has passed them.
    pub const PAIR: TopShape = TopShape {
        table: "comm_rollup_pair",
        keys: "src_ip, dst_ip",
        closed_at: "(SELECT sealed_to FROM comm_pair_seal)",
    };

    fn of(table: Table) -> Option<TopShape> {
        match table {
            Table::CommRollupSrc => Some(TopShape::SRC),
            Table::CommRollupPair => Some(TopShape::PAIR),
            _ => None,
        }
    }
}

/// Held shared by every writer transaction from reading the pair seal's bound to its commit, and exclusively by
/// a seal while it moves the bound and takes its snapshot (db/migrations/0008_pairs.sql).
pub const SEAL_WRITERS_LOCK: i64 = 0x7061_6972_5f77_7269;

/// In a writer's transaction, before its COPY: the pair seal's bounds `(sealing_to, sealed_to)`, Unix
/// microseconds. Rows older than `sealing_to` are the writer's to roll up as pair deltas; the shared lock keeps a
/// seal from moving the bounds until commit.
pub async fn pair_seal_bounds(client: &impl GenericClient) -> Result<(i64, i64), DbError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1)",
            &[&SEAL_WRITERS_LOCK],
        )
        .await?;
    // A statement of its own: in READ COMMITTED it sees bounds committed while this one waited for the lock.
    let r = client
        .query_one("SELECT sealing_to, sealed_to FROM comm_pair_seal", &[])
        .await?;
    let (sealing, sealed): (DateTime<Utc>, DateTime<Utc>) = (r.get(0), r.get(1));
    Ok((sealing.timestamp_micros(), sealed.timestamp_micros()))
}

/// Appends a writer's pair deltas; `gen` marks those of a seal in progress, which count once it has committed.
pub async fn insert_pair_deltas(
    client: &impl GenericClient,
    groups: &rollup::Groups<rollup::Pair>,
    gen: Option<i64>,
) -> Result<(), DbError> {
    let (src, dst): (Vec<_>, Vec<_>) = groups.iter().map(|(k, _)| k.dims).unzip();
    let gen = vec![gen.map(us_to_datetime); groups.len()];
    write_shape(
        client,
        "comm_rollup_pair",
        Write::Delta,
        &[
            ("src_ip", "inet", &src),
            ("dst_ip", "inet", &dst),
            ("gen", "timestamptz", &gen),
        ],
        &Columns::of(groups, false)?,
    )
    .await
}

/// The next seal's span: from the current bound to `lag_ms` before now, an hour at most (a backlog, as after
/// a bulk load, is worked off step by step). `None` when there is nothing to seal.
pub async fn pair_seal_span(
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
pub async fn summarize_new_events(
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
pub async fn pair_seal_begin(
    client: &impl GenericClient,
    to: DateTime<Utc>,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM comm_rollup_pair_delta WHERE gen > (SELECT sealed_to FROM comm_pair_seal)",
            &[],
        )
        .await?;
    client
        .execute("UPDATE comm_pair_seal SET sealing_to = $1", &[&to])
        .await?;
    Ok(())
}

/// The seal's work, in the snapshot it took: the pairs of [from, to) from comm_logs into the rollup, their
/// buckets marked for new top lists, and the bound moved.
pub async fn pair_seal_commit(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, DbError> {
    let rows = client
        .execute(
            "INSERT INTO comm_rollup_pair AS r SELECT * FROM comm_pair_events($1, $2)
             ON CONFLICT (res, bucket, src_ip, dst_ip) DO UPDATE SET
                 events = r.events + excluded.events, bytes_in = r.bytes_in + excluded.bytes_in,
                 bytes_out = r.bytes_out + excluded.bytes_out, errors = r.errors + excluded.errors,
                 client_errors = r.client_errors + excluded.client_errors",
            &[&from, &to],
        )
        .await?;
    let tiers: Vec<String> = rollup::IP_TIERS.iter().map(|t| format!("({t})")).collect();
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
    list_buckets(client, TopShape::PAIR, &res, &bucket).await?;
    client
        .execute("UPDATE comm_pair_seal SET sealed_to = $1", &[&to])
        .await?;
    Ok(rows)
}

/// Rows of a closed source bucket kept in its top list, by events and by bytes each (ties beyond included).
const TOP_ROWS: i64 = 200;

/// Lists made by one compaction at most, newest buckets first: after a migration over months of data, the
/// backlog is worked off a little every second instead of holding up the merges.
const TOP_LISTS_PER_COMPACTION: i64 = 64;

/// Makes the top lists of (some) pending buckets of `shape` that have closed (see db/migrations/0007_src_top.sql);
/// returns how many.
pub async fn make_top_lists(client: &impl GenericClient, shape: TopShape) -> Result<u64, DbError> {
    let TopShape {
        table, closed_at, ..
    } = shape;
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
async fn list_buckets(
    client: &impl GenericClient,
    shape: TopShape,
    res: &[i32],
    bucket: &[DateTime<Utc>],
) -> Result<(), DbError> {
    let TopShape { table, keys, .. } = shape;
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
        s_keys = keys
            .split(", ")
            .map(|k| format!("s.{k}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    client.execute(&sql, &[&res, &bucket]).await?;
    Ok(())
}

async fn write_rollup(
    client: &impl GenericClient,
    flush: &rollup::Flush<'_>,
    how: Write,
) -> Result<(), DbError> {
    let (mut producer, mut service, mut protocol, mut host) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut dst_port, mut status) = (Vec::new(), Vec::new());
    for (k, _) in &flush.full {
        producer.push(k.dims.producer);
        service.push(k.dims.service);
        protocol.push(k.dims.protocol);
        host.push(k.dims.host);
        dst_port.push(k.dims.dst_port);
        status.push(k.dims.status);
    }
    write_shape(
        client,
        "comm_rollup",
        how,
        &[
            ("producer", "text", &producer),
            ("service", "text", &service),
            ("protocol", "text", &protocol),
            ("host", "text", &host),
            ("dst_port", "int4", &dst_port),
            ("status", "int4", &status),
        ],
        &Columns::of(&flush.full, true)?,
    )
    .await?;
    let service: Vec<_> = flush.service.iter().map(|(k, _)| k.dims).collect();
    write_shape(
        client,
        "comm_rollup_service",
        how,
        &[("service", "text", &service)],
        &Columns::of(&flush.service, true)?,
    )
    .await?;
    for (table, column, groups) in [
        ("comm_rollup_src", "src_ip", &flush.src),
        ("comm_rollup_dst", "dst_ip", &flush.dst),
        ("comm_rollup_src_net", "src_net", &flush.src_net),
    ] {
        let keys: Vec<_> = groups.iter().map(|(k, _)| k.dims).collect();
        let columns = Columns::of(groups, false)?;
        write_shape(client, table, how, &[(column, "inet", &keys)], &columns).await?;
    }
    let (src, dst): (Vec<_>, Vec<_>) = flush.pair.iter().map(|(k, _)| k.dims).unzip();
    write_shape(
        client,
        "comm_rollup_pair",
        how,
        &[("src_ip", "inet", &src), ("dst_ip", "inet", &dst)],
        &Columns::of(&flush.pair, false)?,
    )
    .await?;
    Ok(())
}

/// Rows of the `_delta` tables, deleted as they are read (the caller's transaction decides whether for good).
pub struct Deltas {
    pub full: Vec<tokio_postgres::Row>,
    pub service: Vec<tokio_postgres::Row>,
    pub src: Vec<tokio_postgres::Row>,
    pub dst: Vec<tokio_postgres::Row>,
    pub src_net: Vec<tokio_postgres::Row>,
    pub pair: Vec<tokio_postgres::Row>,
}

const COUNT_COLUMNS: &str = "events, bytes_in, bytes_out, errors, client_errors";
const LATENCY_COLUMNS: &str = "latency_n, latency_sum, latency_max, latency_hist";

/// Deletes and returns every delta row: `res, bucket, <dims>, <counts>[, <latency>]` (see [`delta_groups`]).
pub async fn take_rollup_deltas(client: &impl GenericClient) -> Result<Deltas, DbError> {
    let take = |t: Table| async move {
        let (table, dims) = t.stored().unwrap_or_default();
        let valid = if t == Table::CommRollupPair {
            format!("WHERE {}", Tail::default().valid_pair_deltas())
        } else {
            String::new()
        };
        let sql = format!(
            "DELETE FROM {table}_delta {valid} RETURNING res, bucket, {dims}, {COUNT_COLUMNS}{}",
            t.latency_columns()
        );
        client.query(&sql, &[]).await
    };
    Ok(Deltas {
        full: take(Table::CommRollup).await?,
        service: take(Table::CommRollupService).await?,
        src: take(Table::CommRollupSrc).await?,
        dst: take(Table::CommRollupDst).await?,
        src_net: take(Table::CommRollupSrcNet).await?,
        pair: take(Table::CommRollupPair).await?,
    })
}

impl Deltas {
    pub fn len(&self) -> usize {
        self.full.len()
            + self.service.len()
            + self.src.len()
            + self.dst.len()
            + self.src_net.len()
            + self.pair.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deltas summed per key.
    pub fn groups(&self) -> Result<rollup::Flush<'_>, DbError> {
        let full = delta_groups(&self.full, 6, true, |r| {
            Ok(rollup::Full {
                producer: r.try_get(2)?,
                service: r.try_get(3)?,
                protocol: r.try_get(4)?,
                host: r.try_get(5)?,
                dst_port: r.try_get(6)?,
                status: r.try_get(7)?,
            })
        })?;
        Ok(rollup::Flush {
            full,
            service: delta_groups(&self.service, 1, true, |r| r.try_get(2))?,
            src: delta_groups(&self.src, 1, false, |r| r.try_get(2))?,
            dst: delta_groups(&self.dst, 1, false, |r| r.try_get(2))?,
            src_net: delta_groups(&self.src_net, 1, false, |r| r.try_get(2))?,
            pair: delta_groups(&self.pair, 2, false, |r| Ok((r.try_get(2)?, r.try_get(3)?)))?,
            earliest_us: i64::MAX,
        })
    }
}

/// Sums delta rows with `ndims` key columns after `res, bucket` into sorted groups.
fn delta_groups<'r, D: Copy + Ord + std::hash::Hash>(
    rows: &'r [tokio_postgres::Row],
    ndims: usize,
    latency: bool,
    dims: impl Fn(&'r tokio_postgres::Row) -> Result<D, tokio_postgres::Error>,
) -> Result<rollup::Groups<D>, DbError> {
    let mut groups: std::collections::HashMap<rollup::Key<D>, rollup::Agg> =
        std::collections::HashMap::new();
    for r in rows {
        let bucket: DateTime<Utc> = r.try_get(1)?;
        let key = rollup::Key {
            res: r.try_get(0)?,
            bucket_us: bucket.timestamp_micros(),
            dims: dims(r)?,
        };
        let at = 2 + ndims;
        let mut a = rollup::Agg {
            events: r.try_get(at)?,
            bytes_in: r.try_get(at + 1)?,
            bytes_out: r.try_get(at + 2)?,
            errors: r.try_get(at + 3)?,
            client_errors: r.try_get(at + 4)?,
            ..Default::default()
        };
        if latency {
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
    let mut v: rollup::Groups<D> = groups.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The key time and the summed values of a shape's groups, as arrays to bind.
struct Columns {
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
    fn of<D>(groups: &[(rollup::Key<D>, rollup::Agg)], latency: bool) -> Result<Columns, DbError> {
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

/// Writes one shape: `dims` are (column, element type, values) of its key after `res, bucket`.
async fn write_shape(
    client: &impl GenericClient,
    table: &str,
    how: Write,
    dims: &[(&str, &str, &(dyn ToSql + Sync))],
    c: &Columns,
) -> Result<(), DbError> {
    if c.res.is_empty() {
        return Ok(());
    }
    // (column, element type bound)
    let mut columns = vec![("res", "int4"), ("bucket", "timestamptz")];
    columns.extend(dims.iter().map(|(n, t, _)| (*n, *t)));
    let key: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let mut sums = vec!["events", "bytes_in", "bytes_out", "errors", "client_errors"];
    columns.extend(sums.iter().map(|n| (*n, "int8")));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&c.res, &c.bucket];
    params.extend(dims.iter().map(|(_, _, v)| *v));
    params.extend([
        &c.events as &(dyn ToSql + Sync),
        &c.bytes_in,
        &c.bytes_out,
        &c.errors,
        &c.client_errors,
    ]);
    let mut latency_sets = String::new();
    if let Some((n, sum, max, hist)) = &c.latency {
        columns.extend([
            ("latency_n", "int8"),
            ("latency_sum", "float8"),
            ("latency_max", "float8"),
            // Histograms travel as array literals: unnest cannot return an array per row from an array.
            ("latency_hist", "text"),
        ]);
        params.extend([n as &(dyn ToSql + Sync), sum, max, hist]);
        sums.extend(["latency_n", "latency_sum"]);
        latency_sets = ", latency_max = greatest(r.latency_max, excluded.latency_max), \
                        latency_hist = latency_hist_merge(r.latency_hist, excluded.latency_hist)"
            .into();
    }
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
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
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("${}::{t}[]", i + 1))
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
    client.execute(&sql, &params).await?;
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
    let tail = Tail::read(client, table).await?;
    let mut w = filter_sql_on(f, table, bucket_secs);
    w.params.push(Box::new(bucket_secs as f64));
    let service = if by_service { "service" } else { "NULL::text" };
    let sql = format!(
        "SELECT date_bin(${n} * interval '1 second', {time}, to_timestamp(0)) AS t, {service} AS s, {counts}
         FROM {table}{where_} GROUP BY 1, 2 ORDER BY 1, 2",
        n = w.params.len(),
        time = table.time_column(),
        counts = table.counts(),
        table = table.name(tail),
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

#[tracing::instrument(skip(client))]
pub async fn latency_by_bucket(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    by_service: bool,
) -> Result<LatencyRows, DbError> {
    let mut w = filter_sql_on(f, table, bucket_secs);
    w.params.push(Box::new(bucket_secs as f64));
    let n = w.params.len();
    let service = if by_service { "service" } else { "NULL::text" };
    if table.is_rollup() {
        // Histograms are summed here rather than in SQL, where each would be expanded into a row per bucket.
        // A row that is a whole answer bucket by itself sends its stored percentiles instead, when it has them.
        let t = format!("date_bin(${n} * interval '1 second', bucket, to_timestamp(0))");
        let (pcts, alone) = if table == Table::CommRollupService {
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
            table = table.name(Tail::default()),
            where_ = w.sql
        );
        let rows = client.query(&sql, &w.refs()).await?;
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
    w.params.push(Box::new(latency::PERCENTILES.to_vec()));
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
    /// Output columns naming the talker (text), and the dimensions it groups on.
    fn columns(self) -> (&'static [&'static str], &'static str, Dims) {
        match self {
            TalkerKey::SrcIp => (&["src_ip"], "host(src_ip)", Dims::SRC_IP),
            TalkerKey::DstIp => (&["dst_ip"], "host(dst_ip)", Dims::DST_IP),
            TalkerKey::Pair => (
                &["src_ip", "dst_ip"],
                "host(src_ip), host(dst_ip)",
                Dims::SRC_IP.with(Dims::DST_IP),
            ),
            TalkerKey::DstPort => (&["dst_port"], "dst_port::text", Dims::DST_PORT),
            TalkerKey::Service => (&["service"], "service", Dims::SERVICE),
            TalkerKey::Protocol => (&["protocol"], "protocol", Dims::PROTOCOL),
        }
    }

    pub fn names(self) -> &'static [&'static str] {
        self.columns().0
    }

    pub fn dims(self) -> Dims {
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
    let tail = Tail::read(client, table).await?;
    if matches!(
        table,
        Table::CommRollupSrc | Table::CommRollupDst | Table::CommRollupPair
    ) {
        if let Some(top) = top_by_threshold(client, f, table, tail, by, by_bytes, limit).await? {
            // Every event is in every shape: without filters, the narrowest one has the same total.
            let of = if Dims::of_filters(f) == Dims::NONE {
                Table::CommRollupService
            } else {
                table
            };
            let w = filter_sql_on(f, of, 86_400);
            let sql = format!("SELECT {} FROM {}{}", of.counts(), of.name(tail), w.sql);
            let total = counts_at(&client.query_one(&sql, &w.refs()).await?, 0);
            return Ok((top, total));
        }
    }
    // No buckets: every tier may answer.
    let mut w = filter_sql_on(f, table, 86_400);
    let (names, select, _) = by.columns();
    let metric = if by_bytes {
        "bytes_in + bytes_out"
    } else {
        "events"
    };
    w.params.push(Box::new(limit));
    // Group on the stored values and turn only the groups into text; the total comes from the same groups.
    let sql = format!(
        "SELECT {select}, events, bytes_in, bytes_out, errors, client_errors,
                sum(events) OVER ()::int8, sum(bytes_in) OVER ()::int8, sum(bytes_out) OVER ()::int8,
                sum(errors) OVER ()::int8, sum(client_errors) OVER ()::int8
         FROM (SELECT {columns}, {counts} FROM {table}{where_} GROUP BY {columns})
              AS g({columns}, events, bytes_in, bytes_out, errors, client_errors)
         ORDER BY {metric} DESC, {order_keys} LIMIT ${lim}",
        columns = names.join(", "),
        counts = table.counts(),
        table = table.name(tail),
        where_ = w.sql,
        order_keys = (1..=names.len())
            .map(|i| format!("{i} ASC NULLS LAST"))
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
    let total = rows
        .first()
        .map_or_else(Counts::default, |r| counts_at(r, names.len() + 5));
    Ok((top, total))
}

/// A row's events, or its bytes in + out, from a value on.
#[derive(Debug, Clone, Copy)]
struct AtLeast {
    by_bytes: bool,
    value: i64,
}

/// The talkers with a row of at least `at_least` in the window of `segs`: from the top lists of the buckets
/// whose list is complete down to it, from the rows themselves in the others, and from what is not merged yet.
/// Every talker, whatever the filters: the caller's sums apply them.
async fn listed_candidates(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    tail: Tail,
    shape: TopShape,
    segs: &[(i32, i64, i64)],
    at_least: AtLeast,
) -> Result<Vec<Vec<Option<String>>>, DbError> {
    let AtLeast {
        by_bytes,
        value: threshold,
    } = at_least;
    let (listed, stored) = if by_bytes {
        ("bytes", "bytes_in + bytes_out")
    } else {
        ("events", "events")
    };
    let TopShape { table: rows, .. } = shape;
    let mut all: Vec<(i32, DateTime<Utc>)> = Vec::new();
    for &(res, from, to) in segs {
        let step = i64::from(res);
        all.extend(
            (0..(to - from) / step).map(|i| (res, us_to_datetime((from + i * step) * 1_000_000))),
        );
    }
    // Buckets are named one by one, so that each is an index range (an array join was planned as a full scan).
    let mut w = Where::default();
    let cond = any_bucket(&mut w, &all);
    let sql = format!(
        "SELECT res, bucket FROM {rows}_top_floor WHERE {cond} AND {listed} <= ${}",
        w.params.len() + 1
    );
    w.params.push(Box::new(threshold));
    let covered: std::collections::HashSet<(i32, DateTime<Utc>)> = client
        .query(&sql, &w.refs())
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (listed_buckets, read_buckets): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|b| covered.contains(b));
    // The window's segments, on the unmerged rows presented at every tier.
    let mut w = filter_sql_on(&window_of(f), table, 86_400);
    let at = w.params.len() + 1;
    w.params.push(Box::new(threshold));
    let in_lists = any_bucket(&mut w, &listed_buckets);
    let in_rows = any_bucket(&mut w, &read_buckets);
    let keys = shape.keys;
    let text: Vec<String> = keys.split(", ").map(|k| format!("{k}::text")).collect();
    let text = text.join(", ");
    let sql = format!(
        "SELECT {text} FROM {rows}_top WHERE {in_lists} AND {listed} >= ${at}
         UNION
         SELECT {text} FROM {rows} WHERE {in_rows} AND {stored} >= ${at}
         UNION
         SELECT {text} FROM {pending}{where_} AND {stored} >= ${at}",
        pending = table.pending(tail),
        where_ = w.sql,
    );
    let width = keys.split(", ").count();
    Ok(client
        .query(&sql, &w.refs())
        .await?
        .iter()
        .map(|r| (0..width).map(|i| r.get(i)).collect())
        .collect())
}

/// Candidates beyond which ranking every talker of the window is cheaper. Where counts are flat (little
/// traffic, one event a pair) the threshold keeps nearly every talker, and matching each row against thousands of
/// candidate keys cost ~150 ms against ~15 ms for summing them all (300k events a day, top pairs over an hour).
const MAX_CANDIDATES: usize = 500;

/// `f`'s window alone, without its filters.
fn window_of(f: &Filters) -> Filters {
    Filters {
        from: f.from,
        to: f.to,
        service: None,
        protocol: None,
        host: None,
        producer: None,
        src: None,
        dst: None,
        dst_port: None,
        status: None,
        min_latency_ms: None,
    }
}

/// `(res = .. AND bucket = ..) OR ...` over `buckets` (false when none), its values bound in `w`.
fn any_bucket(w: &mut Where, buckets: &[(i32, DateTime<Utc>)]) -> String {
    if buckets.is_empty() {
        return "false".into();
    }
    let conds: Vec<String> = buckets
        .iter()
        .map(|(res, bucket)| {
            w.params.push(Box::new(*res));
            w.params.push(Box::new(*bucket));
            format!(
                "(res = ${} AND bucket = ${})",
                w.params.len() - 1,
                w.params.len()
            )
        })
        .collect();
    format!("({})", conds.join(" OR "))
}

/// `AND` a condition keeping every row whose key is among `keys` (and, per column, rows with nulls there when a
/// key has one): a superset of their rows, which is exact for each of them.
fn and_keys_among(w: &mut Where, columns: &[&str], keys: &[Vec<Option<String>>]) {
    for (i, column) in columns.iter().enumerate() {
        let values: std::collections::BTreeSet<&str> =
            keys.iter().filter_map(|k| k[i].as_deref()).collect();
        let values: Vec<String> = values.into_iter().map(String::from).collect();
        let null = if keys.iter().any(|k| k[i].is_none()) {
            format!(" OR {column} IS NULL")
        } else {
            String::new()
        };
        w.and(
            &format!("({column} = ANY($::text[]::inet[]){null})"),
            vec![Box::new(values)],
        );
    }
}

/// Top talkers of an address rollup (sources, destinations, pairs) without summing every talker in the window,
/// which holds thousands per bucket. `None` when the window has fewer than `limit` talkers (then summing them
/// all is cheap), or when the rollup's key is not the talker.
///
/// Exact, by a threshold: any `limit` talkers with totals (here: the largest of one bucket) bound the `limit`-th
/// largest total from below by τ, the least of theirs. A talker has at most m rows in the window (one per bucket,
/// plus its deltas not yet compacted and, for pairs, the buckets of the raw tail), so one totalling τ or more has
/// a row of at least τ/m. Only talkers with such a row are summed; they include every talker ranked in the
/// answer, ties too. The statements must share one snapshot (`query::api::execute` runs them in one
/// repeatable-read transaction), or a flush committed between them could add rows the bound did not count.
async fn top_by_threshold(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    tail: Tail,
    by: TalkerKey,
    by_bytes: bool,
    limit: i64,
) -> Result<Option<Vec<Talker>>, DbError> {
    let (names, select, _) = by.columns();
    let keys = names.join(", ");
    let Some((stored, _)) = table.stored().filter(|(_, k)| *k == keys) else {
        return Ok(None);
    };
    let metric = if by_bytes {
        "bytes_in + bytes_out"
    } else {
        "events"
    };
    let segs = segments(f.from.timestamp(), f.to.timestamp(), 86_400, table.tiers());
    let Some(&(res, _, end)) = segs.iter().max_by_key(|s| (s.0, s.2)) else {
        return Ok(None);
    };
    let buckets: i64 = segs.iter().map(|(r, a, b)| (b - a) / i64::from(*r)).sum();
    let name = table.name(tail);
    let shape = TopShape::of(table);
    let at = |w: &Where| w.params.len() + 1;
    let text: Vec<String> = names.iter().map(|k| format!("{k}::text")).collect();
    let text = text.join(", ");
    let not_null: Vec<String> = names.iter().map(|k| format!("{k} IS NOT NULL")).collect();
    let not_null = not_null.join(" AND ");
    let width = names.len();
    let keys_of = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<Option<String>>> {
        rows.iter()
            .map(|r| (0..width).map(|i| r.get(i)).collect())
            .collect()
    };
    let window = (
        us_to_datetime(f.from.timestamp() * 1_000_000),
        us_to_datetime(end * 1_000_000),
    );

    // The guess: the talkers with the largest sums over the window's lists at its coarsest tier, else the
    // largest of its latest coarsest bucket that has rows. A latest bucket alone misleads when it holds a
    // few seconds of events (traffic stopped, or the bucket just opened): its largest talkers are small, and a
    // small τ makes every talker a candidate (2 s at 10M events, 1-hour window).
    // A list left from before a merge serves as well as any: the guess needs only some talkers, whose totals
    // are then summed exactly.
    let mut guess = Vec::new();
    if let Some(TopShape { table: rows, .. }) = shape {
        let listed = if by_bytes { "bytes" } else { "events" };
        let mut w = filter_sql_on(f, table, 86_400);
        let sql = format!(
            "SELECT {text} FROM {rows}_top{where_} AND res = ${} AND {not_null}
             GROUP BY {keys} ORDER BY sum({listed}) DESC LIMIT ${}",
            at(&w),
            at(&w) + 1,
            where_ = w.sql,
        );
        w.params.push(Box::new(res));
        w.params.push(Box::new(limit));
        guess = keys_of(client.query(&sql, &w.refs()).await?);
    }
    if (guess.len() as i64) < limit {
        let mut w = filter_sql_on(f, table, 86_400);
        let sql = format!(
            "SELECT {text} FROM {name}{where_} AND res = ${r} AND {not_null}
               AND bucket = (SELECT max(bucket) FROM {stored} WHERE res = ${r} AND bucket >= ${} AND bucket < ${})
             ORDER BY {metric} DESC LIMIT ${}",
            at(&w) + 1,
            at(&w) + 2,
            at(&w) + 3,
            r = at(&w),
            where_ = w.sql,
        );
        w.params.push(Box::new(res));
        w.params.push(Box::new(window.0));
        w.params.push(Box::new(window.1));
        w.params.push(Box::new(limit));
        guess = keys_of(client.query(&sql, &w.refs()).await?);
    }

    // τ: the least of their totals over the window.
    let mut w = filter_sql_on(f, table, 86_400);
    and_keys_among(&mut w, names, &guess);
    let sql = format!(
        "SELECT sum({metric})::int8, {text} FROM {name}{where_} GROUP BY {keys}",
        where_ = w.sql,
    );
    let totals: Vec<i64> = client
        .query(&sql, &w.refs())
        .await?
        .iter()
        .filter(|r| guess.contains(&(1..=width).map(|i| r.get(i)).collect()))
        .map(|r| r.get(0))
        .collect();
    if (totals.len() as i64) < limit || limit < 1 {
        return Ok(None);
    }
    let tau = totals.iter().copied().min().unwrap_or(0);

    // m: buckets in the window, plus the most unmerged rows any talker has there: delta rows, counted, and
    // rows of the raw tail, bounded by its buckets (counting them would read the tail once more).
    let w = filter_sql_on(&window_of(f), table, 86_400);
    let sql = format!(
        "SELECT count(*) FROM {deltas}{where_} GROUP BY {keys} ORDER BY 1 DESC LIMIT 1",
        deltas = table.deltas(tail),
        where_ = w.sql,
    );
    let pending: i64 = client
        .query_opt(&sql, &w.refs())
        .await?
        .map_or(0, |r| r.get(0));
    let tail_rows = if table == Table::CommRollupPair {
        tail.rows_in(&segs)
    } else {
        0
    };
    let m = buckets + pending + tail_rows;
    let threshold = if m > 0 { (tau + m - 1) / m } else { tau };

    let candidates = match shape {
        Some(shape) => {
            let at_least = AtLeast {
                by_bytes,
                value: threshold,
            };
            listed_candidates(client, f, table, tail, shape, &segs, at_least).await?
        }
        None => {
            let mut w = filter_sql_on(f, table, 86_400);
            let sql = format!(
                "SELECT DISTINCT {text} FROM {name}{where_} AND {metric} >= ${}",
                at(&w),
                where_ = w.sql,
            );
            w.params.push(Box::new(threshold));
            keys_of(client.query(&sql, &w.refs()).await?)
        }
    };

    if candidates.len() > MAX_CANDIDATES {
        return Ok(None);
    }
    let mut w = filter_sql_on(f, table, 86_400);
    and_keys_among(&mut w, names, &candidates);
    let sql = format!(
        "SELECT {select}, {counts} FROM {name}{where_}
         GROUP BY {keys} ORDER BY {metric} DESC, {order_keys} LIMIT ${}",
        at(&w),
        counts = table.counts(),
        where_ = w.sql,
        metric = if by_bytes {
            "sum(bytes_in) + sum(bytes_out)"
        } else {
            "sum(events)"
        },
        order_keys = (1..=width)
            .map(|i| format!("{i} ASC NULLS LAST"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    w.params.push(Box::new(limit));
    let rows = client.query(&sql, &w.refs()).await?;
    Ok(Some(
        rows.iter()
            .map(|r| Talker {
                key: (0..width).map(|i| r.get(i)).collect(),
                counts: counts_at(r, width),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const M: i64 = 60;
    const T: [i32; 3] = rollup::TIERS;

    #[test]
    fn segments_cover_the_window_once_from_the_coarsest_tiers() {
        let day = 1_795_305_600; // 2026-11-22T00:00:00Z
                                 // 09:43-11:17: minutes, 5 minutes, the 10:00 hour, 5 minutes, minutes.
        let got = segments(day + 9 * H + 43 * M, day + 11 * H + 17 * M, 86_400, &T);
        assert_eq!(
            got,
            [
                (60, day + 9 * H + 43 * M, day + 9 * H + 45 * M),
                (300, day + 9 * H + 45 * M, day + 10 * H),
                (3600, day + 10 * H, day + 11 * H),
                (300, day + 11 * H, day + 11 * H + 15 * M),
                (60, day + 11 * H + 15 * M, day + 11 * H + 17 * M),
            ]
        );
        // A 5-minute bucket never reads hourly rows; a minute bucket reads only minutes.
        let five: Vec<i32> = segments(day, day + 2 * H, 300, &T)
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(five, [300]);
        assert_eq!(segments(day, day + 2 * H, 60, &T), [(60, day, day + 2 * H)]);
        assert_eq!(segments(day, day + H, 3600, &T), [(3600, day, day + H)]);
        assert!(segments(day, day, 3600, &T).is_empty());
        // Any minute-aligned window is covered exactly, without gaps or overlaps.
        for (from, to) in [(7, 7 + 3), (7, 200), (59, 61), (0, 1440), (13, 1439)] {
            let segs = segments(day + from * M, day + to * M, 86_400, &T);
            let mut at = day + from * M;
            for (res, a, b) in segs {
                assert_eq!(a, at);
                assert!(b > a && a % i64::from(res) == 0 && b % i64::from(res) == 0);
                at = b;
            }
            assert_eq!(at, day + to * M);
        }
        // Without minute rows, a 5-minute-aligned window starts from 5-minute rows.
        assert_eq!(
            segments(day + 55 * M, day + 2 * H + 5 * M, 86_400, &rollup::IP_TIERS),
            [
                (300, day + 55 * M, day + H),
                (3600, day + H, day + 2 * H),
                (300, day + 2 * H, day + 2 * H + 5 * M)
            ]
        );
    }

    #[test]
    fn the_narrowest_table_with_every_dimension_answers() {
        let f = |q: &str| {
            let params = q
                .split('&')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Filters::parse(&params, &["min_latency_ms"], Utc::now()).unwrap()
        };
        use Table::*;
        for (q, group, latency, grain, want) in [
            ("", Dims::NONE, false, 60, CommRollupService),
            ("", Dims::NONE, true, 300, CommRollupService),
            ("service=web", Dims::SERVICE, true, 300, CommRollupService),
            ("host=a", Dims::NONE, true, 300, CommRollup),
            ("status=500", Dims::SERVICE, false, 300, CommRollup),
            ("src=10.0.0.0/8", Dims::NONE, false, 300, CommRollupSrcNet),
            ("src=10.0.1.0/24", Dims::NONE, false, 3600, CommRollupSrcNet),
            (
                "src=2001:db8::/64",
                Dims::NONE,
                false,
                300,
                CommRollupSrcNet,
            ),
            // Narrower than the rolled-up networks, or grouped by address: the addresses.
            ("src=10.0.1.0/25", Dims::NONE, false, 300, CommRollupSrc),
            ("src=10.0.1.7", Dims::NONE, false, 300, CommRollupSrc),
            ("src=2001:db8::/96", Dims::NONE, false, 300, CommRollupSrc),
            ("src=10.0.0.0/8", Dims::SRC_IP, false, 300, CommRollupSrc),
            ("", Dims::SRC_IP, false, 300, CommRollupSrc),
            ("src=10.0.0.0/8", Dims::NONE, true, 300, CommLogs),
            ("dst=10.0.0.1", Dims::NONE, false, 300, CommRollupDst),
            (
                "",
                Dims::SRC_IP.with(Dims::DST_IP),
                false,
                300,
                CommRollupPair,
            ),
            (
                "src=10.0.0.0/8&dst=10.0.0.1",
                Dims::NONE,
                false,
                300,
                CommRollupPair,
            ),
            ("dst=10.0.0.1", Dims::SRC_IP, false, 3600, CommRollupPair),
            (
                "src=10.0.0.0/8&dst=10.0.0.1",
                Dims::NONE,
                true,
                300,
                CommLogs,
            ),
            (
                "src=10.0.0.0/8&dst=10.0.0.1",
                Dims::NONE,
                false,
                60,
                CommLogs,
            ),
            ("src=10.0.0.0/8", Dims::SERVICE, false, 300, CommLogs),
            ("min_latency_ms=5", Dims::NONE, false, 300, CommLogs),
            // The IP shapes have no minute rows.
            ("src=10.0.0.0/8", Dims::NONE, false, 60, CommLogs),
            ("", Dims::DST_IP, false, 3600, CommRollupDst),
        ] {
            assert_eq!(
                Table::choose(&f(q), group, latency, grain),
                want,
                "{q} {group:?} {grain}"
            );
        }
    }
}
