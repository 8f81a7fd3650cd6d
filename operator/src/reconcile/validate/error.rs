//! The validation error: what is wrong with a spec and what to fix.

use super::DNS_LABEL_MAX;

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
    /// A broker image older than RabbitMQ 3.10 for a cluster of more than one node.
    #[error(
        "{field} {image:?} is RabbitMQ {version}, but spec.rabbitmq.replicas {replicas} needs RabbitMQ {}.{} or newer (at-least-once dead-lettering of the cluster's quorum queues); use rabbitmq:4.2-management or another 3.10 or newer image, or 1 replica",
        super::broker::MIN_CLUSTER_VERSION.0,
        super::broker::MIN_CLUSTER_VERSION.1
    )]
    BrokerImageTooOld {
        /// Where the image came from: `spec.rabbitmq.image` or the operator's default.
        field: &'static str,
        /// The image reference.
        image: String,
        /// The version its tag names (`3.13`, `3`).
        version: String,
        /// `spec.rabbitmq.replicas`.
        replicas: i32,
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
        "{field} sets {name}, which the operator manages (broker, store or cache settings, queue or listen address); remove it"
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
    /// A partition count outside 1 to 32.
    #[error("spec.rabbitmq.partitions {partitions} is not between 1 and 32")]
    InvalidPartitions {
        /// The count asked for.
        partitions: i32,
    },
    /// A host name Ingress or HTTPRoute would refuse.
    #[error(
        "{field} {host:?} is not a host name: use lowercase letters, digits, '-' and '.', optionally starting with '*.'"
    )]
    InvalidHost {
        /// Spec path.
        field: &'static str,
        /// The value given.
        host: String,
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
    /// `pong.store.postgres` with `pong.store.type: memory`.
    #[error(
        "spec.pong.store.postgres is only used with spec.pong.store.type: postgres; set the type or remove the postgres block"
    )]
    PostgresWithoutPostgresStore,
    /// A store or cache Secret that names an object the operator writes.
    #[error(
        "{field} {name:?} is the name of a Secret the operator manages for this stack; name your own Secret differently"
    )]
    SecretNameConflict {
        /// Spec path.
        field: &'static str,
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
            Self::BrokerImageTooOld { .. } => "BrokerImageTooOld",
            Self::InvalidQuantity { .. } => "InvalidQuantity",
            Self::RequestExceedsLimit { .. } => "RequestExceedsLimit",
            Self::ReservedEnv { .. } => "ReservedEnv",
            Self::DuplicateEnv { .. } => "DuplicateEnv",
            Self::InvalidQueue { .. } => "InvalidQueue",
            Self::InvalidPartitions { .. } => "InvalidPartitions",
            Self::InvalidHost { .. } => "InvalidHost",
            Self::TlsWithoutHost => "TlsWithoutHost",
            Self::CredentialsSecretConflict { .. } => "CredentialsSecretConflict",
            Self::PostgresWithoutPostgresStore => "PostgresWithoutPostgresStore",
            Self::SecretNameConflict { .. } => "SecretNameConflict",
        }
    }
}
