//! The latency histogram kept in rollups: logarithmic buckets, mergeable by adding counts.
//!
//! Bucket `i` holds latencies in (γ^(i-1), γ^i] ms with γ = 1.02, and is read back as 2γ^i/(γ+1), which is within
//! (γ-1)/(γ+1) = 0.9901% of any value in the bucket. So a percentile computed from the histogram is within 1% of
//! the exact latency of the event at that rank (nearest-rank definition: rank ⌈p·n⌉, as `percentile_disc`).

use std::collections::BTreeMap;

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

/// Adds a histogram stored as the jsonb text `{"<bucket>": count, ...}` (`"z"` marks zero), as the rollups keep
/// it, to `into`. A hand-written scanner: this is the one loop a latency answer spends its time in.
pub fn add_json(text: &[u8], into: &mut Histogram) -> Result<(), String> {
    let bad =
        |at: usize| format!("latency histogram is not {{\"bucket\": count}} JSON at byte {at}");
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while text.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    let int = |i: &mut usize| -> Option<i64> {
        let neg = text.get(*i) == Some(&b'-');
        if neg {
            *i += 1;
        }
        let start = *i;
        let mut v: i64 = 0;
        while let Some(d) = text.get(*i).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            *i += 1;
        }
        (*i > start).then_some(if neg { -v } else { v })
    };
    skip_ws(&mut i);
    if text.get(i) != Some(&b'{') {
        return Err(bad(i));
    }
    i += 1;
    skip_ws(&mut i);
    if text.get(i) == Some(&b'}') {
        return Ok(());
    }
    loop {
        skip_ws(&mut i);
        if text.get(i) != Some(&b'"') {
            return Err(bad(i));
        }
        i += 1;
        let bucket = if text.get(i) == Some(&b'z') {
            i += 1;
            ZERO
        } else {
            int(&mut i)
                .and_then(|b| i16::try_from(b).ok())
                .ok_or_else(|| bad(i))?
        };
        if text.get(i) != Some(&b'"') {
            return Err(bad(i));
        }
        i += 1;
        skip_ws(&mut i);
        if text.get(i) != Some(&b':') {
            return Err(bad(i));
        }
        i += 1;
        skip_ws(&mut i);
        let n = int(&mut i).ok_or_else(|| bad(i))?;
        into.add(bucket, n);
        skip_ws(&mut i);
        match text.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(()),
            _ => return Err(bad(i)),
        }
    }
}

pub fn to_json(hist: &BTreeMap<i16, i64>) -> serde_json::Value {
    serde_json::Value::Object(
        hist.iter()
            .map(|(b, c)| {
                (
                    if *b == ZERO {
                        "z".to_string()
                    } else {
                        b.to_string()
                    },
                    serde_json::Value::from(*c),
                )
            })
            .collect(),
    )
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
    fn stored_json_adds_up() {
        let h = BTreeMap::from([(ZERO, 2), (-5, 1), (300, 7)]);
        let text = to_json(&h).to_string();
        let mut back = Histogram::default();
        add_json(text.as_bytes(), &mut back).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(ZERO, 2), (-5, 1), (300, 7)]
        );
        // PostgreSQL's own jsonb text: spaces, keys sorted by length.
        add_json(br#"{"z": 1, "-5": 2, "300": 3}"#, &mut back).unwrap();
        add_json(b"{}", &mut back).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(ZERO, 3), (-5, 3), (300, 10)]
        );
        assert_eq!(back.total(), 16);
        for bad in [
            &b"[]"[..],
            b"{\"x\": 1}",
            b"{\"1\": }",
            b"{\"1\": 2",
            b"{\"99999\": 1}",
        ] {
            assert!(
                add_json(bad, &mut back).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
