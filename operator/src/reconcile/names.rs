//! Child object names, derived from the stack name in this one place.

/// Suffix of the StatefulSet's `controller-revision-hash` label value (`-` plus 10 characters),
/// which must also fit in a label value.
const REVISION_HASH_SUFFIX_LEN: usize = 11;

/// Names of every object the operator creates for a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildNames {
    /// RabbitMQ StatefulSet, client Service, NetworkPolicy and PodDisruptionBudget:
    /// `<stack>-rabbitmq`.
    pub rabbitmq: String,
    /// Headless Service that gives broker pods stable DNS names: `<stack>-rabbitmq-nodes`.
    pub rabbitmq_headless: String,
    /// ConfigMap with rabbitmq.conf and enabled_plugins: `<stack>-rabbitmq-config`.
    pub rabbitmq_config: String,
    /// Secret with keys `username` and `password`: the user's `credentialsSecret`, or
    /// `<stack>-rabbitmq-credentials`.
    pub credentials_secret: String,
    /// Secret with the Erlang cookie: `<stack>-rabbitmq-erlang-cookie`.
    pub erlang_cookie_secret: String,
    /// Secret with the broker's definitions file (its user, vhost and permissions), rendered
    /// from the credentials Secret: `<stack>-rabbitmq-definitions`.
    pub rabbitmq_definitions: String,
    /// ping Deployment, Service, NetworkPolicy, PodDisruptionBudget and ServiceMonitor:
    /// `<stack>-ping`.
    pub ping: String,
    /// pong Deployment, Service, NetworkPolicy, PodDisruptionBudget and ServiceMonitor:
    /// `<stack>-pong`.
    pub pong: String,
    /// Provisioned PostgreSQL StatefulSet, its (headless) Service and NetworkPolicy:
    /// `<stack>-postgres`.
    pub postgres: String,
    /// Secret with the provisioned PostgreSQL's connection settings and generated password:
    /// `<stack>-postgres-credentials`.
    pub postgres_credentials: String,
    /// Provisioned Redis Deployment, Service and NetworkPolicy: `<stack>-redis`.
    pub redis: String,
    /// Ingress and HTTPRoute: `<stack>`.
    pub route: String,
    /// PrometheusRule with the stack's alerts: `<stack>-alerts`.
    pub alerts: String,
    default_credentials_secret: String,
}

impl ChildNames {
    /// Derives every name from the stack name and the optional user credentials Secret.
    pub fn new(stack: &str, user_credentials_secret: Option<&str>) -> Self {
        let default_credentials_secret = format!("{stack}-rabbitmq-credentials");
        Self {
            rabbitmq: format!("{stack}-rabbitmq"),
            rabbitmq_headless: format!("{stack}-rabbitmq-nodes"),
            rabbitmq_config: format!("{stack}-rabbitmq-config"),
            credentials_secret: user_credentials_secret
                .map_or_else(|| default_credentials_secret.clone(), str::to_owned),
            erlang_cookie_secret: format!("{stack}-rabbitmq-erlang-cookie"),
            rabbitmq_definitions: format!("{stack}-rabbitmq-definitions"),
            ping: format!("{stack}-ping"),
            pong: format!("{stack}-pong"),
            postgres: format!("{stack}-postgres"),
            postgres_credentials: format!("{stack}-postgres-credentials"),
            redis: format!("{stack}-redis"),
            route: stack.to_owned(),
            alerts: format!("{stack}-alerts"),
            default_credentials_secret,
        }
    }

    /// Name of the credentials Secret the operator generates when the spec names none.
    pub fn default_credentials_secret(&self) -> &str {
        &self.default_credentials_secret
    }

    /// Every name the operator itself may write (including the generated credentials Secret):
    /// validation checks their lengths and that the user's `credentialsSecret` is none of them.
    /// Destructured without `..`, so a new name cannot be left out; a test checks that every
    /// child of the plans in the invariants suite carries one of these names.
    pub fn operator_owned(&self) -> impl Iterator<Item = &str> {
        let Self {
            rabbitmq,
            rabbitmq_headless,
            rabbitmq_config,
            // The user's Secret when the spec names one (never written), else the default one.
            credentials_secret: _,
            erlang_cookie_secret,
            rabbitmq_definitions,
            ping,
            pong,
            postgres,
            postgres_credentials,
            redis,
            route,
            alerts,
            default_credentials_secret,
        } = self;
        [
            rabbitmq,
            rabbitmq_headless,
            rabbitmq_config,
            default_credentials_secret,
            erlang_cookie_secret,
            rabbitmq_definitions,
            ping,
            pong,
            postgres,
            postgres_credentials,
            redis,
            route,
            alerts,
        ]
        .into_iter()
        .map(String::as_str)
    }

    /// The Secrets the operator itself may write: a user Secret must have another name.
    pub fn operator_secrets(&self) -> [&str; 4] {
        [
            &self.default_credentials_secret,
            &self.erlang_cookie_secret,
            &self.rabbitmq_definitions,
            &self.postgres_credentials,
        ]
    }

    /// Length of the longest value Kubernetes derives from a StatefulSet name (the
    /// `controller-revision-hash` label of its pods), which must fit in 63 characters too.
    pub fn rabbitmq_revision_label_len(&self) -> usize {
        self.rabbitmq.len().max(self.postgres.len()) + REVISION_HASH_SUFFIX_LEN
    }
}
