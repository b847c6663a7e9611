//! Reads behind two alert kinds that no `/metrics/*` answer gives: sources fanning out to many ports or
//! addresses (a scan), and talkers not seen before (novelty).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::filters::Filters;
use super::plan::{self, Table, Tail};
use crate::db::DbError;
use crate::rollup::catalog::Dims;

/// One source's fan-out over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    pub src_ip: String,
    pub dst_ports: i64,
    pub dst_addresses: i64,
    pub events: i64,
}

/// Sources with the most distinct destination ports (`by_ports`) or addresses in `f`'s window and filters,
/// `limit` at most; the other count is 0. Read from the sources-by-port or pair rollup when the filters allow it
/// (the window widened to whole 5 minutes): their rows per bucket are the distinct (source, port) or (source,
/// address) pairs, far fewer than the events. Only what is sealed is read, not the raw events since the seal
/// (db/migrations/0008_pairs.sql): a seal running behind a burst of ingest makes a scan found later, never
/// makes this read grow with the backlog. Otherwise (filters no rollup holds) from the raw events.
pub async fn fan_out(
    client: &impl GenericClient,
    f: &Filters,
    by_ports: bool,
    limit: i64,
) -> Result<Vec<FanOut>, DbError> {
    let (other, dims) = if by_ports {
        ("dst_port", Dims::SRC_IP.with(Dims::DST_PORT))
    } else {
        ("dst_ip", Dims::SRC_IP.with(Dims::DST_IP))
    };
    let table = Table::choose(f, dims, false, 300);
    let mut f = f.clone();
    if table.is_rollup() {
        let floor = |t: DateTime<Utc>| {
            DateTime::from_timestamp(t.timestamp().div_euclid(300) * 300, 0).unwrap_or(t)
        };
        f.to = floor(f.to + chrono::Duration::seconds(299));
        f.from = floor(f.from);
    }
    let tail = Tail::read(client, table).await?;
    let mut w = plan::filter(&f, table, 300);
    w.and("src_ip IS NOT NULL");
    let limit = w.bind(limit);
    let events = if table.is_rollup() {
        "sum(events)::int8"
    } else {
        "count(*)"
    };
    let (ports, addresses) = if by_ports {
        (format!("count(DISTINCT {other})"), "0::int8".to_string())
    } else {
        ("0::int8".to_string(), format!("count(DISTINCT {other})"))
    };
    let order = if by_ports { 2 } else { 3 };
    let from = table.reading_sealed(tail, w.where_clause());
    let sql = format!(
        "SELECT host(src_ip), {ports}, {addresses}, {events}
         FROM {from}{} GROUP BY src_ip ORDER BY {order} DESC, 1 LIMIT {limit}",
        w.where_clause()
    );
    Ok(client
        .query(&sql, &w.params())
        .await?
        .iter()
        .map(|r| FanOut {
            src_ip: r.get(0),
            dst_ports: r.get(1),
            dst_addresses: r.get(2),
            events: r.get(3),
        })
        .collect())
}

/// A talker column whose history [`seen`] can look up, and where: the hourly rows of the rollup keyed by it.
pub fn history_of(talker: &str) -> Option<(&'static str, &'static str, &'static str)> {
    // (table, column, the column's type for the values given as text)
    Some(match talker {
        "src_ip" => ("comm_rollup_src", "src_ip", "inet"),
        "dst_ip" => ("comm_rollup_dst", "dst_ip", "inet"),
        "src_country" => ("comm_rollup_geo", "src_country", "text"),
        "dst_country" => ("comm_rollup_geo", "dst_country", "text"),
        "src_asn" => ("comm_rollup_geo", "src_asn", "int8"),
        "dst_asn" => ("comm_rollup_geo", "dst_asn", "int8"),
        _ => return None,
    })
}

/// Whether the rollup keeping `talker`'s history has any row in [`from`, `to`) (hourly rows, or deltas not merged
/// yet): without one, the collector has no history to call a talker new against.
pub async fn has_history(
    client: &impl GenericClient,
    talker: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<bool, DbError> {
    let Some((table, _, _)) = history_of(talker) else {
        return Ok(false);
    };
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE res = 3600 AND bucket >= $1 AND bucket < $2)
             OR EXISTS (SELECT 1 FROM {table}_delta WHERE bucket >= $1 AND bucket < $2)"
    );
    Ok(client.query_one(&sql, &[&from, &to]).await?.get(0))
}

/// Which of `values` of `talker` appear in [`from`, `to`): in its rollup's hourly rows, or in the deltas not
/// merged into them yet (a backfill just sent).
pub async fn seen(
    client: &impl GenericClient,
    talker: &str,
    values: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<HashSet<String>, DbError> {
    let Some((table, column, kind)) = history_of(talker) else {
        return Ok(HashSet::new());
    };
    let text = if kind == "inet" {
        format!("host({column})")
    } else {
        format!("{column}::text")
    };
    let sql = format!(
        "SELECT {text} FROM {table}
         WHERE res = 3600 AND bucket >= $1 AND bucket < $2 AND {column} = ANY($3::text[]::{kind}[])
         UNION
         SELECT {text} FROM {table}_delta
         WHERE bucket >= $1 AND bucket < $2 AND {column} = ANY($3::text[]::{kind}[])"
    );
    let values: Vec<String> = values.to_vec();
    Ok(client
        .query(&sql, &[&from, &to, &values])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
