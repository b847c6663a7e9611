//! The read planner: which table answers a query (the narrowest rollup holding every dimension it needs, else
//! the raw events), how a window is split over that rollup's tiers, and the WHERE clause of a query's filters.
//! Every family of answers ([`super::series`], [`super::top_talkers`], [`super::logs`]) reads through here.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::filters::{Filters, ThreatFilter};
use crate::db::sql::Sql;
use crate::db::DbError;
use crate::rollup::catalog::{self, src_network_prefix, Dims, Shape, COUNT_COLUMNS};

/// The dimensions `f` filters on.
pub fn dims_of_filters(f: &Filters) -> Dims {
    [
        (f.service.is_some(), Dims::SERVICE),
        (f.protocol.is_some(), Dims::PROTOCOL),
        (f.host.is_some(), Dims::HOST),
        (
            f.producer.is_some() || f.producers.is_some(),
            Dims::PRODUCER,
        ),
        (f.dst_port.is_some(), Dims::DST_PORT),
        (f.status.is_some(), Dims::STATUS),
        (f.src.is_some(), Dims::SRC_IP),
        (f.dst.is_some(), Dims::DST_IP),
        (
            f.src_country.is_some()
                || f.dst_country.is_some()
                || f.src_asn.is_some()
                || f.dst_asn.is_some()
                || f.threat.is_some(),
            Dims::GEO,
        ),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(Dims::NONE, |a, (_, d)| a.with(d))
}

/// The pair seal's bound as of a query's snapshot: answers from a sealed rollup add the events from it on
/// (db/migrations/0008_pairs.sql). Named in the SQL as a literal, so that the scan of those events is planned
/// knowing it and a filter on addresses reaches the btree (src_ip, ts) (0009); unknown, a subquery reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tail {
    sealed_to: Option<DateTime<Utc>>,
}

impl Tail {
    /// Reads the bound when `table` needs it, in the snapshot of the statements that will use it.
    pub async fn read(client: &impl GenericClient, table: Table) -> Result<Tail, DbError> {
        if !table.shape().is_some_and(|s| s.sealed) {
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

    /// At most how many rows of the tail one key has in `segs` (res, from, to): one per bucket ending after
    /// the bound, at the tier each segment reads.
    pub fn rows_in(self, segs: &[(i32, i64, i64)]) -> i64 {
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

/// The finest rollup tier (seconds) whose rows reach back to `at`: tiers pruned past it by their retention
/// (db/migrations/0013_rollup_pruned.sql) are skipped. The hour tier when every tier was pruned past it (its
/// answers are then empty, as the events are gone).
pub async fn finest_kept(client: &impl GenericClient, at: DateTime<Utc>) -> Result<i64, DbError> {
    let pruned: Option<i32> = client
        .query_one(
            "SELECT max(res) FROM rollup_pruned WHERE before > $1",
            &[&at],
        )
        .await?
        .get(0);
    let tiers = &catalog::TIERS;
    let finest = match pruned {
        None => tiers[0],
        Some(r) => tiers
            .iter()
            .copied()
            .find(|t| *t > r)
            .unwrap_or(tiers[tiers.len() - 1]),
    };
    Ok(i64::from(finest))
}

/// Where an answer is read from: a rollup shape of the catalog, or the raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Rollup(&'static Shape),
    Raw,
}

/// Answers name their table (`"source": "comm_rollup_service"`).
impl serde::Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.table_name())
    }
}

impl utoipa::PartialSchema for Table {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names: Vec<&str> = catalog::SHAPES
            .iter()
            .map(|s| s.table)
            .chain(["comm_logs"])
            .collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for Table {}

impl Table {
    /// The table answering a query on `dims` (filters and grouping), with latency histograms when `latency`,
    /// in buckets of `grain` seconds. A per-event latency filter needs the raw events. Source networks answer
    /// for a `src` network no longer than theirs, when sources are not grouped.
    pub fn choose(f: &Filters, group: Dims, latency: bool, grain: i64) -> Table {
        let need = dims_of_filters(f).with(group);
        if f.min_latency_ms.is_some() {
            return Table::Raw;
        }
        let by_network = !group.covers(Dims::SRC_IP)
            && f.src
                .is_some_and(|n| n.prefix() <= src_network_prefix(n.is_ipv4()));
        catalog::SHAPES
            .into_iter()
            .find(|s| {
                s.dims.covers(need)
                    && (!latency || s.latency)
                    && grain % i64::from(s.finest()) == 0
                    && (!s.src_networks || by_network)
            })
            .map_or(Table::Raw, Table::Rollup)
    }

    pub fn shape(self) -> Option<&'static Shape> {
        match self {
            Table::Rollup(s) => Some(s),
            Table::Raw => None,
        }
    }

    pub fn table_name(self) -> &'static str {
        self.shape().map_or("comm_logs", |s| s.table)
    }

    /// Bucket widths this table is kept at (seconds, finest first).
    pub fn tiers(self) -> &'static [i32] {
        self.shape().map_or(&[1], |s| s.tiers)
    }

    /// Its finest grain in seconds: windows it answers start and end on a multiple.
    pub fn finest(self) -> i32 {
        self.tiers()[0]
    }

    pub fn has_latency(self) -> bool {
        self.shape().is_none_or(|s| s.latency)
    }

    pub fn is_rollup(self) -> bool {
        self != Table::Raw
    }

    /// What a statement ending in `where_clause` (as [`Sql::where_clause`] writes it) reads: a rollup together
    /// with its deltas not yet compacted (see `pipeline::compact`), or `comm_logs`. A delta row holds its
    /// shape's finest tier; it is presented at every tier, so that whichever tier a segment reads (see
    /// [`segments`]) counts it exactly once. A sealed shape adds the raw events not yet sealed
    /// (db/migrations/0008_pairs.sql), presented the same way.
    ///
    /// The clause's conditions are applied inside each part of the union as well: PostgreSQL pushes them down
    /// itself, but Citus runs a union it cannot push down to the shards by first reading each part onto the
    /// coordinator, and with the conditions inside, a part is only the rows that can count.
    pub fn reading(self, tail: Tail, where_clause: &str) -> String {
        self.union(self.pending(tail), where_clause)
    }

    /// [`Table::reading`] without the raw events a sealed shape's seal has not reached: what is sealed only.
    pub fn reading_sealed(self, tail: Tail, where_clause: &str) -> String {
        self.union(self.deltas(tail), where_clause)
    }

    fn union(self, unmerged: String, where_clause: &str) -> String {
        let Some(s) = self.shape() else {
            return "comm_logs".into();
        };
        let cond = where_clause.trim_start();
        format!(
            "(SELECT * FROM {} {cond} UNION ALL SELECT * FROM {unmerged} {cond}) AS r",
            s.table
        )
    }

    /// What a rollup has not merged yet, as a subquery at every tier: its deltas, and for a sealed shape the raw
    /// tail.
    pub fn pending(self, tail: Tail) -> String {
        let events = if let Some(shape) = self.shape().filter(|s| s.sealed) {
            format!(
                "UNION ALL {}",
                shape.events_sql(&tail.bound(), "'infinity'")
            )
        } else {
            String::new()
        };
        self.unmerged(tail, &events)
    }

    /// Its deltas alone, presented at every tier.
    pub fn deltas(self, tail: Tail) -> String {
        self.unmerged(tail, "")
    }

    fn unmerged(self, tail: Tail, events: &str) -> String {
        let Some(shape) = self.shape() else {
            return "comm_logs".into();
        };
        let tiers: Vec<String> = shape.tiers.iter().map(|t| format!("({t})")).collect();
        // Deltas have no stored percentiles (db/migrations/0010_service_percentiles.sql).
        let pcts = if shape.percentiles {
            ", NULL::float8[] AS latency_pcts"
        } else {
            ""
        };
        format!(
            "(SELECT t.res, date_bin(t.res * interval '1 second', d.bucket, to_timestamp(0)) AS bucket, {keys},
                     {COUNT_COLUMNS}{latency}{pcts}
              FROM {table}_delta AS d, (VALUES {tiers}) AS t(res)
              WHERE {valid}
              {events}) AS p",
            keys = shape.key_list(),
            latency = shape.latency_columns(),
            table = shape.table,
            tiers = tiers.join(", "),
            valid = shape.valid_deltas(&tail.bound()),
        )
    }

    pub fn time_column(self) -> &'static str {
        if self.is_rollup() {
            "bucket"
        } else {
            "ts"
        }
    }

    /// SQL for: events, bytes in, bytes out, errors (≥ 500), client errors (4xx).
    pub fn counts(self) -> &'static str {
        if self.is_rollup() {
            "coalesce(sum(events), 0)::int8, least(coalesce(sum(bytes_in), 0), 9223372036854775807)::int8, \
             least(coalesce(sum(bytes_out), 0), 9223372036854775807)::int8, \
             coalesce(sum(errors), 0)::int8, coalesce(sum(client_errors), 0)::int8"
        } else {
            "count(*)::int8, least(coalesce(sum(bytes_in), 0), 9223372036854775807)::int8, \
             least(coalesce(sum(bytes_out), 0), 9223372036854775807)::int8, \
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

/// The WHERE clause of `f` on `table`, its values bound in a new [`Sql`]; a rollup is read in the tiers
/// [`segments`] picks under `max_res` seconds.
pub fn filter(f: &Filters, table: Table, max_res: i64) -> Sql<'static> {
    let mut w = Sql::new();
    if table.is_rollup() {
        let segs = segments(f.from.timestamp(), f.to.timestamp(), max_res, table.tiers());
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
        let conds: Vec<String> = segs
            .iter()
            .map(|&(res, from, to)| {
                format!(
                    "(res = {} AND bucket >= {} AND bucket < {})",
                    w.bind(res),
                    w.bind(at(from)),
                    w.bind(at(to))
                )
            })
            .collect();
        let cond = if conds.is_empty() {
            "false".to_string()
        } else {
            conds.join(" OR ")
        };
        w.and(&format!("({cond})"));
    } else {
        let c = format!("ts >= {} AND ts < {}", w.bind(f.from), w.bind(f.to));
        w.and(&c);
    }
    for (column, value) in [
        ("service", &f.service),
        ("protocol", &f.protocol),
        ("host", &f.host),
        ("producer", &f.producer),
    ] {
        if let Some(v) = value {
            let c = format!("{column} = {}", w.bind(v.clone()));
            w.and(&c);
        }
    }
    for (column, value) in [
        ("src_country", &f.src_country),
        ("dst_country", &f.dst_country),
    ] {
        if let Some(v) = value {
            let c = format!("{column} = {}", w.bind(v.clone()));
            w.and(&c);
        }
    }
    for (column, value) in [("src_asn", f.src_asn), ("dst_asn", f.dst_asn)] {
        if let Some(v) = value {
            let c = format!("{column} = {}", w.bind(v));
            w.and(&c);
        }
    }
    match &f.threat {
        Some(ThreatFilter::Any) => w.and("threat IS NOT NULL"),
        Some(ThreatFilter::List(l)) => {
            let c = format!("threat = {}", w.bind(l.clone()));
            w.and(&c);
        }
        None => {}
    }
    if let Some(visible) = &f.producers {
        let c = format!("producer = ANY({})", w.bind(visible.clone()));
        w.and(&c);
    }
    // ipnetwork has no driver mapping: bind the text form and let PostgreSQL parse it as inet.
    if let Some(net) = f.src {
        // A network row is in `net` exactly when its addresses are (`Table::choose` checks the prefix).
        let column = if table.shape().is_some_and(|s| s.src_networks) {
            "src_net"
        } else {
            "src_ip"
        };
        let c = format!("{column} <<= {}::text::inet", w.bind(net.to_string()));
        w.and(&c);
    }
    if let Some(net) = f.dst {
        let c = format!("dst_ip <<= {}::text::inet", w.bind(net.to_string()));
        w.and(&c);
    }
    if let Some(port) = f.dst_port {
        let c = format!("dst_port = {}", w.bind(i32::from(port)));
        w.and(&c);
    }
    if let Some(status) = f.status {
        let (lo, hi) = status.range();
        let c = format!("status BETWEEN {} AND {}", w.bind(lo), w.bind(hi));
        w.and(&c);
    }
    if let Some(ms) = f.min_latency_ms {
        let c = format!("latency_ms >= {}", w.bind(ms));
        w.and(&c);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const M: i64 = 60;
    const T: [i32; 3] = catalog::TIERS;

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
            segments(
                day + 55 * M,
                day + 2 * H + 5 * M,
                86_400,
                &catalog::IP_TIERS
            ),
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
        let raw = Table::Raw;
        let service = Table::Rollup(&catalog::SERVICE);
        let src_net = Table::Rollup(&catalog::SRC_NET);
        let src = Table::Rollup(&catalog::SRC);
        let dst = Table::Rollup(&catalog::DST);
        let pair = Table::Rollup(&catalog::PAIR);
        let full = Table::Rollup(&catalog::FULL);
        let host = Table::Rollup(&catalog::HOST);
        for (q, group, latency, grain, want) in [
            ("", Dims::NONE, false, 60, service),
            ("", Dims::NONE, true, 300, service),
            ("service=web", Dims::SERVICE, true, 300, service),
            ("host=a", Dims::NONE, true, 300, host),
            ("status=500", Dims::SERVICE, false, 300, host),
            ("", Dims::PRODUCER, false, 60, host),
            ("status=500&dst_port=443", Dims::NONE, false, 300, full),
            ("host=a", Dims::DST_PORT, true, 300, full),
            ("src=10.0.0.0/8", Dims::NONE, false, 300, src_net),
            ("src=10.0.1.0/24", Dims::NONE, false, 3600, src_net),
            ("src=2001:db8::/64", Dims::NONE, false, 300, src_net),
            // Narrower than the rolled-up networks, or grouped by address: the addresses.
            ("src=10.0.1.0/25", Dims::NONE, false, 300, src),
            ("src=10.0.1.7", Dims::NONE, false, 300, src),
            ("src=2001:db8::/96", Dims::NONE, false, 300, src),
            ("src=10.0.0.0/8", Dims::SRC_IP, false, 300, src),
            ("", Dims::SRC_IP, false, 300, src),
            ("src=10.0.0.0/8", Dims::NONE, true, 300, raw),
            ("dst=10.0.0.1", Dims::NONE, false, 300, dst),
            ("", Dims::SRC_IP.with(Dims::DST_IP), false, 300, pair),
            ("src=10.0.0.0/8&dst=10.0.0.1", Dims::NONE, false, 300, pair),
            ("dst=10.0.0.1", Dims::SRC_IP, false, 3600, pair),
            ("src=10.0.0.0/8&dst=10.0.0.1", Dims::NONE, true, 300, raw),
            ("src=10.0.0.0/8&dst=10.0.0.1", Dims::NONE, false, 60, raw),
            ("src=10.0.0.0/8", Dims::SERVICE, false, 300, raw),
            ("min_latency_ms=5", Dims::NONE, false, 300, raw),
            // The IP shapes have no minute rows.
            ("src=10.0.0.0/8", Dims::NONE, false, 60, raw),
            ("", Dims::DST_IP, false, 3600, dst),
        ] {
            assert_eq!(
                Table::choose(&f(q), group, latency, grain),
                want,
                "{q} {group:?} {grain}"
            );
        }
    }
}
