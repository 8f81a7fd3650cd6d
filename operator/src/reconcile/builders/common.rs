//! Pieces every builder shares: ports, object metadata with owner reference, the restricted
//! security contexts, probes, env helpers and the configuration hash.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, Probe, SeccompProfile, SecretKeySelector,
    SecurityContext, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::labels::{self, Component};
use crate::reconcile::validate::{DataStorage, ValidatedStack};

/// Container port of the ping service (API, health and metrics).
pub const PING_PORT: i32 = 8001;
/// Container port of the pong service (API, health and metrics).
pub const PONG_PORT: i32 = 8002;
/// Service port of ping and pong (the Ingress and HTTPRoute target it).
pub const HTTP_SERVICE_PORT: i32 = 80;
/// Name of the ping/pong container and Service port.
pub const HTTP_PORT_NAME: &str = "http";
/// AMQP port.
pub const AMQP_PORT: i32 = 5672;
/// RabbitMQ Prometheus plugin port.
pub const RABBITMQ_METRICS_PORT: i32 = 15692;
/// RabbitMQ management UI/API port (ClusterIP only).
pub const RABBITMQ_MANAGEMENT_PORT: i32 = 15672;
/// Erlang port mapper daemon.
pub const EPMD_PORT: i32 = 4369;
/// Erlang distribution (inter-node) port.
pub const ERLANG_DIST_PORT: i32 = 25672;
pub use crate::credentials::{PASSWORD_KEY, USERNAME_KEY};
/// Secret key of the Erlang cookie.
pub const ERLANG_COOKIE_KEY: &str = "cookie";
/// Numeric user (and group) of the ping and pong images.
pub const APP_UID: i64 = 65532;
/// Numeric user (and group) of the official RabbitMQ image.
pub const RABBITMQ_UID: i64 = 999;
/// PostgreSQL port.
pub const POSTGRES_PORT: i32 = 5432;
/// Port of the postgres-exporter sidecar's metrics.
pub const POSTGRES_EXPORTER_PORT: i32 = 9187;
/// Redis port.
pub const REDIS_PORT: i32 = 6379;
/// Numeric user (and group) of the official Debian-based PostgreSQL image (`postgres`).
pub const POSTGRES_UID: i64 = 999;
/// Numeric user (and group) of the official Redis image (`redis`).
pub const REDIS_UID: i64 = 999;
/// Numeric user of the postgres-exporter image (`nobody`).
pub const EXPORTER_UID: i64 = 65534;
/// User of a provisioned PostgreSQL (its owner; pong creates its tables as this user).
pub const POSTGRES_USER: &str = "pong";
/// Database of a provisioned PostgreSQL.
pub const POSTGRES_DATABASE: &str = "pong";
/// PostgreSQL Secret key of the host name.
pub const HOST_KEY: &str = "host";
/// PostgreSQL Secret key of the port.
pub const PORT_KEY: &str = "port";
/// PostgreSQL Secret key of the database name.
pub const DATABASE_KEY: &str = "database";
/// Path of the Prometheus metrics endpoint of ping and pong.
pub const METRICS_PATH: &str = "/metrics";

/// Metadata of a child: deterministic name, the stack's namespace, the component's full label
/// set and the controller owner reference (when the stack's uid is known).
pub fn object_meta(stack: &ValidatedStack, name: &str, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(stack.namespace.clone()),
        labels: Some(stack.labels(component)),
        owner_references: stack.owner_reference().map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// Pod template metadata: the component's full labels and the given annotations.
pub fn pod_meta(
    stack: &ValidatedStack,
    component: Component,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        labels: Some(stack.labels(component)),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// Pod security context of the Kubernetes "restricted" profile with a numeric user.
pub fn restricted_pod_security_context(uid: i64, fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group,
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// Container security context of the "restricted" profile: no privilege escalation, every
/// capability dropped, non-root numeric user, RuntimeDefault seccomp.
pub fn restricted_container_security_context(
    uid: i64,
    read_only_root_filesystem: bool,
) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root_filesystem),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// An HTTP GET probe on the named port.
pub fn http_probe(
    path: &str,
    port_name: &str,
    period_seconds: i32,
    failure_threshold: i32,
) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port_name.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The labels of a claim template: only labels that never change (Kubernetes refuses any change
/// to a StatefulSet's claim templates): the selector labels, stack and role. A workload that
/// keeps an earlier release's selector keeps the labels that release gave its templates.
fn claim_labels(stack: &ValidatedStack, component: Component) -> BTreeMap<String, String> {
    match stack.selectors.workload(component) {
        labels::Scheme::Unique => stack.workload_selector(component),
        labels::Scheme::Legacy => stack.labels(component),
    }
}

/// The StatefulSet claim template `volume` (ReadWriteOnce, its never-changing labels) for
/// persistent storage, or `None` for an ephemeral one (the pod then mounts an emptyDir).
pub fn data_claim_templates(
    stack: &ValidatedStack,
    component: Component,
    volume: &str,
    storage: &DataStorage,
) -> Option<Vec<PersistentVolumeClaim>> {
    let DataStorage::Persistent {
        size,
        storage_class_name,
    } = storage
    else {
        return None;
    };
    Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(volume.to_owned()),
            labels: Some(claim_labels(stack, component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }])
}

/// A probe that runs `command` in the container.
pub fn exec_probe(
    command: &[&str],
    period_seconds: i32,
    timeout_seconds: i32,
    failure_threshold: i32,
) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(timeout_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// An unanchored regular expression matching the queue of every partition of `queue`
/// (`<queue>` and `<queue>.<n>`), each followed by `suffix` (`""`, or `".dead"` for their
/// dead-letter queues), and nothing else: what KEDA's trigger and the alerts select.
pub fn partitions_regex(queue: &str, suffix: &str) -> String {
    // Queue names are `[A-Za-z0-9][A-Za-z0-9._:-]*`: only `.` is special in a regex.
    let escape = |text: &str| text.replace('.', "\\.");
    format!("{}(\\.[0-9]+)?{}", escape(queue), escape(suffix))
}

/// A plain environment variable.
pub fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An environment variable read from a Secret key.
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// An environment variable from the pod's own metadata (downward API).
pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Hex sha256 of the JSON form of `config`: the pod-template annotation that rolls pods when
/// their effective configuration changes. Callers pass names of Secrets, never their contents
/// (what pods read from Secrets is followed by [`super::secret_digest`]).
pub fn config_hash(config: &impl Serialize) -> String {
    // Serializing plain data (strings, numbers, k8s-openapi types) into a Vec cannot fail; an
    // empty input still hashes deterministically if it ever did.
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Prometheus scrape annotations plus the configuration hash.
pub fn scrape_annotations(port: i32, path: &str, hash: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CONFIG_HASH.to_owned(), hash),
        (labels::PROMETHEUS_SCRAPE.to_owned(), "true".to_owned()),
        (labels::PROMETHEUS_PORT.to_owned(), port.to_string()),
        (labels::PROMETHEUS_PATH.to_owned(), path.to_owned()),
    ])
}

/// In-cluster DNS name of a Service in the stack's namespace (without the cluster domain, so
/// it works whatever the domain is).
pub fn service_host(stack: &ValidatedStack, service: &str) -> String {
    format!("{service}.{}.svc", stack.namespace)
}
