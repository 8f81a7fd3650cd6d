//! How far a workload has rolled out its current spec (pure): the replicas that are ready *and*
//! run the current pod template, read from the workload's status the way `kubectl rollout status`
//! reads it.
//!
//! A workload's `readyReplicas` alone counts old pods too: a Deployment whose new pods cannot
//! pull their image keeps its old pod ready, and a StatefulSet mid-update has ready pods of the
//! previous revision. Counting those as ready would report a stuck rollout as Ready. So:
//! - nothing counts until the workload controller has observed the current generation;
//! - a Deployment counts its updated replicas that are ready, and while old replicas are still
//!   around (`status.replicas > updatedReplicas`) those are assumed to be the ready ones;
//! - a StatefulSet whose `currentRevision` differs from its `updateRevision` counts at most its
//!   updated replicas.
//!
//! A [`Rollout`] adds what a stuck workload needs to be explained: the label selector of its
//! pods (read only for workloads that are not ready, see [`super::health`]) and a Deployment's
//! `ProgressDeadlineExceeded`.
//!
//! This module does no I/O; apply and observe call it on the objects they read.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::DynamicObject;

use super::desired::{Child, DesiredState};
use crate::crd::ComponentStatus;
use crate::labels::Component;

/// Reason of a Deployment's `Progressing=False` condition once its rollout stalled.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// One workload as its controller reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Name of the workload.
    pub name: String,
    /// Desired replicas and those ready at the current spec.
    pub counts: ComponentStatus,
    /// Label selector of its pods (`key=value,...`), when it has `matchLabels`.
    pub selector: Option<String>,
    /// The message of a Deployment whose rollout exceeded its progress deadline.
    pub deadline_exceeded: Option<String>,
}

/// What the workloads and the route reported after apply (or a read while paused).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workloads {
    /// Each workload by component.
    pub rollouts: BTreeMap<Component, Rollout>,
    /// The HTTPRoute as the API server returned it (its `status.parents`), when there is one.
    pub route: Option<DynamicObject>,
}

impl Workloads {
    /// The workloads not at their desired ready replicas (their pods are worth a look).
    pub fn not_ready(&self) -> impl Iterator<Item = (Component, &Rollout)> {
        self.rollouts
            .iter()
            .filter(|(_, r)| !r.counts.is_ready())
            .map(|(c, r)| (*c, r))
    }
}

impl ComponentStatus {
    /// Whether every desired replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready_replicas >= self.replicas
    }
}

/// Readiness of the workloads the plan contains (the broker's and PostgreSQL's StatefulSets,
/// the Redis, ping and pong Deployments), in apply order, derived from
/// [`DesiredState::children`]: a workload the plan holds counts, one it does not hold does not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    components: Vec<(Component, ComponentStatus)>,
}

impl Readiness {
    /// The readiness of the given workloads, in the given order (tests, and [`Self::of`]).
    pub fn new(components: impl IntoIterator<Item = (Component, ComponentStatus)>) -> Self {
        Self {
            components: components.into_iter().collect(),
        }
    }

    /// The readiness of every workload of `desired` as `workloads` reported it; a workload
    /// that was not found or not applied counts as its desired replicas with none ready.
    pub fn of(desired: &DesiredState, workloads: &Workloads) -> Self {
        Self::new(
            desired
                .children()
                .into_iter()
                .filter_map(|(component, child)| {
                    let absent = match child {
                        Child::StatefulSet(sts) => statefulset_readiness(sts),
                        Child::Deployment(deployment) => deployment_readiness(deployment),
                        _ => return None,
                    };
                    let counts = workloads.rollouts.get(&component).map(|r| r.counts);
                    Some((component, counts.unwrap_or(absent)))
                }),
        )
    }

    /// The readiness of `component`'s workload, when the plan has one.
    pub fn get(&self, component: Component) -> Option<ComponentStatus> {
        self.components
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, status)| *status)
    }

    /// Whether every component has all its desired replicas ready.
    pub fn is_ready(&self) -> bool {
        self.components.iter().all(|(_, c)| c.is_ready())
    }

    /// "rabbitmq 0/3 ready" for each workload short of its desired replicas.
    pub fn not_ready(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| !c.is_ready())
            .map(|(component, c)| {
                let name = component.app_name();
                format!("{name} {}/{} ready", c.ready_replicas, c.replicas)
            })
            .collect()
    }

    /// "rabbitmq, ping and pong have all desired replicas ready" (and postgres and redis when
    /// provisioned).
    pub fn ready_message(&self) -> String {
        let names: Vec<&str> = self.components.iter().map(|(c, _)| c.app_name()).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        format!(
            "{} and {last} have all desired replicas ready",
            rest.join(", ")
        )
    }
}

/// `matchLabels` as a label selector string (`matchExpressions` are never set by the builders).
fn selector_string(selector: &LabelSelector) -> Option<String> {
    let labels = selector.match_labels.as_ref()?;
    if labels.is_empty() {
        return None;
    }
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A Deployment's rollout: readiness, pod selector and a stalled rollout.
pub fn deployment_rollout(deployment: &Deployment) -> Rollout {
    let deadline_exceeded = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
        })
        .map(|c| c.message.clone().unwrap_or_default());
    Rollout {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        counts: deployment_readiness(deployment),
        selector: deployment
            .spec
            .as_ref()
            .and_then(|s| selector_string(&s.selector)),
        deadline_exceeded,
    }
}

/// A StatefulSet's rollout: readiness and pod selector.
pub fn statefulset_rollout(sts: &StatefulSet) -> Rollout {
    Rollout {
        name: sts.metadata.name.clone().unwrap_or_default(),
        counts: statefulset_readiness(sts),
        selector: sts.spec.as_ref().and_then(|s| selector_string(&s.selector)),
        deadline_exceeded: None,
    }
}

/// Whether the workload controller has seen the workload's current generation.
fn observed(generation: Option<i64>, observed_generation: Option<i64>) -> bool {
    match (generation, observed_generation) {
        (Some(want), Some(seen)) => seen >= want,
        // No generation (never stored): nothing to wait for. Never observed: not yet.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// Desired replicas and the replicas ready at the current spec of a Deployment.
pub fn deployment_readiness(deployment: &Deployment) -> ComponentStatus {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return ComponentStatus {
            replicas,
            ready_replicas: 0,
        };
    };
    if !observed(deployment.metadata.generation, status.observed_generation) {
        return ComponentStatus {
            replicas,
            ready_replicas: 0,
        };
    }
    let total = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    // Old replicas still present are counted as the ready ones (the worst case for the new).
    let old = (total - updated).max(0);
    let ready_current = updated.min(ready - old).min(available - old).max(0);
    ComponentStatus {
        replicas,
        ready_replicas: ready_current,
    }
}

/// Desired replicas and the replicas ready at the current revision of a StatefulSet.
pub fn statefulset_readiness(sts: &StatefulSet) -> ComponentStatus {
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = sts.status.as_ref() else {
        return ComponentStatus {
            replicas,
            ready_replicas: 0,
        };
    };
    if !observed(sts.metadata.generation, status.observed_generation) {
        return ComponentStatus {
            replicas,
            ready_replicas: 0,
        };
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled_out = match (&status.current_revision, &status.update_revision) {
        (Some(current), Some(update)) => current == update,
        // A controller that reports no revisions (or an object read before it did) is trusted
        // on its counts alone.
        _ => true,
    };
    let ready_current = if rolled_out {
        ready
    } else {
        ready.min(status.updated_replicas.unwrap_or(0))
    };
    ComponentStatus {
        replicas,
        ready_replicas: ready_current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    fn d_status(observed: i64, total: i32, updated: i32, ready: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn a_rolled_out_deployment_counts_its_ready_replicas() {
        let d = deployment(3, 2, d_status(3, 2, 2, 2));
        assert!(deployment_readiness(&d).is_ready());
        assert_eq!(deployment_readiness(&d).ready_replicas, 2);
    }

    #[test]
    fn a_new_generation_not_yet_observed_counts_nothing() {
        let d = deployment(4, 1, d_status(3, 1, 1, 1));
        assert_eq!(deployment_readiness(&d).ready_replicas, 0);
    }

    #[test]
    fn a_stuck_rollout_is_not_ready_while_the_old_pod_serves() {
        // A bad image tag: the new pod never becomes ready, the old one still is.
        let d = deployment(2, 1, d_status(2, 2, 1, 1));
        let c = deployment_readiness(&d);
        assert_eq!(c.ready_replicas, 0);
        assert!(!c.is_ready());
    }

    #[test]
    fn old_replicas_are_counted_as_the_ready_ones() {
        // The new pod is ready and the old replica not yet scaled down: the new one counts.
        let d = deployment(2, 1, d_status(2, 2, 1, 2));
        assert_eq!(deployment_readiness(&d).ready_replicas, 1);
        // Two new pods, one of them not ready, and an old replica: one counts, not Ready.
        let d = deployment(2, 2, d_status(2, 3, 2, 2));
        assert!(!deployment_readiness(&d).is_ready());
    }

    #[test]
    fn a_deployment_without_status_counts_nothing() {
        let mut d = deployment(1, 1, DeploymentStatus::default());
        d.status = None;
        assert_eq!(deployment_readiness(&d).ready_replicas, 0);
        assert_eq!(deployment_readiness(&d).replicas, 1);
    }

    fn statefulset(current: &str, update: &str, ready: i32, updated: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                replicas: 3,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some(current.to_owned()),
                update_revision: Some(update.to_owned()),
                ..StatefulSetStatus::default()
            }),
        }
    }

    #[test]
    fn a_statefulset_mid_update_counts_only_updated_replicas() {
        let s = statefulset("rev-1", "rev-2", 3, 1);
        assert_eq!(statefulset_readiness(&s).ready_replicas, 1);
        assert!(!statefulset_readiness(&s).is_ready());
    }

    #[test]
    fn a_statefulset_at_its_update_revision_counts_its_ready_replicas() {
        let s = statefulset("rev-2", "rev-2", 3, 3);
        assert!(statefulset_readiness(&s).is_ready());
        let s = statefulset("rev-2", "rev-2", 2, 3);
        assert!(!statefulset_readiness(&s).is_ready());
    }

    #[test]
    fn a_stalled_deployment_reports_its_deadline_and_selector() {
        use k8s_openapi::api::apps::v1::DeploymentCondition;
        let mut d = deployment(2, 1, d_status(2, 2, 1, 1));
        d.metadata.name = Some("demo-ping".into());
        if let Some(spec) = d.spec.as_mut() {
            spec.selector.match_labels = Some(
                [
                    ("a".to_owned(), "1".to_owned()),
                    ("b".to_owned(), "2".to_owned()),
                ]
                .into_iter()
                .collect(),
            );
        }
        let no_deadline = deployment_rollout(&d);
        assert_eq!(no_deadline.deadline_exceeded, None);
        assert_eq!(no_deadline.selector.as_deref(), Some("a=1,b=2"));
        if let Some(status) = d.status.as_mut() {
            status.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some(PROGRESS_DEADLINE_EXCEEDED.into()),
                message: Some("ReplicaSet \"demo-ping-1\" has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]);
        }
        let r = deployment_rollout(&d);
        assert_eq!(r.name, "demo-ping");
        assert_eq!(
            r.deadline_exceeded.as_deref(),
            Some("ReplicaSet \"demo-ping-1\" has timed out progressing.")
        );
        assert!(!r.counts.is_ready());
    }

    #[test]
    fn a_statefulset_generation_not_yet_observed_counts_nothing() {
        let mut s = statefulset("rev-2", "rev-2", 3, 3);
        s.metadata.generation = Some(3);
        assert_eq!(statefulset_readiness(&s).ready_replicas, 0);
    }
}
