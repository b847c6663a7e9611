//! Per-minute rollup contributions of one COPY, computed from the very rows being copied, so the rollup written
//! in the same transaction always matches what lands in `comm_logs` (retries, bisection and all).
//!
//! Reading the encoded rows back (length-prefixed fields, see `copy.rs`) costs a hash-map update per row and
//! needs nothing kept per event between decode and COPY.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::query::latency;

/// Microseconds between the Unix epoch and PostgreSQL's (the COPY encoding's timestamp origin).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const MINUTE_US: i64 = 60_000_000;

/// Column positions in a `comm_logs` COPY row (`copy::COMM_LOGS_COLUMNS`).
mod col {
    pub const TS: usize = 0;
    pub const PRODUCER: usize = 2;
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

/// The rollup key; field order is the sort order, which is also the order upserts take row locks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key<'a> {
    /// Minute, in Unix microseconds.
    pub bucket_us: i64,
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
    pub latency_n: i64,
    pub latency_sum: f64,
    pub latency_max: Option<f64>,
    /// Histogram bucket → count (see [`latency`]).
    pub hist: BTreeMap<i16, i64>,
}

/// The aggregated contributions of a set of rows.
#[derive(Debug, Default)]
pub struct Rollup<'a> {
    groups: HashMap<Key<'a>, Agg>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed COPY row at byte {0}")]
pub struct MalformedRow(pub usize);

impl<'a> Rollup<'a> {
    /// Adds every row of a COPY row buffer.
    pub fn add_rows(&mut self, rows: &'a [u8]) -> Result<(), MalformedRow> {
        let mut at = 0;
        while at < rows.len() {
            let mut fields: [Option<&'a [u8]>; col::COUNT] = [None; col::COUNT];
            let count = read_i16(rows, at).ok_or(MalformedRow(at))? as usize;
            if count != col::COUNT {
                return Err(MalformedRow(at));
            }
            at += 2;
            for field in fields.iter_mut() {
                let len = read_i32(rows, at).ok_or(MalformedRow(at))?;
                at += 4;
                if len >= 0 {
                    let end = at + len as usize;
                    *field = Some(rows.get(at..end).ok_or(MalformedRow(at))?);
                    at = end;
                }
            }
            self.add(&fields).ok_or(MalformedRow(at))?;
        }
        Ok(())
    }

    fn add(&mut self, f: &[Option<&'a [u8]>; col::COUNT]) -> Option<()> {
        let text = |i: usize| f[i].map(std::str::from_utf8).transpose().ok();
        let int4 = |i: usize| {
            f[i].map(|b| b.try_into().map(i32::from_be_bytes))
                .transpose()
                .ok()
        };
        let int8 = |i: usize| {
            f[i].map(|b| b.try_into().map(i64::from_be_bytes))
                .transpose()
                .ok()
        };
        let ts_us = int8(col::TS)?? + PG_EPOCH_OFFSET_US;
        let key = Key {
            bucket_us: ts_us.div_euclid(MINUTE_US) * MINUTE_US,
            producer: text(col::PRODUCER)??,
            service: text(col::SERVICE)?,
            protocol: text(col::PROTOCOL)?,
            host: text(col::HOST)?,
            dst_port: int4(col::DST_PORT)?,
            status: int4(col::STATUS)?,
        };
        let latency = f[col::LATENCY]
            .map(|b| b.try_into().map(f64::from_be_bytes))
            .transpose()
            .ok()?;
        let agg = self.groups.entry(key).or_default();
        agg.events += 1;
        agg.bytes_in += int8(col::BYTES_IN)?.unwrap_or(0);
        agg.bytes_out += int8(col::BYTES_OUT)?.unwrap_or(0);
        if let Some(ms) = latency {
            agg.latency_n += 1;
            agg.latency_sum += ms;
            agg.latency_max = Some(agg.latency_max.map_or(ms, |m| m.max(ms)));
            *agg.hist.entry(latency::bucket(ms)).or_default() += 1;
        }
        Some(())
    }

    /// Groups sorted by key: upserting in one global order means concurrent writers never deadlock.
    pub fn into_sorted(self) -> Vec<(Key<'a>, Agg)> {
        let mut v: Vec<_> = self.groups.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The rollup of every row in `chunks`.
pub fn of_chunks(chunks: &[Bytes]) -> Result<Vec<(Key<'_>, Agg)>, MalformedRow> {
    let mut r = Rollup::default();
    for c in chunks {
        r.add_rows(c)?;
    }
    Ok(r.into_sorted())
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
    fn groups_by_minute_and_dimensions() {
        let buf = rows(&[
            r#"{"timestamp":"2026-11-22T10:00:05Z","service":"web","status":200,"bytes_in":10,"latency_ms":2}"#,
            r#"{"timestamp":"2026-11-22T10:00:59Z","service":"web","status":200,"bytes_out":7,"latency_ms":8}"#,
            r#"{"timestamp":"2026-11-22T10:01:00Z","service":"web","status":200}"#,
            r#"{"timestamp":"2026-11-22T10:00:30Z","service":"api","status":500,"latency_ms":0}"#,
        ]);
        let mut r = Rollup::default();
        r.add_rows(&buf).unwrap();
        let groups = r.into_sorted();
        assert_eq!(groups.len(), 3);
        let (k, a) = &groups[1];
        assert_eq!(
            (k.service, k.status, k.producer),
            (Some("web"), Some(200), "p")
        );
        assert_eq!(k.bucket_us, 1_795_341_600_000_000);
        assert_eq!(
            (a.events, a.bytes_in, a.bytes_out, a.latency_n),
            (2, 10, 7, 2)
        );
        assert_eq!((a.latency_sum, a.latency_max), (10.0, Some(8.0)));
        assert_eq!(a.hist.values().sum::<i64>(), 2);
        assert_eq!(groups[0].0.service, Some("api"), "sorted by key");
        assert_eq!(groups[0].1.hist.get(&latency::ZERO), Some(&1));
        assert_eq!(groups[2].1.latency_n, 0);
    }

    #[test]
    fn truncated_rows_are_an_error() {
        let buf = rows(&[r#"{"service":"web"}"#]);
        assert!(Rollup::default().add_rows(&buf[..buf.len() - 3]).is_err());
    }
}
