//! Timing policies of the connection manager, pure (the caller passes the
//! time): the reconnect [`Backoff`] and the [`RenewGate`] that paces channel
//! renewals.

use std::time::{Duration, Instant};

use rand::Rng as _;

use super::{MAX_BACKOFF, MIN_BACKOFF};

/// Exponential backoff between [`MIN_BACKOFF`] and [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now; doubles the following one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    /// [`Self::next_delay`] with jitter: a uniform delay between half of it
    /// and all of it, so clients that lost the same node spread out.
    pub fn next_jittered(&mut self) -> Duration {
        let delay = self.next_delay();
        let half = delay / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// First pause after a channel renewal before the next one is allowed.
pub const RENEW_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Longest pause between renewals while they keep being asked for.
pub const RENEW_MAX_INTERVAL: Duration = Duration::from_secs(5);
/// A renewal this long after the previous one starts again from
/// [`RENEW_MIN_INTERVAL`] (a new incident, not the same one going on).
pub const RENEW_QUIET: Duration = Duration::from_secs(30);

/// Paces channel renewals: the first request is granted at once, then at
/// most one per interval, the interval doubling from [`RENEW_MIN_INTERVAL`]
/// to [`RENEW_MAX_INTERVAL`] while requests keep coming, and back to the
/// minimum after [`RENEW_QUIET`] without a renewal. Requests in between are
/// refused (the next failed publish asks again), so a broker that refuses
/// everything for a good reason (a full queue) costs one channel every 5 s,
/// not one per publish.
#[derive(Debug, Clone, Default)]
pub struct RenewGate {
    last: Option<Instant>,
    interval: Duration,
}

impl RenewGate {
    /// Whether a renewal may happen `now`; if so, it is counted.
    pub fn try_renew(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            Some(last) if now.saturating_duration_since(last) < RENEW_QUIET => {
                self.last = Some(now);
                self.interval = (self.interval * 2).min(RENEW_MAX_INTERVAL);
                true
            }
            _ => {
                self.last = Some(now);
                self.interval = RENEW_MIN_INTERVAL;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_backoff_stays_within_half_and_full_delay() {
        let mut backoff = Backoff::default();
        let mut plain = Backoff::default();
        for _ in 0..12 {
            let full = plain.next_delay();
            let jittered = backoff.next_jittered();
            assert!(
                jittered >= full / 2 && jittered <= full,
                "{jittered:?} vs {full:?}"
            );
        }
        assert_eq!(plain.next_delay(), MAX_BACKOFF);
    }

    #[test]
    fn renewals_are_granted_at_once_then_paced_with_doubling_intervals() {
        let mut gate = RenewGate::default();
        let t0 = Instant::now();
        assert!(gate.try_renew(t0), "the first request is granted");
        assert!(!gate.try_renew(t0 + Duration::from_millis(1)));
        assert!(!gate.try_renew(t0 + RENEW_MIN_INTERVAL - Duration::from_millis(1)));
        let t1 = t0 + RENEW_MIN_INTERVAL;
        assert!(gate.try_renew(t1));
        assert!(!gate.try_renew(t1 + RENEW_MIN_INTERVAL), "interval doubled");
        let t2 = t1 + 2 * RENEW_MIN_INTERVAL;
        assert!(gate.try_renew(t2));
        // Keeps doubling up to the cap.
        let mut now = t2;
        let mut interval = 4 * RENEW_MIN_INTERVAL;
        for _ in 0..10 {
            now += interval;
            assert!(gate.try_renew(now), "granted after {interval:?}");
            interval = (interval * 2).min(RENEW_MAX_INTERVAL);
        }
        assert!(!gate.try_renew(now + RENEW_MAX_INTERVAL - Duration::from_millis(1)));
        assert!(gate.try_renew(now + RENEW_MAX_INTERVAL));
    }

    #[test]
    fn a_quiet_period_starts_the_pacing_over() {
        let mut gate = RenewGate::default();
        let t0 = Instant::now();
        assert!(gate.try_renew(t0));
        assert!(gate.try_renew(t0 + RENEW_MIN_INTERVAL));
        assert!(gate.try_renew(t0 + 3 * RENEW_MIN_INTERVAL));
        let later = t0 + 3 * RENEW_MIN_INTERVAL + RENEW_QUIET;
        assert!(gate.try_renew(later));
        assert!(
            gate.try_renew(later + RENEW_MIN_INTERVAL),
            "back to the shortest interval"
        );
    }
}
