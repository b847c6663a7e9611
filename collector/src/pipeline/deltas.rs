//! Rollup contributions of one COPY, computed from the very rows being copied, so the rollups written in the same
//! transaction always match what lands in `comm_logs` (retries, bisection and all).
//!
//! One typed group per shape of `rollup::catalog`, each at every tier the catalog gives it. Rows are read
//! back from the encoded COPY buffer (length-prefixed fields, see `copy.rs`): nothing is kept per event between
//! decode and COPY. Each row costs one hash-map update per shape at minute resolution; the coarser tiers are
//! summed from those minute groups, which are few.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::rollup::catalog::{self, src_network, TIERS};
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
    pub const COUNT: usize = 16;
}

/// A rollup key; field order is the sort order, which is also the order upserts take row locks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key<D> {
    /// Bucket width in seconds (one of its shape's tiers).
    pub res: i32,
    /// Bucket start, in Unix microseconds.
    pub bucket_us: i64,
    pub dims: D,
}

/// The dimensions of `comm_rollup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Full<'a> {
    pub producer: &'a str,
    pub service: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub host: Option<&'a str>,
    pub dst_port: Option<i32>,
    pub status: Option<i32>,
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
    pub hist: BTreeMap<i16, i64>,
}

impl Agg {
    pub fn merge(&mut self, o: &Agg) {
        self.events += o.events;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.errors += o.errors;
        self.client_errors += o.client_errors;
        self.latency_n += o.latency_n;
        self.latency_sum += o.latency_sum;
        self.latency_max = match (self.latency_max, o.latency_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (b, c) in &o.hist {
            *self.hist.entry(*b).or_default() += c;
        }
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
        agg.bytes_in += self.bytes_in;
        agg.bytes_out += self.bytes_out;
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
                *agg.hist.entry(latency::bucket(ms)).or_default() += 1;
            }
        }
    }
}

/// Groups of one shape at every tier, sorted by key.
pub type Groups<D> = Vec<(Key<D>, Agg)>;

/// Every rollup row one flush adds to.
#[derive(Debug, Default)]
pub struct Flush<'a> {
    pub full: Groups<Full<'a>>,
    pub service: Groups<Option<&'a str>>,
    pub src: Groups<Option<IpAddr>>,
    pub dst: Groups<Option<IpAddr>>,
    /// Keyed by [`src_network`].
    pub src_net: Groups<Option<IpAddr>>,
    /// Source × destination, only for rows older than the pair seal (see [`late_pairs`]).
    pub pair: Groups<Pair>,
    /// The earliest event time among the rows, Unix microseconds (`i64::MAX` when none).
    pub earliest_us: i64,
}

/// A source × destination pair.
pub type Pair = (Option<IpAddr>, Option<IpAddr>);

/// The per-minute contributions of a set of rows, before they are summed into the coarser tiers.
#[derive(Debug, Default)]
pub struct Rollup<'a> {
    full: HashMap<(i64, Full<'a>), Agg>,
    service: HashMap<(i64, Option<&'a str>), Agg>,
    src: HashMap<(i64, Option<IpAddr>), Agg>,
    dst: HashMap<(i64, Option<IpAddr>), Agg>,
    src_net: HashMap<(i64, Option<IpAddr>), Agg>,
    earliest_us: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed COPY row at byte {0}")]
pub struct MalformedRow(pub usize);

impl<'a> Rollup<'a> {
    /// Adds every row of a COPY row buffer.
    pub fn add_rows(&mut self, rows: &'a [u8]) -> Result<(), MalformedRow> {
        each_row(rows, |f| self.add(f))
    }

    fn add(&mut self, f: &Fields<'a>) -> Option<()> {
        let ts_us = f.ts_us()?;
        self.earliest_us = Some(self.earliest_us.map_or(ts_us, |e| e.min(ts_us)));
        let minute = ts_us.div_euclid(MINUTE_US) * MINUTE_US;
        let full = Full {
            producer: f.text(col::PRODUCER)??,
            service: f.text(col::SERVICE)?,
            protocol: f.text(col::PROTOCOL)?,
            host: f.text(col::HOST)?,
            dst_port: f.int4(col::DST_PORT)?,
            status: f.int4(col::STATUS)?,
        };
        let v = f.values(full.status)?;
        let (src, dst) = (f.inet(col::SRC_IP)?, f.inet(col::DST_IP)?);
        v.add_to(
            self.service.entry((minute, full.service)).or_default(),
            true,
        );
        v.add_to(self.full.entry((minute, full)).or_default(), true);
        v.add_to(self.src.entry((minute, src)).or_default(), false);
        v.add_to(self.dst.entry((minute, dst)).or_default(), false);
        v.add_to(
            self.src_net
                .entry((minute, src.map(src_network)))
                .or_default(),
            false,
        );
        Some(())
    }

    /// Each shape's groups at its finest tier, sorted by key: what a writer appends as deltas. The compactor
    /// adds the coarser tiers ([`Flush::expand`]).
    pub fn into_deltas(self) -> Flush<'a> {
        // The minute groups are already the finest tier of these two shapes: only sorted, not summed again.
        Flush {
            full: sorted(minutes(self.full).collect()),
            service: sorted(minutes(self.service).collect()),
            src: expand(minutes(self.src), &catalog::SRC.tiers[..1]),
            dst: expand(minutes(self.dst), &catalog::DST.tiers[..1]),
            src_net: expand(minutes(self.src_net), &catalog::SRC_NET.tiers[..1]),
            pair: Vec::new(),
            earliest_us: self.earliest_us.unwrap_or(i64::MAX),
        }
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

/// The pair deltas of the rows in `chunks` with `from_us <= ts < to_us` (Unix microseconds): rows the pair seal
/// has passed, so their writer rolls them up (db/migrations/0008_pairs.sql). In 5-minute buckets.
pub fn late_pairs(
    chunks: &[Bytes],
    from_us: i64,
    to_us: i64,
) -> Result<Groups<Pair>, MalformedRow> {
    let mut pairs: HashMap<(i64, Pair), Agg> = HashMap::new();
    for c in chunks {
        each_row(c, |f| {
            let ts_us = f.ts_us()?;
            if (from_us..to_us).contains(&ts_us) {
                let v = f.values(f.int4(col::STATUS)?)?;
                let pair = (f.inet(col::SRC_IP)?, f.inet(col::DST_IP)?);
                v.add_to(
                    pairs
                        .entry((ts_us.div_euclid(MINUTE_US) * MINUTE_US, pair))
                        .or_default(),
                    false,
                );
            }
            Some(())
        })?;
    }
    Ok(expand(minutes(pairs), &catalog::PAIR.tiers[..1]))
}

impl<'a> Flush<'a> {
    /// The same contributions at every tier each shape keeps.
    pub fn expand(self) -> Flush<'a> {
        Flush {
            full: expand(self.full, catalog::FULL.tiers),
            service: expand(self.service, catalog::SERVICE.tiers),
            src: expand(self.src, catalog::SRC.tiers),
            dst: expand(self.dst, catalog::DST.tiers),
            src_net: expand(self.src_net, catalog::SRC_NET.tiers),
            pair: expand(self.pair, catalog::PAIR.tiers),
            earliest_us: self.earliest_us,
        }
    }
}

fn minutes<D>(m: HashMap<(i64, D), Agg>) -> impl Iterator<Item = (Key<D>, Agg)> {
    m.into_iter().map(|((bucket_us, dims), agg)| {
        (
            Key {
                res: TIERS[0],
                bucket_us,
                dims,
            },
            agg,
        )
    })
}

/// Groups summed into each of `tiers` no finer than their own, sorted by key (upserting in one global order
/// means writers never deadlock).
fn expand<D: Copy + Ord + Hash>(
    groups: impl IntoIterator<Item = (Key<D>, Agg)>,
    tiers: &[i32],
) -> Groups<D> {
    let mut out: HashMap<Key<D>, Agg> = HashMap::new();
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

fn sorted<D: Ord>(mut groups: Groups<D>) -> Groups<D> {
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// The rollup deltas of every row in `chunks`.
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

    fn rows(events: &[&str]) -> bytes::BytesMut {
        let mut buf = bytes::BytesMut::new();
        for e in events {
            let mut s = Scratch::default();
            let ev = parse_event(e, 0, &Limits::default(), &mut s).unwrap();
            encode_row(&mut buf, &ev, 5, "p");
        }
        buf
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
            .src_net
            .iter()
            .map(|(k, a)| (k.res, k.dims.map(|ip| ip.to_string()), a.events, a.bytes_in))
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
            res(deltas.full.iter().map(|(k, _)| k.res).collect()),
            res(vec![60])
        );
        assert_eq!(
            res(deltas.service.iter().map(|(k, _)| k.res).collect()),
            res(vec![60])
        );
        assert_eq!(
            res(deltas.src.iter().map(|(k, _)| k.res).collect()),
            res(vec![300])
        );
        assert_eq!(
            res(deltas.dst.iter().map(|(k, _)| k.res).collect()),
            res(vec![300])
        );
        let flush = deltas.expand();
        let res: Vec<i32> = flush.full.iter().map(|(k, _)| k.res).collect();
        assert_eq!(res, [60, 60, 60, 60, 300, 300, 300, 3600, 3600, 3600]);
        let (k, a) = &flush.full[1];
        assert_eq!(
            (k.dims.service, k.dims.status, k.dims.producer),
            (Some("web"), Some(200), "p")
        );
        assert_eq!(k.bucket_us, 1_795_341_600_000_000);
        assert_eq!(
            (a.events, a.bytes_in, a.bytes_out, a.latency_n),
            (1, 10, 0, 1)
        );
        assert_eq!(flush.full[0].0.dims.service, Some("api"), "sorted by key");
        assert_eq!(flush.full[0].1.hist.get(&latency::ZERO), Some(&1));
        assert_eq!(flush.full[0].1.errors, 1);
        let (k, a) = &flush.full[6];
        assert_eq!(
            (k.res, k.dims.service, k.dims.status),
            (300, Some("web"), Some(404))
        );
        assert_eq!((a.events, a.client_errors, a.latency_n), (2, 2, 1));

        // Per service: web has 3 events in the 10:00 hour, with both latencies in its histogram.
        let (k, a) = flush.service.last().unwrap();
        assert_eq!((k.res, k.dims), (3600, Some("web")));
        assert_eq!(
            (a.events, a.bytes_in, a.bytes_out, a.client_errors),
            (3, 10, 7, 2)
        );
        assert_eq!((a.latency_sum, a.latency_max), (10.0, Some(8.0)));
        assert_eq!(a.hist.values().sum::<i64>(), 2);

        // Per source: no histogram; a missing address is its own group.
        let hour: Vec<_> = flush.src.iter().filter(|(k, _)| k.res == 3600).collect();
        assert_eq!(hour.len(), 3);
        assert_eq!(hour[0].0.dims, None);
        assert_eq!(hour[1].0.dims, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((hour[1].1.events, hour[1].1.bytes_in), (2, 10));
        assert_eq!(hour[2].0.dims, Some("2001:db8::1".parse().unwrap()));
        assert!(flush.src.iter().all(|(_, a)| a.hist.is_empty()));
        assert!(flush.src.iter().chain(&flush.dst).all(|(k, _)| k.res != 60));
        assert_eq!(
            flush.dst.iter().map(|(k, _)| k.res).collect::<Vec<_>>(),
            [300, 3600]
        );
    }

    #[test]
    fn truncated_rows_are_an_error() {
        let buf = rows(&[r#"{"service":"web"}"#]);
        assert!(Rollup::default().add_rows(&buf[..buf.len() - 3]).is_err());
    }
}
