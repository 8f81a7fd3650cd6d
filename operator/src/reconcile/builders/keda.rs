//! KEDA's objects for pong (`spec.pong.autoscaling.engine: keda`): a ScaledObject
//! `<stack>-pong` (keda.sh/v1alpha1) targeting the pong Deployment, and the TriggerAuthentication
//! `<stack>-pong` it authenticates with.
//!
//! The trigger is KEDA's RabbitMQ scaler over the management API (`protocol: http`,
//! `mode: QueueLength`), which counts ready **and** unacknowledged messages (over AMQP it counts
//! ready ones only). The management URL in the trigger carries no credentials: the
//! TriggerAuthentication hands KEDA the `username` and `password` keys of the stack's broker
//! credentials Secret (the generated `<stack>-rabbitmq-credentials` or the user's
//! `credentialsSecret`), which KEDA's scaler puts into the URL itself. So no password is copied
//! into another Secret, and a rotated password reaches KEDA without the operator.
//!
//! Mapping of `spec.pong.autoscaling`: `minReplicas`/`maxReplicas` → `minReplicaCount`/
//! `maxReplicaCount`; `targetBacklogPerReplica` → the trigger's `value`;
//! `scaleDownDelaySeconds` → `cooldownPeriod` (the last pod before zero) and the HPA's scale-down
//! stabilisation window, scaling in one pod per [`SCALE_DOWN_PERIOD_SECONDS`] like the operator's
//! one step at a time. `maxDrainSeconds` has no KEDA equivalent.
//!
//! k8s-openapi has no KEDA types: both objects are built from the typed structs below and carried
//! as [`DynamicObject`]s. Pure: no client, no clock.

use kube::api::{DynamicObject, TypeMeta};
use serde::Serialize;

use super::common::{RABBITMQ_MANAGEMENT_PORT, object_meta, partitions_regex, service_host};
use crate::apis::{OptionalApi, ServedApis};
use crate::labels::Component;
use crate::reconcile::desired::KedaObjects;
use crate::reconcile::validate::ValidatedStack;

/// How often KEDA reads the queue (its default is 30 s; the operator's own loop reads every 5 s).
pub const POLLING_INTERVAL_SECONDS: i32 = 5;
/// KEDA's HPA removes at most one pod per this many seconds once the stabilisation window passed.
pub const SCALE_DOWN_PERIOD_SECONDS: i32 = 15;
/// The broker's default virtual host, where the stack's queue lives.
const VHOST: &str = "/";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaledObjectSpec {
    scale_target_ref: ScaleTargetRef,
    min_replica_count: i32,
    max_replica_count: i32,
    polling_interval: i32,
    cooldown_period: i32,
    advanced: Advanced,
    triggers: Vec<Trigger>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaleTargetRef {
    api_version: &'static str,
    kind: &'static str,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Advanced {
    horizontal_pod_autoscaler_config: HpaConfig,
}

#[derive(Serialize)]
struct HpaConfig {
    behavior: Behavior,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Behavior {
    scale_down: ScaleDown,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaleDown {
    stabilization_window_seconds: i32,
    policies: Vec<Policy>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    #[serde(rename = "type")]
    type_: &'static str,
    value: i32,
    period_seconds: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Trigger {
    #[serde(rename = "type")]
    type_: &'static str,
    metadata: TriggerMetadata,
    authentication_ref: AuthenticationRef,
}

/// KEDA reads every trigger metadata value as a string.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerMetadata {
    protocol: &'static str,
    mode: &'static str,
    value: String,
    queue_name: String,
    host: String,
    vhost_name: &'static str,
    /// `"true"` with several partitions: `queue_name` is then a regular expression matching
    /// every partition's queue, and KEDA sums their lengths (`operation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    use_regex: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'static str>,
}

/// The queue KEDA reads: the queue itself, or with several partitions a regular expression
/// matching `<queue>` and `<queue>.<n>` (never `<queue>.dead`), whose lengths KEDA sums.
fn queue_selector(stack: &ValidatedStack) -> (String, Option<&'static str>, Option<&'static str>) {
    let queue = &stack.rabbitmq.queue;
    if stack.rabbitmq.partitions <= 1 {
        return (queue.clone(), None, None);
    }
    (
        format!("^{}$", partitions_regex(queue, "")),
        Some("true"),
        Some("sum"),
    )
}

#[derive(Serialize)]
struct AuthenticationRef {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerAuthenticationSpec {
    secret_target_ref: Vec<SecretTargetRef>,
}

#[derive(Serialize)]
struct SecretTargetRef {
    parameter: &'static str,
    name: String,
    key: &'static str,
}

fn dynamic(stack: &ValidatedStack, api: OptionalApi, spec: impl Serialize) -> DynamicObject {
    let resource = api.resource();
    DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata: object_meta(stack, &stack.names.pong, Component::Pong),
        data: serde_json::json!({ "spec": spec }),
    }
}

/// The broker's management API inside the cluster, without credentials.
pub fn management_host(stack: &ValidatedStack) -> String {
    format!(
        "http://{}:{RABBITMQ_MANAGEMENT_PORT}",
        service_host(stack, &stack.names.rabbitmq)
    )
}

/// The TriggerAuthentication and ScaledObject `<stack>-pong`, when the stack's autoscaling
/// engine is KEDA and the cluster serves both kinds; `None` otherwise (observe stops a stack that
/// asks for KEDA where it is not served before anything is built).
pub fn build_keda(stack: &ValidatedStack, served: ServedApis) -> Option<KedaObjects> {
    let autoscaling = stack.keda.as_ref().filter(|_| served.keda())?;
    let name = stack.names.pong.clone();
    let secret = &stack.names.credentials_secret;
    let auth = TriggerAuthenticationSpec {
        secret_target_ref: ["username", "password"]
            .into_iter()
            .map(|key| SecretTargetRef {
                parameter: key,
                name: secret.clone(),
                key,
            })
            .collect(),
    };
    let delay = autoscaling.scale_down_delay_seconds.max(0);
    let (queue_name, use_regex, operation) = queue_selector(stack);
    let spec = ScaledObjectSpec {
        scale_target_ref: ScaleTargetRef {
            api_version: "apps/v1",
            kind: "Deployment",
            name: name.clone(),
        },
        min_replica_count: autoscaling.min_replicas,
        max_replica_count: autoscaling.max_replicas,
        polling_interval: POLLING_INTERVAL_SECONDS,
        cooldown_period: delay,
        advanced: Advanced {
            horizontal_pod_autoscaler_config: HpaConfig {
                behavior: Behavior {
                    scale_down: ScaleDown {
                        stabilization_window_seconds: delay,
                        policies: vec![Policy {
                            type_: "Pods",
                            value: 1,
                            period_seconds: SCALE_DOWN_PERIOD_SECONDS,
                        }],
                    },
                },
            },
        },
        triggers: vec![Trigger {
            type_: "rabbitmq",
            metadata: TriggerMetadata {
                protocol: "http",
                mode: "QueueLength",
                value: autoscaling.target_backlog_per_replica.to_string(),
                queue_name,
                host: management_host(stack),
                vhost_name: VHOST,
                use_regex,
                operation,
            },
            authentication_ref: AuthenticationRef { name },
        }],
    };
    Some(KedaObjects {
        trigger_authentication: dynamic(stack, OptionalApi::TriggerAuthentication, auth),
        scaled_object: dynamic(stack, OptionalApi::ScaledObject, spec),
    })
}
