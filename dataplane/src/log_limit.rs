//! Keeping a failure that repeats from flooding the log: the first occurrence is logged at
//! once, later ones at most once per interval, each line saying how many were left out
//! since the one before. The caller passes the time in, so the rule is tested without a
//! clock; it runs on error paths only.

use std::time::{Duration, Instant};

/// One kind of failure's log budget (one per worker and socket, say).
#[derive(Debug, Clone, Default)]
pub struct LogLimit {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Occurrences not logged since then.
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per this interval.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// An occurrence at `now`: `Some(n)` if it is to be logged, `n` being how many were
    /// left out since the last line; `None` if it is to be left out (and counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::INTERVAL => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut limit = LogLimit::default();
        assert_eq!(limit.admit(at(0)), Some(0));
        // A burst: one line in ten seconds, however many failures.
        for ms in (1..10_000).step_by(10) {
            assert_eq!(limit.admit(at(ms)), None, "at {ms} ms");
        }
        assert_eq!(limit.admit(at(10_000)), Some(1000));
        assert_eq!(limit.admit(at(10_001)), None);
        // After a quiet spell the next failure is logged at once.
        assert_eq!(limit.admit(at(60_000)), Some(1));
        assert_eq!(limit.admit(at(60_000)), None);
    }
}
