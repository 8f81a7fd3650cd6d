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
//! This module does no I/O; apply and observe call it on the objects they read.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use crate::crd::ComponentStatus;

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
    fn a_statefulset_generation_not_yet_observed_counts_nothing() {
        let mut s = statefulset("rev-2", "rev-2", 3, 3);
        s.metadata.generation = Some(3);
        assert_eq!(statefulset_readiness(&s).ready_replicas, 0);
    }
}
