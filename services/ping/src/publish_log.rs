//! Pacing of the `warn` lines about failed publishes: at most one line per
//! failure kind per [`LOG_EVERY`], carrying how many failures of that kind it
//! stands for. A broker that refuses every publish thus shows up in the log
//! at once and keeps showing up, without a line per request. Pure: the
//! caller passes the time.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shortest time between two lines about the same kind of failure.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Failures per kind since the last line about that kind.
#[derive(Debug, Default)]
pub struct FailureLog {
    kinds: Mutex<BTreeMap<&'static str, Tally>>,
}

#[derive(Debug)]
struct Tally {
    logged_at: Instant,
    unlogged: u64,
}

impl FailureLog {
    /// Counts one failure of `kind` at `now`. `Some(n)` when a line is due
    /// now: it stands for `n` failures (this one and those not logged since
    /// the previous line).
    pub fn note(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        match kinds.get_mut(kind) {
            Some(tally) if now.saturating_duration_since(tally.logged_at) < LOG_EVERY => {
                tally.unlogged += 1;
                None
            }
            Some(tally) => {
                let failures = tally.unlogged + 1;
                *tally = Tally {
                    logged_at: now,
                    unlogged: 0,
                };
                Some(failures)
            }
            None => {
                kinds.insert(
                    kind,
                    Tally {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_period_counting_the_rest() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.note("Nacked", t0),
            Some(1),
            "the first failure is logged"
        );
        for i in 1..=99u64 {
            assert_eq!(log.note("Nacked", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.note("Timeout", t0), Some(1), "kinds are paced apart");
        assert_eq!(
            log.note("Nacked", t0 + LOG_EVERY),
            Some(100),
            "the next line stands for the 99 unlogged failures and itself"
        );
        assert_eq!(log.note("Nacked", t0 + LOG_EVERY), None);
        assert_eq!(log.note("Nacked", t0 + 3 * LOG_EVERY), Some(2));
    }
}
