//! Label and annotation keys, the component enum, and the helpers that build label sets.
//!
//! This is the only place that spells `app.kubernetes.io/*` and `pingpong.dev/*` keys. Selectors
//! use the immutable subset `{instance, component}`; the full set adds name, part-of and
//! managed-by. User-supplied labels never override a reserved key.

use std::collections::BTreeMap;
use std::fmt;

/// `app.kubernetes.io/name`: the application (`rabbitmq`, `ping`, `pong`, `postgres`, `redis`,
/// `pingpong-gateway`).
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the stack name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: the component inside the stack (see [`Component`]).
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/part-of`: always [`PART_OF`].
pub const PART_OF_KEY: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/managed-by`: always [`MANAGED_BY`].
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";

/// Value of `app.kubernetes.io/part-of` on every child.
pub const PART_OF: &str = "pingpong";
/// Value of `app.kubernetes.io/managed-by` on every child; orphan deletion selects on it.
pub const MANAGED_BY: &str = "pingpong-operator";

/// Pod-template annotation with the sha256 of the container's effective configuration; a change
/// rolls the pods.
pub const CONFIG_HASH: &str = "pingpong.dev/config-hash";
/// Pod-template annotation with the sha256 of the Secret keys the pod reads (a digest of their
/// digests, never a value); a changed or regenerated Secret rolls exactly the workloads that
/// read it.
pub const SECRET_DIGEST: &str = "pingpong.dev/secret-digest";
/// Broker pod-template annotation with the digest of the Erlang cookie alone: a clustered
/// broker's pods whose value differs from the template's run with another cookie and are
/// restarted together (see [`crate::reconcile::restart`]).
pub const ERLANG_COOKIE_DIGEST: &str = "pingpong.dev/erlang-cookie-digest";
/// Annotation on an existing object that nothing controls, naming the stack that may adopt it
/// (`pingpong.dev/adopt: <stack>`). Without it the operator never writes an object of a child's
/// name that the stack does not control.
pub const ADOPT: &str = "pingpong.dev/adopt";
/// Annotation on a stack: the PostgreSQL major version (e.g. `"17"`) its provisioned database may
/// move to, after the data was dumped and the claim deleted (the documented major-upgrade path).
pub const POSTGRES_MAJOR_UPGRADE: &str = "pingpong.dev/postgres-major-upgrade";
/// Label a user puts on a Secret to let stacks of its namespace name it
/// (`credentialsSecret`, an external PostgreSQL's or Redis's `secretName`), with the value
/// [`REFERABLE_VALUE`]. Setting a label needs write access to the Secret, so a user who may only
/// create stacks cannot make the operator mount a Secret they could not read.
pub const REFERABLE: &str = "pingpong.dev/referable";
/// The value of [`REFERABLE`] that opts a Secret in.
pub const REFERABLE_VALUE: &str = "true";
/// `prometheus.io/scrape` annotation.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
/// `prometheus.io/port` annotation.
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
/// `prometheus.io/path` annotation.
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";

/// Every key this module reserves; user labels with these keys are dropped.
pub const RESERVED_KEYS: [&str; 5] = [NAME, INSTANCE, COMPONENT, PART_OF_KEY, MANAGED_BY_KEY];

/// A component of a stack; the value of `app.kubernetes.io/component`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The RabbitMQ broker (StatefulSet, Services, ConfigMap, Secrets).
    RabbitMq,
    /// The ping service.
    Ping,
    /// The pong service.
    Pong,
    /// pong's provisioned PostgreSQL (StatefulSet, Service, Secret, NetworkPolicy).
    Postgres,
    /// pong's provisioned Redis cache (Deployment, Service, NetworkPolicy).
    Redis,
    /// The HTTP route (Ingress or HTTPRoute) in front of ping and pong.
    Gateway,
    /// The stack's alert rules (PrometheusRule).
    Alerts,
}

impl Component {
    /// Every component, in apply order.
    pub const ALL: [Component; 7] = [
        Self::RabbitMq,
        Self::Postgres,
        Self::Redis,
        Self::Ping,
        Self::Pong,
        Self::Gateway,
        Self::Alerts,
    ];

    /// Value of `app.kubernetes.io/component`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RabbitMq => "broker",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Postgres => "database",
            Self::Redis => "cache",
            Self::Gateway => "gateway",
            Self::Alerts => "alerts",
        }
    }

    /// Value of `app.kubernetes.io/name`.
    pub fn app_name(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Gateway => "pingpong-gateway",
            Self::Alerts => "pingpong-alerts",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The immutable selector labels of one component of a stack: `{instance, component}`.
pub fn selector_labels(stack: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE.to_owned(), stack.to_owned()),
        (COMPONENT.to_owned(), component.as_str().to_owned()),
    ])
}

/// The full label set of one component: the selector labels plus name, part-of and managed-by.
pub fn component_labels(stack: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(stack, component);
    labels.insert(NAME.to_owned(), component.app_name().to_owned());
    labels.insert(PART_OF_KEY.to_owned(), PART_OF.to_owned());
    labels.insert(MANAGED_BY_KEY.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The full label set with extra user labels merged in; reserved keys keep their values.
pub fn with_user_labels(
    stack: &str,
    component: Component,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = component_labels(stack, component);
    for (key, value) in user {
        if !is_reserved(key) {
            labels.insert(key.clone(), value.clone());
        }
    }
    labels
}

/// Whether `key` is reserved for the operator (every `app.kubernetes.io/*` key).
pub fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || key.starts_with("app.kubernetes.io/")
}

/// Label selector (`kubectl -l` syntax) that matches every object this operator manages; the
/// children's watches use it, so unrelated objects are neither listed nor cached.
pub fn managed_by_selector() -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY}")
}

/// Label selector (`kubectl -l` syntax) that matches every child of `stack` managed by this
/// operator; used to find orphans.
pub fn children_selector(stack: &str) -> String {
    format!("{INSTANCE}={stack},{MANAGED_BY_KEY}={MANAGED_BY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_labels_never_override_reserved_keys() {
        let user = BTreeMap::from([
            (INSTANCE.to_owned(), "evil".to_owned()),
            ("app.kubernetes.io/version".to_owned(), "x".to_owned()),
            ("team".to_owned(), "a".to_owned()),
        ]);
        let labels = with_user_labels("demo", Component::Ping, &user);
        assert_eq!(labels[INSTANCE], "demo");
        assert_eq!(labels["team"], "a");
        assert!(!labels.contains_key("app.kubernetes.io/version"));
    }

    #[test]
    fn selector_is_a_subset_of_the_full_labels() {
        for component in Component::ALL {
            let full = component_labels("demo", component);
            for (k, v) in selector_labels("demo", component) {
                assert_eq!(full.get(&k), Some(&v));
            }
        }
    }

    #[test]
    fn children_selector_names_stack_and_manager() {
        assert_eq!(
            children_selector("demo"),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=pingpong-operator"
        );
    }
}
