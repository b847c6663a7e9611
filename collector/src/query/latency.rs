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

/// Nearest-rank percentiles (`ps` in 0..=1) of a histogram; `None` when it is empty.
pub fn percentiles(hist: &BTreeMap<i16, i64>, ps: &[f64]) -> Option<Vec<f64>> {
    let n: i64 = hist.values().sum();
    if n == 0 {
        return None;
    }
    Some(
        ps.iter()
            .map(|p| {
                let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
                let mut seen = 0;
                for (b, c) in hist {
                    seen += c;
                    if seen >= rank {
                        return estimate(*b);
                    }
                }
                hist.keys().next_back().map_or(0.0, |b| estimate(*b))
            })
            .collect(),
    )
}

/// Parses a histogram stored as `{"<bucket>": count}` (`"z"` marks zero), as the rollup keeps it.
pub fn from_json(v: &serde_json::Value, into: &mut BTreeMap<i16, i64>) {
    if let Some(map) = v.as_object() {
        for (k, c) in map {
            let b = if k == "z" {
                Some(ZERO)
            } else {
                k.parse::<i16>().ok()
            };
            if let (Some(b), Some(c)) = (
                b,
                c.as_i64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok())),
            ) {
                *into.entry(b).or_default() += c;
            }
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
        let mut hist = BTreeMap::new();
        for v in &values {
            *hist.entry(bucket(*v)).or_default() += 1;
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
        assert_eq!(percentiles(&BTreeMap::new(), &ps), None);
    }

    #[test]
    fn json_round_trip() {
        let mut h = BTreeMap::from([(ZERO, 2), (-5, 1), (300, 7)]);
        let mut back = BTreeMap::new();
        from_json(&to_json(&h), &mut back);
        assert_eq!(back, h);
        from_json(&to_json(&h), &mut h);
        assert_eq!(h[&300], 14);
    }
}
