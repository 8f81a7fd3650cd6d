//! KEDA as pong's autoscaling engine (`spec.pong.autoscaling.engine: keda`): what the reconcile
//! does besides rendering the ScaledObject ([`crate::reconcile::builders::keda`]).
//!
//! - Where KEDA's CRDs are not served the stack is not applied ([`missing_keda`], reason
//!   `KedaMissing`); the operator's own loop is *not* put in its place, since the user chose
//!   KEDA's behaviour, and scaling silently another way would hide a broken install.
//! - The pong Deployment is applied without `replicas` while KEDA drives. A field manager that
//!   drops a field it owned makes the API server remove it (back to the default, 1 pod), so
//!   before the first such apply [`hand_over_replicas`] gives the live value to a field manager
//!   of its own ([`HANDOVER_FIELD_MANAGER`]), as the Kubernetes docs advise when handing
//!   `replicas` to an HPA. KEDA's HPA then takes the field with its first scale.
//! - The operator's decision loop skips the stack ([`crate::autoscale::runner::autoscaled`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};

use crate::apis::{OptionalApi, ServedApis};
use crate::error::Error;
use crate::reconcile::FIELD_MANAGER;
use crate::reconcile::observe::MissingReference;
use crate::reconcile::validate::ValidatedStack;

/// Field manager that holds the pong Deployment's `replicas` between the operator letting go of
/// it and KEDA's HPA taking it.
pub const HANDOVER_FIELD_MANAGER: &str = "pingpong-operator/keda-handover";

/// Why a stack that asks for KEDA cannot be applied here: KEDA's CRDs are not served. `None`
/// when it does not ask for KEDA or both kinds are served.
pub fn missing_keda(stack: &ValidatedStack, served: ServedApis) -> Option<MissingReference> {
    if stack.keda.is_none() || served.keda() {
        return None;
    }
    let missing: Vec<String> = [
        OptionalApi::ScaledObject,
        OptionalApi::TriggerAuthentication,
    ]
    .into_iter()
    .filter(|api| !served.serves(*api))
    .map(|api| format!("{} ({})", api.crd_name(), api.resource().version))
    .collect();
    Some(MissingReference {
        reason: crate::reconcile::status::reason::KEDA_MISSING,
        message: format!(
            "spec.pong.autoscaling.engine is keda but KEDA's CRD(s) {} are not installed; install \
             KEDA, or set engine: operator to let the operator scale pong (it does not do so on \
             its own)",
            missing.join(", ")
        ),
    })
}

/// Whether `manager`'s server-side apply owns `spec.replicas` in `managed_fields`.
pub fn owns_replicas(managed_fields: &[ManagedFieldsEntry], manager: &str) -> bool {
    managed_fields.iter().any(|entry| {
        entry.manager.as_deref() == Some(manager)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
    })
}

/// Before the pong Deployment is applied without `replicas`: if the operator's field manager
/// still owns them, give the live value to [`HANDOVER_FIELD_MANAGER`] (one apply, no force), so
/// dropping the field does not reset pong to 1 pod. One read of the Deployment per reconcile of
/// a KEDA-scaled stack until the operator applied pong without `replicas` (then the reconcile
/// no longer calls it, until the next start); the apply only once.
pub async fn hand_over_replicas(client: &Client, stack: &ValidatedStack) -> Result<(), Error> {
    let name = &stack.names.pong;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &stack.namespace);
    let live = api.get_opt(name).await.map_err(|source| Error::Read {
        kind: "Deployment",
        name: name.clone(),
        source,
    })?;
    let Some(live) = live else { return Ok(()) };
    let owned = owns_replicas(
        live.metadata.managed_fields.as_deref().unwrap_or_default(),
        FIELD_MANAGER,
    );
    let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
        return Ok(());
    };
    if !owned {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": Deployment::api_version(&()),
        "kind": Deployment::kind(&()),
        "metadata": { "name": name },
        "spec": { "replicas": replicas },
    });
    api.patch(
        name,
        &PatchParams::apply(HANDOVER_FIELD_MANAGER),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Deployment",
        name: name.clone(),
        source,
    })?;
    tracing::info!(
        deployment = %name,
        replicas,
        "pong's replicas handed over for KEDA's HorizontalPodAutoscaler"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn replicas_are_owned_only_by_an_apply_of_that_manager_that_lists_them() {
        let with = serde_json::json!({"f:spec": {"f:replicas": {}, "f:template": {}}});
        let without = serde_json::json!({"f:spec": {"f:template": {}}});
        assert!(owns_replicas(
            &[entry(FIELD_MANAGER, "Apply", with.clone())],
            FIELD_MANAGER
        ));
        assert!(!owns_replicas(
            &[entry(FIELD_MANAGER, "Apply", without)],
            FIELD_MANAGER
        ));
        assert!(!owns_replicas(
            &[entry("kube-controller-manager", "Update", with.clone())],
            FIELD_MANAGER
        ));
        assert!(!owns_replicas(
            &[entry(FIELD_MANAGER, "Update", with)],
            FIELD_MANAGER
        ));
        assert!(!owns_replicas(&[], FIELD_MANAGER));
    }
}
