//! Report step: the stack's status conditions, computed by pure functions.
//!
//! [`conditions`] turns the reconcile [`Outcome`], the observed component [`Readiness`] and the
//! previous conditions into the four conditions `Ready`, `Progressing`, `Degraded` and `Paused`.
//! Reasons are the PascalCase constants in [`reason`]. A condition's `lastTransitionTime` changes
//! only when its `status` changes, and no condition ever passes through `Unknown`. This module
//! does no I/O; the driver applies the result through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod condition_type {
    /// Summary: every component has its desired number of ready replicas.
    pub const READY: &str = "Ready";
    /// The operator is still converging the stack (rollout or retry in progress).
    pub const PROGRESSING: &str = "Progressing";
    /// The operator cannot realise the spec, or the last reconcile failed.
    pub const DEGRADED: &str = "Degraded";
    /// `spec.paused` is true: children are left alone.
    pub const PAUSED: &str = "Paused";
}

/// Condition reasons (PascalCase, fixed set; error reasons come from `Error::kind()`).
pub mod reason {
    /// Ready=True.
    pub const ALL_COMPONENTS_READY: &str = "AllComponentsReady";
    /// Ready=False, Progressing=True: replicas are starting.
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    /// Progressing=True while children roll out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Progressing=False once every component is ready.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Progressing=True after a failed reconcile that will be retried.
    pub const RETRYING: &str = "Retrying";
    /// Ready=False before the first successful reconcile.
    pub const RECONCILING: &str = "Reconciling";
    /// Ready/Degraded/Progressing when the spec cannot be realised.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready/Degraded/Progressing when `rabbitmq.credentialsSecret` names a missing or
    /// incomplete Secret.
    pub const CREDENTIALS_SECRET_MISSING: &str = "CredentialsSecretMissing";
    /// Ready/Degraded/Progressing when `spec.gateway` is set but the Gateway API CRDs are not
    /// installed.
    pub const GATEWAY_API_MISSING: &str = "GatewayApiMissing";
    /// Ready/Degraded/Progressing when `pong.store.postgres.external.secretName` names a missing
    /// or incomplete Secret.
    pub const POSTGRES_SECRET_MISSING: &str = "PostgresSecretMissing";
    /// Ready/Degraded/Progressing when `pong.cache.external.secretName` names a missing Secret or
    /// one without the URL key.
    pub const CACHE_SECRET_MISSING: &str = "CacheSecretMissing";
    /// Degraded=False.
    pub const RECONCILE_SUCCEEDED: &str = "ReconcileSucceeded";
    /// Paused=True, and Progressing=False while paused.
    pub const PAUSED_BY_SPEC: &str = "PausedBySpec";
    /// Paused=False.
    pub const NOT_PAUSED: &str = "NotPaused";
}

/// Desired and ready replicas of one component, as observed on its workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComponentReadiness {
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas reported by the workload's status.
    pub ready_replicas: i32,
}

impl ComponentReadiness {
    /// Whether every desired replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready_replicas >= self.replicas
    }
}

/// Readiness of the components: the three that always exist, and the provisioned PostgreSQL
/// and Redis when the spec asks for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The ping Deployment.
    pub ping: ComponentReadiness,
    /// The pong Deployment.
    pub pong: ComponentReadiness,
    /// The RabbitMQ StatefulSet.
    pub rabbitmq: ComponentReadiness,
    /// The provisioned PostgreSQL StatefulSet (`None`: memory or external store).
    pub postgres: Option<ComponentReadiness>,
    /// The provisioned Redis Deployment (`None`: no cache or an external one).
    pub redis: Option<ComponentReadiness>,
}

impl Readiness {
    fn components(&self) -> Vec<(&'static str, ComponentReadiness)> {
        let mut all = vec![("rabbitmq", self.rabbitmq)];
        all.extend(self.postgres.map(|c| ("postgres", c)));
        all.extend(self.redis.map(|c| ("redis", c)));
        all.extend([("ping", self.ping), ("pong", self.pong)]);
        all
    }

    fn not_ready(&self) -> Vec<String> {
        self.components()
            .into_iter()
            .filter(|(_, c)| !c.is_ready())
            .map(|(name, c)| format!("{name} {}/{} ready", c.ready_replicas, c.replicas))
            .collect()
    }

    /// "ping, pong and rabbitmq", plus postgres and redis when provisioned.
    fn ready_message(&self) -> String {
        let mut names = vec!["ping", "pong", "rabbitmq"];
        names.extend(self.postgres.map(|_| "postgres"));
        names.extend(self.redis.map(|_| "redis"));
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        format!(
            "{} and {last} have all desired replicas ready",
            rest.join(", ")
        )
    }
}

/// How the reconcile went, as far as status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every child was applied (or left alone because the stack is paused).
    Converged(Readiness),
    /// The spec cannot be realised (or refers to something missing); nothing was applied.
    Invalid {
        /// A `ValidationError::kind()`, [`reason::CREDENTIALS_SECRET_MISSING`] or
        /// [`reason::GATEWAY_API_MISSING`].
        reason: &'static str,
        /// What to fix.
        message: String,
    },
    /// An API call failed; the reconcile will be retried.
    Failed {
        /// `Error::kind()`.
        reason: &'static str,
        /// The error chain.
        message: String,
    },
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Computes the four conditions.
///
/// `previous` is the current `status.conditions`; `generation` is the stack's
/// `metadata.generation`; `now` stamps conditions whose status changed.
pub fn conditions(
    outcome: &Outcome,
    paused: bool,
    generation: Option<i64>,
    previous: &[Condition],
    now: Time,
) -> Vec<Condition> {
    use condition_type::{DEGRADED, PAUSED, PROGRESSING, READY};
    let mut next = Vec::with_capacity(4);
    match outcome {
        Outcome::Converged(readiness) => {
            let waiting = readiness.not_ready();
            if waiting.is_empty() {
                let msg = readiness.ready_message();
                next.push(condition(READY, true, reason::ALL_COMPONENTS_READY, msg));
            } else {
                let msg = format!("waiting for {}", waiting.join(", "));
                next.push(condition(READY, false, reason::COMPONENTS_NOT_READY, msg));
            }
            next.push(if paused {
                let msg = "spec.paused is true; children are not changed".to_owned();
                condition(PROGRESSING, false, reason::PAUSED_BY_SPEC, msg)
            } else if waiting.is_empty() {
                let msg = "desired state applied and ready".to_owned();
                condition(PROGRESSING, false, reason::ROLLOUT_COMPLETE, msg)
            } else {
                let msg = format!("desired state applied; waiting for {}", waiting.join(", "));
                condition(PROGRESSING, true, reason::ROLLING_OUT, msg)
            });
            let msg = "last reconcile succeeded".to_owned();
            next.push(condition(DEGRADED, false, reason::RECONCILE_SUCCEEDED, msg));
        }
        Outcome::Invalid {
            reason: why,
            message,
        } => {
            next.push(condition(READY, false, why, message.clone()));
            let msg = "waiting for a change to the spec or the objects it refers to".to_owned();
            next.push(condition(PROGRESSING, false, why, msg));
            next.push(condition(DEGRADED, true, why, message.clone()));
        }
        Outcome::Failed {
            reason: why,
            message,
        } => {
            // The workloads did not change because an API call failed: keep the previous Ready
            // condition rather than flapping it; Degraded carries the failure.
            let ready = previous.iter().find(|c| c.type_ == READY).cloned();
            next.push(ready.unwrap_or_else(|| {
                let msg = "the first reconcile has not succeeded yet".to_owned();
                condition(READY, false, reason::RECONCILING, msg)
            }));
            let msg = format!("retrying with backoff after {why}");
            next.push(condition(PROGRESSING, true, reason::RETRYING, msg));
            next.push(condition(DEGRADED, true, why, message.clone()));
        }
    }
    next.push(if paused {
        let msg = "spec.paused is true".to_owned();
        condition(PAUSED, true, reason::PAUSED_BY_SPEC, msg)
    } else {
        condition(PAUSED, false, reason::NOT_PAUSED, String::new())
    });
    for c in &mut next {
        let before = previous.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match before {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        // A kept condition (Ready after a failure) still describes the generation it saw.
        if c.observed_generation.is_none() {
            c.observed_generation = generation;
        }
    }
    next
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::condition_type::*;
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
    }

    fn get<'a>(cs: &'a [Condition], type_: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn readiness(ready: i32) -> Readiness {
        let c = ComponentReadiness {
            replicas: 1,
            ready_replicas: ready,
        };
        Readiness {
            ping: c,
            pong: c,
            rabbitmq: c,
            postgres: None,
            redis: None,
        }
    }

    #[test]
    fn provisioned_store_and_cache_gate_ready() {
        let mut r = readiness(1);
        let cs = conditions(&Outcome::Converged(r), false, Some(1), &[], t(0));
        assert_eq!(
            get(&cs, READY).message,
            "ping, pong and rabbitmq have all desired replicas ready"
        );
        r.postgres = Some(ComponentReadiness {
            replicas: 1,
            ready_replicas: 0,
        });
        r.redis = Some(ComponentReadiness {
            replicas: 1,
            ready_replicas: 1,
        });
        let cs = conditions(&Outcome::Converged(r), false, Some(1), &[], t(0));
        assert_eq!(get(&cs, READY).status, "False");
        assert_eq!(get(&cs, READY).message, "waiting for postgres 0/1 ready");
        r.postgres = r.redis;
        let cs = conditions(&Outcome::Converged(r), false, Some(1), &[], t(0));
        assert_eq!(get(&cs, READY).status, "True");
        assert_eq!(
            get(&cs, READY).message,
            "ping, pong, rabbitmq, postgres and redis have all desired replicas ready"
        );
    }

    #[test]
    fn converging_then_ready() {
        let first = conditions(&Outcome::Converged(readiness(0)), false, Some(1), &[], t(0));
        let ready = get(&first, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ComponentsNotReady")
        );
        assert_eq!(
            ready.message,
            "waiting for rabbitmq 0/1 ready, ping 0/1 ready, pong 0/1 ready"
        );
        assert_eq!(get(&first, PROGRESSING).status, "True");
        assert_eq!(get(&first, DEGRADED).status, "False");
        assert_eq!(get(&first, PAUSED).status, "False");
        assert!(first.iter().all(|c| c.observed_generation == Some(1)));

        let second = conditions(
            &Outcome::Converged(readiness(1)),
            false,
            Some(1),
            &first,
            t(10),
        );
        assert_eq!(get(&second, READY).status, "True");
        assert_eq!(get(&second, READY).last_transition_time, t(10));
        assert_eq!(get(&second, PROGRESSING).reason, "RolloutComplete");
        // Degraded and Paused did not change status: their transition time is kept.
        assert_eq!(get(&second, DEGRADED).last_transition_time, t(0));
        assert_eq!(get(&second, PAUSED).last_transition_time, t(0));
    }

    #[test]
    fn a_second_identical_report_changes_nothing() {
        let first = conditions(&Outcome::Converged(readiness(1)), false, Some(3), &[], t(0));
        let again = conditions(
            &Outcome::Converged(readiness(1)),
            false,
            Some(3),
            &first,
            t(50),
        );
        assert_eq!(first, again);
    }

    #[test]
    fn invalid_spec_is_degraded_and_not_ready() {
        let outcome = Outcome::Invalid {
            reason: reason::INVALID_SPEC,
            message: "spec.pong.replicas: must be at most 1".into(),
        };
        let cs = conditions(&outcome, false, Some(2), &[], t(0));
        assert_eq!(get(&cs, READY).status, "False");
        assert_eq!(get(&cs, READY).reason, "InvalidSpec");
        assert_eq!(get(&cs, DEGRADED).status, "True");
        assert_eq!(
            get(&cs, DEGRADED).message,
            "spec.pong.replicas: must be at most 1"
        );
        assert_eq!(get(&cs, PROGRESSING).status, "False");
    }

    #[test]
    fn failure_keeps_ready_and_sets_degraded_without_unknown() {
        let ok = conditions(&Outcome::Converged(readiness(1)), false, Some(1), &[], t(0));
        let failed = Outcome::Failed {
            reason: "ApplyConflict",
            message: "failed to apply Deployment demo-ping".into(),
        };
        let cs = conditions(&failed, false, Some(1), &ok, t(5));
        assert_eq!(get(&cs, READY), get(&ok, READY));
        assert_eq!(get(&cs, DEGRADED).status, "True");
        assert_eq!(get(&cs, DEGRADED).reason, "ApplyConflict");
        assert_eq!(get(&cs, DEGRADED).last_transition_time, t(5));
        assert!(cs.iter().all(|c| c.status == "True" || c.status == "False"));

        let first_failure = conditions(&failed, false, Some(1), &[], t(0));
        assert_eq!(get(&first_failure, READY).reason, "Reconciling");
    }

    #[test]
    fn paused_is_reported() {
        let cs = conditions(&Outcome::Converged(readiness(0)), true, Some(4), &[], t(0));
        assert_eq!(get(&cs, PAUSED).status, "True");
        assert_eq!(get(&cs, PAUSED).reason, "PausedBySpec");
        assert_eq!(get(&cs, PROGRESSING).status, "False");
        assert_eq!(get(&cs, PROGRESSING).reason, "PausedBySpec");
        assert!(is_true(&cs, PAUSED));
        assert!(!is_true(&cs, READY));
    }
}
