//! The latency histogram kept in rollups: logarithmic buckets, mergeable by adding counts.
//!
//! Bucket `i` holds latencies in (γ^(i-1), γ^i] ms with γ = 1.02, and is read back as 2γ^i/(γ+1), which is within
//! (γ-1)/(γ+1) = 0.9901% of any value in the bucket. So a percentile computed from the histogram is within 1% of
//! the exact latency of the event at that rank (nearest-rank definition: rank ⌈p·n⌉, as `percentile_disc`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

const GAMMA: f64 = 1.02;
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

/// Nearest-rank percentiles (`ps` in 0..=1) of a histogram; `None` when it is empty.
pub fn percentiles(hist: &Histogram, ps: &[f64]) -> Option<Vec<f64>> {
    let n = hist.total();
    if n == 0 {
        return None;
    }
    Some(
        ps.iter()
            .map(|p| {
                let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
                let mut seen = 0;
                let mut last = 0.0;
                for (b, c) in hist.iter() {
                    seen += c;
                    last = estimate(b);
                    if seen >= rank {
                        break;
                    }
                }
                last
            })
            .collect(),
    )
}

/// The (bucket, count) pairs of a histogram stored as the rollups keep it: `[bucket, count, bucket, count, ...]`.
pub fn pairs(stored: &[i64]) -> Result<impl Iterator<Item = (i16, i64)> + '_, String> {
    if stored.len() % 2 != 0 {
        return Err(format!(
            "latency histogram has {} numbers, not pairs",
            stored.len()
        ));
    }
    if let Some(b) = stored
        .iter()
        .step_by(2)
        .find(|b| i16::try_from(**b).is_err())
    {
        return Err(format!("latency histogram bucket {b} is out of range"));
    }
    Ok(stored
        .chunks_exact(2)
        .map(|p| (i16::try_from(p[0]).unwrap_or(ZERO), p[1])))
}

/// Adds a stored histogram (see [`pairs`]) to `into`.
pub fn add_pairs(stored: &[i64], into: &mut Histogram) -> Result<(), String> {
    pairs(stored)?.for_each(|(b, n)| into.add(b, n));
    Ok(())
}

/// A histogram as the array literal of its stored pairs, in ascending bucket order.
pub fn to_pairs_literal(hist: &BTreeMap<i16, i64>) -> String {
    let mut s = String::with_capacity(2 + hist.len() * 10);
    s.push('{');
    for (i, (b, c)) in hist.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{b},{c}");
    }
    s.push('}');
    s
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
        for (p, g) in ps.iter().zip(got) {
            let exact = values[((p * 1000.0_f64).ceil() as usize).max(1) - 1];
            assert!(
                (g - exact).abs() / exact <= RELATIVE_ERROR + 1e-12,
                "p{p}: {g} vs {exact}"
            );
        }
        assert_eq!(percentiles(&Histogram::default(), &ps), None);
    }

    #[test]
    fn stored_pairs_add_up() {
        let h = BTreeMap::from([(ZERO, 2), (-5, 1), (300, 7)]);
        assert_eq!(to_pairs_literal(&h), "{-32768,2,-5,1,300,7}");
        assert_eq!(to_pairs_literal(&BTreeMap::new()), "{}");
        let mut back = Histogram::default();
        add_pairs(&[-32768, 2, -5, 1, 300, 7], &mut back).unwrap();
        add_pairs(&[-5, 2, 300, 3, -32768, 1], &mut back).unwrap();
        add_pairs(&[], &mut back).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(ZERO, 3), (-5, 3), (300, 10)]
        );
        assert_eq!(back.total(), 16);
        assert!(add_pairs(&[1, 2, 3], &mut back).is_err());
        assert!(add_pairs(&[99_999, 1], &mut back).is_err());
    }
}
