//! pong's autoscaler: on a timer, per stack with `spec.pong.autoscaling`, read the backlog the
//! broker holds for pong ([`signal`]), decide the replicas ([`decide`], pure) and write the
//! decision into `status.autoscaling` ([`runner`]). Never on the reconcile path.
//!
//! Ownership of the pong Deployment's `replicas`: the reconcile applies it, as for every other
//! field, from [`applied_replicas`]: the autoscaler's last decision, clamped to the spec's bounds.
//! One field manager (the reconcile's) owns it, so the autoscaler never fights the reconcile.
//! While autoscaling is on the operator *refuses* other scalers: `kubectl scale pingpongstack`
//! is rejected at admission (a CEL rule), `kubectl scale deployment` is reverted by the next
//! reconcile (a Deployment change triggers one), and a HorizontalPodAutoscaler targeting the
//! Deployment is reported in `status.autoscaling` and a Warning Event, naming it, until it is
//! removed.
//!
//! With `engine: keda` the operator renders a KEDA ScaledObject instead and its own loop skips
//! the stack ([`keda`]).
//!
//! Before a scale-in step the loop ranks pong's pods by the messages each holds and sets
//! `controller.kubernetes.io/pod-deletion-cost` on them, so the least busy one goes
//! ([`deletion_cost`]).
//!
//! This module must not write the Deployment's spec, except the one hand-over of `replicas`
//! to KEDA ([`keda::hand_over_replicas`]); the loop writes only `status.autoscaling` (with
//! [`FIELD_MANAGER`]), Events, and the pods' deletion-cost annotation (with
//! [`deletion_cost::FIELD_MANAGER`]).

pub mod decide;
pub mod deletion_cost;
pub mod keda;
pub mod local;
pub mod metrics;
pub mod runner;
pub mod signal;

use std::time::Duration;

use crate::crd::{PingPongStack, PongAutoscaling};
use decide::Policy;

/// Field manager of `status.autoscaling`.
pub const FIELD_MANAGER: &str = "pingpong-operator/autoscaler";

/// The typed policy of `spec.pong.autoscaling`.
pub fn policy(spec: &PongAutoscaling) -> Policy {
    let seconds = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    Policy {
        min: spec.min_replicas.max(0),
        max: spec.max_replicas.max(spec.min_replicas.max(0)),
        target: u64::try_from(spec.target_backlog_per_replica)
            .unwrap_or(1)
            .max(1),
        scale_down_delay: seconds(spec.scale_down_delay_seconds),
        max_drain: seconds(spec.max_drain_seconds),
    }
}

/// The pong replicas the reconcile applies: `spec.pong.replicas` without autoscaling; with it,
/// the last decision in `status.autoscaling` (before the first one: the replicas the Deployment
/// runs as `status.pong` last saw them, else `spec.pong.replicas`), clamped to
/// `minReplicas..=maxReplicas`, so turning autoscaling on, or going back from KEDA to the
/// operator's loop (whose stale decision the loop cleared), never removes a pod the bounds allow.
pub fn applied_replicas(stack: &PingPongStack) -> i32 {
    let pong = &stack.spec.pong;
    let Some(autoscaling) = &pong.autoscaling else {
        return pong.replicas;
    };
    let p = policy(autoscaling);
    let status = stack.status.as_ref();
    let decided = status
        .and_then(|s| s.autoscaling.as_ref())
        .map(|a| a.desired_replicas)
        .or_else(|| status.and_then(|s| s.pong).map(|p| p.replicas))
        .unwrap_or(pong.replicas);
    decided.clamp(p.min, p.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AutoscalingStatus, PingPongStackStatus};

    fn stack(
        replicas: i32,
        autoscaling: Option<(i32, i32)>,
        decided: Option<i32>,
    ) -> PingPongStack {
        let mut stack = PingPongStack::new("demo", Default::default());
        stack.spec.pong.replicas = replicas;
        stack.spec.pong.autoscaling = autoscaling.map(|(min, max)| PongAutoscaling {
            min_replicas: min,
            max_replicas: max,
            target_backlog_per_replica: 100,
            scale_down_delay_seconds: 60,
            max_drain_seconds: 300,
            engine: crate::crd::AutoscalingEngine::Operator,
        });
        stack.status = decided.map(|d| PingPongStackStatus {
            autoscaling: Some(AutoscalingStatus {
                desired_replicas: d,
                ..AutoscalingStatus::default()
            }),
            ..PingPongStackStatus::default()
        });
        stack
    }

    #[test]
    fn without_autoscaling_the_spec_decides() {
        assert_eq!(applied_replicas(&stack(3, None, Some(7))), 3);
    }

    #[test]
    fn with_autoscaling_the_last_decision_within_bounds() {
        assert_eq!(applied_replicas(&stack(1, Some((1, 10)), Some(7))), 7);
        assert_eq!(applied_replicas(&stack(1, Some((1, 5)), Some(7))), 5);
        assert_eq!(applied_replicas(&stack(1, Some((2, 5)), Some(0))), 2);
    }

    #[test]
    fn before_the_first_decision_the_spec_within_bounds() {
        assert_eq!(applied_replicas(&stack(3, Some((1, 10)), None)), 3);
        assert_eq!(applied_replicas(&stack(1, Some((2, 10)), None)), 2);
        assert_eq!(applied_replicas(&stack(1, Some((0, 10)), None)), 1);
    }

    #[test]
    fn before_the_first_decision_what_runs_within_bounds() {
        // Back from KEDA, which ran 6 pods: they stay until the loop's first decision.
        let mut back = stack(1, Some((1, 10)), None);
        back.status = Some(PingPongStackStatus {
            pong: Some(crate::crd::ComponentStatus {
                replicas: 6,
                ready_replicas: 6,
            }),
            ..PingPongStackStatus::default()
        });
        assert_eq!(applied_replicas(&back), 6);
        if let Some(a) = back.spec.pong.autoscaling.as_mut() {
            a.max_replicas = 4;
        }
        assert_eq!(applied_replicas(&back), 4);
    }

    #[test]
    fn policy_is_typed_and_safe() {
        let p = policy(&PongAutoscaling {
            min_replicas: 0,
            max_replicas: 4,
            target_backlog_per_replica: 0,
            scale_down_delay_seconds: 30,
            max_drain_seconds: 120,
            engine: crate::crd::AutoscalingEngine::Operator,
        });
        assert_eq!(p.target, 1);
        assert_eq!(p.scale_down_delay, Duration::from_secs(30));
        assert_eq!((p.min, p.max), (0, 4));
    }
}
