//! Report step, the I/O half: write the status [`status::next_status`] computed through the
//! status subresource and publish the Events that describe the transition.
//!
//! The status is applied server-side with the field manager
//! [`STATUS_FIELD_MANAGER`](super::STATUS_FIELD_MANAGER), `apiVersion` and `kind` taken from
//! the Rust type, and only when it differs from the stored status: a steady-state reconcile writes
//! nothing, so it cannot trigger itself through the watch.

use super::STATUS_FIELD_MANAGER;
use super::events;
use super::status::{self, Report};
use crate::crd::{PingPongStack, PingPongStackStatus};
use crate::error::Error;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Client, Resource};

/// Applies `status` to the stack `name` in `namespace` through the status subresource.
///
/// `status.autoscaling` is left out: the autoscaler writes it with its own field manager
/// ([`crate::autoscale::FIELD_MANAGER`]), and a reconcile that read the stack before the
/// autoscaler's last write must not force the older decision back. `status.brokerCluster` is
/// left out for the same reason: the broker check ([`crate::broker_check`]) writes it.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &PingPongStackStatus,
) -> Result<(), Error> {
    let api: Api<PingPongStack> = Api::namespaced(client.clone(), namespace);
    let status = PingPongStackStatus {
        autoscaling: None,
        broker_cluster: None,
        ..status.clone()
    };
    let body = serde_json::json!({
        "apiVersion": PingPongStack::api_version(&()),
        "kind": PingPongStack::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(STATUS_FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| Error::Status {
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Applies `fields` (a part of `status`) to `stack` through the status subresource with
/// `field_manager`, forced: the writes of the operator's timers (the autoscaler's
/// `status.autoscaling`, the broker check's `status.brokerCluster`), each owning its own field.
/// Fields this manager applied before and `fields` lacks are removed (`{}` clears them all).
pub async fn apply_status_fields(
    client: &Client,
    stack: &PingPongStack,
    field_manager: &str,
    fields: serde_json::Value,
) -> Result<(), kube::Error> {
    use kube::ResourceExt;
    let api: Api<PingPongStack> =
        Api::namespaced(client.clone(), &stack.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": PingPongStack::api_version(&()),
        "kind": PingPongStack::kind(&()),
        "status": fields,
    });
    let params = PatchParams::apply(field_manager).force();
    api.patch_status(&stack.name_any(), &params, &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Computes the next status, writes it if it changed, and publishes transition Events.
/// Returns the status now stored.
pub async fn report(
    client: &Client,
    recorder: &Recorder,
    regarding: &ObjectReference,
    report: Report<'_>,
) -> Result<PingPongStackStatus, Error> {
    let next = status::next_status(&report, Timestamp::now());
    if &next == report.previous {
        return Ok(next);
    }
    let namespace = regarding.namespace.as_deref().unwrap_or_default();
    let name = regarding.name.as_deref().unwrap_or_default();
    write_status(client, namespace, name, &next).await?;
    let notices = events::transitions(
        &report.previous.conditions,
        &next.conditions,
        report.previous.observed_generation,
        report.generation,
        report.applied(),
    );
    events::publish(recorder, regarding, notices).await;
    Ok(next)
}
