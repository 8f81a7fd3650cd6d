//! The `PingPongStack` API (`pingpong.dev/v1alpha1`): spec and status types, nothing else.
//!
//! Every field is defaulted, so `spec: {}` is a complete stack. The `///` docs become the CRD
//! descriptions that `kubectl explain` prints. Schema-level checks (ranges, patterns, enums, the
//! CEL rule on `pong.replicas`) live here as attributes; everything the schema cannot express is
//! checked in [`crate::reconcile::validate`]. The CRD document itself is produced by
//! [`crate::crdgen`], which also adds the quantity pattern to every quantity field. The pong
//! store and cache types live in `crd/store.rs` and are re-exported here.

mod autoscaling;
mod broker_cluster;
mod observability;
mod store;
mod upgrade;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use autoscaling::{
    AutoscalingEngine, AutoscalingStatus, DEFAULT_MAX_DRAIN_SECONDS, DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS, DEFAULT_TARGET_BACKLOG_PER_REPLICA, PongAutoscaling,
};
pub use broker_cluster::{BrokerClusterState, BrokerClusterStatus, BrokerPodView};
pub use observability::{DEFAULT_SAMPLING_RATIO, ObservabilitySpec, TracingSpec};
pub use store::{
    CacheSpec, CacheStatus, DEFAULT_REDIS_URL_KEY, ExternalPostgres, ExternalRedis, Placement,
    PostgresSpec, ProvisionedPostgres, ProvisionedRedis, StoreSpec, StoreStatus, StoreType,
};
pub use upgrade::{ComponentImages, ImageSource, ResolvedImage, UpgradePolicy};

/// Default number of ping and pong replicas.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Default RabbitMQ queue name.
pub const DEFAULT_QUEUE: &str = "pingpong";
/// Default number of messages pong keeps in memory.
pub const DEFAULT_MAX_MESSAGES: i64 = 100_000;
/// Default size of each RabbitMQ data volume.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// Desired state of a ping/pong stack: a ping service that publishes to RabbitMQ, a pong service
/// that consumes and serves the messages, the broker itself, and the route that exposes them.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pingpong.dev",
    version = "v1alpha1",
    kind = "PingPongStack",
    plural = "pingpongstacks",
    shortname = "pps",
    namespaced,
    status = "PingPongStackStatus",
    doc = "A ping/pong stack: ping and pong services over a RabbitMQ broker, managed by pingpong-operator.",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.pong.replicas",
        status_replicas_path = ".status.pong.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether every component is ready"
    ),
    printcolumn(
        name = "Ping",
        type_ = "integer",
        json_path = ".status.ping.readyReplicas",
        description = "Ready ping replicas"
    ),
    printcolumn(
        name = "Pong",
        type_ = "integer",
        json_path = ".status.pong.readyReplicas",
        description = "Ready pong replicas"
    ),
    printcolumn(
        name = "Broker",
        type_ = "integer",
        json_path = ".status.rabbitmq.readyReplicas",
        description = "Ready RabbitMQ replicas"
    ),
    printcolumn(
        name = "Store",
        type_ = "string",
        json_path = ".status.store.type",
        description = "Where pong keeps the messages (memory or postgres)"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "URL that serves /ping and /pong"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PingPongStackSpec {
    /// The ping service: `POST /ping` publishes a message and answers after the broker confirmed it.
    #[serde(default)]
    pub ping: PingSpec,
    /// The pong service: consumes the queue and serves the stored messages on `GET /pong`.
    #[serde(default)]
    pub pong: PongSpec,
    /// The RabbitMQ broker (a StatefulSet) that carries the messages from ping to pong.
    #[serde(default)]
    pub rabbitmq: RabbitMqSpec,
    /// The Ingress that routes `/ping` and `/pong` to the services. With `enabled` unset, the
    /// stack gets an Ingress only when it gets no HTTPRoute: neither `gateway` is set nor the
    /// operator has a default Gateway on a cluster that serves the Gateway API.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// The Gateway API route: the operator creates an HTTPRoute (gateway.networking.k8s.io/v1)
    /// attached to this Gateway for `/ping` and `/pong`. Unset: the operator's default Gateway
    /// (`PINGPONG_DEFAULT_GATEWAY`, the chart's `defaultGateway`) where the Gateway API is
    /// served and `ingress.enabled` is not true; else an Ingress. Set `ingress.enabled: true` to
    /// serve through both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// Prometheus integration. Pods always carry `prometheus.io/*` scrape annotations.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Traces: `tracing` sends OpenTelemetry spans of ping and pong to an OTLP/HTTP endpoint.
    #[serde(default, skip_serializing_if = "ObservabilitySpec::is_empty")]
    pub observability: ObservabilitySpec,
    /// Stop changing child objects. The operator keeps reporting status and sets the `Paused`
    /// condition; set back to false to resume.
    #[serde(default)]
    pub paused: bool,
    /// What an operator upgrade that changes a default image does to this stack: `Manual` (the
    /// default) keeps the images recorded in `status.images` and reports a newer default there
    /// and in the `UpgradeAvailable` condition; `Automatic` rolls to the new defaults. An image
    /// named in the spec is never changed by an operator upgrade.
    #[serde(default)]
    pub upgrade_policy: UpgradePolicy,
}

/// Settings of the ping (publisher) service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingSpec {
    /// Number of ping pods (0 to 100).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image of the ping service. Defaults to the operator's configured ping image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// CPU and memory requests/limits of the ping container. Defaults to requests of 50m CPU and
    /// 32Mi memory with a 128Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables for the ping container. They cannot override the variables the
    /// operator sets (broker address, credentials, queue, listen address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

impl Default for PingSpec {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            image: None,
            resources: None,
            env: Vec::new(),
        }
    }
}

/// Settings of the pong (consumer) service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.replicas <= 1 || (has(self.store) && self.store.type == 'postgres')"
).message(
    "pong.replicas must be 0 or 1 while pong.store.type is memory: each replica would hold a different part of the stream; set pong.store.type: postgres to run more"
))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.autoscaling) || self.autoscaling.maxReplicas <= 1 || (has(self.store) && self.store.type == 'postgres')"
).message(
    "pong.autoscaling.maxReplicas above 1 needs pong.store.type: postgres: with the memory store each replica would hold a different part of the stream; set pong.store.type: postgres or maxReplicas: 1"
))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas"
).message(
    "pong.replicas cannot change while pong.autoscaling is set: the operator decides pong's replicas (this is what `kubectl scale pingpongstack` changes); remove pong.autoscaling to scale by hand, or change minReplicas/maxReplicas"
))]
#[serde(rename_all = "camelCase")]
pub struct PongSpec {
    /// Number of pong pods (0 to 100). At most 1 while `store.type` is `memory`: each replica
    /// would hold a different part of the stream (rejected by a validation rule). With
    /// `store.type: postgres` every replica serves the same list. `kubectl scale pingpongstack`
    /// sets it. Ignored while `autoscaling` is set (then it cannot change: the operator decides).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image of the pong service. Defaults to the operator's configured pong image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// CPU and memory requests/limits of the pong container. Defaults to requests of 50m CPU and
    /// 64Mi memory with a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Number of messages pong keeps; the oldest are dropped beyond it (1 to 10000000).
    #[serde(default = "default_max_messages")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_messages: i64,
    /// Extra environment variables for the pong container. They cannot override the variables the
    /// operator sets (broker address, credentials, queue, listen address, PONG_MAX_MESSAGES,
    /// PONG_STORE, PG*, DATABASE_URL, REDIS_URL); optional pong settings such as
    /// `PONG_DB_POOL_SIZE` or `PONG_CACHE_PREFIX` belong here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Where pong keeps the messages: in memory (default) or in PostgreSQL (external or
    /// provisioned by the operator). `store: {type: postgres}` alone provisions a database.
    #[serde(default)]
    pub store: StoreSpec,
    /// Optional Redis cache of `GET /pong` responses, provisioned by the operator or external.
    /// Unset: no cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Scale pong on the backlog the broker holds for it (ready + unacknowledged messages) and
    /// its growth, between `minReplicas` and `maxReplicas`. Unset: `replicas` pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<PongAutoscaling>,
}

impl Default for PongSpec {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            image: None,
            resources: None,
            max_messages: DEFAULT_MAX_MESSAGES,
            env: Vec::new(),
            store: StoreSpec::default(),
            cache: None,
            autoscaling: None,
        }
    }
}

/// Settings of the RabbitMQ broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("self.replicas != 2").message(
    "rabbitmq.replicas must not be 2: a two-node RabbitMQ cluster loses its majority (and every quorum queue) when either node is down; use 1, 3 or more (an odd number)"
))]
#[x_kube(validation = kube::core::Rule::new("self.replicas >= oldSelf.replicas").message(
    "rabbitmq.replicas cannot be decreased: the remaining nodes keep waiting for the departed ones and quorum queues can lose their majority; create a new stack with fewer nodes and move the traffic"
))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.storage) || !self.storage.ephemeral || self.replicas == 1"
).message(
    "rabbitmq.storage.ephemeral needs rabbitmq.replicas: 1: a restarted node of an ephemeral cluster comes back empty under its old name and cannot rejoin; use persistent storage for a cluster"
))]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.queueType) ? self.queueType : (self.replicas >= 3 ? 'quorum' : 'classic')) == (has(oldSelf.queueType) ? oldSelf.queueType : (oldSelf.replicas >= 3 ? 'quorum' : 'classic'))"
).message(
    "rabbitmq.queueType (or its default, quorum from 3 replicas, else classic) cannot change on an existing stack: RabbitMQ refuses to declare the queue again with another type; set queueType to the current type to keep it, or create a new stack (a new queue) and drain the old one"
))]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.partitions) ? self.partitions : 1) >= (has(oldSelf.partitions) ? oldSelf.partitions : 1)"
).message(
    "rabbitmq.partitions (default 1) cannot be decreased: the messages waiting in the removed partitions' queues would never be consumed; create a new stack with fewer partitions and move the traffic once the old queues are drained"
))]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqSpec {
    /// Container image of RabbitMQ (an official `rabbitmq:4.x-management` tag or compatible).
    /// Defaults to the operator's configured RabbitMQ image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Number of broker nodes (1 to 9, not 2). More than one forms a cluster (RabbitMQ 3.10 or
    /// newer): the nodes find each other through Kubernetes peer discovery from RabbitMQ 4.1, by
    /// their stable StatefulSet names before; use an odd number. Can grow, never shrink (rejected
    /// at admission).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Name of the durable queue ping publishes to and pong consumes from. Its dead-letter queue is
    /// `<queue>.dead`. Letters, digits, `.`, `_`, `:` and `-`; must not start with `amq.`. Fixed
    /// at creation (a change is rejected): a renamed queue would strand the messages waiting in
    /// the old one and in its dead-letter queue.
    #[serde(default = "default_queue")]
    #[schemars(length(min = 1, max = 200), pattern(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message(
        "rabbitmq.queue cannot be changed after creation: ping would publish to the new queue while the backlog and the dead-letter queue <queue>.dead stay in the old ones, which nothing consumes; create a new stack with the new queue and move the traffic once the old queue is drained"
    ))]
    pub queue: String,
    /// Storage of the broker's data directory. Fixed at creation (it becomes the StatefulSet's
    /// volumeClaimTemplates, which Kubernetes does not let change): a change is rejected.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message(
        "rabbitmq.storage cannot be changed after creation: it is the broker StatefulSet's volumeClaimTemplates, which Kubernetes does not let change; create a new stack, or expand the PersistentVolumeClaims data-<stack>-rabbitmq-N yourself"
    ))]
    pub storage: StorageSpec,
    /// CPU and memory requests/limits of the RabbitMQ container. Defaults to requests of 250m CPU
    /// and 512Mi memory with a 1Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Name of an existing Secret in the stack's namespace with keys `username` and `password`
    /// to use as the broker credentials. When unset, the operator generates a random user and
    /// password once, in the Secret `<stack>-rabbitmq-credentials`, and never rotates them by
    /// itself. Changing the Secret's content (or this name) rotates them: the broker nodes
    /// restart and import the new user and password, and ping and pong roll with them. The
    /// Secret must carry the label `pingpong.dev/referable=true` (or be in the operator's
    /// `allowedSecrets`), else the stack is `SecretNotReferable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Type of the work queue and its dead-letter queue: `quorum` (replicated on every node,
    /// survives losing a minority of them) or `classic` (on one node). Unset: `quorum` with 3 or
    /// more replicas, else `classic`. Passed to ping and pong as `RABBITMQ_QUEUE_TYPE`. Fixed for
    /// the life of the stack (rejected at admission): RabbitMQ cannot change a queue's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<QueueType>,
    /// How many queues the work is spread over (1 to 32, default 1). One queue runs on one core
    /// of one broker node whatever the cluster's size; N partitions are N queues (`<queue>`,
    /// `<queue>.1` ... `<queue>.<N-1>`, each with its dead-letter queue), ping sends each
    /// message to the partition its id selects and every pong replica consumes them all. With
    /// several broker nodes, the queues' leaders are spread over them. Can grow (the new
    /// queues are declared and ping and pong roll), never shrink (rejected at admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub partitions: Option<i32>,
}

impl Default for RabbitMqSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: DEFAULT_REPLICAS,
            queue: DEFAULT_QUEUE.to_owned(),
            storage: StorageSpec::default(),
            resources: None,
            credentials_secret: None,
            queue_type: None,
            partitions: None,
        }
    }
}

/// RabbitMQ queue types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum QueueType {
    /// A classic queue, on one node.
    Classic,
    /// A quorum queue, replicated with Raft on every node.
    Quorum,
}

impl QueueType {
    /// The value of `RABBITMQ_QUEUE_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }

    /// The type a stack gets when `queueType` is unset: quorum from three broker nodes on.
    pub fn default_for(replicas: i32) -> Self {
        if replicas >= 3 {
            Self::Quorum
        } else {
            Self::Classic
        }
    }
}

/// Storage of a data directory (the RabbitMQ nodes', a provisioned PostgreSQL's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the PersistentVolumeClaim of each pod (a Kubernetes quantity).
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// StorageClass of the PersistentVolumeClaims. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Use an emptyDir instead of a PersistentVolumeClaim: the data (queued or stored messages)
    /// is lost when the pod is rescheduled. For development clusters.
    #[serde(default)]
    pub ephemeral: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            ephemeral: false,
        }
    }
}

/// The Ingress that routes `/ping` and `/pong`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Create the Ingress: `true` always (beside an HTTPRoute when there is one), `false` never.
    /// Unset: only when the stack gets no HTTPRoute (see `gateway`). Stacks created before
    /// HTTPRoute became the default were stored with `true` and keep their Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// IngressClass that serves the Ingress. Unset: the cluster's default IngressClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Host name the Ingress answers for (and the default HTTPRoute's hostname). Unset: every
    /// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Name of a `kubernetes.io/tls` Secret for HTTPS on `host` (requires `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret: Option<String>,
}

/// Gateway API route settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The Gateway (or one of its listeners) the HTTPRoute attaches to.
    pub parent_ref: GatewayParentRef,
    /// Host name the HTTPRoute matches. Unset: every host the listener accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
}

/// Reference to a Gateway (`gateway.networking.k8s.io`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway. Defaults to the stack's namespace; the Gateway must allow routes
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name of the Gateway listener to attach to. Unset: every listener that allows the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Prometheus integration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create ServiceMonitors (monitoring.coreos.com/v1) for ping, pong and RabbitMQ. Only takes
    /// effect when the Prometheus Operator CRD is installed.
    #[serde(default)]
    pub service_monitor: bool,
    /// Extra labels on the ServiceMonitors, for example the `release` label a Prometheus selects.
    /// Keys `app.kubernetes.io/*` are reserved and ignored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_monitor_labels: BTreeMap<String, String>,
    /// Create a PrometheusRule (monitoring.coreos.com/v1) `<stack>-alerts` with this stack's
    /// alerts: backlog growing, no consumer, slow or refused publishes, dead-lettered messages,
    /// broker memory or disk alarm, broker node down or partitioned, store errors. Each alert
    /// links to its runbook. The alerts read what the ServiceMonitors scrape, and the rule
    /// carries `serviceMonitorLabels` too (Prometheus selects rules by label as well). Only
    /// takes effect when the Prometheus Operator's PrometheusRule CRD is installed.
    #[serde(default)]
    pub prometheus_rule: bool,
}

/// Observed state of a stack, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PingPongStackStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every component is available), `Progressing`, `Degraded` (the spec cannot be
    /// realised or the API failed; the message says what to fix) and `Paused`.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Replicas of the ping Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<ComponentStatus>,
    /// Replicas of the pong Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong: Option<ComponentStatus>,
    /// Replicas of the RabbitMQ StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<ComponentStatus>,
    /// URL that serves `/ping` and `/pong`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the Secret that holds the broker credentials (keys `username` and `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// pong's store: its type, where it runs and whether it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
    /// pong's Redis cache, when `spec.pong.cache` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
    /// Things the stack runs with but that a user should fix, each a message saying what and how
    /// (today: an Ingress without `spec.ingress.host`, which claims `/ping` and `/pong` on every
    /// host of its IngressClass). Empty when there is nothing to fix; always written, so a fixed
    /// warning disappears whatever else manages the status.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// pong's autoscaler: the last decision, the numbers behind it and why. Only with
    /// `spec.pong.autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// A clustered broker's membership (`spec.rabbitmq.replicas` above 1), checked by the
    /// operator on a timer: whether every ready broker pod sees the others as running members of
    /// one cluster. `Partitioned` makes `Ready` False (reason `BrokerPartitioned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_cluster: Option<BrokerClusterStatus>,
    /// The image of every component as last applied, where it came from (`Spec` or
    /// `OperatorDefault`) and, under `upgradePolicy: Manual`, the newer default available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ComponentImages>,
}

/// Replica counts of one component.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Desired replicas.
    pub replicas: i32,
    /// Replicas that pass their readiness probe.
    pub ready_replicas: i32,
}

/// Schema of a required quantity field. [`crate::crdgen`] adds the quantity pattern.
fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "default": DEFAULT_STORAGE_SIZE,
    })
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

fn default_max_messages() -> i64 {
    DEFAULT_MAX_MESSAGES
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.to_owned())
}
