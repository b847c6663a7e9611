//! Rollup contributions of one COPY, computed from the very rows being copied, so the rollups written in the same
//! transaction always match what lands in `comm_logs` (retries, bisection and all).
//!
//! Groups per shape of `rollup::catalog`, keyed by its key columns, each at every tier it keeps. Rows are read
//! back from the encoded COPY buffer (length-prefixed fields, see `copy.rs`): nothing is kept per event between
//! decode and COPY. Each row costs one hash-map update per root shape at minute resolution; a shape whose key
//! another shape's key holds (by service within by host within the full shape; source networks within sources)
//! is summed from that shape's minute groups, which are far fewer than the rows, and the coarser tiers likewise.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::rollup::catalog::{
    self, src_network, KeyColumn, Shape, Source, MAX_KEYS, SHAPES, TIERS,
};
use crate::rollup::histogram as latency;

/// Microseconds between the Unix epoch and PostgreSQL's (the COPY encoding's timestamp origin).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const MINUTE_US: i64 = 60_000_000;

/// Column positions in a `comm_logs` COPY row (`copy::COMM_LOGS_COLUMNS`).
mod col {
    pub const TS: usize = 0;
    pub const PRODUCER: usize = 2;
    pub const SRC_IP: usize = 3;
    pub const DST_IP: usize = 5;
    pub const DST_PORT: usize = 6;
    pub const PROTOCOL: usize = 7;
    pub const SERVICE: usize = 8;
    pub const STATUS: usize = 9;
    pub const BYTES_IN: usize = 10;
    pub const BYTES_OUT: usize = 11;
    pub const LATENCY: usize = 12;
    pub const HOST: usize = 13;
    pub const SRC_COUNTRY: usize = 16;
    pub const SRC_ASN: usize = 18;
    pub const DST_COUNTRY: usize = 20;
    pub const DST_ASN: usize = 22;
    pub const THREAT: usize = 24;
    pub const COUNT: usize = 25;
}

/// One key column's value in a group key; a column has one type, so values compare as the column's would (null
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value<'a> {
    Null,
    Text(&'a str),
    Int(i32),
    Int8(i64),
    Inet(IpAddr),
}

impl<'a> Value<'a> {
    pub fn text(self) -> Option<&'a str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(self) -> Option<i32> {
        match self {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }

    pub fn int8(self) -> Option<i64> {
        match self {
            Value::Int8(v) => Some(v),
            _ => None,
        }
    }

    pub fn inet(self) -> Option<IpAddr> {
        match self {
            Value::Inet(ip) => Some(ip),
            _ => None,
        }
    }
}

/// A shape's key columns, in the catalog's order. A fixed array, not a vector: grouping a row costs no
/// allocation; and only the shape's own columns are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyValues<'a> {
    len: u8,
    values: [Value<'a>; MAX_KEYS],
}

impl<'a> KeyValues<'a> {
    /// The key of `shape` with each column's value from `value(column index, column)`.
    pub fn of<E>(
        shape: &Shape,
        mut value: impl FnMut(usize, &KeyColumn) -> Result<Value<'a>, E>,
    ) -> Result<KeyValues<'a>, E> {
        let mut k = KeyValues {
            len: shape.keys.len() as u8,
            values: [Value::Null; MAX_KEYS],
        };
        for (j, (v, c)) in k.values.iter_mut().zip(shape.keys).enumerate() {
            *v = value(j, c)?;
        }
        Ok(k)
    }
}

impl std::hash::Hash for KeyValues<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.values[..usize::from(self.len)].hash(state);
    }
}

impl<'a> std::ops::Deref for KeyValues<'a> {
    type Target = [Value<'a>];

    fn deref(&self) -> &[Value<'a>] {
        &self.values[..usize::from(self.len)]
    }
}

/// A rollup key; field order is the sort order, which is also the order upserts take row locks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key<'a> {
    /// Bucket width in seconds (one of its shape's tiers).
    pub res: i32,
    /// Bucket start, in Unix microseconds.
    pub bucket_us: i64,
    pub dims: KeyValues<'a>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agg {
    pub events: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Status ≥ 500.
    pub errors: i64,
    /// Status 400–499.
    pub client_errors: i64,
    pub latency_n: i64,
    pub latency_sum: f64,
    pub latency_max: Option<f64>,
    /// Histogram bucket → count (see [`latency`]); kept for the shapes that have latency.
    pub hist: latency::Counts,
}

impl Agg {
    pub fn merge(&mut self, o: &Agg) {
        self.events += o.events;
        self.bytes_in = catalog::add_bytes(self.bytes_in, o.bytes_in);
        self.bytes_out = catalog::add_bytes(self.bytes_out, o.bytes_out);
        self.errors += o.errors;
        self.client_errors += o.client_errors;
        self.latency_n += o.latency_n;
        self.latency_sum += o.latency_sum;
        self.latency_max = match (self.latency_max, o.latency_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.hist.merge(&o.hist);
    }
}

/// One row's values that rollups sum.
struct Values {
    bytes_in: i64,
    bytes_out: i64,
    status: Option<i32>,
    latency: Option<f64>,
}

impl Values {
    fn add_to(&self, agg: &mut Agg, with_hist: bool) {
        agg.events += 1;
        agg.bytes_in = catalog::add_bytes(agg.bytes_in, self.bytes_in);
        agg.bytes_out = catalog::add_bytes(agg.bytes_out, self.bytes_out);
        match self.status {
            Some(s) if s >= 500 => agg.errors += 1,
            Some(400..=499) => agg.client_errors += 1,
            _ => {}
        }
        if let Some(ms) = self.latency {
            agg.latency_n += 1;
            agg.latency_sum += ms;
            agg.latency_max = Some(agg.latency_max.map_or(ms, |m| m.max(ms)));
            if with_hist {
                agg.hist.add(latency::bucket(ms), 1);
            }
        }
    }
}

/// Groups of one shape at every tier, sorted by key.
pub type Groups<'a> = Vec<(Key<'a>, Agg)>;

/// Every rollup row one flush adds to: one list of groups per shape of [`catalog::SHAPES`], in its order.
#[derive(Debug)]
pub struct Flush<'a> {
    pub groups: Vec<Groups<'a>>,
    /// The earliest event time among the rows, Unix microseconds (`i64::MAX` when none).
    pub earliest_us: i64,
}

impl Default for Flush<'_> {
    fn default() -> Self {
        Flush {
            groups: vec![Vec::new(); SHAPES.len()],
            earliest_us: i64::MAX,
        }
    }
}

/// Group maps are hashed with foldhash, seeded per process: every row costs one lookup per shape, where SipHash
/// was the largest cost of this stage. The random seed keeps a client from choosing keys that collide.
type Hasher = foldhash::fast::RandomState;

/// The per-minute groups of one shape, keyed by its `N` key columns.
type MinutesOf<'a, const N: usize> = HashMap<(i64, [Value<'a>; N]), Agg, Hasher>;

/// Per-minute groups sized to the shape's key: a one-column key is a 24-byte array, not a `MAX_KEYS` one. Every
/// row is hashed and moved into one map per shape, and padded keys made this stage 40% slower.
#[derive(Debug)]
enum Minutes<'a> {
    One(MinutesOf<'a, 1>),
    Two(MinutesOf<'a, 2>),
    Wide(MinutesOf<'a, MAX_KEYS>),
}

impl<'a> Minutes<'a> {
    fn for_shape(shape: &Shape) -> Minutes<'a> {
        match shape.keys.len() {
            1 => Minutes::One(HashMap::default()),
            2 => Minutes::Two(HashMap::default()),
            _ => Minutes::Wide(HashMap::default()),
        }
    }

    fn add(&mut self, minute: i64, row: &RowKeys<'a>, shape: &Shape, v: &Values) {
        fn add_n<'a, const N: usize>(
            m: &mut MinutesOf<'a, N>,
            minute: i64,
            row: &RowKeys<'a>,
            shape: &Shape,
            v: &Values,
        ) {
            let mut key = [Value::Null; N];
            for (k, c) in key.iter_mut().zip(shape.keys) {
                *k = row.value(c.source);
            }
            v.add_to(m.entry((minute, key)).or_default(), shape.latency);
        }
        match self {
            Minutes::One(m) => add_n(m, minute, row, shape, v),
            Minutes::Two(m) => add_n(m, minute, row, shape, v),
            Minutes::Wide(m) => add_n(m, minute, row, shape, v),
        }
    }

    /// The groups, at the minute.
    fn into_groups(self, shape: &Shape) -> Groups<'a> {
        fn groups_n<'a, const N: usize>(m: MinutesOf<'a, N>, shape: &Shape) -> Groups<'a> {
            m.into_iter()
                .map(|((bucket_us, key), agg)| {
                    let Ok(dims) = KeyValues::of(shape, |j, _| {
                        Ok::<_, std::convert::Infallible>(
                            key.get(j).copied().unwrap_or(Value::Null),
                        )
                    });
                    let key = Key {
                        res: TIERS[0],
                        bucket_us,
                        dims,
                    };
                    (key, agg)
                })
                .collect()
        }
        match self {
            Minutes::One(m) => groups_n(m, shape),
            Minutes::Two(m) => groups_n(m, shape),
            Minutes::Wide(m) => groups_n(m, shape),
        }
    }
}

/// The per-minute contributions of a set of rows to every shape the writers roll up (a sealed shape's are
/// computed apart, see [`late`]), before they are summed into the coarser tiers.
#[derive(Debug)]
pub struct Rollup<'a> {
    minutes: Vec<Minutes<'a>>,
    earliest_us: Option<i64>,
}

impl Default for Rollup<'_> {
    fn default() -> Self {
        Rollup {
            minutes: SHAPES.iter().map(|s| Minutes::for_shape(s)).collect(),
            earliest_us: None,
        }
    }
}

/// Where a derived shape's key column comes from in its parent's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Derived {
    /// The parent's column at this position.
    Same(usize),
    /// The network of the parent's address at this position.
    Network(usize),
}

/// The shape `shape`'s minute groups are summed from, and how its key columns are read from that shape's: the
/// unsealed shape with the fewest key columns that holds every one of them (a source network from its address),
/// strictly finer than `shape`, and with a histogram when `shape` keeps one. `None`: a root shape, rolled up
/// per row.
fn parent_of(shape: &Shape) -> Option<Parent> {
    if shape.sealed {
        return None;
    }
    SHAPES
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.sealed && p.table != shape.table && (p.latency || !shape.latency))
        .filter_map(|(i, p)| {
            let mut from = [Derived::Same(0); MAX_KEYS];
            for (f, c) in from.iter_mut().zip(shape.keys) {
                let at = |source| p.keys.iter().position(|k| k.source == source);
                *f = match (at(c.source), c.source) {
                    (Some(j), _) => Derived::Same(j),
                    (None, Source::SrcNet) => Derived::Network(at(Source::SrcIp)?),
                    (None, _) => return None,
                };
            }
            // Strictly finer than `shape`: more columns, or the address where `shape` has its network (so no
            // two shapes are each other's parent).
            let network = from[..shape.keys.len()]
                .iter()
                .any(|f| matches!(f, Derived::Network(_)));
            (p.keys.len() > shape.keys.len() || network).then_some((i, from))
        })
        .min_by_key(|(i, _)| SHAPES[*i].keys.len())
}

/// `shape`'s minute groups summed from its parent's (see [`parent_of`]).
fn derive<'a>(parent: &Groups<'a>, shape: &Shape, from: &[Derived; MAX_KEYS]) -> Groups<'a> {
    let mut out: HashMap<Key<'a>, Agg, Hasher> = HashMap::default();
    for (k, agg) in parent {
        let Ok(dims) = KeyValues::of(shape, |j, _| {
            Ok::<_, std::convert::Infallible>(match from[j] {
                Derived::Same(i) => k.dims[i],
                Derived::Network(i) => match k.dims[i] {
                    Value::Inet(ip) => Value::Inet(src_network(ip)),
                    other => other,
                },
            })
        });
        let key = Key {
            res: k.res,
            bucket_us: k.bucket_us,
            dims,
        };
        out.entry(key).or_default().merge(agg);
    }
    out.into_iter()
        .map(|(k, mut agg)| {
            if !shape.latency {
                agg.hist.clear();
            }
            (k, agg)
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("malformed COPY row at byte {0}")]
pub struct MalformedRow(pub usize);

/// The key-column values of one row, read once for every shape.
struct RowKeys<'a> {
    producer: Option<&'a str>,
    service: Option<&'a str>,
    protocol: Option<&'a str>,
    host: Option<&'a str>,
    dst_port: Option<i32>,
    status: Option<i32>,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    src_country: Option<&'a str>,
    src_asn: Option<i64>,
    dst_country: Option<&'a str>,
    dst_asn: Option<i64>,
    threat: Option<&'a str>,
}

impl<'a> RowKeys<'a> {
    fn read(f: &Fields<'a>) -> Option<RowKeys<'a>> {
        Some(RowKeys {
            producer: f.text(col::PRODUCER)?,
            service: f.text(col::SERVICE)?,
            protocol: f.text(col::PROTOCOL)?,
            host: f.text(col::HOST)?,
            dst_port: f.int4(col::DST_PORT)?,
            status: f.int4(col::STATUS)?,
            src_ip: f.inet(col::SRC_IP)?,
            dst_ip: f.inet(col::DST_IP)?,
            src_country: f.text(col::SRC_COUNTRY)?,
            src_asn: f.int8(col::SRC_ASN)?,
            dst_country: f.text(col::DST_COUNTRY)?,
            dst_asn: f.int8(col::DST_ASN)?,
            threat: f.text(col::THREAT)?,
        })
    }

    fn value(&self, source: Source) -> Value<'a> {
        let text = |v: Option<&'a str>| v.map_or(Value::Null, Value::Text);
        let int = |v: Option<i32>| v.map_or(Value::Null, Value::Int);
        let inet = |v: Option<IpAddr>| v.map_or(Value::Null, Value::Inet);
        let int8 = |v: Option<i64>| v.map_or(Value::Null, Value::Int8);
        match source {
            Source::Producer => text(self.producer),
            Source::Service => text(self.service),
            Source::Protocol => text(self.protocol),
            Source::Host => text(self.host),
            Source::DstPort => int(self.dst_port),
            Source::Status => int(self.status),
            Source::SrcIp => inet(self.src_ip),
            Source::DstIp => inet(self.dst_ip),
            Source::SrcNet => inet(self.src_ip.map(src_network)),
            Source::SrcCountry => text(self.src_country),
            Source::SrcAsn => int8(self.src_asn),
            Source::DstCountry => text(self.dst_country),
            Source::DstAsn => int8(self.dst_asn),
            Source::Threat => text(self.threat),
        }
    }
}

impl<'a> Rollup<'a> {
    /// Adds every row of a COPY row buffer.
    pub fn add_rows(&mut self, rows: &'a [u8]) -> Result<(), MalformedRow> {
        each_row(rows, |f| self.add(f))
    }

    fn add(&mut self, f: &Fields<'a>) -> Option<()> {
        let ts_us = f.ts_us()?;
        self.earliest_us = Some(self.earliest_us.map_or(ts_us, |e| e.min(ts_us)));
        let minute = ts_us.div_euclid(MINUTE_US) * MINUTE_US;
        let row = RowKeys::read(f)?;
        row.producer?;
        let v = f.values(row.status)?;
        // Only the root shapes, per row: each shape costs a hash of its key and (with latency) a histogram
        // update per row, and the others are summed from these groups afterwards, once per group.
        for ((shape, minutes), root) in SHAPES.iter().zip(&mut self.minutes).zip(ROOTS.iter()) {
            if *root {
                minutes.add(minute, &row, shape, &v);
            }
        }
        Some(())
    }

    /// Each shape's groups at its finest tier, in no order: what a writer appends as deltas. The compactor
    /// adds the coarser tiers ([`Flush::expand`]).
    pub fn into_deltas(self) -> Flush<'a> {
        let mut minute: Vec<Groups<'a>> = SHAPES
            .iter()
            .zip(self.minutes)
            .map(|(shape, m)| m.into_groups(shape))
            .collect();
        // Each derived shape once its parent's groups are complete (a parent may be derived itself, so a chain
        // takes a pass a link; no chain is longer than the shapes).
        let mut done: Vec<bool> = PARENTS.iter().map(Option::is_none).collect();
        for _ in 0..SHAPES.len() {
            for (i, parent) in PARENTS.iter().enumerate() {
                if let (false, Some((p, from))) = (done[i], parent) {
                    if done[*p] {
                        minute[i] = derive(&minute[*p], SHAPES[i], from);
                        done[i] = true;
                    }
                }
            }
        }
        Flush {
            groups: SHAPES
                .iter()
                .zip(minute)
                .map(|(shape, g)| finest(shape, g))
                .collect(),
            earliest_us: self.earliest_us.unwrap_or(i64::MAX),
        }
    }
}

/// A shape's parent (its index in [`SHAPES`]) and where its key columns come from.
type Parent = (usize, [Derived; MAX_KEYS]);

/// Each shape's parent in [`SHAPES`] order ([`parent_of`]).
static PARENTS: std::sync::LazyLock<Vec<Option<Parent>>> =
    std::sync::LazyLock::new(|| SHAPES.iter().map(|s| parent_of(s)).collect());

/// Which shapes of [`SHAPES`] the writers roll up row by row: unsealed, with no parent to be summed from.
static ROOTS: std::sync::LazyLock<Vec<bool>> = std::sync::LazyLock::new(|| {
    SHAPES
        .iter()
        .zip(PARENTS.iter())
        .map(|(s, p)| !s.sealed && p.is_none())
        .collect()
});

/// Minute groups at `shape`'s finest tier: when that is the minute, as they are. Deltas are appended, never
/// upserted, so they need no lock order; sorting them cost a tenth of this stage.
fn finest<'a>(shape: &Shape, groups: Groups<'a>) -> Groups<'a> {
    if shape.finest() == TIERS[0] {
        groups
    } else {
        expand(groups, &shape.tiers[..1])
    }
}

/// One COPY row's fields, each null or its binary value.
struct Fields<'a>([Option<&'a [u8]>; col::COUNT]);

impl<'a> Fields<'a> {
    /// `None` when the value is malformed; `Some(None)` when null.
    fn text(&self, i: usize) -> Option<Option<&'a str>> {
        self.0[i].map(std::str::from_utf8).transpose().ok()
    }

    fn int4(&self, i: usize) -> Option<Option<i32>> {
        self.0[i]
            .map(|b| b.try_into().map(i32::from_be_bytes))
            .transpose()
            .ok()
    }

    fn int8(&self, i: usize) -> Option<Option<i64>> {
        self.0[i]
            .map(|b| b.try_into().map(i64::from_be_bytes))
            .transpose()
            .ok()
    }

    /// A present but unreadable address is a malformed row, unlike a null one.
    fn inet(&self, i: usize) -> Option<Option<IpAddr>> {
        match self.0[i] {
            None => Some(None),
            Some(b) => read_inet(b).map(Some),
        }
    }

    /// The event time in Unix microseconds (never null).
    fn ts_us(&self) -> Option<i64> {
        Some(self.int8(col::TS)?? + PG_EPOCH_OFFSET_US)
    }

    fn values(&self, status: Option<i32>) -> Option<Values> {
        Some(Values {
            bytes_in: self.int8(col::BYTES_IN)?.unwrap_or(0),
            bytes_out: self.int8(col::BYTES_OUT)?.unwrap_or(0),
            status,
            latency: self.0[col::LATENCY]
                .map(|b| b.try_into().map(f64::from_be_bytes))
                .transpose()
                .ok()?,
        })
    }
}

/// Calls `f` with each row of a COPY row buffer.
fn each_row<'a>(
    rows: &'a [u8],
    mut f: impl FnMut(&Fields<'a>) -> Option<()>,
) -> Result<(), MalformedRow> {
    let mut at = 0;
    while at < rows.len() {
        let mut fields = Fields([None; col::COUNT]);
        let count = read_i16(rows, at).ok_or(MalformedRow(at))? as usize;
        if count != col::COUNT {
            return Err(MalformedRow(at));
        }
        at += 2;
        for field in fields.0.iter_mut() {
            let len = read_i32(rows, at).ok_or(MalformedRow(at))?;
            at += 4;
            if len >= 0 {
                let end = at + len as usize;
                *field = Some(rows.get(at..end).ok_or(MalformedRow(at))?);
                at = end;
            }
        }
        f(&fields).ok_or(MalformedRow(at))?;
    }
    Ok(())
}

/// The deltas of a sealed `shape` (source × destination pairs) for the rows in `chunks` with
/// `from_us <= ts < to_us` (Unix microseconds): rows the seal has passed, so their writer rolls them up
/// (db/migrations/0008_pairs.sql). At the shape's finest tier.
pub fn late<'a>(
    chunks: &'a [Bytes],
    shape: &Shape,
    from_us: i64,
    to_us: i64,
) -> Result<Groups<'a>, MalformedRow> {
    let mut m = Minutes::for_shape(shape);
    for c in chunks {
        each_row(c, |f| {
            let ts_us = f.ts_us()?;
            if (from_us..to_us).contains(&ts_us) {
                let row = RowKeys::read(f)?;
                let v = f.values(row.status)?;
                m.add(ts_us.div_euclid(MINUTE_US) * MINUTE_US, &row, shape, &v);
            }
            Some(())
        })?;
    }
    Ok(finest(shape, m.into_groups(shape)))
}

impl<'a> Flush<'a> {
    /// The same contributions at every tier each shape keeps.
    pub fn expand(self) -> Flush<'a> {
        Flush {
            groups: SHAPES
                .iter()
                .zip(self.groups)
                .map(|(shape, g)| expand(g, shape.tiers))
                .collect(),
            earliest_us: self.earliest_us,
        }
    }

    /// The groups of `shape`.
    pub fn of(&self, shape: &Shape) -> &Groups<'a> {
        static NONE: Groups<'static> = Vec::new();
        self.groups.get(catalog::index_of(shape)).unwrap_or(&NONE)
    }
}

/// Groups summed into each of `tiers` no finer than their own, sorted by key (upserting in one global order
/// means writers never deadlock).
fn expand<'a>(groups: impl IntoIterator<Item = (Key<'a>, Agg)>, tiers: &[i32]) -> Groups<'a> {
    let mut out: HashMap<Key<'a>, Agg, Hasher> = HashMap::default();
    for (k, agg) in groups {
        for res in tiers.iter().filter(|r| **r >= k.res) {
            let width = i64::from(*res) * 1_000_000;
            let key = Key {
                res: *res,
                bucket_us: k.bucket_us.div_euclid(width) * width,
                dims: k.dims,
            };
            out.entry(key).or_default().merge(&agg);
        }
    }
    sorted(out.into_iter().collect())
}

fn sorted(mut groups: Groups<'_>) -> Groups<'_> {
    // Keys are unique: an unstable sort gives the same order, without the stable sort's buffer.
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// The rollup deltas of every row in `chunks`, each shape at its finest tier.
pub fn of_chunks(chunks: &[Bytes]) -> Result<Flush<'_>, MalformedRow> {
    let mut r = Rollup::default();
    for c in chunks {
        r.add_rows(c)?;
    }
    Ok(r.into_deltas())
}

/// An `inet` in PostgreSQL's binary form: family, bits, is_cidr, length, address.
fn read_inet(b: &[u8]) -> Option<IpAddr> {
    match (b.first()?, b.get(4..)?) {
        (2, a) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).ok()?))),
        (3, a) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).ok()?))),
        _ => None,
    }
}

fn read_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, Limits, Scratch};
    use crate::pipeline::copy::encode_row;
    use crate::rollup::catalog::{DST, FULL, SERVICE, SRC, SRC_NET};

    fn rows(events: &[&str]) -> bytes::Bytes {
        let mut buf = Vec::new();
        for e in events {
            let mut s = Scratch::default();
            let ev = parse_event(e, 0, &Limits::default(), &mut s).unwrap();
            encode_row(&mut buf, &ev, 5, "p", &Default::default());
        }
        bytes::Bytes::from(buf)
    }

    #[test]
    fn sources_roll_up_under_their_network() {
        let net = |a: &str| src_network(a.parse().unwrap()).to_string();
        assert_eq!(net("10.0.1.77"), "10.0.1.0");
        assert_eq!(net("10.0.1.0"), "10.0.1.0");
        assert_eq!(net("2001:db8:1:2:3::9"), "2001:db8:1:2::");
        let buf = rows(&[
            r#"{"timestamp":"2026-11-22T10:00:05Z","src_ip":"10.0.1.7","bytes_in":3}"#,
            r#"{"timestamp":"2026-11-22T10:00:06Z","src_ip":"10.0.1.200","bytes_in":4}"#,
            r#"{"timestamp":"2026-11-22T10:00:07Z","src_ip":"10.0.2.1"}"#,
            r#"{"timestamp":"2026-11-22T10:00:08Z"}"#,
        ]);
        let mut r = Rollup::default();
        r.add_rows(&buf).unwrap();
        let got: Vec<(i32, Option<String>, i64, i64)> = r
            .into_deltas()
            .of(&SRC_NET)
            .iter()
            .map(|(k, a)| {
                let net = k.dims[0].inet().map(|ip| ip.to_string());
                (k.res, net, a.events, a.bytes_in)
            })
            .collect();
        assert_eq!(
            got,
            [
                (300, None, 1, 0),
                (300, Some("10.0.1.0".into()), 2, 7),
                (300, Some("10.0.2.0".into()), 1, 0)
            ]
        );
    }

    #[test]
    fn groups_by_tier_bucket_and_dimensions() {
        let buf = rows(&[
            r#"{"timestamp":"2026-11-22T10:00:05Z","service":"web","status":200,"bytes_in":10,"latency_ms":2,"src_ip":"10.0.0.1"}"#,
            r#"{"timestamp":"2026-11-22T10:00:59Z","service":"web","status":404,"bytes_out":7,"latency_ms":8,"src_ip":"2001:db8::1"}"#,
            r#"{"timestamp":"2026-11-22T10:01:00Z","service":"web","status":404,"src_ip":"10.0.0.1"}"#,
            r#"{"timestamp":"2026-11-22T10:00:30Z","service":"api","status":500,"latency_ms":0}"#,
        ]);
        let mut r = Rollup::default();
        r.add_rows(&buf).unwrap();
        let deltas = r.into_deltas();
        let res = |v: Vec<i32>| v.into_iter().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(
            res(deltas.of(&FULL).iter().map(|(k, _)| k.res).collect()),
            res(vec![60])
        );
        assert_eq!(
            res(deltas.of(&SERVICE).iter().map(|(k, _)| k.res).collect()),
            res(vec![60])
        );
        assert_eq!(
            res(deltas.of(&SRC).iter().map(|(k, _)| k.res).collect()),
            res(vec![300])
        );
        assert_eq!(
            res(deltas.of(&DST).iter().map(|(k, _)| k.res).collect()),
            res(vec![300])
        );
        let flush = deltas.expand();
        let (full, service, src, dst) = (
            flush.of(&FULL),
            flush.of(&SERVICE),
            flush.of(&SRC),
            flush.of(&DST),
        );
        // comm_rollup's key: producer, service, protocol, host, dst_port, status.
        fn producer<'a>(k: &Key<'a>) -> Option<&'a str> {
            k.dims[0].text()
        }
        fn service_of<'a>(k: &Key<'a>) -> Option<&'a str> {
            k.dims[1].text()
        }
        fn status(k: &Key<'_>) -> Option<i32> {
            k.dims[5].int()
        }
        let res: Vec<i32> = full.iter().map(|(k, _)| k.res).collect();
        assert_eq!(res, [60, 60, 60, 60, 300, 300, 300, 3600, 3600, 3600]);
        let (k, a) = &full[1];
        assert_eq!(
            (service_of(k), status(k), producer(k)),
            (Some("web"), Some(200), Some("p"))
        );
        assert_eq!(k.bucket_us, 1_795_341_600_000_000);
        assert_eq!(
            (a.events, a.bytes_in, a.bytes_out, a.latency_n),
            (1, 10, 0, 1)
        );
        assert_eq!(service_of(&full[0].0), Some("api"), "sorted by key");
        assert_eq!(full[0].1.hist.get(latency::ZERO), Some(1));
        assert_eq!(full[0].1.errors, 1);
        let (k, a) = &full[6];
        assert_eq!(
            (k.res, service_of(k), status(k)),
            (300, Some("web"), Some(404))
        );
        assert_eq!((a.events, a.client_errors, a.latency_n), (2, 2, 1));

        // Per service: web has 3 events in the 10:00 hour, with both latencies in its histogram.
        let (k, a) = service.last().unwrap();
        assert_eq!((k.res, k.dims[0].text()), (3600, Some("web")));
        assert_eq!(
            (a.events, a.bytes_in, a.bytes_out, a.client_errors),
            (3, 10, 7, 2)
        );
        assert_eq!((a.latency_sum, a.latency_max), (10.0, Some(8.0)));
        assert_eq!(a.hist.total(), 2);

        // Per source: no histogram; a missing address is its own group.
        let hour: Vec<_> = src.iter().filter(|(k, _)| k.res == 3600).collect();
        assert_eq!(hour.len(), 3);
        assert_eq!(hour[0].0.dims[0].inet(), None);
        assert_eq!(hour[1].0.dims[0].inet(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!((hour[1].1.events, hour[1].1.bytes_in), (2, 10));
        assert_eq!(
            hour[2].0.dims[0].inet(),
            Some("2001:db8::1".parse().unwrap())
        );
        assert!(src.iter().all(|(_, a)| a.hist.is_empty()));
        assert!(src.iter().chain(dst).all(|(k, _)| k.res != 60));
        assert_eq!(
            dst.iter().map(|(k, _)| k.res).collect::<Vec<_>>(),
            [300, 3600]
        );
    }

    #[test]
    fn derived_shapes_equal_their_rows_rolled_up_one_by_one() {
        // Which shapes are summed from which: by service from by host, by host from the full shape, source
        // networks from sources.
        let parent = |s: &Shape| parent_of(s).map(|(p, _)| SHAPES[p].table);
        assert_eq!(parent(&SERVICE), Some("comm_rollup_host"));
        assert_eq!(parent(&catalog::HOST), Some("comm_rollup"));
        assert_eq!(parent(&SRC_NET), Some("comm_rollup_src"));
        for root in [&FULL, &SRC, &DST, &catalog::GEO, &catalog::PAIR] {
            assert_eq!(parent(root), None, "{}", root.table);
        }
        let mut events = Vec::new();
        for i in 0..400 {
            let latency = if i % 7 == 0 {
                String::new()
            } else {
                format!(r#","latency_ms":{}"#, (i * 37) % 900)
            };
            events.push(format!(
                r#"{{"timestamp":"2026-11-22T10:{:02}:{:02}Z","service":"s{}","host":"h{}","protocol":"{}","status":{},"dst_port":{},"src_ip":"10.0.{}.{}","bytes_in":{}{latency}}}"#,
                i / 60 % 60,
                i % 60,
                i % 5,
                i % 3,
                ["tcp", "udp"][i % 2],
                [200, 404, 500][i % 3],
                1000 + i,
                i % 4,
                i % 11,
                i
            ));
        }
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let chunks = [rows(&refs)];
        let derived = of_chunks(&chunks).unwrap();
        for shape in [&SERVICE, &catalog::HOST, &SRC_NET] {
            let one_by_one = sorted(late(&chunks, shape, i64::MIN, i64::MAX).unwrap());
            let got = sorted(derived.of(shape).clone());
            assert_eq!(got.len(), one_by_one.len(), "{}", shape.table);
            for ((k1, a1), (k2, a2)) in got.iter().zip(&one_by_one) {
                assert_eq!(k1, k2, "{}", shape.table);
                let whole = |a: &Agg| {
                    let mut a = a.clone();
                    a.latency_sum = (a.latency_sum * 1e6).round();
                    a
                };
                assert_eq!(whole(a1), whole(a2), "{} {k1:?}", shape.table);
            }
        }
    }

    #[test]
    fn truncated_rows_are_an_error() {
        let buf = rows(&[r#"{"service":"web"}"#]);
        assert!(Rollup::default().add_rows(&buf[..buf.len() - 3]).is_err());
    }
}
