//! Summaries of measured samples: nearest-rank percentiles, medians, and the spread of a
//! few rounds with the flag for a noisy figure. Pure functions, no I/O.

use serde::{Deserialize, Serialize};

/// A figure whose rounds spread (max − min) by more than this share of their median is
/// noisy: its median says less than its digits suggest.
pub const NOISY_SPREAD: f64 = 0.25;

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method: the smallest
/// sample such that at least `p`% of all samples are at or below it. `None` when there are
/// no samples or `p` is outside 0–100 or NaN.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| !s.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(percentile_of_sorted(&sorted, p))
}

/// [`percentile`] of samples already sorted ascending (and non-empty).
pub fn percentile_of_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    // Rank ceil(p/100 * n), 1-based, at least 1.
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    sorted[rank.min(n) - 1]
}

/// The median of `samples`: the mean of the two middle samples for an even count. `None`
/// when there are no (non-NaN) samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| !s.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// The median of a few rounds of one figure, with their lowest and highest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many (non-NaN) rounds.
    pub rounds: usize,
}

impl Spread {
    /// The spread of `samples`; `None` when there are no (non-NaN) samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let kept: Vec<f64> = samples.iter().copied().filter(|s| !s.is_nan()).collect();
        Some(Spread {
            median: median(&kept)?,
            min: kept.iter().copied().fold(f64::INFINITY, f64::min),
            max: kept.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            rounds: kept.len(),
        })
    }

    /// (max − min) / |median|; 0 for one round, infinite around a zero median.
    pub fn relative(&self) -> f64 {
        let width = self.max - self.min;
        if width == 0.0 {
            0.0
        } else {
            width / self.median.abs()
        }
    }

    /// Whether the rounds spread by more than [`NOISY_SPREAD`] of the median.
    pub fn is_noisy(&self) -> bool {
        self.relative() > NOISY_SPREAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0];
        assert_eq!(percentile(&ten, 99.0), Some(10.0));
        assert_eq!(percentile(&ten, 50.0), Some(5.0));
        assert_eq!(percentile(&[42.0], 99.0), Some(42.0));
    }

    #[test]
    fn percentile_rejects_nothing_to_summarize() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
        assert_eq!(percentile(&[1.0], f64::NAN), None);
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn spread_is_min_to_max_around_the_median() {
        let s = Spread::of(&[6.2, 5.6, 9.0]);
        assert_eq!(
            s.map(|s| (s.median, s.min, s.max, s.rounds)),
            Some((6.2, 5.6, 9.0, 3))
        );
        // (9.0 − 5.6) / 6.2 = 0.55: noisy (issue 12's tapwire-none rounds).
        assert!(s.is_some_and(|s| s.is_noisy()));
        let steady = Spread::of(&[5.8, 6.5, 6.1]);
        // (6.5 − 5.8) / 6.1 = 0.11.
        assert!(steady.is_some_and(|s| !s.is_noisy()));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }

    #[test]
    fn one_round_has_no_spread_and_the_limit_is_exclusive() {
        let one = Spread::of(&[3.0]);
        assert_eq!(
            one.map(|s| (s.relative(), s.is_noisy())),
            Some((0.0, false))
        );
        // Exactly 25% of the median is not over it.
        let edge = Spread::of(&[3.5, 4.0, 4.5]).map(|s| s.relative());
        assert_eq!(edge, Some(0.25));
        assert!(Spread::of(&[3.5, 4.0, 4.5]).is_some_and(|s| !s.is_noisy()));
        // A zero median with any spread is noisy (RTT differences can be 0).
        assert!(Spread::of(&[-1.0, 0.0, 1.0]).is_some_and(|s| s.is_noisy()));
    }
}
