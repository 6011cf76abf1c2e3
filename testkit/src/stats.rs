//! One percentile definition for every benchmark and test that reports one: the value at
//! index `round((n - 1) * p)` of the sorted sample (so p50 of an even sample is its upper
//! middle, p99 of 100 values the 99th, and p100 the largest).

use std::time::Duration;

/// The `p` percentile (0.0 to 1.0) of an ascending sample; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize],
    }
}

/// p50 and p99 of a sample in any order (NaN for an empty one).
pub fn p50_p99(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (percentile(&values, 0.50), percentile(&values, 0.99))
}

/// The median of a sample in any order, the mean of the two middle values for an even one
/// (NaN for an empty one): for ratios of paired rounds, where the upper middle would bias.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The arithmetic mean of a sample (NaN for an empty one).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// One round seen from the sender: events answered per second, latency p50 and p99, and how
/// many requests failed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

/// [`Stats`] of a round from its latencies (one per answered event) and its duration.
pub fn stats(lat: Vec<Duration>, elapsed: Duration, errors: usize) -> Stats {
    let n = lat.len();
    let (p50, p99) = p50_p99(lat.iter().map(Duration::as_secs_f64).collect());
    let duration = |s: f64| {
        if s.is_nan() {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(s)
        }
    };
    Stats {
        per_sec: n as f64 / elapsed.as_secs_f64(),
        p50: duration(p50),
        p99: duration(p99),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_index_the_sorted_sample() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 0.5), 51.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(p50_p99(vec![3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn a_round_s_stats_come_from_its_latencies() {
        let lat = (1..=10).map(Duration::from_millis).collect();
        let s = stats(lat, Duration::from_secs(2), 1);
        assert_eq!(s.per_sec, 5.0);
        assert_eq!(s.p50, Duration::from_millis(6));
        assert_eq!(s.p99, Duration::from_millis(10));
        assert_eq!(s.errors, 1);
        assert_eq!(stats(vec![], Duration::from_secs(1), 0).p99, Duration::ZERO);
    }
}
