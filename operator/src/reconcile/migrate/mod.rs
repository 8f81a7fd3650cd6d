//! Selector migration: moves a stack's workloads from an earlier release's selector
//! (`app.kubernetes.io/{instance,component}`, [`Scheme::Legacy`]) to the unique one
//! (`pingpong.dev/{stack,role}`, [`labels::selector_labels`]), keeping the broker's and the
//! database's data.
//!
//! A workload's selector is immutable, so a workload whose live `spec.selector` differs from the
//! one the plan renders is replaced with its dependents kept:
//! 1. its pods (a StatefulSet's), or its ReplicaSets (labels and pod template) and their pods (a
//!    Deployment's), found by their controller reference, get the unique selector's labels;
//! 2. it is deleted with `propagationPolicy: Orphan` and a uid precondition: pods, ReplicaSets
//!    and PersistentVolumeClaims stay, the garbage collector only removes their owner reference;
//! 3. once it is gone, the dependents a controller created between 1 and 2 are relabelled too;
//! 4. the apply creates it again with the unique selector. A StatefulSet adopts its same-named
//!    pods (and, through the same claim names, their volumes) and rolls them to its template one
//!    at a time; a Deployment adopts its ReplicaSet, whose template then equals its own apart
//!    from `pod-template-hash` (when nothing else changed), so it keeps running it (if the
//!    Deployment controller has not seen the ReplicaSet released yet, it starts a rolling update
//!    and turns back to the older, equal ReplicaSet once it does).
//!
//! Until every workload selects with the unique selector, the Services, PDBs, NetworkPolicies
//! and ServiceMonitors keep the legacy one, which matches the old pods and the relabelled or new
//! ones alike (those carry both label sets); they switch in the pass that finds every workload
//! migrated, when every pod of the stack carries the unique labels. No Service selects nothing
//! meanwhile.
//!
//! The migration restarts the broker and the database, so it is gated like an upgrade: a stack
//! migrates only under `upgradePolicy: Automatic` or with the annotation
//! [`MIGRATE_SELECTORS`]`: "true"` ([`opted_in`]), and only holding a slot of the upgrade gate
//! ([`super::upgrade_gate`]). Otherwise its workloads keep the legacy selector and exactly the
//! pod labels they have (nothing rolls), and `UpgradeAvailable` says a migration is available.
//!
//! [`observe`] reads (the controller's metadata caches first); [`decide`] and the dependent
//! filters are pure; [`execute`] writes, before the apply.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, ObjectMeta};

use super::cache::{ChildCaches, controlled_by};
use super::desired::ChildKind;
use super::validate::ValidatedStack;
use crate::crd::{PingPongStack, UpgradePolicy};
use crate::error::Error;
use crate::labels::{self, Component, MIGRATE_SELECTORS, Scheme, SelectorPlan};

mod execute;

pub use execute::{DELETION_WAIT, execute};

/// The kind of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// ping, pong, the provisioned Redis.
    Deployment,
    /// The broker, the provisioned PostgreSQL.
    StatefulSet,
}

impl WorkloadKind {
    fn as_str(self) -> &'static str {
        self.child_kind().as_str()
    }

    fn child_kind(self) -> ChildKind {
        match self {
            Self::Deployment => ChildKind::Deployment,
            Self::StatefulSet => ChildKind::StatefulSet,
        }
    }
}

/// One workload of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Its component.
    pub component: Component,
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

/// The workloads `stack` asks for.
pub fn workloads(stack: &ValidatedStack) -> Vec<Workload> {
    let workload = |component, kind, name: &String| Workload {
        component,
        kind,
        name: name.clone(),
    };
    let names = &stack.names;
    let mut all = vec![workload(
        Component::RabbitMq,
        WorkloadKind::StatefulSet,
        &names.rabbitmq,
    )];
    if stack.store.provisioned().is_some() {
        all.push(workload(
            Component::Postgres,
            WorkloadKind::StatefulSet,
            &names.postgres,
        ));
    }
    if stack.cache.as_ref().and_then(|c| c.provisioned()).is_some() {
        all.push(workload(
            Component::Redis,
            WorkloadKind::Deployment,
            &names.redis,
        ));
    }
    all.push(workload(
        Component::Ping,
        WorkloadKind::Deployment,
        &names.ping,
    ));
    all.push(workload(
        Component::Pong,
        WorkloadKind::Deployment,
        &names.pong,
    ));
    all
}

/// What observe found of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// Not there (a new stack, a workload the migration deleted), or not this stack's: the
    /// apply's ownership check answers for it.
    Absent,
    /// Selects with the unique selector.
    Current,
    /// Selects with another selector (an earlier release's): to be migrated.
    Legacy {
        /// Its uid (the delete's precondition, and its dependents' controller).
        uid: String,
        /// Already being deleted (a pass that waited in vain).
        deleting: bool,
        /// A Deployment's `spec.replicas`, for a re-created one whose apply leaves them out
        /// (KEDA scales pong).
        replicas: Option<i32>,
    },
}

/// Whether `stack` may migrate its selectors: `upgradePolicy: Automatic`, or the annotation
/// [`MIGRATE_SELECTORS`] set to `"true"`.
pub fn opted_in(stack: &PingPongStack) -> bool {
    stack.spec.upgrade_policy == UpgradePolicy::Automatic
        || stack
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIGRATE_SELECTORS))
            .is_some_and(|v| v == "true")
}

/// Whether some workload still selects with an earlier release's selector.
pub fn needs_migration(live: &[(Workload, Live)]) -> bool {
    live.iter().any(|(_, l)| matches!(l, Live::Legacy { .. }))
}

/// What one pass does about the selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The selectors the build renders.
    pub selectors: SelectorPlan,
    /// The workloads this pass replaces ([`execute`]), with what observe found of them.
    pub migrate: Vec<(Workload, Live)>,
    /// The workloads that keep an earlier release's selector because the stack did not opt in
    /// or waits for an upgrade slot (for status).
    pub pending: Vec<String>,
}

/// Decides the selectors of one pass from what observe found (pure). Every workload migrated
/// (or none ever legacy): unique selectors throughout. Else the Services keep the legacy
/// selector, and the legacy workloads either keep theirs (`migrate_now` false: not opted in, or
/// no upgrade slot) or are replaced in this pass.
pub fn decide(live: &[(Workload, Live)], migrate_now: bool) -> Decision {
    let legacy: Vec<(Workload, Live)> = live
        .iter()
        .filter(|(_, l)| matches!(l, Live::Legacy { .. }))
        .cloned()
        .collect();
    if legacy.is_empty() {
        return Decision::default();
    }
    if migrate_now {
        return Decision {
            selectors: SelectorPlan {
                legacy_workloads: BTreeSet::new(),
                services: Scheme::Legacy,
            },
            migrate: legacy,
            pending: Vec::new(),
        };
    }
    Decision {
        selectors: SelectorPlan {
            legacy_workloads: legacy.iter().map(|(w, _)| w.component).collect(),
            services: Scheme::Legacy,
        },
        migrate: Vec::new(),
        pending: legacy
            .iter()
            .map(|(w, _)| format!("{} {}", w.kind.as_str(), w.name))
            .collect(),
    }
}

/// Event reason of a pass that replaced workloads to migrate their selectors.
pub const SELECTORS_MIGRATED: &str = "SelectorsMigrated";

/// The Normal Event of a pass that replaced `workloads` (`Kind name`).
pub fn notice(workloads: &[String]) -> super::events::Notice {
    super::events::Notice {
        warning: false,
        reason: SELECTORS_MIGRATED.to_owned(),
        action: "MigrateSelectors",
        note: format!(
            "{} deleted with their pods, ReplicaSets and claims kept, and created again with the \
             selector pingpong.dev/stack + pingpong.dev/role (StatefulSets roll their pods once)",
            workloads.join(", ")
        ),
    }
}

/// The status message of a stack whose workloads keep an earlier release's selector.
pub fn pending_message(pending: &[String]) -> Option<String> {
    (!pending.is_empty()).then(|| {
        format!(
            "{} still select pods by app.kubernetes.io/instance and component (an earlier \
             release's selector, which another release's pods can match): set \
             spec.upgradePolicy: Automatic or annotate the stack {MIGRATE_SELECTORS}=true to \
             migrate them (the broker and the database restart; their data is kept)",
            pending.join(", ")
        )
    })
}

fn selector_of(selector: Option<&LabelSelector>) -> Option<BTreeMap<String, String>> {
    let selector = selector?;
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    Some(selector.match_labels.clone().unwrap_or_default())
}

/// What one live workload is, given its metadata and selector (pure).
fn classify(
    meta: &ObjectMeta,
    selector: Option<&LabelSelector>,
    replicas: Option<i32>,
    desired: &BTreeMap<String, String>,
    stack_uid: &str,
) -> Live {
    if !controlled_by(meta, stack_uid) {
        return Live::Absent;
    }
    if selector_of(selector).as_ref() == Some(desired) {
        return Live::Current;
    }
    Live::Legacy {
        uid: meta.uid.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        replicas,
    }
}

/// Whether cached metadata shows a workload this stack applied with the unique selector: the
/// operator renders the selector's labels on the workload exactly when it selects with them,
/// and a selector cannot change after creation.
fn cached_current(meta: &ObjectMeta, desired: &BTreeMap<String, String>, stack_uid: &str) -> bool {
    let labels = meta.labels.as_ref();
    meta.deletion_timestamp.is_none()
        && controlled_by(meta, stack_uid)
        && desired
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Reads what each workload of `stack` selects with: the controller's metadata cache answers
/// for those absent or applied with the unique selector; the others are read (one GET each).
pub async fn observe(
    client: &Client,
    caches: &ChildCaches,
    stack: &ValidatedStack,
    stack_uid: &str,
) -> Result<Vec<(Workload, Live)>, Error> {
    let mut found = Vec::new();
    for workload in workloads(stack) {
        let desired = labels::selector_labels(&stack.name, workload.component);
        let kind = workload.kind.child_kind();
        let live = match caches.lookup(kind, &stack.namespace, &workload.name) {
            Some(None) => Live::Absent,
            Some(Some(meta)) if cached_current(&meta, &desired, stack_uid) => Live::Current,
            _ => read(client, stack, &workload, &desired, stack_uid).await?,
        };
        found.push((workload, live));
    }
    Ok(found)
}

async fn read(
    client: &Client,
    stack: &ValidatedStack,
    workload: &Workload,
    desired: &BTreeMap<String, String>,
    stack_uid: &str,
) -> Result<Live, Error> {
    let read_error = |source| Error::Read {
        kind: workload.kind.as_str(),
        name: workload.name.clone(),
        source,
    };
    let ns = &stack.namespace;
    let live = match workload.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let live = api.get_opt(&workload.name).await.map_err(read_error)?;
            live.map(|d| {
                let spec = d.spec.as_ref();
                let selector = spec.map(|s| &s.selector);
                classify(
                    &d.metadata,
                    selector,
                    spec.and_then(|s| s.replicas),
                    desired,
                    stack_uid,
                )
            })
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let live = api.get_opt(&workload.name).await.map_err(read_error)?;
            live.map(|s| {
                let selector = s.spec.as_ref().map(|s| &s.selector);
                classify(&s.metadata, selector, None, desired, stack_uid)
            })
        }
    };
    Ok(live.unwrap_or(Live::Absent))
}

/// The label selector (`kubectl -l` syntax) with which workload `name` of `kind` selects its
/// pods, read from it: the unique one once migrated, an earlier release's before, so whoever
/// lists a stack's pods (the autoscaler, the broker check) finds exactly the workload's own.
/// `None` when it does not exist.
pub async fn pod_selector(
    client: &Client,
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let selector = match kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let live = api.get_opt(name).await?;
            live.and_then(|d| d.spec.and_then(|s| selector_of(Some(&s.selector))))
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let live = api.get_opt(name).await?;
            live.and_then(|d| d.spec.and_then(|s| selector_of(Some(&s.selector))))
        }
    };
    Ok(selector
        .filter(|s| !s.is_empty())
        .map(|s| labels::to_selector_string(&s)))
}

/// Whose dependents to relabel: those a workload of this uid controls, or (once it is gone)
/// those it left without a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependents<'a> {
    /// Controlled by the workload of this uid.
    ControlledBy(&'a str),
    /// Without a controller and named like the workload's own (`<statefulset>-<ordinal>`,
    /// `<deployment>-<hash>`): only the workload made such objects carrying its labels.
    Orphaned,
}

fn has_controller(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true))
}

/// Whether `meta` (of a pod or ReplicaSet carrying the workload's legacy labels) belongs to
/// `workload` as `which` says (pure).
pub fn is_dependent(meta: &ObjectMeta, workload: &Workload, which: Dependents<'_>) -> bool {
    match which {
        Dependents::ControlledBy(uid) => controlled_by(meta, uid),
        Dependents::Orphaned => {
            let name = meta.name.as_deref().unwrap_or_default();
            let suffix = name
                .strip_prefix(workload.name.as_str())
                .and_then(|s| s.strip_prefix('-'));
            let named = match (workload.kind, suffix) {
                (WorkloadKind::StatefulSet, Some(s)) => {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
                }
                (WorkloadKind::Deployment, Some(s)) => !s.is_empty() && !s.contains('-'),
                (_, None) => false,
            };
            named && !has_controller(meta)
        }
    }
}

/// Whether `labels` already hold every label of `unique`.
fn carries(labels: Option<&BTreeMap<String, String>>, unique: &BTreeMap<String, String>) -> bool {
    unique
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

#[cfg(test)]
mod tests;
