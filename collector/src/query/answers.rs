//! `/metrics/*` answers: parameters → the right table (rollup or raw) → series with every bucket present.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

use super::filters::{Filters, ParamError};
use super::plan::Table;
use super::series::{self, Counts, LatencyRows};
use super::top_talkers::{self, TalkerKey};
use crate::db::DbError;
use crate::rollup::catalog::Dims;
use crate::rollup::histogram as latency;

/// From this window length on, answers from rollups without minute rows are in whole hours.
const LONG_WINDOW: Duration = Duration::hours(6);

/// Most buckets one answer may hold.
const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub name: &'static str,
    pub secs: i64,
}

const BUCKETS: [Bucket; 4] = [
    Bucket {
        name: "1m",
        secs: 60,
    },
    Bucket {
        name: "5m",
        secs: 300,
    },
    Bucket {
        name: "1h",
        secs: 3600,
    },
    Bucket {
        name: "1d",
        secs: 86_400,
    },
];

/// The `bucket` parameter; without it, the smallest size giving at most 360 buckets over the window (at least
/// 5 minutes with `src` or `dst`).
/// `kept`: the finest tier whose rows reach back to `f.from` ([`super::plan::finest_kept`]); a finer bucket
/// could only be filled with what was pruned.
pub fn parse_bucket(
    params: &HashMap<String, String>,
    f: &Filters,
    kept: i64,
) -> Result<Bucket, ParamError> {
    let accepted = || {
        BUCKETS
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let window = (f.to - f.from).num_seconds();
    // Address filters are answered from rollups kept per 5 minutes and up: default to buckets they can fill.
    let smallest = if f.src.is_some() || f.dst.is_some() {
        300
    } else {
        60
    }
    .max(kept);
    let bucket = match params.get("bucket").map(|v| v.trim()) {
        Some(v) => *BUCKETS.iter().find(|b| b.name == v).ok_or_else(|| {
            ParamError::new("bucket", format!("{v:?} is not a bucket size"), accepted())
        })?,
        None => *BUCKETS
            .iter()
            .find(|b| b.secs >= smallest && window / b.secs <= 360)
            .unwrap_or(&BUCKETS[3]),
    };
    if bucket.secs < kept {
        return Err(ParamError::new(
            "bucket",
            format!(
                "{} buckets cannot be filled from {}: rollup rows that fine were removed by their retention \
                 (COLLECTOR_ROLLUP_MINUTE_DAYS, COLLECTOR_ROLLUP_5MIN_DAYS)",
                bucket.name,
                f.from.to_rfc3339()
            ),
            format!("a bucket of {kept}s or more for this window, or a later `from`"),
        ));
    }
    if window / bucket.secs > MAX_BUCKETS {
        return Err(ParamError::new(
            "bucket",
            format!(
                "{} over this window is {} buckets, more than {MAX_BUCKETS}",
                bucket.name,
                window / bucket.secs
            ),
            accepted(),
        ));
    }
    Ok(bucket)
}

/// What a series answer is grouped by (`group_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    None,
    Service,
    Producer,
    Host,
    SrcCountry,
    DstCountry,
    SrcAsn,
    DstAsn,
}

const GROUPINGS: [(&str, GroupBy); 7] = [
    ("service", GroupBy::Service),
    ("producer", GroupBy::Producer),
    ("host", GroupBy::Host),
    ("src_country", GroupBy::SrcCountry),
    ("dst_country", GroupBy::DstCountry),
    ("src_asn", GroupBy::SrcAsn),
    ("dst_asn", GroupBy::DstAsn),
];

impl GroupBy {
    /// The parameter's value, and each group's key in the answer.
    pub fn name(self) -> &'static str {
        GROUPINGS
            .iter()
            .find(|(_, g)| *g == self)
            .map_or("", |(n, _)| n)
    }

    /// The group's value as SQL text.
    pub fn column(self) -> &'static str {
        match self {
            GroupBy::None => "NULL::text",
            GroupBy::Service => "service",
            GroupBy::Producer => "producer",
            GroupBy::Host => "host",
            GroupBy::SrcCountry => "src_country",
            GroupBy::DstCountry => "dst_country",
            GroupBy::SrcAsn => "src_asn::text",
            GroupBy::DstAsn => "dst_asn::text",
        }
    }

    fn dims(self) -> Dims {
        match self {
            GroupBy::None => Dims::NONE,
            GroupBy::Service => Dims::SERVICE,
            GroupBy::Producer => Dims::PRODUCER,
            GroupBy::Host => Dims::HOST,
            _ => Dims::GEO,
        }
    }
}

/// The `group_by` parameter: `service` for every series; producer, host and the enrichment columns (country,
/// AS number) for volume and error rate only.
pub fn parse_group_by(
    params: &HashMap<String, String>,
    latency: bool,
) -> Result<GroupBy, ParamError> {
    let accepted = if latency {
        "service".to_string()
    } else {
        GROUPINGS.map(|(n, _)| n).join(", ")
    };
    match params.get("group_by").map(|v| v.trim()) {
        None | Some("") => Ok(GroupBy::None),
        Some(v) => GROUPINGS
            .iter()
            .find(|(n, g)| *n == v && (!latency || *g == GroupBy::Service))
            .map(|(_, g)| *g)
            .ok_or_else(|| {
                ParamError::new("group_by", format!("{v:?} is not a grouping"), accepted)
            }),
    }
}

/// One group's key in an answer: `{"<group_by>": value}`, flattened into the group.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct GroupKey(BTreeMap<&'static str, Option<String>>);

impl GroupKey {
    fn of(by: GroupBy, value: Option<String>) -> GroupKey {
        GroupKey(BTreeMap::from([(by.name(), value)]))
    }
}

/// The table a series answer (volume, error rate, latency) reads: decided before the read, so that a read of
/// raw events can be admitted or refused first (see `query::api::RawGate`).
pub fn series_table(f: &Filters, bucket: Bucket, group: GroupBy, latency: bool) -> Table {
    Table::choose(f, group.dims(), latency, bucket.secs)
}

/// The table a top-talkers answer reads.
pub fn top_table(f: &Filters, q: TopQuery) -> Table {
    Table::choose(f, q.by.dims(), false, 300)
}

/// Widens the window to whole buckets (the rollup's grain is a minute), so rollup and raw agree exactly.
pub fn align(f: &mut Filters, secs: i64) {
    let floor = |t: DateTime<Utc>| {
        let s = t.timestamp().div_euclid(secs) * secs;
        DateTime::from_timestamp(s, 0).unwrap_or(t)
    };
    let to = floor(f.to);
    f.from = floor(f.from);
    f.to = if to < f.to {
        to + Duration::seconds(secs)
    } else {
        to
    };
}

fn bucket_starts(f: &Filters, secs: i64) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    let step = Duration::seconds(secs);
    std::iter::successors(Some(f.from), move |t| Some(*t + step)).take_while(move |t| *t < f.to)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub bucket: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The table the answer was read from: the narrowest rollup with every dimension the query needs, or
    /// `comm_logs`.
    pub source: Table,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VolumePoint {
    pub t: DateTime<Utc>,
    pub events: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Volume {
    #[serde(flatten)]
    pub window: Window,
    pub total: VolumePoint,
    /// Ungrouped answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<VolumePoint>>,
    /// With `group_by`: one per value, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<VolumeGroup>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VolumeGroup {
    /// `{"<group_by>": value}` (null for events without one).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub key: GroupKey,
    pub total: VolumePoint,
    pub series: Vec<VolumePoint>,
}

pub async fn volume(
    client: &impl GenericClient,
    f: &Filters,
    bucket: Bucket,
    group: GroupBy,
    table: Table,
) -> Result<Volume, DbError> {
    let rows = series::counts_by_bucket(client, f, table, bucket.secs, group.column()).await?;
    let mut groups: BTreeMap<Option<String>, HashMap<DateTime<Utc>, Counts>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.group).or_default().insert(r.t, r.counts);
    }
    let point = |t, c: Counts| VolumePoint {
        t,
        events: c.events,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
    };
    let series_of = |by_t: &HashMap<DateTime<Utc>, Counts>| {
        let series: Vec<VolumePoint> = bucket_starts(f, bucket.secs)
            .map(|t| point(t, by_t.get(&t).copied().unwrap_or_default()))
            .collect();
        let total = series
            .iter()
            .fold(point(f.from, Counts::default()), |mut a, p| {
                a.events += p.events;
                a.bytes_in += p.bytes_in;
                a.bytes_out += p.bytes_out;
                a
            });
        (total, series)
    };
    let window = Window {
        bucket: bucket.name,
        from: f.from,
        to: f.to,
        source: table,
    };
    if group == GroupBy::None {
        let (total, series) = series_of(groups.get(&None).unwrap_or(&HashMap::new()));
        return Ok(Volume {
            window,
            total,
            series: Some(series),
            groups: None,
        });
    }
    let mut all = Counts::default();
    groups
        .values()
        .flat_map(|m| m.values())
        .for_each(|c| add(&mut all, c));
    let mut out: Vec<VolumeGroup> = groups
        .into_iter()
        .map(|(value, m)| {
            let (total, series) = series_of(&m);
            VolumeGroup {
                key: GroupKey::of(group, value),
                total,
                series,
            }
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.total.events));
    Ok(Volume {
        window,
        total: point(f.from, all),
        series: None,
        groups: Some(out),
    })
}

#[derive(Debug, Serialize, Clone, Copy, utoipa::ToSchema)]
pub struct ErrorPoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t: Option<DateTime<Utc>>,
    pub total: i64,
    /// Status ≥ 500.
    pub errors: i64,
    /// Status 400–499, counted apart.
    pub client_errors: i64,
    /// errors / total (0 when there are no events).
    pub error_ratio: f64,
}

impl ErrorPoint {
    fn new(t: Option<DateTime<Utc>>, c: Counts) -> Self {
        let ratio = if c.events > 0 {
            c.errors as f64 / c.events as f64
        } else {
            0.0
        };
        ErrorPoint {
            t,
            total: c.events,
            errors: c.errors,
            client_errors: c.client_errors,
            error_ratio: ratio,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorGroup {
    /// `{"<group_by>": value}` (null for events without one).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub key: GroupKey,
    pub overall: ErrorPoint,
    pub series: Vec<ErrorPoint>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorRate {
    #[serde(flatten)]
    pub window: Window,
    pub overall: ErrorPoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<ErrorPoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<ErrorGroup>>,
}

fn add(a: &mut Counts, c: &Counts) {
    a.events += c.events;
    a.bytes_in += c.bytes_in;
    a.bytes_out += c.bytes_out;
    a.errors += c.errors;
    a.client_errors += c.client_errors;
}

pub async fn error_rate(
    client: &impl GenericClient,
    f: &Filters,
    bucket: Bucket,
    group: GroupBy,
    table: Table,
) -> Result<ErrorRate, DbError> {
    let rows = series::counts_by_bucket(client, f, table, bucket.secs, group.column()).await?;
    let mut groups: BTreeMap<Option<String>, HashMap<DateTime<Utc>, Counts>> = BTreeMap::new();
    let mut overall = Counts::default();
    for r in rows {
        add(&mut overall, &r.counts);
        groups.entry(r.group).or_default().insert(r.t, r.counts);
    }
    let series_of = |m: &HashMap<DateTime<Utc>, Counts>| {
        let points: Vec<ErrorPoint> = bucket_starts(f, bucket.secs)
            .map(|t| ErrorPoint::new(Some(t), m.get(&t).copied().unwrap_or_default()))
            .collect();
        let mut total = Counts::default();
        m.values().for_each(|c| add(&mut total, c));
        (ErrorPoint::new(None, total), points)
    };
    let window = Window {
        bucket: bucket.name,
        from: f.from,
        to: f.to,
        source: table,
    };
    let overall = ErrorPoint::new(None, overall);
    if group != GroupBy::None {
        let groups = groups
            .into_iter()
            .map(|(value, m)| {
                let (overall, series) = series_of(&m);
                ErrorGroup {
                    key: GroupKey::of(group, value),
                    overall,
                    series,
                }
            })
            .collect();
        Ok(ErrorRate {
            window,
            overall,
            series: None,
            groups: Some(groups),
        })
    } else {
        let (_, series) = series_of(groups.get(&None).unwrap_or(&HashMap::new()));
        Ok(ErrorRate {
            window,
            overall,
            series: Some(series),
            groups: None,
        })
    }
}

#[derive(Debug, Serialize, Clone, Copy, Default, utoipa::ToSchema)]
pub struct LatencyPoint {
    pub t: Option<DateTime<Utc>>,
    /// Events with a latency.
    pub count: i64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LatencyGroup {
    pub service: Option<String>,
    /// The group's percentiles over the whole window.
    pub overall: LatencyPoint,
    pub series: Vec<LatencyPoint>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LatencyAnswer {
    #[serde(flatten)]
    pub window: Window,
    /// Largest relative error of a percentile (0: exact, from raw events).
    pub relative_error: f64,
    /// Percentiles over the whole window (ungrouped answers; each group has its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overall: Option<LatencyPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<LatencyPoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<LatencyGroup>>,
}

pub async fn latency(
    client: &impl GenericClient,
    f: &Filters,
    bucket: Bucket,
    by_service: bool,
    table: Table,
) -> Result<LatencyAnswer, DbError> {
    let (groups, relative_error) =
        latency_points(client, f, table, bucket.secs, by_service).await?;
    // The whole window as one bucket: each group's percentiles over it.
    let (whole, _) = latency_points(client, f, table, WHOLE_WINDOW_SECS, by_service).await?;
    let overall_of = |service: &Option<String>| -> LatencyPoint {
        let mut p = whole
            .get(service)
            .and_then(|m| m.values().next().copied())
            .unwrap_or_default();
        p.t = None;
        p
    };
    let series_of = |m: &HashMap<DateTime<Utc>, LatencyPoint>| -> Vec<LatencyPoint> {
        bucket_starts(f, bucket.secs)
            .map(|t| {
                m.get(&t).copied().unwrap_or(LatencyPoint {
                    t: Some(t),
                    ..Default::default()
                })
            })
            .collect()
    };
    let window = Window {
        bucket: bucket.name,
        from: f.from,
        to: f.to,
        source: table,
    };
    if by_service {
        let groups = groups
            .iter()
            .map(|(service, m)| LatencyGroup {
                service: service.clone(),
                overall: overall_of(service),
                series: series_of(m),
            })
            .collect();
        Ok(LatencyAnswer {
            window,
            relative_error,
            overall: None,
            series: None,
            groups: Some(groups),
        })
    } else {
        let series = series_of(groups.get(&None).unwrap_or(&HashMap::new()));
        Ok(LatencyAnswer {
            window,
            relative_error,
            overall: Some(overall_of(&None)),
            series: Some(series),
            groups: None,
        })
    }
}

/// A bucket wider than any window (a century, counted from the epoch): every row of a window falls in one.
const WHOLE_WINDOW_SECS: i64 = 100 * 365 * 86_400;

type LatencyPoints = BTreeMap<Option<String>, HashMap<DateTime<Utc>, LatencyPoint>>;

/// Latency points per (service, bucket start), and the answer's relative error.
async fn latency_points(
    client: &impl GenericClient,
    f: &Filters,
    table: Table,
    bucket_secs: i64,
    by_service: bool,
) -> Result<(LatencyPoints, f64), DbError> {
    let mut groups = LatencyPoints::new();
    let relative_error = match series::latency_by_bucket(client, f, table, bucket_secs, by_service)
        .await?
    {
        LatencyRows::Histograms(rows) => {
            for r in rows {
                let (count, p) = match r.stored {
                    Some(stored) => stored,
                    None => (
                        r.hist.total(),
                        latency::percentiles(&r.hist, &latency::PERCENTILES).unwrap_or_default(),
                    ),
                };
                let point = LatencyPoint {
                    t: Some(r.t),
                    count,
                    p50: p.first().copied(),
                    p90: p.get(1).copied(),
                    p95: p.get(2).copied(),
                    p99: p.get(3).copied(),
                    max: r.max,
                };
                groups.entry(r.service).or_default().insert(r.t, point);
            }
            latency::RELATIVE_ERROR
        }
        LatencyRows::Exact(rows) => {
            for r in rows {
                let p = &r.percentiles;
                let point = LatencyPoint {
                    t: Some(r.t),
                    count: r.count,
                    p50: p.first().copied(),
                    p90: p.get(1).copied(),
                    p95: p.get(2).copied(),
                    p99: p.get(3).copied(),
                    max: Some(r.max),
                };
                groups.entry(r.service).or_default().insert(r.t, point);
            }
            0.0
        }
    };
    Ok((groups, relative_error))
}

/// Parameters of top-talkers.
#[derive(Debug, Clone, Copy)]
pub struct TopQuery {
    pub by: TalkerKey,
    pub by_bytes: bool,
    pub limit: i64,
}

const BY: [(&str, TalkerKey); 11] = [
    ("src_ip", TalkerKey::SrcIp),
    ("dst_ip", TalkerKey::DstIp),
    ("pair", TalkerKey::Pair),
    ("dst_port", TalkerKey::DstPort),
    ("service", TalkerKey::Service),
    ("protocol", TalkerKey::Protocol),
    ("src_country", TalkerKey::SrcCountry),
    ("dst_country", TalkerKey::DstCountry),
    ("src_asn", TalkerKey::SrcAsn),
    ("dst_asn", TalkerKey::DstAsn),
    ("threat", TalkerKey::Threat),
];

pub fn parse_top(params: &HashMap<String, String>) -> Result<TopQuery, ParamError> {
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let by = match get("by") {
        None => TalkerKey::SrcIp,
        Some(v) => BY
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                ParamError::new(
                    "by",
                    format!("{v:?} is not a talker key"),
                    "src_ip, dst_ip, pair, dst_port, service, protocol, src_country, dst_country, src_asn, dst_asn, threat",
                )
            })?,
    };
    let by_bytes = match get("metric") {
        None | Some("events") => false,
        Some("bytes") => true,
        Some(v) => {
            return Err(ParamError::new(
                "metric",
                format!("{v:?} is not a metric"),
                "events, bytes",
            ))
        }
    };
    let limit = match get("limit") {
        None => 10,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ParamError::new("limit", format!("{v:?} is not a count"), "1-1000"))?,
    };
    Ok(TopQuery {
        by,
        by_bytes,
        limit,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopTalker {
    /// The talker: `src_ip`, `dst_ip` (both for `pair`), `dst_port`, `service` or `protocol`, as text.
    #[serde(flatten)]
    #[schema(value_type = HashMap<String, Option<String>>)]
    pub key: BTreeMap<&'static str, Option<String>>,
    pub events: i64,
    /// bytes_in + bytes_out.
    pub bytes: i64,
    pub errors: i64,
    pub client_errors: i64,
    /// This talker's share of the total of the ranking metric.
    pub share: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopTalkers {
    pub by: String,
    pub metric: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub source: Table,
    pub total_events: i64,
    pub total_bytes: i64,
    pub top: Vec<TopTalker>,
}

pub async fn top_talkers(
    client: &impl GenericClient,
    f: &Filters,
    q: TopQuery,
    table: Table,
) -> Result<TopTalkers, DbError> {
    // Ranking sources or destinations from their rollup means a window of whole 5 minutes, and of whole hours
    // once it spans hours: with thousands of addresses per bucket, reading hourly rows instead of up to 22
    // 5-minute buckets at the edges halves the work. The answer says which window it used.

    let mut f = f.clone();
    let grain = match i64::from(table.finest()) {
        60 | 1 => 60,
        _ if f.to - f.from >= LONG_WINDOW => 3600,
        finest => finest,
    };
    align(&mut f, grain);
    let f = &f;
    let (rows, total) =
        top_talkers::top_talkers(client, f, table, q.by, q.by_bytes, q.limit).await?;
    let total_metric = if q.by_bytes {
        total.bytes_in + total.bytes_out
    } else {
        total.events
    };
    let top = rows
        .into_iter()
        .map(|t| {
            let bytes = t.counts.bytes_in + t.counts.bytes_out;
            let metric = if q.by_bytes { bytes } else { t.counts.events };
            TopTalker {
                key: q.by.names().iter().copied().zip(t.key).collect(),
                events: t.counts.events,
                bytes,
                errors: t.counts.errors,
                client_errors: t.counts.client_errors,
                share: if total_metric > 0 {
                    metric as f64 / total_metric as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    Ok(TopTalkers {
        by: q.by.names().join("+"),
        metric: if q.by_bytes { "bytes" } else { "events" },
        from: f.from,
        to: f.to,
        source: table,
        total_events: total.events,
        total_bytes: total.bytes_in + total.bytes_out,
        top,
    })
}
