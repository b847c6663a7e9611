//! The latency histogram kept in rollups: logarithmic buckets, mergeable by adding counts.
//!
//! Bucket `i` holds latencies in (γ^(i-1), γ^i] ms with γ = 1.02, and is read back as 2γ^i/(γ+1), which is within
//! (γ-1)/(γ+1) = 0.9901% of any value in the bucket. So a percentile computed from the histogram is within 1% of
//! the exact latency of the event at that rank (nearest-rank definition: rank ⌈p·n⌉, as `percentile_disc`).

use std::fmt::Write as _;

const GAMMA: f64 = 1.02;
/// The percentiles every latency answer gives (and the per-service rollup stores, see
/// db/migrations/0010_service_percentiles.sql).
pub const PERCENTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];
/// The bucket of latencies of exactly zero.
pub const ZERO: i16 = i16::MIN;
/// Relative error bound of a value read from the histogram.
pub const RELATIVE_ERROR: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);
// The documented bound is 1%.
const _: () = assert!(RELATIVE_ERROR < 0.01);

/// The bucket of a latency in ms (≥ 0, finite). Bucket indexes fit i16 for 1e-12 ms up to 1e20 ms.
pub fn bucket(ms: f64) -> i16 {
    if ms <= 0.0 {
        return ZERO;
    }
    let i = (ms.ln() / GAMMA.ln()).ceil();
    i.clamp(f64::from(i16::MIN + 1), f64::from(i16::MAX)) as i16
}

/// The value a bucket stands for.
pub fn estimate(bucket: i16) -> f64 {
    if bucket == ZERO {
        return 0.0;
    }
    2.0 * GAMMA.powi(i32::from(bucket)) / (GAMMA + 1.0)
}

/// A histogram being merged for reading: dense counts over the bucket range seen so far, so that adding the
/// thousands of stored histograms one answer covers is an index, not a tree walk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    zeros: i64,
    /// Bucket of `counts[0]`.
    lo: i32,
    counts: Vec<i64>,
}

impl Histogram {
    pub fn add(&mut self, bucket: i16, n: i64) {
        if bucket == ZERO {
            self.zeros += n;
            return;
        }
        let b = i32::from(bucket);
        if self.counts.is_empty() {
            self.lo = b;
        }
        if b < self.lo {
            let grow = (self.lo - b) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = b;
        }
        let at = (b - self.lo) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    pub fn total(&self) -> i64 {
        self.zeros + self.counts.iter().sum::<i64>()
    }

    /// (bucket, count) in ascending order of latency, empty buckets left out.
    pub fn iter(&self) -> impl Iterator<Item = (i16, i64)> + '_ {
        std::iter::once((ZERO, self.zeros))
            .chain(
                self.counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ((self.lo + i as i32) as i16, *c)),
            )
            .filter(|(_, c)| *c != 0)
    }
}

/// A histogram as a rollup row keeps it and a flush sums it: its non-empty buckets as (bucket, count), in bucket
/// order. Sparse, so that its size is bounded by the events it counts whatever latencies a client sends; a
/// sorted vector rather than a tree, so that counting an event is a binary search among a few hundred entries
/// and summing two histograms is one walk (the tree's inserts were the largest cost of summing rollup deltas).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts(Vec<(i16, i64)>);

impl Counts {
    pub fn add(&mut self, bucket: i16, n: i64) {
        match self.0.binary_search_by_key(&bucket, |e| e.0) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (bucket, n)),
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        if self.0.is_empty() {
            self.0.extend_from_slice(&other.0);
            return;
        }
        if other.0.len() <= 4 {
            for &(b, n) in &other.0 {
                self.add(b, n);
            }
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            if x.0 == y.0 {
                out.push((x.0, x.1 + y.1));
                i += 1;
                j += 1;
            } else if x.0 < y.0 {
                out.push(x);
                i += 1;
            } else {
                out.push(y);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.0 = out;
    }

    /// (bucket, count) in ascending bucket order.
    pub fn iter(&self) -> impl Iterator<Item = (i16, i64)> + '_ {
        self.0.iter().copied()
    }

    pub fn get(&self, bucket: i16) -> Option<i64> {
        let i = self.0.binary_search_by_key(&bucket, |e| e.0).ok()?;
        Some(self.0[i].1)
    }

    pub fn total(&self) -> i64 {
        self.0.iter().map(|e| e.1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Nearest-rank percentiles (`ps` in 0..=1) of a histogram; `None` when it is empty.
pub fn percentiles(hist: &Histogram, ps: &[f64]) -> Option<Vec<f64>> {
    let n = hist.total();
    if n == 0 {
        return None;
    }
    let rank = |p: f64| ((p * n as f64).ceil() as i64).clamp(1, n);
    // One walk for all percentiles, in ascending rank; `estimate` (a power) only where a rank is reached.
    let mut order: Vec<usize> = (0..ps.len()).collect();
    order.sort_by_key(|&i| rank(ps[i]));
    let mut out = vec![0.0; ps.len()];
    let mut pending = order.into_iter().peekable();
    let mut seen = 0;
    for (b, c) in hist.iter() {
        seen += c;
        while let Some(&i) = pending.peek() {
            if rank(ps[i]) > seen {
                break;
            }
            out[i] = estimate(b);
            pending.next();
        }
        if pending.peek().is_none() {
            break;
        }
    }
    Some(out)
}

/// Bits of a stored number holding the count; the bucket is above them (see `pack`).
const COUNT_BITS: u32 = 48;

/// One non-empty bucket as the rollups store it: bucket × 2^48 + count, so that a histogram is one `int8` per
/// bucket and the numbers sort by bucket (db/migrations/0006_packed_histograms.sql). `None` for a count that
/// does not fit 48 bits.
pub fn pack(bucket: i16, count: i64) -> Option<i64> {
    (0..1 << COUNT_BITS)
        .contains(&count)
        .then(|| (i64::from(bucket) << COUNT_BITS) | count)
}

/// The (bucket, count) of a stored number.
pub fn unpack(n: i64) -> (i16, i64) {
    // An i64 shifted right by 48 always fits i16.
    ((n >> COUNT_BITS) as i16, n & ((1 << COUNT_BITS) - 1))
}

/// Adds a stored histogram, given as its numbers, to `into`.
pub fn add_stored(stored: &[i64], into: &mut Histogram) {
    for n in stored {
        let (b, c) = unpack(*n);
        into.add(b, c);
    }
}

/// A stored histogram as PostgreSQL sends it (binary `int8[]`), read in place: an answer covers thousands of
/// them, and copying each into a vector first cost more than adding it up.
pub struct StoredHistogram<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for StoredHistogram<'a> {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(StoredHistogram(raw))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::INT8_ARRAY
    }
}

impl StoredHistogram<'_> {
    /// Calls `f` with each (bucket, count). The binary array is: dimensions, null flag, element type, then per
    /// dimension its length and lower bound, then each element as its byte length and big-endian value.
    pub fn for_each(&self, mut f: impl FnMut(i16, i64)) -> Result<(), String> {
        let mut rest = self.0;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if rest.len() < n {
                return Err("latency histogram array is truncated".into());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let mut int = || -> Result<i32, String> {
            let b = take(4)?;
            Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let dims = int()?;
        if dims == 0 {
            return Ok(());
        }
        if dims != 1 {
            return Err(format!("latency histogram has {dims} dimensions, not 1"));
        }
        let (_nulls, _element_type, len, _lower) = (int()?, int()?, int()?, int()?);
        for _ in 0..len {
            let b = take(12)?;
            if b[..4] != 8_i32.to_be_bytes() {
                return Err("latency histogram has a null or a number that is not int8".to_string());
            }
            let (bucket, count) = unpack(i64::from_be_bytes([
                b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
            ]));
            f(bucket, count);
        }
        Ok(())
    }
}

/// A histogram's stored numbers (see [`pack`]) in ascending bucket order; `None` when a count does not fit.
pub fn to_stored(hist: &Counts) -> Option<impl ExactSizeIterator<Item = i64> + '_> {
    hist.0.iter().all(|&(_, c)| pack(0, c).is_some()).then(|| {
        hist.0
            .iter()
            .map(|&(b, c)| (i64::from(b) << COUNT_BITS) | c)
    })
}

/// A histogram as the array literal of its stored numbers (see [`to_stored`]); `None` when a count does not fit.
pub fn to_stored_literal(hist: &Counts) -> Option<String> {
    let mut s = String::with_capacity(2 + hist.0.len() * 18);
    s.push('{');
    for (i, n) in to_stored(hist)?.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{n}");
    }
    s.push('}');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_within_the_bound() {
        let mut v = 0.0001;
        while v < 1e7 {
            let e = estimate(bucket(v));
            assert!((e - v).abs() / v <= RELATIVE_ERROR + 1e-12, "{v} → {e}");
            v *= 1.0037;
        }
        assert_eq!(estimate(bucket(0.0)), 0.0);
    }

    #[test]
    fn percentiles_match_nearest_rank_within_the_bound() {
        let values: Vec<f64> = (1..=1000).map(|i| (i as f64 * 0.731).powf(1.7)).collect();
        let mut hist = Histogram::default();
        // Added out of order, so the dense range grows both ways.
        for v in values
            .iter()
            .rev()
            .step_by(2)
            .chain(values.iter().step_by(2))
        {
            hist.add(bucket(*v), 1);
        }
        let ps = [0.5, 0.9, 0.95, 0.99, 1.0];
        let got = percentiles(&hist, &ps).unwrap();
        for (p, g) in ps.iter().zip(&got) {
            let exact = values[((p * 1000.0_f64).ceil() as usize).max(1) - 1];
            assert!(
                (g - exact).abs() / exact <= RELATIVE_ERROR + 1e-12,
                "p{p}: {g} vs {exact}"
            );
        }
        assert_eq!(percentiles(&Histogram::default(), &ps), None);
        // Asked in any order, each percentile is the same.
        let shuffled = percentiles(&hist, &[0.99, 0.5, 1.0]).unwrap();
        assert_eq!(shuffled, [got[3], got[0], got[4]]);
    }

    #[test]
    fn stored_numbers_pack_bucket_and_count() {
        for (b, c) in [
            (ZERO, 0),
            (ZERO, 5),
            (-5, 1),
            (0, 7),
            (300, (1 << 48) - 1),
            (i16::MAX, 1),
        ] {
            assert_eq!(unpack(pack(b, c).unwrap()), (b, c));
        }
        assert_eq!(pack(-1, 3), Some(-(1 << 48) + 3));
        assert_eq!(pack(1, 1 << 48), None);
        assert_eq!(pack(1, -1), None);
        // Sorted numbers are sorted buckets.
        let mut v =
            [pack(300, 1), pack(ZERO, 9), pack(-5, 1 << 40), pack(-4, 0)].map(Option::unwrap);
        v.sort_unstable();
        assert_eq!(v.map(|n| unpack(n).0), [ZERO, -5, -4, 300]);

        let h = Counts(vec![(ZERO, 2), (-5, 1), (300, 7)]);
        let literal = to_stored_literal(&h).unwrap();
        let numbers: Vec<i64> = literal
            .trim_matches(['{', '}'])
            .split(',')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            numbers,
            [pack(ZERO, 2), pack(-5, 1), pack(300, 7)].map(Option::unwrap)
        );
        assert_eq!(to_stored_literal(&Counts::default()).as_deref(), Some("{}"));
        assert_eq!(to_stored_literal(&Counts(vec![(1, 1 << 50)])), None);
        let mut back = Histogram::default();
        add_stored(&numbers, &mut back);
        add_stored(
            &[pack(-5, 2), pack(300, 3), pack(ZERO, 1)].map(Option::unwrap),
            &mut back,
        );
        add_stored(&[], &mut back);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(ZERO, 3), (-5, 3), (300, 10)]
        );
        assert_eq!(back.total(), 16);
    }

    /// `int8[]` in PostgreSQL's binary form (array_send): one dimension, lower bound 1.
    fn binary(numbers: &[i64]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [1, 0, 20, numbers.len() as i32, 1] {
            v.extend(x.to_be_bytes());
        }
        for n in numbers {
            v.extend(8_i32.to_be_bytes());
            v.extend(n.to_be_bytes());
        }
        v
    }

    #[test]
    fn binary_arrays_are_read_in_place() {
        let read = |raw: &[u8]| {
            let mut got = Vec::new();
            StoredHistogram(raw)
                .for_each(|b, n| got.push((b, n)))
                .map(|()| got)
        };
        assert_eq!(
            read(&binary(
                &[pack(ZERO, 2), pack(-5, 1), pack(300, 7)].map(Option::unwrap)
            )),
            Ok(vec![(ZERO, 2), (-5, 1), (300, 7)])
        );
        // The empty array has no dimensions.
        assert_eq!(read(&0_i32.to_be_bytes().repeat(3)), Ok(vec![]));
        let whole = binary(&[4, 9]);
        assert!(read(&whole[..whole.len() - 1]).is_err());
        // A null element.
        let mut null = binary(&[4]);
        null.truncate(20);
        null.extend((-1_i32).to_be_bytes());
        assert!(read(&null).is_err());
    }

    #[test]
    fn counts_add_and_merge_as_a_map_would() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..200 {
            let (mut ours, mut map) = (Counts::default(), BTreeMap::new());
            for _ in 0..round % 17 {
                let mut other = Counts::default();
                for _ in 0..rng.random_range(0..12) {
                    let bucket = match rng.random_range(0..5) {
                        0 => ZERO,
                        _ => rng.random_range(-20..20),
                    };
                    let n: i64 = rng.random_range(1..4);
                    other.add(bucket, n);
                    *map.entry(bucket).or_insert(0) += n;
                }
                ours.merge(&other);
            }
            let want: Vec<(i16, i64)> = map.into_iter().collect();
            assert_eq!(ours.iter().collect::<Vec<_>>(), want);
            assert_eq!(ours.total(), want.iter().map(|e| e.1).sum::<i64>());
        }
    }
}
