//! Raw events for `/api/logs`: newest first, in keyset pages.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::filters::Filters;
use super::plan::{self, Table};
use crate::db::{us_to_datetime, DbError};
use crate::rollup::catalog;

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
    /// Enrichment (null when it was off): country code or range label, city, AS number and organisation.
    pub src_country: Option<String>,
    pub src_city: Option<String>,
    pub src_asn: Option<i64>,
    pub src_as_org: Option<String>,
    pub dst_country: Option<String>,
    pub dst_city: Option<String>,
    pub dst_asn: Option<i64>,
    pub dst_as_org: Option<String>,
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
            &format!(
                "SELECT max(bucket) FROM (SELECT bucket, res FROM {t} UNION ALL SELECT bucket, res FROM {t}_delta) AS r
                 WHERE res = 60 AND bucket >= $1 AND bucket < $2",
                t = catalog::SERVICE.table
            ),
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
    let mut w = plan::filter(&narrowed, Table::Raw, 0);
    if let Some(p) = after {
        let c = format!(
            "(ts, ctid) < ({}, {}::text::tid)",
            w.bind(us_to_datetime(p.ts_us)),
            w.bind(p.ctid.clone())
        );
        w.and(&c);
    }
    let lim = w.bind(limit);
    let sql = format!(
        "SELECT ts, received_at, producer, src_ip, src_port, dst_ip, dst_port, protocol, service, status, bytes_in,
                bytes_out, latency_ms, host, message, tags, ctid::text AS position, src_country, src_city,
                src_asn, src_as_org, dst_country, dst_city, dst_asn, dst_as_org
         FROM comm_logs{} ORDER BY comm_logs.ts DESC, comm_logs.ctid DESC LIMIT {}",
        w.where_clause(),
        lim
    );
    let rows = client.query(&sql, &w.params()).await?;
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
                src_country: r.get(17),
                src_city: r.get(18),
                src_asn: r.get(19),
                src_as_org: r.get(20),
                dst_country: r.get(21),
                dst_city: r.get(22),
                dst_asn: r.get(23),
                dst_as_org: r.get(24),
                position: LogPosition {
                    ts_us: timestamp.timestamp_micros(),
                    ctid: r.get(16),
                },
            }
        })
        .collect())
}
