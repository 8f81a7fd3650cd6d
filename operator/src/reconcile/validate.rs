//! Plan step 1 (pure): turn a `PingPongStack` into a [`ValidatedStack`] or a [`ValidationError`].
//!
//! This checks everything the CRD schema cannot: child-name lengths against the 63-character DNS
//! label limit, quantities that parse and requests that fit their limits, reserved or duplicate
//! environment variables, TLS without a host, name clashes with the credentials Secret. It also
//! resolves every default (images from the operator configuration, resources), so the builders
//! never look at an `Option` in the spec. No client, clock, randomness or environment here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::{GatewayParentRef, PingPongStack};
use crate::reconcile::build::names::ChildNames;
use crate::reconcile::build::quantity;

/// Maximum length of a DNS label (RFC 1123), which bounds every child name.
pub const DNS_LABEL_MAX: usize = 63;

/// Environment variables the operator sets on ping and pong; a user `env` entry with one of these
/// names is rejected rather than silently ignored (it would otherwise replace broker credentials
/// or addresses).
pub const RESERVED_ENV: [&str; 8] = [
    "LISTEN_ADDR",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_VHOST",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "RABBITMQ_QUEUE",
    "PONG_MAX_MESSAGES",
];

/// Default container images, from the operator's configuration (`PINGPONG_*_IMAGE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDefaults {
    /// Image of the ping service.
    pub ping: String,
    /// Image of the pong service.
    pub pong: String,
    /// Image of RabbitMQ.
    pub rabbitmq: String,
}

impl Default for ImageDefaults {
    fn default() -> Self {
        Self {
            ping: "ghcr.io/pingpong-operator/ping:0.1.0".to_owned(),
            pong: "ghcr.io/pingpong-operator/pong:0.1.0".to_owned(),
            rabbitmq: "rabbitmq:4.2-management".to_owned(),
        }
    }
}

/// Why a stack cannot be realised. The message says what to fix; it becomes the message of the
/// `Degraded` condition, and [`ValidationError::kind`] its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The object has no `metadata.name`.
    #[error("the PingPongStack has no metadata.name")]
    MissingName,
    /// The object has no `metadata.namespace`.
    #[error("PingPongStack {name} has no metadata.namespace")]
    MissingNamespace {
        /// Stack name.
        name: String,
    },
    /// The stack name cannot prefix Service names.
    #[error(
        "stack name {name:?} is not usable for Service names: use lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
    )]
    InvalidName {
        /// Stack name.
        name: String,
    },
    /// A derived child name is longer than a DNS label.
    #[error(
        "stack name {stack:?} is too long: child {child:?} would have {len} characters (limit {DNS_LABEL_MAX}); use a stack name of at most {max_stack_len} characters"
    )]
    NameTooLong {
        /// Stack name.
        stack: String,
        /// The child name that does not fit.
        child: String,
        /// Its length.
        len: usize,
        /// Longest stack name that fits.
        max_stack_len: usize,
    },
    /// A replica count outside what the operator supports.
    #[error("{field} is {value}: {reason}")]
    InvalidReplicas {
        /// Spec path, e.g. `spec.pong.replicas`.
        field: &'static str,
        /// The value given.
        value: i64,
        /// What is allowed.
        reason: &'static str,
    },
    /// An image reference that is empty or contains whitespace.
    #[error("{field} {image:?} is not an image reference")]
    InvalidImage {
        /// Spec path.
        field: &'static str,
        /// The value given.
        image: String,
    },
    /// A quantity that does not parse.
    #[error("{field} {value:?} is not a Kubernetes quantity (examples: 500m, 128Mi, 1Gi)")]
    InvalidQuantity {
        /// Spec path.
        field: String,
        /// The value given.
        value: String,
    },
    /// A resource request above its limit.
    #[error("{field}: the {resource} request {request} is larger than its limit {limit}")]
    RequestExceedsLimit {
        /// Spec path of the resources block.
        field: &'static str,
        /// Resource name (cpu, memory, …).
        resource: String,
        /// Request given.
        request: String,
        /// Limit given.
        limit: String,
    },
    /// A user env entry that would replace a variable the operator sets.
    #[error(
        "{field} sets {name}, which the operator manages (broker address, credentials, queue or listen address); remove it"
    )]
    ReservedEnv {
        /// Spec path.
        field: &'static str,
        /// Variable name.
        name: String,
    },
    /// The same variable twice in a user env list.
    #[error("{field} sets {name} more than once; keep one entry")]
    DuplicateEnv {
        /// Spec path.
        field: &'static str,
        /// Variable name.
        name: String,
    },
    /// A queue name the broker would refuse or reserve.
    #[error("spec.rabbitmq.queue {queue:?} {reason}")]
    InvalidQueue {
        /// Queue name.
        queue: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `ingress.tlsSecret` without `ingress.host`.
    #[error("spec.ingress.tlsSecret is set but spec.ingress.host is not: TLS needs a host name")]
    TlsWithoutHost,
    /// `rabbitmq.credentialsSecret` names another object the operator writes.
    #[error(
        "spec.rabbitmq.credentialsSecret {name:?} is the name of a Secret the operator manages for this stack; name your own Secret differently"
    )]
    CredentialsSecretConflict {
        /// Secret name.
        name: String,
    },
}

impl ValidationError {
    /// Stable PascalCase category, used as condition reason and metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingName => "MissingName",
            Self::MissingNamespace { .. } => "MissingNamespace",
            Self::InvalidName { .. } => "InvalidName",
            Self::NameTooLong { .. } => "NameTooLong",
            Self::InvalidReplicas { .. } => "InvalidReplicas",
            Self::InvalidImage { .. } => "InvalidImage",
            Self::InvalidQuantity { .. } => "InvalidQuantity",
            Self::RequestExceedsLimit { .. } => "RequestExceedsLimit",
            Self::ReservedEnv { .. } => "ReservedEnv",
            Self::DuplicateEnv { .. } => "DuplicateEnv",
            Self::InvalidQueue { .. } => "InvalidQueue",
            Self::TlsWithoutHost => "TlsWithoutHost",
            Self::CredentialsSecretConflict { .. } => "CredentialsSecretConflict",
        }
    }
}

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
pub enum BrokerStorage {
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
    pub storage: BrokerStorage,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// Whether the credentials Secret is the user's (`credentialsSecret`); the operator then never
    /// writes it.
    pub user_credentials: bool,
}

/// Resolved Ingress settings (present only when the Ingress is enabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressSettings {
    /// IngressClass name.
    pub class_name: String,
    /// Host, or every host.
    pub host: Option<String>,
    /// TLS Secret for `host`.
    pub tls_secret: Option<String>,
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
    /// Extra ServiceMonitor labels, reserved keys already removed.
    pub service_monitor_labels: BTreeMap<String, String>,
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
    /// Broker settings.
    pub rabbitmq: BrokerSettings,
    /// Ingress, when enabled.
    pub ingress: Option<IngressSettings>,
    /// Gateway API route, when set.
    pub gateway: Option<GatewaySettings>,
    /// Monitoring settings.
    pub monitoring: MonitoringSettings,
    /// Whether the stack is paused.
    pub paused: bool,
}

impl ValidatedStack {
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

/// Validates `stack` and resolves its defaults (images from `defaults`).
pub fn validate(
    stack: &PingPongStack,
    defaults: &ImageDefaults,
) -> Result<ValidatedStack, ValidationError> {
    let name = stack
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingName)?;
    let namespace = stack
        .namespace()
        .ok_or_else(|| ValidationError::MissingNamespace { name: name.clone() })?;
    check_stack_name(&name)?;
    let spec = &stack.spec;

    let names = ChildNames::new(&name, spec.rabbitmq.credentials_secret.as_deref());
    check_name_lengths(&name, &names)?;
    if let Some(user) = &spec.rabbitmq.credentials_secret
        && names.operator_owned().any(|owned| owned == user.as_str())
        && *user != names.default_credentials_secret()
    {
        return Err(ValidationError::CredentialsSecretConflict { name: user.clone() });
    }

    check_replicas(
        "spec.ping.replicas",
        spec.ping.replicas,
        0,
        100,
        "must be 0 to 100",
    )?;
    check_replicas(
        "spec.pong.replicas",
        spec.pong.replicas,
        0,
        1,
        "must be 0 or 1 while pong keeps its messages in memory",
    )?;
    check_replicas(
        "spec.rabbitmq.replicas",
        spec.rabbitmq.replicas,
        1,
        9,
        "must be 1 to 9",
    )?;
    if !(1..=10_000_000).contains(&spec.pong.max_messages) {
        return Err(ValidationError::InvalidReplicas {
            field: "spec.pong.maxMessages",
            value: spec.pong.max_messages,
            reason: "must be 1 to 10000000",
        });
    }
    check_queue(&spec.rabbitmq.queue)?;
    if spec.ingress.enabled && spec.ingress.tls_secret.is_some() && spec.ingress.host.is_none() {
        return Err(ValidationError::TlsWithoutHost);
    }

    let ping = AppSettings {
        image: image(
            "spec.ping.image",
            spec.ping.image.as_deref(),
            &defaults.ping,
        )?,
        replicas: spec.ping.replicas,
        resources: resources(
            "spec.ping.resources",
            spec.ping.resources.as_ref(),
            ping_defaults,
        )?,
        env: user_env("spec.ping.env", &spec.ping.env)?,
    };
    let pong = AppSettings {
        image: image(
            "spec.pong.image",
            spec.pong.image.as_deref(),
            &defaults.pong,
        )?,
        replicas: spec.pong.replicas,
        resources: resources(
            "spec.pong.resources",
            spec.pong.resources.as_ref(),
            pong_defaults,
        )?,
        env: user_env("spec.pong.env", &spec.pong.env)?,
    };
    let storage = if spec.rabbitmq.storage.ephemeral {
        BrokerStorage::Ephemeral
    } else {
        let size = &spec.rabbitmq.storage.size;
        check_quantity("spec.rabbitmq.storage.size".to_owned(), size)?;
        BrokerStorage::Persistent {
            size: size.clone(),
            storage_class_name: spec.rabbitmq.storage.storage_class_name.clone(),
        }
    };
    let rabbitmq = BrokerSettings {
        image: image(
            "spec.rabbitmq.image",
            spec.rabbitmq.image.as_deref(),
            &defaults.rabbitmq,
        )?,
        replicas: spec.rabbitmq.replicas,
        queue: spec.rabbitmq.queue.clone(),
        storage,
        resources: resources(
            "spec.rabbitmq.resources",
            spec.rabbitmq.resources.as_ref(),
            rabbitmq_defaults,
        )?,
        user_credentials: spec.rabbitmq.credentials_secret.is_some(),
    };

    Ok(ValidatedStack {
        uid: stack.metadata.uid.clone(),
        generation: stack.metadata.generation,
        names,
        ping,
        pong,
        pong_max_messages: spec.pong.max_messages,
        rabbitmq,
        ingress: spec.ingress.enabled.then(|| IngressSettings {
            class_name: spec.ingress.class_name.clone(),
            host: spec.ingress.host.clone(),
            tls_secret: spec.ingress.tls_secret.clone(),
        }),
        gateway: spec.gateway.as_ref().map(|g| GatewaySettings {
            parent_ref: g.parent_ref.clone(),
            hostname: g.hostname.clone(),
        }),
        monitoring: MonitoringSettings {
            service_monitor: spec.monitoring.service_monitor,
            service_monitor_labels: spec
                .monitoring
                .service_monitor_labels
                .iter()
                .filter(|(k, _)| !crate::labels::is_reserved(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        paused: spec.paused,
        name,
        namespace,
    })
}

/// A stack name prefixes Service names, which must be DNS-1035 labels.
fn check_stack_name(name: &str) -> Result<(), ValidationError> {
    let bytes = name.as_bytes();
    let ok = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn check_name_lengths(stack: &str, names: &ChildNames) -> Result<(), ValidationError> {
    let revision_label = (
        "StatefulSet revision label",
        names.rabbitmq_revision_label_len(),
    );
    let lengths: Vec<(&str, usize)> = names
        .operator_owned()
        .map(|n| (n, n.len()))
        .chain(std::iter::once(revision_label))
        .collect();
    let longest_suffix = lengths
        .iter()
        .map(|(_, len)| len.saturating_sub(stack.len()))
        .max()
        .unwrap_or(0);
    match lengths.iter().find(|(_, len)| *len > DNS_LABEL_MAX) {
        Some((child, len)) => Err(ValidationError::NameTooLong {
            stack: stack.to_owned(),
            child: (*child).to_owned(),
            len: *len,
            max_stack_len: DNS_LABEL_MAX.saturating_sub(longest_suffix),
        }),
        None => Ok(()),
    }
}

fn check_replicas(
    field: &'static str,
    value: i32,
    min: i32,
    max: i32,
    reason: &'static str,
) -> Result<(), ValidationError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::InvalidReplicas {
            field,
            value: value.into(),
            reason,
        })
    }
}

fn check_queue(queue: &str) -> Result<(), ValidationError> {
    let invalid = |reason| {
        Err(ValidationError::InvalidQueue {
            queue: queue.to_owned(),
            reason,
        })
    };
    if queue.is_empty() {
        return invalid("is empty; name the queue");
    }
    if queue.len() > 200 {
        return invalid("is longer than 200 characters");
    }
    if queue.starts_with("amq.") {
        return invalid("starts with 'amq.', which RabbitMQ reserves");
    }
    if !queue
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return invalid("may only contain letters, digits, '.', '_', ':' and '-'");
    }
    Ok(())
}

fn image(
    field: &'static str,
    given: Option<&str>,
    default: &str,
) -> Result<String, ValidationError> {
    let image = given.unwrap_or(default);
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(ValidationError::InvalidImage {
            field,
            image: image.to_owned(),
        });
    }
    Ok(image.to_owned())
}

fn check_quantity(field: String, value: &Quantity) -> Result<(), ValidationError> {
    quantity::parse(&value.0)
        .map(|_| ())
        .ok_or_else(|| ValidationError::InvalidQuantity {
            field,
            value: value.0.clone(),
        })
}

fn resources(
    field: &'static str,
    given: Option<&ResourceRequirements>,
    default: fn() -> ResourceRequirements,
) -> Result<ResourceRequirements, ValidationError> {
    let Some(given) = given else {
        return Ok(default());
    };
    let empty = BTreeMap::new();
    let requests = given.requests.as_ref().unwrap_or(&empty);
    let limits = given.limits.as_ref().unwrap_or(&empty);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (resource, value) in map {
            check_quantity(format!("{field}.{kind}.{resource}"), value)?;
        }
    }
    for (resource, request) in requests {
        if let Some(limit) = limits.get(resource)
            && quantity::parse(&request.0) > quantity::parse(&limit.0)
        {
            return Err(ValidationError::RequestExceedsLimit {
                field,
                resource: resource.clone(),
                request: request.0.clone(),
                limit: limit.0.clone(),
            });
        }
    }
    Ok(given.clone())
}

fn user_env(field: &'static str, env: &[EnvVar]) -> Result<Vec<EnvVar>, ValidationError> {
    let mut seen = BTreeSet::new();
    for var in env {
        if RESERVED_ENV.contains(&var.name.as_str()) {
            return Err(ValidationError::ReservedEnv {
                field,
                name: var.name.clone(),
            });
        }
        if !seen.insert(var.name.as_str()) {
            return Err(ValidationError::DuplicateEnv {
                field,
                name: var.name.clone(),
            });
        }
    }
    Ok(env.to_vec())
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

/// Default RabbitMQ resources: requests 250m CPU / 512Mi, limit 1Gi memory.
pub fn rabbitmq_defaults() -> ResourceRequirements {
    requirements("250m", "512Mi", "1Gi")
}
