//! The writes of the selector migration (see [`super`]): relabel the dependents, delete the
//! workload with them orphaned, wait until it is gone, relabel what came in between.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Client, ResourceExt};

use super::{Decision, Dependents, Live, Workload, WorkloadKind, carries, is_dependent};
use crate::error::Error;
use crate::labels::{self, Component};
use crate::reconcile::cache::controlled_by;
use crate::reconcile::desired::DesiredState;
use crate::reconcile::validate::ValidatedStack;

/// How long one pass waits for the garbage collector to release an orphan-deleted workload
/// before it gives up with [`Error::MigrationPending`] (retried soon).
pub const DELETION_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// Replaces the workloads `decision` migrates: relabels their dependents, deletes them with
/// their dependents orphaned, waits until they are gone and relabels what was created in
/// between. The apply that follows creates them with the unique selector. Returns the
/// workloads it replaced (`Kind name`).
pub async fn execute(
    client: &Client,
    stack: &ValidatedStack,
    decision: &Decision,
    desired: &DesiredState,
) -> Result<Vec<String>, Error> {
    for (workload, live) in &decision.migrate {
        let Live::Legacy { uid, deleting, .. } = live else {
            continue;
        };
        if !deleting {
            relabel(client, stack, workload, Dependents::ControlledBy(uid)).await?;
            orphan_delete(client, stack, workload, uid).await?;
        }
    }
    for (workload, live) in &decision.migrate {
        wait_gone(client, stack, workload).await?;
        relabel(client, stack, workload, Dependents::Orphaned).await?;
        if let Live::Legacy {
            replicas: Some(replicas),
            ..
        } = live
        {
            keep_replicas(client, stack, workload, *replicas, desired).await?;
        }
        tracing::info!(
            kind = workload.kind.as_str(),
            name = %workload.name,
            "selector migration: workload deleted with its pods kept; it is created again with the unique selector"
        );
    }
    Ok(decision
        .migrate
        .iter()
        .map(|(w, _)| format!("{} {}", w.kind.as_str(), w.name))
        .collect())
}

fn migrate_error(
    step: &'static str,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Migrate {
        step,
        kind,
        name,
        source,
    }
}

/// Adds the unique selector's labels to the pods (and a Deployment's ReplicaSets, labels and
/// pod template) of `workload` that `which` names and that lack them.
async fn relabel(
    client: &Client,
    stack: &ValidatedStack,
    workload: &Workload,
    which: Dependents<'_>,
) -> Result<(), Error> {
    let ns = &stack.namespace;
    let unique = labels::selector_labels(&stack.name, workload.component);
    let legacy = labels::legacy_selector_labels(&stack.name, workload.component);
    let params = ListParams::default().labels(&labels::to_selector_string(&legacy));
    let label_patch = serde_json::json!({ "metadata": { "labels": unique } });
    let mut owners: Vec<String> = Vec::new();
    let pod_owner = match (workload.kind, which) {
        (WorkloadKind::StatefulSet, _) => Some(which),
        (WorkloadKind::Deployment, _) => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
            let sets = api.list(&params).await.map_err(|source| Error::List {
                kind: "ReplicaSet",
                source,
            })?;
            for set in sets
                .items
                .iter()
                .filter(|s| is_dependent(&s.metadata, workload, which))
            {
                owners.push(set.uid().unwrap_or_default());
                let template = set
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref());
                if carries(set.metadata.labels.as_ref(), &unique) && carries(template, &unique) {
                    continue;
                }
                let patch = serde_json::json!({
                    "metadata": { "labels": unique },
                    "spec": { "template": { "metadata": { "labels": unique } } },
                });
                let name = set.name_any();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(migrate_error("relabel", "ReplicaSet", &name))?;
            }
            None
        }
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = api.list(&params).await.map_err(|source| Error::List {
        kind: "Pod",
        source,
    })?;
    let ours = |pod: &Pod| match pod_owner {
        Some(which) => is_dependent(&pod.metadata, workload, which),
        None => owners.iter().any(|uid| controlled_by(&pod.metadata, uid)),
    };
    for pod in pods.items.iter().filter(|p| ours(p)) {
        if carries(pod.metadata.labels.as_ref(), &unique) {
            continue;
        }
        let name = pod.name_any();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&label_patch))
            .await
            .map_err(migrate_error("relabel", "Pod", &name))?;
    }
    Ok(())
}

/// Deletes `workload` (of `uid` only) with its dependents orphaned.
async fn orphan_delete(
    client: &Client,
    stack: &ValidatedStack,
    workload: &Workload,
    uid: &str,
) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let ns = &stack.namespace;
    let name = &workload.name;
    let result = match workload.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            api.delete(name, &params).await.map(|_| ())
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            api.delete(name, &params).await.map(|_| ())
        }
    };
    match result {
        // Gone already, or another object of that name now (the precondition failed).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        result => result.map_err(migrate_error("orphan-delete", workload.kind.as_str(), name)),
    }
}

/// Waits until `workload` is gone (the garbage collector released its dependents), at most
/// [`DELETION_WAIT`].
async fn wait_gone(
    client: &Client,
    stack: &ValidatedStack,
    workload: &Workload,
) -> Result<(), Error> {
    let kind = workload.kind.child_kind();
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &stack.namespace, &kind.api_resource());
    let deadline = tokio::time::Instant::now() + DELETION_WAIT;
    loop {
        let live = api
            .get_metadata_opt(&workload.name)
            .await
            .map_err(|source| Error::Read {
                kind: workload.kind.as_str(),
                name: workload.name.clone(),
                source,
            })?;
        if live.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::MigrationPending {
                kind: workload.kind.as_str(),
                name: workload.name.clone(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A Deployment whose apply leaves `replicas` out (KEDA scales pong) would be created with one
/// replica and scale its adopted ReplicaSet down: it is created first with the replicas it had,
/// owned by the hand-over field manager (as [`crate::autoscale::keda::hand_over_replicas`]
/// does), so the apply that follows leaves them to the autoscaler.
async fn keep_replicas(
    client: &Client,
    stack: &ValidatedStack,
    workload: &Workload,
    replicas: i32,
    desired: &DesiredState,
) -> Result<(), Error> {
    let deployment = match workload.component {
        Component::Ping => &desired.ping.deployment,
        Component::Pong => &desired.pong.deployment,
        Component::Redis => match &desired.redis {
            Some(redis) => &redis.deployment,
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    if deployment
        .spec
        .as_ref()
        .is_none_or(|s| s.replicas.is_some())
    {
        return Ok(());
    }
    let mut created = deployment.clone();
    if let Some(spec) = created.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), &stack.namespace);
    let params = PatchParams::apply(crate::autoscale::keda::HANDOVER_FIELD_MANAGER);
    api.patch(&workload.name, &params, &Patch::Apply(&created))
        .await
        .map_err(|source| Error::Apply {
            kind: "Deployment",
            name: workload.name.clone(),
            source,
        })?;
    Ok(())
}
