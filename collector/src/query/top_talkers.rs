//! Top talkers: the largest sources, destinations, pairs, ports, services or protocols of a window, by events or
//! bytes, exact. Address shapes hold thousands of talkers a bucket, so they are ranked by a threshold over their
//! top lists (see [`top_by_threshold`]) instead of summing every talker.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::filters::Filters;
use super::plan::{self, segments, Table, Tail};
use super::series::{counts_at, Counts};
use crate::db::sql::Sql;
use crate::db::{us_to_datetime, DbError};
use crate::rollup::catalog::{self, Dims, Shape};

/// `1 ASC NULLS LAST, 2 ASC NULLS LAST, ...` over the first `n` output columns: ties broken by key.
fn order_keys(n: usize) -> String {
    (1..=n)
        .map(|i| format!("{i} ASC NULLS LAST"))
        .collect::<Vec<_>>()
        .join(", ")
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
    SrcCountry,
    DstCountry,
    SrcAsn,
    DstAsn,
    /// The threat list matched.
    Threat,
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
            TalkerKey::SrcCountry => (&["src_country"], "src_country", Dims::GEO),
            TalkerKey::DstCountry => (&["dst_country"], "dst_country", Dims::GEO),
            TalkerKey::SrcAsn => (&["src_asn"], "src_asn::text", Dims::GEO),
            TalkerKey::DstAsn => (&["dst_asn"], "dst_asn::text", Dims::GEO),
            TalkerKey::Threat => (&["threat"], "threat", Dims::GEO),
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
    // The address shapes hold thousands of talkers a bucket: rank them by a threshold.
    let addresses = Dims::SRC_IP.with(Dims::DST_IP);
    if table
        .shape()
        .is_some_and(|s| !s.src_networks && addresses.covers(s.dims))
    {
        if let Some(top) = top_by_threshold(client, f, table, tail, by, by_bytes, limit).await? {
            // Every event is in every shape: without filters, the narrowest one has the same total.
            let of = if plan::dims_of_filters(f) == Dims::NONE {
                Table::Rollup(&catalog::SERVICE)
            } else {
                table
            };
            let w = plan::filter(f, of, 86_400);
            let sql = format!(
                "SELECT {} FROM {}{}",
                of.counts(),
                of.reading(tail, w.where_clause()),
                w.where_clause()
            );
            let total = counts_at(&client.query_one(&sql, &w.params()).await?, 0);
            return Ok((top, total));
        }
    }
    // No buckets: every tier may answer.
    let mut w = plan::filter(f, table, 86_400);
    let (names, select, _) = by.columns();
    // Summed over the window, either side may be as large as int8 goes: add them as numeric.
    let metric = if by_bytes {
        "bytes_in::numeric + bytes_out"
    } else {
        "events"
    };
    let lim = w.bind(limit);
    // Group on the stored values and turn only the groups into text; the total comes from the same groups.
    let sql = format!(
        "SELECT {select}, events, bytes_in, bytes_out, errors, client_errors,
                sum(events) OVER ()::int8, least(sum(bytes_in) OVER (), 9223372036854775807)::int8,
                least(sum(bytes_out) OVER (), 9223372036854775807)::int8,
                sum(errors) OVER ()::int8, sum(client_errors) OVER ()::int8
         FROM (SELECT {columns}, {counts} FROM {table}{where_} GROUP BY {columns})
              AS g({columns}, events, bytes_in, bytes_out, errors, client_errors)
         ORDER BY {metric} DESC, {order_keys} LIMIT {lim}",
        columns = names.join(", "),
        counts = table.counts(),
        table = table.reading(tail, w.where_clause()),
        where_ = w.where_clause(),
        order_keys = order_keys(names.len()),
    );
    let rows = client.query(&sql, &w.params()).await?;
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
    shape: &Shape,
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
    let rows = shape.table;
    let mut all: Vec<(i32, DateTime<Utc>)> = Vec::new();
    for &(res, from, to) in segs {
        let step = i64::from(res);
        all.extend(
            (0..(to - from) / step).map(|i| (res, us_to_datetime((from + i * step) * 1_000_000))),
        );
    }
    // Buckets are named one by one, so that each is an index range (an array join was planned as a full scan).
    let mut w = Sql::new();
    let cond = any_bucket(&mut w, &all);
    let sql = format!(
        "SELECT res, bucket FROM {rows}_top_floor WHERE {cond} AND {listed} <= {}",
        w.bind(threshold)
    );
    let covered: std::collections::HashSet<(i32, DateTime<Utc>)> = client
        .query(&sql, &w.params())
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (listed_buckets, read_buckets): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|b| covered.contains(b));
    // The window's segments, on the unmerged rows presented at every tier.
    let mut w = plan::filter(&window_of(f), table, 86_400);
    let at = w.bind(threshold);
    let in_lists = any_bucket(&mut w, &listed_buckets);
    let in_rows = any_bucket(&mut w, &read_buckets);
    let text: Vec<String> = shape
        .keys
        .iter()
        .map(|k| format!("{}::text", k.name))
        .collect();
    let text = text.join(", ");
    let sql = format!(
        "SELECT {text} FROM {rows}_top WHERE {in_lists} AND {listed} >= {at}
         UNION
         SELECT {text} FROM {rows} WHERE {in_rows} AND {stored} >= {at}
         UNION
         SELECT {text} FROM {pending}{where_} AND {stored} >= {at}",
        pending = table.pending(tail),
        where_ = w.where_clause(),
    );
    let width = shape.keys.len();
    Ok(client
        .query(&sql, &w.params())
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
        src_country: None,
        dst_country: None,
        src_asn: None,
        dst_asn: None,
        threat: None,
        // A tenant's shares are of its own total.
        producers: f.producers.clone(),
        src: None,
        dst: None,
        dst_port: None,
        status: None,
        min_latency_ms: None,
    }
}

/// `(res = .. AND bucket = ..) OR ...` over `buckets` (false when none), its values bound in `w`.
fn any_bucket(w: &mut Sql<'_>, buckets: &[(i32, DateTime<Utc>)]) -> String {
    if buckets.is_empty() {
        return "false".into();
    }
    let conds: Vec<String> = buckets
        .iter()
        .map(|(res, bucket)| format!("(res = {} AND bucket = {})", w.bind(*res), w.bind(*bucket)))
        .collect();
    format!("({})", conds.join(" OR "))
}

/// `AND` a condition keeping every row whose key is among `keys` (and, per column, rows with nulls there when a
/// key has one): a superset of their rows, which is exact for each of them.
fn and_keys_among(w: &mut Sql<'_>, columns: &[&str], keys: &[Vec<Option<String>>]) {
    for (i, column) in columns.iter().enumerate() {
        let values: std::collections::BTreeSet<&str> =
            keys.iter().filter_map(|k| k[i].as_deref()).collect();
        let values: Vec<String> = values.into_iter().map(String::from).collect();
        let null = if keys.iter().any(|k| k[i].is_none()) {
            format!(" OR {column} IS NULL")
        } else {
            String::new()
        };
        let c = format!("({column} = ANY({}::text[]::inet[]){null})", w.bind(values));
        w.and(&c);
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
    let Some(shape) = table.shape().filter(|s| s.key_list() == keys) else {
        return Ok(None);
    };
    let stored = shape.table;
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
    if shape.top_lists.is_some() {
        let listed = if by_bytes { "bytes" } else { "events" };
        let mut w = plan::filter(f, table, 86_400);
        let (r, lim) = (w.bind(res), w.bind(limit));
        let sql = format!(
            "SELECT {text} FROM {stored}_top{where_} AND res = {r} AND {not_null}
             GROUP BY {keys} ORDER BY sum({listed}) DESC LIMIT {lim}",
            where_ = w.where_clause(),
        );
        guess = keys_of(client.query(&sql, &w.params()).await?);
    }
    if (guess.len() as i64) < limit {
        let mut w = plan::filter(f, table, 86_400);
        let (r, from, to, lim) = (
            w.bind(res),
            w.bind(window.0),
            w.bind(window.1),
            w.bind(limit),
        );
        let sql = format!(
            "SELECT {text} FROM {name}{where_} AND res = {r} AND {not_null}
               AND bucket = (SELECT max(bucket) FROM {stored} WHERE res = {r} AND bucket >= {from} AND bucket < {to})
             ORDER BY {metric} DESC LIMIT {lim}",
            name = table.reading(tail, w.where_clause()),
            where_ = w.where_clause(),
        );
        guess = keys_of(client.query(&sql, &w.params()).await?);
    }

    // τ: the least of their totals over the window.
    let mut w = plan::filter(f, table, 86_400);
    and_keys_among(&mut w, names, &guess);
    let sql = format!(
        "SELECT least(sum({metric}), 9223372036854775807)::int8, {text} FROM {name}{where_} GROUP BY {keys}",
        name = table.reading(tail, w.where_clause()),
        where_ = w.where_clause(),
    );
    let totals: Vec<i64> = client
        .query(&sql, &w.params())
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
    let w = plan::filter(&window_of(f), table, 86_400);
    let sql = format!(
        "SELECT count(*) FROM {deltas}{where_} GROUP BY {keys} ORDER BY 1 DESC LIMIT 1",
        deltas = table.deltas(tail),
        where_ = w.where_clause(),
    );
    let pending: i64 = client
        .query_opt(&sql, &w.params())
        .await?
        .map_or(0, |r| r.get(0));
    let tail_rows = if shape.sealed { tail.rows_in(&segs) } else { 0 };
    let m = buckets + pending + tail_rows;
    let threshold = if m > 0 { (tau + m - 1) / m } else { tau };

    let candidates = if shape.top_lists.is_some() {
        let at_least = AtLeast {
            by_bytes,
            value: threshold,
        };
        listed_candidates(client, f, table, tail, shape, &segs, at_least).await?
    } else {
        let mut w = plan::filter(f, table, 86_400);
        let at = w.bind(threshold);
        let sql = format!(
            "SELECT DISTINCT {text} FROM {name}{where_} AND {metric} >= {at}",
            name = table.reading(tail, w.where_clause()),
            where_ = w.where_clause(),
        );
        keys_of(client.query(&sql, &w.params()).await?)
    };

    if candidates.len() > MAX_CANDIDATES {
        return Ok(None);
    }
    let mut w = plan::filter(f, table, 86_400);
    and_keys_among(&mut w, names, &candidates);
    let lim = w.bind(limit);
    let sql = format!(
        "SELECT {select}, {counts} FROM {name}{where_}
         GROUP BY {keys} ORDER BY {metric} DESC, {order_keys} LIMIT {lim}",
        name = table.reading(tail, w.where_clause()),
        counts = table.counts(),
        where_ = w.where_clause(),
        metric = if by_bytes {
            "sum(bytes_in) + sum(bytes_out)"
        } else {
            "sum(events)"
        },
        order_keys = order_keys(width),
    );
    let rows = client.query(&sql, &w.params()).await?;
    Ok(Some(
        rows.iter()
            .map(|r| Talker {
                key: (0..width).map(|i| r.get(i)).collect(),
                counts: counts_at(r, width),
            })
            .collect(),
    ))
}
