//! Whether publishing works, as seen from the confirms.
//!
//! A connection that looks alive can still be useless: when the broker
//! becomes unreachable without closing the TCP connection, lapin notices only
//! at the heartbeat timeout (tens of seconds), and until then every publish
//! waits for its confirm and times out. [`ConfirmHealth`] turns a run of
//! consecutive confirm timeouts on one connection into "not ready", so load
//! balancers stop sending requests that can only fail.
//!
//! Not ready lasts until a publish is confirmed, the connection is replaced,
//! or [`UNREADY_FOR`] passes without a new timeout (then requests are let
//! through again, which probes the broker: more timeouts mark it not ready
//! again). This module is pure: callers pass the connection identity and the
//! time, so it is tested without a broker or a clock.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Consecutive confirm timeouts on one connection after which ping reports
/// not ready.
pub const UNREADY_AFTER_TIMEOUTS: u32 = 3;

/// How long a run of timeouts keeps ping not ready after the last timeout:
/// twice the publisher's confirm timeout (a test in `publisher` keeps the
/// two in step; this module does not depend on the publisher).
pub const UNREADY_FOR: Duration = Duration::from_secs(10);

/// Confirm outcomes of the recent publishes, per connection.
#[derive(Debug, Default)]
pub struct ConfirmHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Identity of the connection the timeouts happened on
    /// (`Session::connection_id`, never reused).
    connection: u64,
    /// Timeouts in a row on that connection.
    consecutive_timeouts: u32,
    /// When the last of them happened.
    last_timeout: Option<Instant>,
}

impl ConfirmHealth {
    /// A publish on `connection` got no confirm in time.
    pub fn record_timeout(&self, connection: u64, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.connection == connection {
            state.consecutive_timeouts = state.consecutive_timeouts.saturating_add(1);
        } else {
            state.connection = connection;
            state.consecutive_timeouts = 1;
        }
        state.last_timeout = Some(now);
    }

    /// The broker answered a publish (ack, nack or return): it is reachable.
    pub fn record_answer(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.consecutive_timeouts = 0;
        state.last_timeout = None;
    }

    /// Whether publishing on `connection` (the current one) can be expected to
    /// work, as far as confirms tell.
    pub fn is_healthy(&self, connection: u64, now: Instant) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.consecutive_timeouts < UNREADY_AFTER_TIMEOUTS || state.connection != connection {
            return true;
        }
        state
            .last_timeout
            .is_none_or(|last| now.saturating_duration_since(last) >= UNREADY_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_timeouts_makes_it_unhealthy_until_an_answer() {
        let health = ConfirmHealth::default();
        let t0 = Instant::now();
        for i in 0..UNREADY_AFTER_TIMEOUTS {
            assert!(health.is_healthy(1, t0), "healthy before timeout {}", i + 1);
            health.record_timeout(1, t0);
        }
        assert!(!health.is_healthy(1, t0));
        assert!(!health.is_healthy(1, t0 + UNREADY_FOR - Duration::from_millis(1)));
        health.record_answer();
        assert!(health.is_healthy(1, t0));
    }

    #[test]
    fn a_new_connection_is_healthy_again() {
        let health = ConfirmHealth::default();
        let t0 = Instant::now();
        for _ in 0..UNREADY_AFTER_TIMEOUTS {
            health.record_timeout(1, t0);
        }
        assert!(!health.is_healthy(1, t0));
        assert!(health.is_healthy(2, t0), "the connection was replaced");
        // One timeout on the new connection starts a new run.
        health.record_timeout(2, t0);
        assert!(health.is_healthy(2, t0));
    }

    #[test]
    fn unhealthy_ends_after_a_quiet_period_and_returns_with_timeouts() {
        let health = ConfirmHealth::default();
        let t0 = Instant::now();
        for _ in 0..UNREADY_AFTER_TIMEOUTS {
            health.record_timeout(7, t0);
        }
        let later = t0 + UNREADY_FOR;
        assert!(
            health.is_healthy(7, later),
            "requests are let through to probe"
        );
        health.record_timeout(7, later);
        assert!(
            !health.is_healthy(7, later),
            "the run goes on: not ready again"
        );
    }

    #[test]
    fn answers_between_timeouts_reset_the_run() {
        let health = ConfirmHealth::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            for _ in 1..UNREADY_AFTER_TIMEOUTS {
                health.record_timeout(3, t0);
            }
            health.record_answer();
        }
        assert!(health.is_healthy(3, t0));
    }
}
