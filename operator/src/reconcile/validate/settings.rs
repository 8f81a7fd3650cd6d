//! The validated stack and its resolved settings: what the builders consume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::PeerDiscovery;
use crate::crd::{GatewayParentRef, PingPongStack, QueueType};
use crate::labels::{self, Component};
use crate::reconcile::names::ChildNames;

/// Resolved settings of the ping or pong service.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSettings {
    /// Container image.
    pub image: String,
    /// Pod replicas.
    pub replicas: i32,
    /// Requests and limits (the spec's, or the defaults).
    pub resources: ResourceRequirements,
    /// Extra user environment variables (checked: no reserved names, no duplicates).
    pub env: Vec<EnvVar>,
}

/// Where the broker keeps its data.
#[derive(Clone, Debug, PartialEq)]
pub enum DataStorage {
    /// A PersistentVolumeClaim template per broker pod.
    Persistent {
        /// Claim size.
        size: Quantity,
        /// StorageClass, or the cluster default.
        storage_class_name: Option<String>,
    },
    /// An emptyDir (data lost on reschedule).
    Ephemeral,
}

/// Resolved settings of the RabbitMQ broker.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerSettings {
    /// Container image.
    pub image: String,
    /// Broker nodes.
    pub replicas: i32,
    /// Queue name (its dead-letter queue is `<queue>.dead`).
    pub queue: String,
    /// Data storage.
    pub storage: DataStorage,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// Whether the credentials Secret is the user's (`credentialsSecret`); the operator then never
    /// writes it.
    pub user_credentials: bool,
    /// Type of the work queue (the spec's, or its default for the replica count).
    pub queue_type: QueueType,
    /// How many queues the work is spread over (1 to 32).
    pub partitions: u8,
    /// How the nodes find each other (from the replica count and the image's version).
    pub peer_discovery: PeerDiscovery,
}

/// Resolved settings of a PostgreSQL the operator provisions.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresSettings {
    /// Container image.
    pub image: String,
    /// Data storage (a claim template, or an emptyDir).
    pub storage: DataStorage,
    /// Requests and limits of the PostgreSQL container.
    pub resources: ResourceRequirements,
    /// Whether to run the postgres-exporter sidecar.
    pub metrics: bool,
    /// Image of the postgres-exporter sidecar.
    pub exporter_image: String,
}

/// Where pong keeps its messages.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreSettings {
    /// In the pong process (at most one replica).
    Memory,
    /// An existing PostgreSQL, connection settings in the user's Secret.
    ExternalPostgres {
        /// Secret with keys host, port, database, username and password.
        secret_name: String,
    },
    /// A PostgreSQL StatefulSet the operator runs.
    ProvisionedPostgres(PostgresSettings),
}

impl StoreSettings {
    /// Whether pong keeps its messages in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// The provisioned database's settings, if the operator runs one.
    pub fn provisioned(&self) -> Option<&PostgresSettings> {
        match self {
            Self::ProvisionedPostgres(settings) => Some(settings),
            _ => None,
        }
    }
}

/// Resolved settings of a Redis the operator provisions.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSettings {
    /// Container image.
    pub image: String,
    /// Requests and limits.
    pub resources: ResourceRequirements,
}

/// pong's Redis cache.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheSettings {
    /// A Redis Deployment the operator runs.
    Provisioned(RedisSettings),
    /// An existing Redis, URL in the user's Secret.
    External {
        /// Secret name.
        secret_name: String,
        /// Key of the URL.
        key: String,
    },
}

impl CacheSettings {
    /// The provisioned Redis's settings, if the operator runs one.
    pub fn provisioned(&self) -> Option<&RedisSettings> {
        match self {
            Self::Provisioned(settings) => Some(settings),
            Self::External { .. } => None,
        }
    }
}

/// Resolved Ingress settings (present only when the stack gets an Ingress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressSettings {
    /// IngressClass name (`None`: the cluster's default class).
    pub class_name: Option<String>,
    /// Host, or every host.
    pub host: Option<String>,
    /// TLS Secret for `host`.
    pub tls_secret: Option<String>,
    /// `spec.ingress.enabled` is `true`: kept even when the stack also gets an HTTPRoute.
    /// `false` means the Ingress is only the fallback of a stack that chose no route.
    pub requested: bool,
}

/// Resolved Gateway API settings (present only when `gateway` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The Gateway the HTTPRoute attaches to.
    pub parent_ref: GatewayParentRef,
    /// Host name the route matches.
    pub hostname: Option<String>,
}

/// Resolved monitoring settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoringSettings {
    /// Whether ServiceMonitors were asked for.
    pub service_monitor: bool,
    /// Extra ServiceMonitor labels, reserved keys already removed (also on the PrometheusRule).
    pub service_monitor_labels: BTreeMap<String, String>,
    /// Whether the stack's PrometheusRule was asked for.
    pub prometheus_rule: bool,
}

/// A stack that passed validation: every name derived and checked, every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedStack {
    /// Stack name.
    pub name: String,
    /// Stack namespace (also the namespace of every child).
    pub namespace: String,
    /// Stack uid; `None` only for `render` of a manifest without one (then children carry no
    /// owner reference).
    pub uid: Option<String>,
    /// `metadata.generation`, when known.
    pub generation: Option<i64>,
    /// Names of every child object.
    pub names: ChildNames,
    /// ping settings.
    pub ping: AppSettings,
    /// pong settings.
    pub pong: AppSettings,
    /// Number of messages pong keeps.
    pub pong_max_messages: i64,
    /// Where pong keeps its messages.
    pub store: StoreSettings,
    /// pong's Redis cache, when set.
    pub cache: Option<CacheSettings>,
    /// Broker settings.
    pub rabbitmq: BrokerSettings,
    /// Ingress, when the stack gets one.
    pub ingress: Option<IngressSettings>,
    /// Gateway API route, when `spec.gateway` is set or [`ValidatedStack::with_default_route`]
    /// chose the operator's default Gateway.
    pub gateway: Option<GatewaySettings>,
    /// Monitoring settings.
    pub monitoring: MonitoringSettings,
    /// OpenTelemetry traces of ping and pong, when asked for (`spec.observability.tracing`).
    pub tracing: Option<crate::crd::TracingSpec>,
    /// Whether the stack is paused.
    pub paused: bool,
    /// Whether pong's replicas follow the autoscaler (`spec.pong.autoscaling`): the operator
    /// then reads the broker's management API.
    pub autoscaling: bool,
    /// `spec.pong.autoscaling` when KEDA decides pong's replicas (`engine: keda`): the operator
    /// renders a ScaledObject and leaves the Deployment's `replicas` out of its apply.
    pub keda: Option<crate::crd::PongAutoscaling>,
    /// `status.images`: every component's image, where it came from and the newer default
    /// available to a stack that kept an older one.
    pub images: crate::crd::ComponentImages,
    /// `status.store.dataMajorVersion`: the PostgreSQL major of the provisioned database's data.
    pub postgres_data_major: Option<u32>,
    /// Changes the spec asks for that are refused while every other child is applied (a
    /// PostgreSQL major-version change): reported as problems in status.
    pub refused: Vec<crate::reconcile::health::Problem>,
    /// Which selectors the children use: [`labels::Scheme::Unique`] unless the stack's live
    /// workloads still carry an earlier release's ([`crate::reconcile::migrate`] decides).
    pub selectors: labels::SelectorPlan,
}

impl ValidatedStack {
    /// The full labels of `component`'s objects and pods, in its workload's scheme.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let scheme = self.selectors.workload(component);
        labels::component_labels(&self.name, component, scheme)
    }

    /// The selector of `component`'s workload (immutable once created).
    pub fn workload_selector(&self, component: Component) -> BTreeMap<String, String> {
        let scheme = self.selectors.workload(component);
        labels::scheme_selector(scheme, &self.name, component)
    }

    /// The selector with which Services, PDBs, NetworkPolicies and ServiceMonitors pick
    /// `component`'s pods (or Services).
    pub fn service_selector(&self, component: Component) -> BTreeMap<String, String> {
        labels::scheme_selector(self.selectors.services, &self.name, component)
    }

    /// The controller owner reference every child carries, or `None` without a uid.
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: PingPongStack::api_version(&()).into_owned(),
            kind: PingPongStack::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }

    /// The route of a stack that chose none (no `spec.gateway`, `spec.ingress.enabled` unset):
    /// an HTTPRoute to the operator's `default` Gateway, matching `spec.ingress.host`, instead
    /// of the fallback Ingress, when there is a default and the cluster serves the Gateway API
    /// (`gateway_api`). Any other stack is returned unchanged.
    pub fn with_default_route(
        mut self,
        default: Option<&GatewayParentRef>,
        gateway_api: bool,
    ) -> Self {
        let fallback = self.ingress.as_ref().filter(|i| !i.requested);
        if let (None, Some(ingress), Some(parent), true) =
            (&self.gateway, fallback, default, gateway_api)
        {
            self.gateway = Some(GatewaySettings {
                parent_ref: parent.clone(),
                hostname: ingress.host.clone(),
            });
            self.ingress = None;
        }
        self
    }

    /// The same stack with its broker kept on the image it runs (`running`: a change of series
    /// that waits, for the reason `why`), recorded in `images` as the operator's default or the
    /// spec's image (`spec_image`) with `defaults` for what is available.
    pub fn keeping_broker(
        mut self,
        running: &str,
        spec_image: bool,
        defaults: &crate::images::Images,
        why: crate::reconcile::health::Problem,
    ) -> Self {
        self.rabbitmq.image = running.to_owned();
        self.rabbitmq.peer_discovery =
            super::broker::peer_discovery(running, self.rabbitmq.replicas);
        self.images.rabbitmq =
            crate::images::resolved_image(running, spec_image, &defaults.rabbitmq);
        self.refused.push(why);
        self
    }

    /// What the stack runs with but the user should fix (`status.warnings`): an Ingress without
    /// a host matches `/ping` and `/pong` on every host, so two such stacks on the same
    /// IngressClass, in one namespace or across the cluster, take the same paths and the
    /// controller serves only one of them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(ingress) = &self.ingress
            && ingress.host.is_none()
        {
            warnings.push(format!(
                "spec.ingress.host is not set: the Ingress {} claims /ping and /pong on every host \
                 of IngressClass {}, and another stack without a host on that class (in any \
                 namespace) claims the same paths, so only one of them is served; set \
                 spec.ingress.host to a host name for this stack",
                self.name,
                ingress.class_name.as_ref().map_or_else(
                    || "(the cluster's default)".to_owned(),
                    |c| format!("{c:?}")
                )
            ));
        }
        warnings
    }

    /// The URL users curl, when the spec names a host: the Ingress host (https with a TLS
    /// Secret), else the HTTPRoute hostname. `None` when no host is configured; the status can
    /// then fall back to the Ingress load-balancer address.
    pub fn endpoint(&self) -> Option<String> {
        if let Some(ingress) = &self.ingress
            && let Some(host) = &ingress.host
        {
            let scheme = if ingress.tls_secret.is_some() {
                "https"
            } else {
                "http"
            };
            return Some(format!("{scheme}://{host}"));
        }
        self.gateway
            .as_ref()
            .and_then(|g| g.hostname.as_ref())
            .map(|host| format!("http://{host}"))
    }
}

fn requirements(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Default ping resources: requests 50m CPU / 32Mi, limit 128Mi memory.
pub fn ping_defaults() -> ResourceRequirements {
    requirements("50m", "32Mi", "128Mi")
}

/// Default pong resources: requests 50m CPU / 64Mi, limit 256Mi memory.
pub fn pong_defaults() -> ResourceRequirements {
    requirements("50m", "64Mi", "256Mi")
}

/// Default PostgreSQL resources: requests 100m CPU / 256Mi, limit 1Gi memory.
pub fn postgres_defaults() -> ResourceRequirements {
    requirements("100m", "256Mi", "1Gi")
}

/// Default Redis resources: requests 50m CPU / 64Mi, limit 256Mi memory.
pub fn redis_defaults() -> ResourceRequirements {
    requirements("50m", "64Mi", "256Mi")
}

/// Resources of the postgres-exporter sidecar: requests 10m CPU / 32Mi, limit 64Mi memory.
pub fn postgres_exporter_resources() -> ResourceRequirements {
    requirements("10m", "32Mi", "64Mi")
}

/// Default RabbitMQ resources: requests 250m CPU / 512Mi, limit 1Gi memory.
pub fn rabbitmq_defaults() -> ResourceRequirements {
    requirements("250m", "512Mi", "1Gi")
}
