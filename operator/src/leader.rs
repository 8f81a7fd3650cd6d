//! Leader election over a `coordination.k8s.io/v1` Lease, so two operator replicas are safe.
//!
//! kube-runtime has no leader election, so this module implements the client-go protocol in a
//! small form: the Lease `pingpong-operator-leader` in `POD_NAMESPACE` names its holder
//! (`POD_NAME`) and when it last renewed. The holder renews every [`ElectionConfig::renew_every`].
//! A replica takes over only a Lease that has no holder, or whose record it has seen unchanged
//! for a whole lease duration by its *own* clock ([`Elector`] keeps when it last saw the record
//! change, as client-go's `observedTime`): the timestamps in the Lease come from another
//! machine's clock and are never compared with ours. Every write is a create or a
//! `resourceVersion`-conditional replace, so two replicas racing for an expired Lease cannot both
//! win: the loser gets a 409 Conflict.
//!
//! [`decide`] is the pure decision; [`run`] is the I/O loop. Each round is bounded by
//! [`ElectionConfig::renew_deadline`], and a leader steps down once the renew deadline has passed
//! since the *start* of its last successful round: its write reached the API server after that
//! instant, so a standby cannot have seen it earlier, and cannot take over before a whole lease
//! duration (longer than the renew deadline) later. A hung or slow API call therefore cannot keep
//! a leader leading after a standby may take over, however long the last successful round took.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the Lease object.
pub const LEASE_NAME: &str = "pingpong-operator-leader";

/// Timing and identity of one elector.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Holder identity (the pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and how often a standby checks.
    pub renew_every: Duration,
    /// Longest a round may take, and longest a leader keeps leading without a renewal.
    pub renew_deadline: Duration,
}

impl ElectionConfig {
    /// The client-go defaults: 15 s lease, renewed every 2 s, 10 s renew deadline.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// What to do with the Lease as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it with us as holder.
    Create,
    /// We hold it: write a new renew time.
    Renew,
    /// It is expired or released: take it over (one more transition).
    TakeOver,
    /// Another replica holds a valid Lease.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides what to do given the observed Lease spec, our identity and whether the Lease
/// expired by our own clock (see [`Observation::expired`]).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, expired: bool) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == identity {
        return Decision::Renew;
    }
    if expired {
        Decision::TakeOver
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
        }
    }
}

/// The Lease record as this replica last saw it, and when by its own monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    record: Option<LeaseSpec>,
    at: Option<Instant>,
}

impl Observation {
    /// Notes `spec` as seen at `now` and says whether the Lease expired: its record has not
    /// changed for its whole duration as measured here. A changed record restarts the clock, so
    /// the holder's and our clocks never need to agree.
    pub fn expired(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
        let at = match (&self.record, self.at) {
            (Some(seen), Some(at)) if seen == spec => at,
            _ => {
                self.record = Some(spec.clone());
                self.at = Some(now);
                now
            }
        };
        let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
        now.saturating_duration_since(at) >= Duration::from_secs(seconds)
    }
}

/// The Lease spec to write for `decision` (`None` for [`Decision::Follow`]).
pub fn desired_spec(
    decision: &Decision,
    current: Option<&LeaseSpec>,
    config: &ElectionConfig,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let duration = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    match decision {
        Decision::Follow { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Create | Decision::TakeOver => Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(if *decision == Decision::Create {
                0
            } else {
                transitions.saturating_add(1)
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// Errors of one election round; all are retried on the next tick.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Reading the Lease failed.
    #[error("failed to read Lease {LEASE_NAME}")]
    Read(#[source] kube::Error),
    /// Creating or replacing the Lease failed (409 means another replica won the race).
    #[error("failed to write Lease {LEASE_NAME}")]
    Write(#[source] kube::Error),
    /// The round did not finish within the renew deadline (a hung API server or network).
    #[error("leader election round did not finish within {0:?}")]
    Timeout(Duration),
}

impl ElectionError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read(_) => "LeaseReadFailed",
            Self::Write(kube::Error::Api(s)) if s.code == 409 => "LeaseConflict",
            Self::Write(_) => "LeaseWriteFailed",
            Self::Timeout(_) => "LeaseTimeout",
        }
    }
}

/// One replica's side of the election: its configuration and what it observed of the Lease.
#[derive(Clone, Debug)]
pub struct Elector {
    /// Identity and timing.
    pub config: ElectionConfig,
    observed: Observation,
}

impl Elector {
    /// An elector that has observed nothing yet.
    pub fn new(config: ElectionConfig) -> Self {
        Self {
            config,
            observed: Observation::default(),
        }
    }

    /// One round: read, decide, write. Returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self, api: &Api<Lease>) -> Result<bool, ElectionError> {
        try_acquire_or_renew(api, &self.config, &mut self.observed).await
    }

    /// [`Self::try_acquire_or_renew`] bounded by the renew deadline.
    pub async fn round(&mut self, api: &Api<Lease>) -> Result<bool, ElectionError> {
        let until = Instant::now() + self.config.renew_deadline;
        self.round_until(api, until).await
    }

    /// [`Self::try_acquire_or_renew`] cut at `until` (at most the renew deadline from now).
    pub async fn round_until(
        &mut self,
        api: &Api<Lease>,
        until: Instant,
    ) -> Result<bool, ElectionError> {
        let deadline = self.config.renew_deadline;
        let until = until.min(Instant::now() + deadline);
        tokio::time::timeout_at(until, self.try_acquire_or_renew(api))
            .await
            .unwrap_or(Err(ElectionError::Timeout(deadline)))
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Observation,
) -> Result<bool, ElectionError> {
    let current = api.get_opt(LEASE_NAME).await.map_err(ElectionError::Read)?;
    let now = Timestamp::now();
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let expired = spec.is_some_and(|spec| observed.expired(spec, Instant::now()));
    let decision = decide(spec, &config.identity, expired);
    let Some(spec) = desired_spec(
        &decision,
        current.as_ref().and_then(|l| l.spec.as_ref()),
        config,
        now,
    ) else {
        return Ok(false);
    };
    match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(ElectionError::Write)?;
        }
        Some(mut lease) => {
            // metadata.resourceVersion is kept from the read: the replace is conditional.
            lease.spec = Some(spec);
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map_err(ElectionError::Write)?;
        }
    }
    Ok(true)
}

/// Gives the Lease up on shutdown so a standby takes over without waiting for expiry.
pub async fn release(api: &Api<Lease>, config: &ElectionConfig) -> Result<(), ElectionError> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await.map_err(ElectionError::Read)? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
        .map_err(ElectionError::Write)?;
    Ok(())
}

/// Runs the election until `shutdown`, publishing leadership on `leading`.
///
/// `leading` turns true after a successful create/renew/take-over and false when another
/// replica holds the Lease, or when the renew deadline has passed since the start of the last
/// successful round (a leader's rounds and waits are cut at that instant, so neither a hung nor a
/// slow call can delay it). On shutdown a held Lease is released.
pub async fn run(
    api: Api<Lease>,
    config: ElectionConfig,
    leading: watch::Sender<bool>,
    on_follow: impl Fn(),
    shutdown: CancellationToken,
) {
    // When the last successful round started: its write landed after this instant.
    let mut last_renewed: Option<Instant> = None;
    let mut elector = Elector::new(config.clone());
    loop {
        let started = Instant::now();
        // While leading, the time left before the leader must have renewed again.
        let must_renew_by = last_renewed
            .filter(|_| *leading.borrow())
            .map(|t| t + config.renew_deadline);
        let until = must_renew_by.unwrap_or(started + config.renew_deadline);
        match elector.round_until(&api, until).await {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, "acquired leader Lease");
                }
                last_renewed = Some(started);
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(identity = %config.identity, "leader Lease held by another replica");
                }
                last_renewed = None;
                leading.send_replace(false);
                on_follow();
            }
            Err(error) => {
                let expired = last_renewed.is_none_or(|t| t.elapsed() >= config.renew_deadline);
                tracing::warn!(
                    error = %crate::error::chain(&error),
                    kind = error.kind(),
                    "leader election round failed"
                );
                if expired && *leading.borrow() {
                    tracing::error!("could not renew the leader Lease in time; stepping down");
                    leading.send_replace(false);
                }
            }
        }
        let next = Instant::now() + config.renew_every;
        let wake = last_renewed
            .filter(|_| *leading.borrow())
            .map_or(next, |t| next.min(t + config.renew_deadline));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        match release(&api, &config).await {
            Ok(()) => tracing::info!(identity = %config.identity, "released the leader Lease"),
            Err(error) => {
                tracing::warn!(error = %crate::error::chain(&error), "failed to release the leader Lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            acquire_time: Some(MicroTime(at(0))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, "a", false), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(decide(Some(&held("a", 0)), "a", true), Decision::Renew);
    }

    #[test]
    fn valid_lease_of_another_is_followed() {
        assert_eq!(
            decide(Some(&held("b", 10)), "a", false),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken_over() {
        assert_eq!(decide(Some(&held("b", 10)), "a", true), Decision::TakeOver);
        let released = LeaseSpec {
            holder_identity: None,
            ..held("b", 10)
        };
        assert_eq!(decide(Some(&released), "a", false), Decision::TakeOver);
        let never_renewed = LeaseSpec {
            renew_time: None,
            acquire_time: None,
            ..held("b", 0)
        };
        // Nobody renews it: seen unchanged for a whole duration, it is taken over.
        let t0 = Instant::now();
        let mut seen = Observation::default();
        assert!(!seen.expired(&never_renewed, t0));
        let later = t0 + Duration::from_secs(15);
        let expired = seen.expired(&never_renewed, later);
        assert_eq!(
            decide(Some(&never_renewed), "a", expired),
            Decision::TakeOver
        );
    }

    #[test]
    fn expiry_is_judged_by_the_local_clock_not_the_holders_timestamps() {
        let t0 = Instant::now();
        let mut seen = Observation::default();
        // Renewed "60 s ago" by the holder's (skewed) clock, but just seen here: valid.
        let stale_looking = held("b", -60);
        assert!(!seen.expired(&stale_looking, t0));
        assert!(!seen.expired(&stale_looking, t0 + Duration::from_secs(14)));
        assert!(seen.expired(&stale_looking, t0 + Duration::from_secs(15)));
        // A renewal (a changed record) restarts the local clock, whatever its timestamp says.
        let renewed = held("b", -59);
        assert!(!seen.expired(&renewed, t0 + Duration::from_secs(16)));
        assert!(!seen.expired(&renewed, t0 + Duration::from_secs(30)));
        assert!(seen.expired(&renewed, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn a_leader_steps_down_before_a_standby_may_take_over() {
        let c = ElectionConfig::new("a");
        // The leader steps down the renew deadline after its last successful round started; a
        // standby takes over at the earliest a lease duration after that round's write landed.
        assert!(c.renew_deadline < c.lease_duration);
        assert!(c.renew_every < c.renew_deadline);
    }

    #[test]
    fn take_over_counts_a_transition_and_renew_keeps_acquire_time() {
        let config = ElectionConfig::new("a");
        let current = held("b", 10);
        let spec = desired_spec(&Decision::TakeOver, Some(&current), &config, at(30)).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(30))));

        let mine = held("a", 10);
        let spec = desired_spec(&Decision::Renew, Some(&mine), &config, at(15)).unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(15))));
        assert_eq!(spec.lease_transitions, Some(2));
        let follow = Decision::Follow { holder: "b".into() };
        assert_eq!(desired_spec(&follow, Some(&current), &config, at(15)), None);
    }
}
