//! The autoscaling part of the `PingPongStack` API: `spec.pong.autoscaling` and
//! `status.autoscaling`. Types only, like the rest of [`crate::crd`]; the decision lives in
//! [`crate::autoscale`].
//!
//! Names and meanings follow the HorizontalPodAutoscaler where they overlap (`minReplicas`,
//! `maxReplicas`, a scale-down stabilisation delay); the metric is fixed: the messages the
//! broker holds for pong (ready + unacknowledged).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `minReplicas` (as the HorizontalPodAutoscaler's).
pub const DEFAULT_MIN_REPLICAS: i32 = 1;
/// Default `targetBacklogPerReplica`.
pub const DEFAULT_TARGET_BACKLOG_PER_REPLICA: i64 = 1000;
/// Default `scaleDownDelaySeconds` (the HorizontalPodAutoscaler's default scale-down
/// stabilisation window).
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 300;
/// Default `maxDrainSeconds`.
pub const DEFAULT_MAX_DRAIN_SECONDS: i32 = 300;

/// pong scales itself on the backlog the broker holds for it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message(
    "pong.autoscaling.minReplicas must not be greater than pong.autoscaling.maxReplicas"
))]
#[serde(rename_all = "camelCase")]
pub struct PongAutoscaling {
    /// Fewest pong pods (0 to 100, default 1). 0 scales pong to zero when the queue is empty and
    /// nothing is published for `scaleDownDelaySeconds`; the first message wakes it.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub min_replicas: i32,
    /// Most pong pods (1 to 100). More than 1 needs `pong.store.type: postgres` (every replica
    /// must serve the same list).
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Messages (ready + unacknowledged) one pong pod should have waiting at most: the operator
    /// runs `ceil(backlog / targetBacklogPerReplica)` pods, earlier when the backlog grows
    /// (1 to 10000000, default 1000).
    #[serde(default = "default_target_backlog")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub target_backlog_per_replica: i64,
    /// How long the demand must stay below the current replica count before pong scales in, one
    /// pod at a time (0 to 3600, default 300, as the HorizontalPodAutoscaler's scale-down
    /// stabilisation window). Scaling out never waits.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_delay_seconds: i32,
    /// Upper bound on the time to drain the current backlog at the observed per-pod rate: pong
    /// never scales in below the pods that drain it within this many seconds (10 to 86400,
    /// default 300).
    #[serde(default = "default_max_drain")]
    #[schemars(range(min = 10, max = 86_400))]
    pub max_drain_seconds: i32,
    /// Who decides pong's replicas: `operator` (default) reads the broker and decides itself;
    /// `keda` makes the operator render a KEDA ScaledObject `<stack>-pong` (RabbitMQ scaler over
    /// the management API, so unacknowledged messages count) and a TriggerAuthentication that
    /// reads the stack's broker credentials Secret, and leave the Deployment's replicas to
    /// KEDA's HorizontalPodAutoscaler. Needs KEDA's CRDs (keda.sh/v1alpha1); without them the
    /// stack is not applied (`KedaMissing`) rather than scaled by the operator instead.
    /// `maxDrainSeconds` has no KEDA equivalent and is ignored with `keda`.
    #[serde(default, skip_serializing_if = "AutoscalingEngine::is_operator")]
    pub engine: AutoscalingEngine,
}

/// Who decides pong's replicas while `spec.pong.autoscaling` is set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AutoscalingEngine {
    /// The operator's own decision loop (`status.autoscaling`).
    #[default]
    Operator,
    /// A KEDA ScaledObject the operator renders; KEDA's HorizontalPodAutoscaler scales.
    Keda,
}

impl AutoscalingEngine {
    /// Whether this is the default, the operator's own loop.
    pub fn is_operator(&self) -> bool {
        *self == Self::Operator
    }

    /// The value as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Keda => "keda",
        }
    }
}

/// What the autoscaler last saw and decided (written only when the decision changes).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// pong replicas when the decision was taken.
    pub current_replicas: i32,
    /// pong replicas the operator applies to the Deployment.
    pub desired_replicas: i32,
    /// Messages ready in the queue plus delivered and not yet acknowledged, when decided.
    pub backlog: i64,
    /// Consumers on the queue, when decided.
    pub consumers: i64,
    /// Why: `ScaledOut`, `BacklogGrowing`, `WokenByMessage`, `ScaledIn`, `WaitingForDelay`,
    /// `DrainBound`, `AtMaximum`, `Steady`, `SignalUnavailable`.
    pub reason: String,
    /// The decision in words, with the numbers behind it.
    pub message: String,
    /// When the desired replicas last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

fn default_min_replicas() -> i32 {
    DEFAULT_MIN_REPLICAS
}

fn default_target_backlog() -> i64 {
    DEFAULT_TARGET_BACKLOG_PER_REPLICA
}

fn default_scale_down_delay() -> i32 {
    DEFAULT_SCALE_DOWN_DELAY_SECONDS
}

fn default_max_drain() -> i32 {
    DEFAULT_MAX_DRAIN_SECONDS
}
