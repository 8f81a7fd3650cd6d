//! The provisioned Redis of pong's cache: a one-replica Deployment (`<stack>-redis`) and its
//! ClusterIP Service on 6379.
//!
//! A cache only: no persistence (`--save "" --appendonly no`), `/data` is an emptyDir, and the
//! pod passes the "restricted" profile with the image's user 999 and a read-only root
//! filesystem. No password: the NetworkPolicy admits only this stack's pong pods, and the
//! cache holds nothing that `GET /pong` does not serve anyway.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::common::{
    REDIS_PORT, REDIS_UID, config_hash, exec_probe, object_meta, pod_meta,
    restricted_container_security_context, restricted_pod_security_context, service_host,
};
use crate::labels::{self, Component};
use crate::reconcile::validate::{RedisSettings, ValidatedStack};

/// Name of the Redis container port (and Service port).
pub const REDIS_PORT_NAME: &str = "redis";

/// Arguments of `redis-server`: a cache without persistence (no RDB snapshots, no AOF), and no
/// protected mode (the NetworkPolicy guards the port).
///
/// `no` travels inside the option argument (`"--appendonly no"`, which redis-server accepts
/// since 7.0) because a bare `no` list item is a boolean to YAML 1.1 parsers such as kubectl's:
/// `render` output would not apply.
const REDIS_ARGS: [&str; 5] = [
    "redis-server",
    "--save",
    "",
    "--appendonly no",
    "--protected-mode no",
];

/// What rolls the Redis pod when it changes.
#[derive(Serialize)]
struct HashedConfig<'a> {
    image: &'a str,
    args: &'a [&'a str],
}

/// `REDIS_URL` of the provisioned Redis: database 0 behind the Service.
pub fn provisioned_redis_url(stack: &ValidatedStack) -> String {
    format!(
        "redis://{}:{REDIS_PORT}/0",
        service_host(stack, &stack.names.redis)
    )
}

fn redis_container(settings: &RedisSettings) -> Container {
    Container {
        name: "redis".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(REDIS_ARGS.map(str::to_owned).to_vec()),
        ports: Some(vec![ContainerPort {
            name: Some(REDIS_PORT_NAME.to_owned()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(settings.resources.clone()),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".to_owned(),
            mount_path: "/data".to_owned(),
            read_only: Some(false),
            ..VolumeMount::default()
        }]),
        readiness_probe: Some(exec_probe(&["redis-cli", "ping"], 5, 2, 3)),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(REDIS_PORT_NAME.to_owned()),
                host: None,
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(restricted_container_security_context(REDIS_UID, true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The Deployment `<stack>-redis`, when the cache is a provisioned Redis.
pub fn build_redis_deployment(stack: &ValidatedStack) -> Option<Deployment> {
    let settings = stack.cache.as_ref()?.provisioned()?;
    let hash = config_hash(&HashedConfig {
        image: &settings.image,
        args: &REDIS_ARGS,
    });
    Some(Deployment {
        metadata: object_meta(stack, &stack.names.redis, Component::Redis),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(stack.workload_selector(Component::Redis)),
                match_expressions: None,
            },
            // One cache instance; a replacement starts empty, which the cache tolerates.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(pod_meta(
                    stack,
                    Component::Redis,
                    BTreeMap::from([(labels::CONFIG_HASH.to_owned(), hash)]),
                )),
                spec: Some(PodSpec {
                    containers: vec![redis_container(settings)],
                    volumes: Some(vec![Volume {
                        name: "data".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security_context(
                        REDIS_UID,
                        Some(REDIS_UID),
                    )),
                    termination_grace_period_seconds: Some(10),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The ClusterIP Service `<stack>-redis` (6379), when the cache is a provisioned Redis.
pub fn build_redis_service(stack: &ValidatedStack) -> Option<Service> {
    stack.cache.as_ref()?.provisioned()?;
    Some(Service {
        metadata: object_meta(stack, &stack.names.redis, Component::Redis),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(stack.service_selector(Component::Redis)),
            ports: Some(vec![ServicePort {
                name: Some(REDIS_PORT_NAME.to_owned()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String(REDIS_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
