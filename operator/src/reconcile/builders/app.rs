//! The Deployment and Service shape ping and pong share; [`super::ping`] and [`super::pong`]
//! supply what differs (name, port, extra variables, rollout strategy).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec,
    Service, ServicePort, ServiceSpec, SleepAction, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::common::{
    AMQP_PORT, APP_UID, HTTP_PORT_NAME, HTTP_SERVICE_PORT, METRICS_PATH, PASSWORD_KEY,
    USERNAME_KEY, config_hash, env_from_field, env_value, http_probe, object_meta, pod_meta,
    restricted_container_security_context, restricted_pod_security_context, scrape_annotations,
    service_host,
};
use super::secret_files::{
    BROKER_CREDENTIALS_DIR, BROKER_CREDENTIALS_VOLUME, SecretFiles, file_path,
};
use crate::labels::Component;
use crate::reconcile::validate::{AppSettings, ValidatedStack};

/// How long ping and pong keep serving after they are asked to stop, before SIGTERM.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// What differs between the ping and pong workloads.
pub struct AppParams<'a> {
    /// Component (ping or pong).
    pub component: Component,
    /// Deployment and Service name.
    pub name: &'a str,
    /// Container name (`ping` or `pong`).
    pub container: &'static str,
    /// Resolved settings from the spec.
    pub settings: &'a AppSettings,
    /// Container port of API, health and metrics.
    pub port: i32,
    /// Component-specific operator variables, appended after the common ones.
    pub extra_env: Vec<EnvVar>,
    /// Component-specific Secrets mounted as files, after the broker credentials.
    pub extra_files: Vec<SecretFiles>,
    /// The rollout strategy; `None` leaves the API default (`RollingUpdate`, 25%/25%).
    pub strategy: Option<DeploymentStrategy>,
}

/// The effective configuration hashed into the pod-template annotation: the image, every
/// variable, the mounted Secrets and the name of the credentials Secret. The content of the
/// Secrets the pods read is followed by [`crate::labels::SECRET_DIGEST`] (see
/// [`super::secret_digest`]), so rotated credentials roll the pods.
#[derive(Serialize)]
struct HashedConfig<'a> {
    image: &'a str,
    env: &'a [EnvVar],
    volumes: Vec<&'a Volume>,
    credentials_secret: &'a str,
}

/// The broker credentials Secret's `username` and `password` as files.
pub fn broker_credential_files(stack: &ValidatedStack) -> SecretFiles {
    SecretFiles::new(
        BROKER_CREDENTIALS_VOLUME,
        &stack.names.credentials_secret,
        &[USERNAME_KEY, PASSWORD_KEY],
        BROKER_CREDENTIALS_DIR,
    )
}

/// The operator-managed variables followed by the user's extra ones (validation rejected user
/// variables with reserved names, so the broker credentials cannot be overridden). The broker
/// credentials are files ([`broker_credential_files`]), read again on every reconnect.
pub fn container_env(stack: &ValidatedStack, params: &AppParams<'_>) -> Vec<EnvVar> {
    let mut env = vec![
        env_value("LISTEN_ADDR", format!("0.0.0.0:{}", params.port)),
        env_value("RABBITMQ_HOST", service_host(stack, &stack.names.rabbitmq)),
        env_value("RABBITMQ_PORT", AMQP_PORT.to_string()),
        env_value("RABBITMQ_VHOST", "/"),
        env_value(
            "RABBITMQ_DEFAULT_USER_FILE",
            file_path(BROKER_CREDENTIALS_DIR, USERNAME_KEY),
        ),
        env_value(
            "RABBITMQ_DEFAULT_PASS_FILE",
            file_path(BROKER_CREDENTIALS_DIR, PASSWORD_KEY),
        ),
        env_value("RABBITMQ_QUEUE", stack.rabbitmq.queue.clone()),
        env_value("RABBITMQ_QUEUE_TYPE", stack.rabbitmq.queue_type.as_str()),
        env_value("LOG_FORMAT", "json"),
    ];
    // Only when asked for: a stack of one partition keeps the pod template it had before
    // partitions existed, so upgrading the operator rolls nothing.
    if stack.rabbitmq.partitions > 1 {
        env.insert(
            env.len() - 1,
            env_value("RABBITMQ_PARTITIONS", stack.rabbitmq.partitions.to_string()),
        );
    }
    env.extend(tracing_env(stack, params.container, params.name));
    env.extend(params.extra_env.iter().cloned());
    // A user LOG_FORMAT or RUST_LOG replaces the operator's default rather than duplicating it.
    for user in &params.settings.env {
        env.retain(|e| e.name != user.name);
    }
    env.extend(params.settings.env.iter().cloned());
    env
}

/// The standard OpenTelemetry variables of `spec.observability.tracing` (none when unset): the
/// OTLP/HTTP endpoint, a parent-based ratio sampler, the service name (`ping` or `pong`) and the
/// Kubernetes resource attributes that tell one pod's spans from another's (the pod name through
/// the downward API). User `env` entries with these names replace them, as for `LOG_FORMAT`.
pub fn tracing_env(stack: &ValidatedStack, container: &str, deployment: &str) -> Vec<EnvVar> {
    let Some(tracing) = &stack.tracing else {
        return Vec::new();
    };
    vec![
        env_value("OTEL_EXPORTER_OTLP_ENDPOINT", tracing.endpoint.clone()),
        env_value("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        env_value(
            "OTEL_TRACES_SAMPLER_ARG",
            tracing.sampling_ratio.to_string(),
        ),
        env_value("OTEL_SERVICE_NAME", container),
        env_from_field(OTEL_POD_NAME, "metadata.name"),
        // Namespace and Deployment names are DNS labels: nothing in them needs percent-encoding.
        env_value(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!(
                "k8s.namespace.name={namespace},k8s.deployment.name={deployment},k8s.pod.name=$({OTEL_POD_NAME})",
                namespace = stack.namespace,
            ),
        ),
    ]
}

/// The variable holding the pod's name for `OTEL_RESOURCE_ATTRIBUTES` (defined before it, as
/// `$(VAR)` expansion requires).
const OTEL_POD_NAME: &str = "OTEL_K8S_POD_NAME";

/// The Deployment of ping or pong.
pub fn build_app_deployment(stack: &ValidatedStack, params: &AppParams<'_>) -> Deployment {
    let env = container_env(stack, params);
    let mut files = vec![broker_credential_files(stack)];
    files.extend(params.extra_files.iter().cloned());
    let hash = config_hash(&HashedConfig {
        image: &params.settings.image,
        env: &env,
        volumes: files.iter().map(|f| &f.volume).collect(),
        credentials_secret: &stack.names.credentials_secret,
    });
    let container = Container {
        name: params.container.to_owned(),
        image: Some(params.settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.to_owned()),
            container_port: params.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        volume_mounts: Some(files.iter().map(|f| f.mount.clone()).collect()),
        resources: Some(params.settings.resources.clone()),
        readiness_probe: Some(http_probe("/readyz", HTTP_PORT_NAME, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", HTTP_PORT_NAME, 10, 3)),
        security_context: Some(restricted_container_security_context(APP_UID, true)),
        // Keep serving while the endpoints controller and the ingress controller drop the pod,
        // so a rollout causes no 502s. The `sleep` action needs no shell (distroless images).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            post_start: None,
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    Deployment {
        metadata: object_meta(stack, params.name, params.component),
        spec: Some(DeploymentSpec {
            replicas: Some(params.settings.replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(stack.workload_selector(params.component)),
                match_expressions: None,
            },
            strategy: params.strategy.clone(),
            template: PodTemplateSpec {
                metadata: Some(pod_meta(
                    stack,
                    params.component,
                    scrape_annotations(params.port, METRICS_PATH, hash),
                )),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(files.into_iter().map(|f| f.volume).collect()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // fsGroup: the credential files (mode 0440) belong to the app's group.
                    security_context: Some(restricted_pod_security_context(APP_UID, Some(APP_UID))),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service of ping or pong: port 80 (`http`) to the container's `http` port.
pub fn build_app_service(stack: &ValidatedStack, params: &AppParams<'_>) -> Service {
    Service {
        metadata: object_meta(stack, params.name, params.component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(stack.service_selector(params.component)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_owned()),
                port: HTTP_SERVICE_PORT,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
