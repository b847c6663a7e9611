//! The anomaly score of a figure: how far the last complete bucket is from the buckets before it, in robust
//! standard deviations (a z-score on the median and the median absolute deviation, which a past burst does not
//! drag the way it drags a mean and a standard deviation):
//!
//! ```text
//! score = (current − median(baseline)) / max(1.4826 × MAD(baseline), floor)
//! ```
//!
//! The floor is the noise a figure has even when its past was flat: √median for counts (events arrive roughly
//! as a Poisson process), the binomial √(p(1−p)/n) for an error ratio over the bucket's n events (p the median,
//! at least 1/n: one error in a bucket is not news), a tenth of the median (at least 1 ms) for a latency.
//! Without it a perfectly steady series would make any change infinitely anomalous.

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The smallest spread `field` is given, around `median`, for a bucket of `events`.
pub fn floor(field: &str, median: f64, events: i64) -> f64 {
    match field {
        "error_ratio" => {
            let n = events.max(1) as f64;
            // At least one event's worth away from 0 and 1; a bucket of one event or none: the widest, p = ½.
            let edge = (1.0 / n).min(0.5);
            let p = if median.is_finite() {
                median.clamp(edge, 1.0 - edge)
            } else {
                0.5
            };
            (p * (1.0 - p) / n).sqrt()
        }
        "p50" | "p90" | "p95" | "p99" | "max" => (median.abs() / 10.0).max(1.0),
        _ => median.abs().max(1.0).sqrt(),
    }
}

/// The robust z-score of `current` (a bucket of `events`) against `baseline`, or `None` when the baseline has
/// fewer than `min` points (the warm-up).
pub fn score(field: &str, current: f64, events: i64, baseline: &[f64], min: usize) -> Option<f64> {
    if baseline.len() < min.max(1) {
        return None;
    }
    let mut b = baseline.to_vec();
    let m = median(&mut b)?;
    let mut deviations: Vec<f64> = baseline.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut deviations)?;
    Some((current - m) / (1.4826 * mad).max(floor(field, m, events)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_scores_high_and_noise_does_not() {
        let steady = [
            40.0, 44.0, 37.0, 41.0, 39.0, 45.0, 38.0, 42.0, 40.0, 43.0, 36.0, 41.0,
        ];
        assert!(score("events", 120.0, 120, &steady, 6).unwrap() > 10.0);
        assert!(score("events", 46.0, 46, &steady, 6).unwrap().abs() < 3.0);
        assert!(
            score("events", 5.0, 5, &steady, 6).unwrap() < -5.0,
            "a drop is negative"
        );
        // One past burst in the baseline does not hide the next.
        let mut with_burst = steady.to_vec();
        with_burst[3] = 400.0;
        assert!(score("events", 120.0, 120, &with_burst, 6).unwrap() > 10.0);
        // A flat past: the binomial floor, not a division by zero; it narrows as the bucket grows.
        let flat = [0.02; 12];
        let small = score("error_ratio", 0.05, 40, &flat, 6).unwrap();
        let large = score("error_ratio", 0.05, 4000, &flat, 6).unwrap();
        assert!(small < 2.0 && large > 10.0, "{small} {large}");
        // One error in a bucket after an error-free past is not news.
        assert!(score("error_ratio", 1.0 / 40.0, 40, &[0.0; 12], 6).unwrap() < 2.0);
        assert_eq!(score("events", 1.0, 1, &steady[..3], 6), None, "warming up");
        // Buckets of one event or none have a floor, not a panic.
        for events in [0, 1, 2] {
            for median in [0.0, 0.5, 1.0, f64::NAN] {
                assert!(
                    floor("error_ratio", median, events) > 0.0,
                    "{events} {median}"
                );
            }
        }
    }
}
