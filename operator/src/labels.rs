//! Label and annotation keys, the component enum, and the helpers that build label sets.
//!
//! This is the only place that spells `app.kubernetes.io/*` and `pingpong.dev/*` keys. Selectors
//! use `{pingpong.dev/stack, pingpong.dev/role}` ([`selector_labels`]): the `pingpong.dev/`
//! prefix is this operator's own and a stack's name is unique in its namespace, so another
//! release named like the stack (whose pods carry the same `app.kubernetes.io/instance` and
//! `component`) is never selected. The full set adds the `app.kubernetes.io/*` labels as
//! ordinary labels. Stacks created by a release before these selectors keep the
//! [`Scheme::Legacy`] selector `{instance, component}` until they migrate
//! ([`crate::reconcile::migrate`]). User-supplied labels never override a reserved key.

use std::collections::{BTreeMap, BTreeSet};
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
/// `pingpong.dev/stack`: the stack name; half of every selector.
pub const STACK: &str = "pingpong.dev/stack";
/// `pingpong.dev/role`: the component inside the stack ([`Component::as_str`]); the other half
/// of every selector.
pub const ROLE: &str = "pingpong.dev/role";

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
/// Annotation on a stack: the broker image (e.g. `"rabbitmq:4.2-management"`) a running broker
/// may move to although the operator cannot confirm RabbitMQ supports that version step (a skip,
/// a downgrade, a tag without a version), after the user checked the path.
pub const RABBITMQ_UPGRADE: &str = "pingpong.dev/rabbitmq-upgrade";
/// Annotation on a stack under `upgradePolicy: Manual` (value `"true"`): migrate its workloads
/// from the selectors of an earlier release to [`selector_labels`] (the broker and the
/// database restart; see [`crate::reconcile::migrate`]). `Automatic` stacks migrate without it.
pub const MIGRATE_SELECTORS: &str = "pingpong.dev/migrate-selectors";
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
pub const RESERVED_KEYS: [&str; 7] = [
    NAME,
    INSTANCE,
    COMPONENT,
    PART_OF_KEY,
    MANAGED_BY_KEY,
    STACK,
    ROLE,
];

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

/// Which selector a workload (and its pods' labels) or a stack's Services use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// `{pingpong.dev/stack, pingpong.dev/role}` ([`selector_labels`]); pods carry these and the
    /// `app.kubernetes.io/*` labels.
    #[default]
    Unique,
    /// `{app.kubernetes.io/instance, app.kubernetes.io/component}` ([`legacy_selector_labels`]):
    /// what releases before the unique selectors rendered; pods carry only
    /// `app.kubernetes.io/*` labels (exactly what that release rendered, so nothing rolls).
    Legacy,
}

/// The selector labels of one component of a stack: `{pingpong.dev/stack, pingpong.dev/role}`.
pub fn selector_labels(stack: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (STACK.to_owned(), stack.to_owned()),
        (ROLE.to_owned(), component.as_str().to_owned()),
    ])
}

/// The selector labels earlier releases rendered: `{instance, component}`. They also match the
/// pods of a [`Scheme::Unique`] workload (which carry both), and any other release's pods
/// labelled alike.
pub fn legacy_selector_labels(stack: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE.to_owned(), stack.to_owned()),
        (COMPONENT.to_owned(), component.as_str().to_owned()),
    ])
}

/// The selector of `scheme`.
pub fn scheme_selector(
    scheme: Scheme,
    stack: &str,
    component: Component,
) -> BTreeMap<String, String> {
    match scheme {
        Scheme::Unique => selector_labels(stack, component),
        Scheme::Legacy => legacy_selector_labels(stack, component),
    }
}

/// The schemes of one stack's objects: each workload's (its selector and its pods' labels) and
/// that of the Services, PodDisruptionBudgets, NetworkPolicies and ServiceMonitors. The default
/// is [`Scheme::Unique`] throughout (a new stack).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectorPlan {
    /// The workloads that keep [`Scheme::Legacy`]; every other one is [`Scheme::Unique`].
    pub legacy_workloads: BTreeSet<Component>,
    /// The scheme the Services, PDBs, NetworkPolicies and ServiceMonitors select with.
    pub services: Scheme,
}

impl SelectorPlan {
    /// The scheme of `component`'s workload and pods (and of its objects' labels).
    pub fn workload(&self, component: Component) -> Scheme {
        if self.legacy_workloads.contains(&component) {
            Scheme::Legacy
        } else {
            Scheme::Unique
        }
    }
}

/// A label set in `kubectl -l` syntax (`k=v,k=v`).
pub fn to_selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The full label set of one component under `scheme`: the `app.kubernetes.io/*` labels
/// (instance, component, name, part-of, managed-by) and, unless [`Scheme::Legacy`], the
/// selector labels.
pub fn component_labels(
    stack: &str,
    component: Component,
    scheme: Scheme,
) -> BTreeMap<String, String> {
    let mut labels = legacy_selector_labels(stack, component);
    if scheme == Scheme::Unique {
        labels.extend(selector_labels(stack, component));
    }
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
    let mut labels = component_labels(stack, component, Scheme::Unique);
    for (key, value) in user {
        if !is_reserved(key) {
            labels.insert(key.clone(), value.clone());
        }
    }
    labels
}

/// Whether `key` is reserved for the operator (every `app.kubernetes.io/*` key, and the
/// selector keys).
pub fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || key.starts_with("app.kubernetes.io/")
}

/// Label selector (`kubectl -l` syntax) that matches every object this operator manages; the
/// children's watches use it, so unrelated objects are neither listed nor cached.
pub fn managed_by_selector() -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY}")
}

/// Label selector (`kubectl -l` syntax) that matches every child of `stack` managed by this
/// operator; used to find orphans (only those the stack controls are deleted). It keys on
/// `instance`, which the children of both [`Scheme`]s carry.
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
            let full = component_labels("demo", component, Scheme::Unique);
            for (k, v) in selector_labels("demo", component)
                .into_iter()
                .chain(legacy_selector_labels("demo", component))
            {
                assert_eq!(full.get(&k), Some(&v));
            }
        }
    }

    #[test]
    fn the_legacy_scheme_renders_what_earlier_releases_did() {
        let legacy = component_labels("demo", Component::RabbitMq, Scheme::Legacy);
        assert_eq!(
            legacy.keys().map(String::as_str).collect::<Vec<_>>(),
            [COMPONENT, INSTANCE, MANAGED_BY_KEY, NAME, PART_OF_KEY]
        );
        // Legacy pods lack the unique selector's keys; unique pods match both selectors.
        assert!(!legacy.contains_key(STACK));
        assert_eq!(
            scheme_selector(Scheme::Unique, "demo", Component::Ping),
            BTreeMap::from([
                (STACK.to_owned(), "demo".to_owned()),
                (ROLE.to_owned(), "ping".to_owned())
            ])
        );
        assert_eq!(
            to_selector_string(&scheme_selector(Scheme::Legacy, "demo", Component::Ping)),
            "app.kubernetes.io/component=ping,app.kubernetes.io/instance=demo"
        );
    }

    #[test]
    fn selector_keys_are_reserved() {
        let user = BTreeMap::from([(STACK.to_owned(), "evil".to_owned())]);
        let labels = with_user_labels("demo", Component::Ping, &user);
        assert_eq!(labels[STACK], "demo");
    }

    #[test]
    fn children_selector_names_stack_and_manager() {
        assert_eq!(
            children_selector("demo"),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=pingpong-operator"
        );
    }
}
