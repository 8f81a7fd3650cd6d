//! Leader election over a `coordination.k8s.io/v1` Lease, so two operator replicas are safe.
//!
//! kube-runtime has no leader election, so this module implements the client-go protocol in a
//! small form: the Lease `pingpong-operator-leader` in `POD_NAMESPACE` names its holder
//! (`POD_NAME`) and when it last renewed. The holder renews every [`ElectionConfig::renew_every`];
//! a replica takes over only a Lease whose renew time plus duration has passed (or that has no
//! holder). Every write is a create or a `resourceVersion`-conditional replace, so two replicas
//! racing for an expired Lease cannot both win: the loser gets a 409 Conflict.
//!
//! [`decide`] is the pure decision; [`run`] is the I/O loop. A leader that cannot renew within the
//! lease duration steps down before another replica may take over.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;
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
}

impl ElectionConfig {
    /// The defaults: 15 s lease, renewed every 5 s.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
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

/// Decides what to do given the observed Lease spec, our identity and the current time.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
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
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match last {
        Some(last) if last + duration > now => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
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
}

impl ElectionError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read(_) => "LeaseReadFailed",
            Self::Write(kube::Error::Api(s)) if s.code == 409 => "LeaseConflict",
            Self::Write(_) => "LeaseWriteFailed",
        }
    }
}

/// One round: read, decide, write. Returns whether we hold the Lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &ElectionConfig,
) -> Result<bool, ElectionError> {
    let current = api.get_opt(LEASE_NAME).await.map_err(ElectionError::Read)?;
    let now = Timestamp::now();
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        now,
    );
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
/// `leading` turns true after a successful create/renew/take-over and false when a renewal has
/// not succeeded for a whole lease duration (or another replica holds the Lease). On shutdown a
/// held Lease is released.
pub async fn run(
    api: Api<Lease>,
    config: ElectionConfig,
    leading: watch::Sender<bool>,
    on_follow: impl Fn(),
    shutdown: CancellationToken,
) {
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, "acquired leader Lease");
                }
                last_renewed = Some(tokio::time::Instant::now());
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
                let expired = last_renewed.is_none_or(|t| t.elapsed() >= config.lease_duration);
                tracing::warn!(error = %error, kind = error.kind(), "leader election round failed");
                if expired && *leading.borrow() {
                    tracing::error!("could not renew the leader Lease in time; stepping down");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.renew_every) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(error) = release(&api, &config).await {
            tracing::warn!(error = %error, "failed to release the leader Lease");
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
        assert_eq!(decide(None, "a", at(0)), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(decide(Some(&held("a", 0)), "a", at(100)), Decision::Renew);
    }

    #[test]
    fn valid_lease_of_another_is_followed() {
        assert_eq!(
            decide(Some(&held("b", 10)), "a", at(24)),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held("b", 10)), "a", at(25)),
            Decision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held("b", 10)
        };
        assert_eq!(decide(Some(&released), "a", at(11)), Decision::TakeOver);
        let never_renewed = LeaseSpec {
            renew_time: None,
            acquire_time: None,
            ..held("b", 0)
        };
        assert_eq!(decide(Some(&never_renewed), "a", at(0)), Decision::TakeOver);
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
