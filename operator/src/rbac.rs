//! The Kubernetes permissions the operator's code uses, one row per API group and resource.
//!
//! This table is the reviewable truth behind the chart's hand-written RBAC: `tests/operator/rbac.rs`
//! checks that `manifests/install.yaml` grants exactly these verbs, nothing more (no wildcards)
//! and nothing less. Change a row here in the same commit as the code that needs it.
//!
//! Where each verb comes from:
//! - `list`, `watch` on the stack and every child kind: the controller's watch, and the
//!   metadata-only watches of the children that carry the operator's `managed-by` label.
//! - `create`, `patch` on children: server-side apply (authorized as `create` while the object
//!   does not exist, `patch` after); `patch` on `pingpongstacks/status`: the status apply.
//! - `update` on `pingpongstacks/finalizers`: every child's owner reference sets
//!   `blockOwnerDeletion`, which the `OwnerReferencesPermissionEnforcement` admission plugin
//!   (OpenShift, hardened clusters) allows only to a client that may update the owner's finalizers.
//!   The operator never adds a finalizer.
//! - Secrets are never listed nor watched: `get` tells whether a generated Secret exists
//!   (metadata only), reads the broker credentials Secret (generated or named by the spec) and
//!   the keys of the other Secrets the spec names; `create` writes a generated Secret (never an
//!   apply, so two leaders cannot write two passwords); `patch` is the server-side apply of the
//!   one Secret rendered from another, `<stack>-rabbitmq-definitions` (the broker user the nodes
//!   import at boot, which must follow the credentials Secret's content). RBAC cannot narrow a
//!   ClusterRole to names that depend on the stack, so the code applies no other Secret.
//! - `get` on every applied kind: before a child's first apply, whether an object of its name
//!   exists that the stack does not control (then it is left unchanged); on StatefulSets and
//!   Deployments also readiness while paused; on StatefulSets with claims also their current
//!   `volumeClaimTemplates`, which every apply keeps.
//! - `delete` on Ingresses, HTTPRoutes, PodDisruptionBudgets, ServiceMonitors, PrometheusRules,
//!   KEDA ScaledObjects and TriggerAuthentications (a stack back on the operator's own
//!   autoscaling loop), and on StatefulSets, Deployments, Services and NetworkPolicies (pong's provisioned PostgreSQL
//!   and Redis): orphans the spec no longer asks for. Never on Secrets or PersistentVolumeClaims.
//! - `get` on CustomResourceDefinitions: the start-up check for our CRD, and whether the
//!   HTTPRoute, ServiceMonitor, PrometheusRule and KEDA CRDs are served (when the controller
//!   starts, then every 30 s on the controller's timer, never inside a reconcile).
//! - `create`, `patch` on `events.k8s.io` events: the Event recorder (patch for repeated events).
//! - `get`, `create`, `update` on leases: leader election.
//! - `list` on HorizontalPodAutoscalers: the autoscaler's round looks for one that targets an
//!   autoscaled stack's pong Deployment, to report the conflict (one list per round).
//! - `list` on pods: the pods of a workload that is not ready (by its selector, one bounded page)
//!   so status can name the pod that cannot pull its image or crash-loops; and pong's pods before
//!   an autoscaler scale-in step. `patch`: the server-side apply of their
//!   `controller.kubernetes.io/pod-deletion-cost` annotation, so the least busy pod goes.
//!   `delete`: the pods of a clustered broker that still run with a regenerated Erlang cookie's
//!   predecessor, deleted together so the nodes rejoin with the new one (each with its uid as a
//!   precondition; see [`crate::reconcile::restart`]). `patch` also adds the unique selector's
//!   labels to the pods of a workload an earlier release created, and `list`/`patch` on
//!   ReplicaSets to a Deployment's ReplicaSets (labels and pod template), before the workload is
//!   deleted with its dependents orphaned (`delete` on StatefulSets and Deployments) and created
//!   again with the new selector ([`crate::reconcile::migrate`]).

/// One RBAC rule: verbs on one resource of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub api_group: &'static str,
    /// Resource (plural, with `/subresource` where needed).
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
}

// Server-side apply of an object that does not exist yet is authorized as `create`, of one that
// exists as `patch`: every applied kind needs both (a 403 on the first apply otherwise).
// `get`: before its first apply, the metadata of an object of a child's name that the caches do
// not know as the stack's own is read, so someone else's object is never taken over.
const WATCH_APPLY: &[&str] = &["create", "get", "list", "patch", "watch"];
const WATCH_APPLY_DELETE: &[&str] = &["create", "delete", "get", "list", "patch", "watch"];

/// Every permission the operator uses (cluster-wide, except leases in the operator's namespace).
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "pingpong.dev",
        resource: "pingpongstacks",
        verbs: &["list", "watch"],
    },
    Permission {
        api_group: "pingpong.dev",
        resource: "pingpongstacks/status",
        verbs: &["patch"],
    },
    Permission {
        api_group: "pingpong.dev",
        resource: "pingpongstacks/finalizers",
        verbs: &["update"],
    },
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "apps",
        resource: "deployments",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["list", "patch"],
    },
    Permission {
        api_group: "",
        resource: "services",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "",
        resource: "secrets",
        verbs: &["create", "get", "patch"],
    },
    Permission {
        api_group: "",
        resource: "configmaps",
        verbs: WATCH_APPLY,
    },
    Permission {
        api_group: "networking.k8s.io",
        resource: "ingresses",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "policy",
        resource: "poddisruptionbudgets",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "monitoring.coreos.com",
        resource: "servicemonitors",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "monitoring.coreos.com",
        resource: "prometheusrules",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "keda.sh",
        resource: "scaledobjects",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "keda.sh",
        resource: "triggerauthentications",
        verbs: WATCH_APPLY_DELETE,
    },
    Permission {
        api_group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: &["list"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["delete", "list", "patch"],
    },
    Permission {
        api_group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get"],
    },
    Permission {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    Permission {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
    },
];

/// The table as README markdown.
pub fn markdown_table() -> String {
    let mut out = String::from("| API group | resource | verbs |\n| --- | --- | --- |\n");
    for p in PERMISSIONS {
        let group = if p.api_group.is_empty() {
            "\"\" (core)"
        } else {
            p.api_group
        };
        out.push_str(&format!(
            "| `{group}` | `{}` | {} |\n",
            p.resource,
            p.verbs.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn rows_are_unique_sorted_and_without_wildcards() {
        let mut seen = BTreeSet::new();
        for p in PERMISSIONS {
            assert!(seen.insert((p.api_group, p.resource)), "duplicate {p:?}");
            let mut sorted = p.verbs.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, p.verbs, "verbs of {} not sorted/unique", p.resource);
            assert!(!p.verbs.contains(&"*") && p.resource != "*");
        }
        assert!(
            markdown_table().contains("| `coordination.k8s.io` | `leases` | create, get, update |")
        );
    }
}
