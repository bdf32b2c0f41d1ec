//! The search for the highest packet rate a path delivers with under 1% loss, the way
//! RFC 2544 defines throughput (there: no loss; here a 1% allowance, as a shared VM drops
//! the odd packet at any rate): offer a rate for a fixed time, count what arrives, and
//! bisect between the highest rate that passed and the lowest that failed.
//!
//! Sans-IO: [`RateSearch`] is told each trial's counts and says which rate to offer next;
//! sending and counting are [`crate::traffic`]'s. The search is bounded by a number of
//! trials, so a run's length does not depend on the path.

use serde::{Deserialize, Serialize};

/// The most loss a passing trial may show: 1%.
pub const MAX_LOSS: f64 = 0.01;
/// Above a passing rate, the next trial offers at most this much more: a path usually
/// carries about what it delivered when overloaded, so the answer is near, but one that
/// collapses under overload is found in a few steps.
const STEP_UP: f64 = 1.5;

/// What one trial counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The rate the sender was paced to, packets/s; `None` for as fast as it could.
    pub offered_pps: Option<f64>,
    /// Datagrams the sending socket accepted.
    pub sent: u64,
    /// Datagrams the receiving socket got.
    pub received: u64,
    /// How long the sender sent, s.
    pub seconds: f64,
}

impl Trial {
    /// The share of sent datagrams that did not arrive (0 when nothing was sent).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }

    /// Whether the loss is under [`MAX_LOSS`] (and something arrived).
    pub fn passes(&self) -> bool {
        self.received > 0 && self.loss() < MAX_LOSS
    }

    /// Datagrams sent per second of sending.
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }

    /// Datagrams received per second of sending.
    pub fn received_pps(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// The rate the search brackets with: what was offered, or, for an unpaced trial,
    /// what the sender managed.
    fn rate(&self) -> f64 {
        self.offered_pps.unwrap_or_else(|| self.sent_pps())
    }
}

/// How far a search may go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchLimits {
    /// Paced trials at most (after the unpaced one).
    pub max_trials: usize,
    /// Stop once the bracket between the best passing rate and the lowest failing one is
    /// narrower than this share of the failing one.
    pub resolution: f64,
}

/// A search in progress; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSearch {
    limits: SearchLimits,
    /// The passing trial with the highest received rate.
    best: Option<Trial>,
    /// The lowest rate that failed.
    lowest_failed: Option<f64>,
    /// What the unpaced trial delivered: the first rate to try when it failed.
    first_guess: f64,
    trials: usize,
}

impl RateSearch {
    /// Starts from the unpaced trial (the sender as fast as it goes): if it passed, the
    /// search is over and its rate is the answer.
    pub fn new(unpaced: Trial, limits: SearchLimits) -> RateSearch {
        let mut search = RateSearch {
            limits,
            best: None,
            lowest_failed: None,
            first_guess: unpaced.received_pps(),
            trials: 0,
        };
        search.note(unpaced);
        search
    }

    /// The rate to offer next, packets/s; `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        let failed = self.lowest_failed?;
        if self.trials >= self.limits.max_trials {
            return None;
        }
        let passed = self.best.map_or(0.0, |t| t.rate());
        if self.best.is_some() && failed - passed <= self.limits.resolution * failed {
            return None;
        }
        let rate = match self.best {
            // The first paced trial offers what the overloaded path delivered.
            None if self.trials == 0 && self.first_guess > 0.0 => self.first_guess,
            None => failed / 2.0,
            Some(_) => ((passed + failed) / 2.0).min(passed * STEP_UP),
        };
        (rate > 0.0 && rate < failed).then_some(rate)
    }

    /// Records a paced trial's counts.
    pub fn record(&mut self, trial: Trial) {
        self.trials += 1;
        self.note(trial);
    }

    fn note(&mut self, trial: Trial) {
        if trial.passes() {
            if self
                .best
                .is_none_or(|b| trial.received_pps() > b.received_pps())
            {
                self.best = Some(trial);
            }
        } else {
            let rate = trial.rate();
            if self.lowest_failed.is_none_or(|f| rate < f) {
                self.lowest_failed = Some(rate);
            }
        }
    }

    /// The passing trial with the highest received rate, if any passed.
    pub fn best(&self) -> Option<Trial> {
        self.best
    }

    /// The lowest rate offered (or, unpaced, sent) that failed, packets/s.
    pub fn lowest_failed(&self) -> Option<f64> {
        self.lowest_failed
    }

    /// Paced trials run so far.
    pub fn trials(&self) -> usize {
        self.trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SearchLimits = SearchLimits {
        max_trials: 8,
        resolution: 0.05,
    };

    fn unpaced(sent: u64, received: u64) -> Trial {
        Trial {
            offered_pps: None,
            sent,
            received,
            seconds: 1.0,
        }
    }

    /// A path that delivers everything up to `capacity` packets/s and, above it,
    /// `capacity` minus a tenth of the excess (it degrades under overload).
    fn path(capacity: f64, offered: f64) -> Trial {
        let received = if offered <= capacity {
            offered
        } else {
            capacity - 0.1 * (offered - capacity)
        };
        Trial {
            offered_pps: Some(offered),
            sent: offered as u64,
            received: received.max(0.0) as u64,
            seconds: 1.0,
        }
    }

    fn run(capacity: f64, first: Trial) -> RateSearch {
        let mut search = RateSearch::new(first, LIMITS);
        while let Some(rate) = search.next_rate() {
            search.record(path(capacity, rate));
        }
        search
    }

    #[test]
    fn loss_is_the_share_of_sent_that_did_not_arrive() {
        let t = unpaced(1000, 990);
        assert!((t.loss() - 0.01).abs() < 1e-12);
        assert!(!t.passes(), "1% is not under 1%");
        assert!(unpaced(1000, 991).passes());
        assert_eq!(unpaced(0, 0).loss(), 0.0);
        assert!(!unpaced(0, 0).passes(), "nothing arrived");
        // More received than sent (a straggler from an earlier trial) is no loss.
        assert_eq!(unpaced(10, 11).loss(), 0.0);
    }

    #[test]
    fn a_lossless_unpaced_trial_ends_the_search() {
        let search = run(1e6, unpaced(240_000, 240_000));
        assert_eq!(search.trials(), 0);
        assert_eq!(search.best().map(|t| t.received), Some(240_000));
    }

    #[test]
    fn an_overloaded_path_is_bracketed_to_the_resolution() {
        // Sent 500k/s, got 120k/s: the path's capacity is 120k/s.
        let search = run(120_000.0, unpaced(500_000, 120_000));
        let best = search.best().map(|t| t.received_pps()).unwrap_or_default();
        assert!((114_000.0..=120_000.0).contains(&best), "{best}");
        assert!(search.trials() <= LIMITS.max_trials);
    }

    #[test]
    fn a_path_that_collapses_under_overload_is_found_above_what_it_delivered() {
        // Overloaded, it delivered only 30k/s, but it carries 200k/s without loss.
        let search = run(200_000.0, unpaced(500_000, 30_000));
        let best = search.best().map(|t| t.received_pps()).unwrap_or_default();
        assert!(best >= 180_000.0, "{best}");
    }

    #[test]
    fn the_search_stops_after_its_trials_even_without_a_pass() {
        let mut search = RateSearch::new(unpaced(500_000, 100), LIMITS);
        let mut offered = Vec::new();
        while let Some(rate) = search.next_rate() {
            offered.push(rate);
            search.record(Trial {
                offered_pps: Some(rate),
                sent: rate as u64,
                received: 0,
                seconds: 1.0,
            });
        }
        assert_eq!(offered.len(), LIMITS.max_trials);
        assert!(offered.windows(2).all(|w| w[1] < w[0]), "{offered:?}");
        assert_eq!(search.best(), None);
    }
}
