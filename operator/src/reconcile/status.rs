//! Report step, the pure half: the stack's next status, computed from the reconcile
//! [`Outcome`].
//!
//! [`conditions`] turns the outcome, the observed component [`Readiness`] and the previous
//! conditions into the conditions `Ready`, `Progressing`, `Degraded`, `Paused` and, once images
//! are recorded, `UpgradeAvailable`.
//! Reasons are the PascalCase constants in [`reason`]. A condition's `lastTransitionTime` changes
//! only when its `status` changes, and no condition ever passes through `Unknown`.
//! [`next_status`] adds the component counts, store, cache and endpoint. This module does no
//! I/O; [`super::report`] writes the result through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::health::Problem;
pub use super::rollout::Readiness;
use super::validate::{CacheSettings, StoreSettings, ValidatedStack};
use crate::crd::{
    CacheStatus, ComponentImages, ComponentStatus, PingPongStackStatus, Placement, StoreStatus,
    StoreType,
};
use crate::labels::Component;

pub use super::terms::{condition_type, reason};

/// What a reconcile realised: the components' readiness and what status reports beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converged {
    /// The workloads' readiness.
    pub readiness: Readiness,
    /// URL serving `/ping` and `/pong`, when the spec names a host.
    pub endpoint: Option<String>,
    /// Name of the broker credentials Secret.
    pub credentials_secret: String,
    /// pong's store as realised.
    pub store: StoreStatus,
    /// pong's cache as realised (`None`: no cache).
    pub cache: Option<CacheStatus>,
    /// `status.warnings`: what the stack runs with but the user should fix.
    pub warnings: Vec<String>,
    /// Why the stack is not ready, in its pods' and its Gateway's words ([`super::health`]).
    pub problems: Vec<Problem>,
    /// `status.images` as applied (`None`: keep the recorded ones).
    pub images: Option<ComponentImages>,
    /// This stack is rolling to new default images (it applied them now or before and was not
    /// Ready since).
    pub upgrading: bool,
    /// Why the stack keeps older default images under `Automatic` (no upgrade slot free).
    pub upgrade_waiting: Option<String>,
    /// Which workloads keep an earlier release's selectors, and how to migrate them
    /// ([`super::migrate::pending_message`]).
    pub selector_migration: Option<String>,
}

impl Converged {
    /// What a reconcile of `stack` that observed `readiness` realised.
    pub fn new(stack: &ValidatedStack, readiness: Readiness) -> Self {
        let (store, cache) = backing_status(stack, &readiness);
        Self {
            readiness,
            endpoint: stack.endpoint(),
            credentials_secret: stack.names.credentials_secret.clone(),
            store,
            cache,
            warnings: stack.warnings(),
            // Refused changes (a PostgreSQL major upgrade) come first: they name what to do.
            problems: stack.refused.clone(),
            // A paused stack applied nothing: it still runs what status recorded.
            images: (!stack.paused).then(|| stack.images.clone()),
            upgrading: false,
            upgrade_waiting: None,
            selector_migration: None,
        }
    }

    /// The same, with workloads that keep an earlier release's selectors (`message`).
    pub fn with_selector_migration(mut self, message: Option<String>) -> Self {
        self.selector_migration = message;
        self
    }

    /// The same, rolling to new default images (`upgrading`) or waiting for a slot.
    pub fn with_upgrade(mut self, upgrading: bool, waiting: Option<String>) -> Self {
        self.upgrading = upgrading;
        self.upgrade_waiting = waiting;
        self
    }

    /// The same, with the problems found in the pods and the route added.
    pub fn with_problems(mut self, problems: Vec<Problem>) -> Self {
        self.problems.extend(problems);
        self
    }
}

/// How the reconcile went, as far as status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every child was applied (or left alone because the stack is paused).
    Converged(Box<Converged>),
    /// The spec cannot be realised (or refers to something missing); nothing was applied.
    Invalid {
        /// A `ValidationError::kind()` or a missing reference such as
        /// [`reason::CREDENTIALS_SECRET_MISSING`].
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

/// Ready, Progressing and Degraded of a reconcile that applied everything: Ready only when every
/// workload is ready at its current spec and nothing is wrong with a pod or the route; a problem
/// is the reason (the first one, all of them in the message), and Degraded when a user must act.
fn converged_conditions(converged: &Converged, paused: bool, next: &mut Vec<Condition>) {
    use condition_type::{DEGRADED, PROGRESSING, READY};
    let readiness = &converged.readiness;
    let waiting = readiness.not_ready();
    let problems = &converged.problems;
    let explained = problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let waiting_for = (!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join(", ")));
    match (problems.first(), &waiting_for) {
        (None, None) => {
            let msg = readiness.ready_message();
            next.push(condition(READY, true, reason::ALL_COMPONENTS_READY, msg));
        }
        (None, Some(msg)) => {
            next.push(condition(
                READY,
                false,
                reason::COMPONENTS_NOT_READY,
                msg.clone(),
            ));
        }
        (Some(first), _) => {
            let msg = match &waiting_for {
                Some(w) => format!("{explained} ({w})"),
                None => explained.clone(),
            };
            next.push(condition(READY, false, first.reason, msg));
        }
    }
    let stalled = problems
        .iter()
        .any(|p| p.reason == super::health::reason::PROGRESS_DEADLINE_EXCEEDED);
    next.push(if paused {
        let msg = "spec.paused is true; children are not changed".to_owned();
        condition(PROGRESSING, false, reason::PAUSED_BY_SPEC, msg)
    } else if stalled {
        let msg = explained.clone();
        condition(
            PROGRESSING,
            false,
            super::health::reason::PROGRESS_DEADLINE_EXCEEDED,
            msg,
        )
    } else if waiting.is_empty() && problems.is_empty() {
        let msg = "desired state applied and ready".to_owned();
        condition(PROGRESSING, false, reason::ROLLOUT_COMPLETE, msg)
    } else {
        let what = waiting_for.clone().unwrap_or_else(|| explained.clone());
        let msg = format!("desired state applied; {what}");
        condition(PROGRESSING, true, reason::ROLLING_OUT, msg)
    });
    next.push(match problems.iter().find(|p| p.needs_action) {
        Some(problem) => {
            let msg = problems
                .iter()
                .filter(|p| p.needs_action)
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            condition(DEGRADED, true, problem.reason, msg)
        }
        None => {
            let msg = "last reconcile succeeded".to_owned();
            condition(DEGRADED, false, reason::RECONCILE_SUCCEEDED, msg)
        }
    });
}

/// Computes the conditions (`UpgradeAvailable` only once images were recorded).
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
        Outcome::Converged(converged) => converged_conditions(converged, paused, &mut next),
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
    let converged = match outcome {
        Outcome::Converged(converged) => Some(converged).filter(|c| c.images.is_some()),
        _ => None,
    };
    match converged {
        Some(converged) => {
            let images = converged.images.as_ref();
            let waiting = converged.upgrade_waiting.as_deref();
            let selectors = converged.selector_migration.as_deref();
            next.extend(images.map(|images| upgrade_condition(images, waiting, selectors)));
            let ready = next
                .iter()
                .any(|c| c.type_ == condition_type::READY && c.status == "True");
            next.push(if converged.upgrading && !ready {
                let msg = "new default images applied, or workloads replaced to migrate their \
                           selectors; the stack holds an upgrade slot until it is Ready"
                    .to_owned();
                condition(
                    condition_type::UPGRADING,
                    true,
                    reason::ROLLING_TO_NEW_DEFAULTS,
                    msg,
                )
            } else {
                condition(
                    condition_type::UPGRADING,
                    false,
                    reason::NO_UPGRADE_IN_PROGRESS,
                    String::new(),
                )
            });
        }
        // Nothing applied: the images, what is available and an upgrade in progress are those
        // recorded before.
        None => next.extend(
            previous
                .iter()
                .filter(|c| {
                    c.type_ == condition_type::UPGRADE_AVAILABLE
                        || c.type_ == condition_type::UPGRADING
                })
                .cloned(),
        ),
    }
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

/// `UpgradeAvailable`: True, naming each component and its newer default, when the stack kept
/// an older default image (`upgradePolicy: Manual`), or naming the workloads that keep an
/// earlier release's selectors (`selectors`); `waiting` when an upgrade slot is awaited.
fn upgrade_condition(
    images: &ComponentImages,
    waiting: Option<&str>,
    selectors: Option<&str>,
) -> Condition {
    let available: Vec<String> = images
        .all()
        .into_iter()
        .filter_map(|(component, image)| {
            let newer = image.available.as_ref()?;
            Some(format!("{component} {newer} (runs {})", image.image))
        })
        .collect();
    let mut parts = Vec::new();
    if !available.is_empty() {
        parts.push(format!("newer default images: {}", available.join(", ")));
    }
    parts.extend(selectors.map(str::to_owned));
    if parts.is_empty() {
        let msg = "every component runs the operator's default image or the one its spec names";
        return condition(
            condition_type::UPGRADE_AVAILABLE,
            false,
            reason::IMAGES_CURRENT,
            msg.to_owned(),
        );
    }
    if let Some(waiting) = waiting {
        return condition(
            condition_type::UPGRADE_AVAILABLE,
            true,
            reason::WAITING_FOR_UPGRADE_SLOT,
            format!("{}; {waiting}", parts.join("; ")),
        );
    }
    if available.is_empty() {
        return condition(
            condition_type::UPGRADE_AVAILABLE,
            true,
            reason::SELECTOR_MIGRATION,
            parts.join("; "),
        );
    }
    let msg = format!(
        "{}; upgradePolicy Manual keeps the recorded ones: set spec.upgradePolicy: Automatic \
         (or the image in the spec) to roll",
        parts.join("; ")
    );
    condition(
        condition_type::UPGRADE_AVAILABLE,
        true,
        reason::NEWER_DEFAULT_IMAGE,
        msg,
    )
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// pong's store and cache status (pure): the type and placement from the validated spec,
/// readiness from the provisioned workloads. An external service counts as ready once observe
/// found its Secret complete (the apply only happens then); whether the server answers is pong's
/// readiness.
pub fn backing_status(
    stack: &ValidatedStack,
    readiness: &Readiness,
) -> (StoreStatus, Option<CacheStatus>) {
    let provisioned = |c: Option<ComponentStatus>| {
        let c = c.unwrap_or_default();
        (
            c.is_ready() && c.replicas > 0,
            Some(c.replicas),
            Some(c.ready_replicas),
        )
    };
    let store = match &stack.store {
        StoreSettings::Memory => StoreStatus {
            type_: StoreType::Memory,
            ready: true,
            // The claim of a provisioned database switched off is kept, and so is its major.
            data_major_version: stack.postgres_data_major,
            ..StoreStatus::default()
        },
        StoreSettings::ExternalPostgres { secret_name } => StoreStatus {
            type_: StoreType::Postgres,
            placement: Some(Placement::External),
            ready: true,
            replicas: None,
            ready_replicas: None,
            secret_name: Some(secret_name.clone()),
            data_major_version: stack.postgres_data_major,
        },
        StoreSettings::ProvisionedPostgres(_) => {
            let (ready, replicas, ready_replicas) = provisioned(readiness.get(Component::Postgres));
            StoreStatus {
                type_: StoreType::Postgres,
                placement: Some(Placement::Provisioned),
                ready,
                replicas,
                ready_replicas,
                secret_name: Some(stack.names.postgres_credentials.clone()),
                data_major_version: stack.postgres_data_major,
            }
        }
    };
    let cache = stack.cache.as_ref().map(|cache| match cache {
        CacheSettings::External { .. } => CacheStatus {
            placement: Placement::External,
            ready: true,
            replicas: None,
            ready_replicas: None,
        },
        CacheSettings::Provisioned(_) => {
            let (ready, replicas, ready_replicas) = provisioned(readiness.get(Component::Redis));
            CacheStatus {
                placement: Placement::Provisioned,
                ready,
                replicas,
                ready_replicas,
            }
        }
    });
    (store, cache)
}

/// Everything the next status is computed from.
pub struct Report<'a> {
    /// How the reconcile went.
    pub outcome: Outcome,
    /// Value of `spec.paused`.
    pub paused: bool,
    /// The stack's `metadata.generation`.
    pub generation: Option<i64>,
    /// The stack's current status.
    pub previous: &'a PingPongStackStatus,
}

impl Report<'_> {
    /// Whether children were written in this reconcile.
    pub fn applied(&self) -> bool {
        matches!(self.outcome, Outcome::Converged(_)) && !self.paused
    }
}

/// Computes the next status. A reconcile that did not converge keeps the last realised
/// generation, component counts, endpoint, store and cache.
pub fn next_status(report: &Report<'_>, now: Timestamp) -> PingPongStackStatus {
    let previous = report.previous;
    let conditions = conditions(
        &report.outcome,
        report.paused,
        report.generation,
        &previous.conditions,
        Time(now),
    );
    let Outcome::Converged(converged) = &report.outcome else {
        return PingPongStackStatus {
            // A failed reconcile did not realise this generation: keep the last one that was.
            observed_generation: match report.outcome {
                Outcome::Failed { .. } => previous.observed_generation,
                _ => report.generation,
            },
            conditions,
            ..previous.clone()
        };
    };
    let r = &converged.readiness;
    PingPongStackStatus {
        observed_generation: report.generation,
        conditions,
        ping: Some(r.get(Component::Ping).unwrap_or_default()),
        pong: Some(r.get(Component::Pong).unwrap_or_default()),
        rabbitmq: Some(r.get(Component::RabbitMq).unwrap_or_default()),
        endpoint: converged
            .endpoint
            .clone()
            .or_else(|| previous.endpoint.clone()),
        credentials_secret: Some(converged.credentials_secret.clone()),
        store: Some(converged.store.clone()),
        cache: converged.cache.clone(),
        warnings: converged.warnings.clone(),
        // Written by the autoscaler's own field manager, never by this one (see `write_status`).
        autoscaling: previous.autoscaling.clone(),
        // Written by the broker check's own field manager (see `write_status`).
        broker_cluster: previous.broker_cluster.clone(),
        images: converged.images.clone().or_else(|| previous.images.clone()),
    }
}

/// A converged outcome of a memory-store stack with `readiness` (unit tests of the conditions
/// and of the Events they cause).
#[cfg(test)]
pub(super) fn converged(readiness: Readiness) -> Outcome {
    Outcome::Converged(Box::new(Converged {
        readiness,
        endpoint: None,
        credentials_secret: "demo-rabbitmq-credentials".into(),
        store: StoreStatus {
            type_: StoreType::Memory,
            ready: true,
            ..StoreStatus::default()
        },
        cache: None,
        warnings: Vec::new(),
        problems: Vec::new(),
        images: None,
        upgrading: false,
        upgrade_waiting: None,
        selector_migration: None,
    }))
}

#[cfg(test)]
mod tests;
