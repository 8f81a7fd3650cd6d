//! Report step I/O: write the computed status through the status subresource and publish the
//! Events that describe the transition.
//!
//! The status is applied server-side with the field manager
//! [`STATUS_FIELD_MANAGER`](super::apply::STATUS_FIELD_MANAGER), `apiVersion` and `kind` taken from
//! the Rust type, and only when it differs from the stored status: a steady-state reconcile writes
//! nothing, so it cannot trigger itself through the watch.

use super::apply::STATUS_FIELD_MANAGER;
use super::events;
use super::status::{self, ComponentReadiness, Outcome, Readiness};
use super::validate::{CacheSettings, StoreSettings, ValidatedStack};
use crate::crd::{
    CacheStatus, ComponentStatus, PingPongStack, PingPongStackStatus, Placement, StoreStatus,
    StoreType,
};
use crate::error::Error;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Client, Resource};

/// Everything the report step needs besides the stack's previous status.
pub struct Report<'a> {
    /// How the reconcile went.
    pub outcome: Outcome,
    /// Value of `spec.paused`.
    pub paused: bool,
    /// Whether children were written in this reconcile.
    pub applied: bool,
    /// URL serving `/ping` and `/pong`, when known.
    pub endpoint: Option<String>,
    /// Name of the credentials Secret, when known.
    pub credentials_secret: Option<String>,
    /// pong's store as realised (used when the outcome is `Converged`).
    pub store: Option<StoreStatus>,
    /// pong's cache as realised (used when the outcome is `Converged`; `None`: no cache).
    pub cache: Option<CacheStatus>,
    /// The stack's `metadata.generation`.
    pub generation: Option<i64>,
    /// The stack's current status.
    pub previous: &'a PingPongStackStatus,
}

/// pong's store and cache status for a converged stack (pure): the type and placement from the
/// validated spec, readiness from the provisioned workloads. An external service counts as
/// ready once observe found its Secret complete (the apply only happens then); whether the
/// server answers is pong's readiness.
pub fn backing_status(
    stack: &ValidatedStack,
    readiness: &Readiness,
) -> (StoreStatus, Option<CacheStatus>) {
    let provisioned = |c: Option<ComponentReadiness>| {
        let c = c.unwrap_or_default();
        (
            c.is_ready() && c.replicas > 0,
            Some(c.replicas),
            Some(c.ready_replicas),
        )
    };
    let store = match &stack.store {
        StoreSettings::Memory => StoreStatus {
            type_: StoreType::Memory,
            ready: true,
            ..StoreStatus::default()
        },
        StoreSettings::ExternalPostgres { secret_name } => StoreStatus {
            type_: StoreType::Postgres,
            placement: Some(Placement::External),
            ready: true,
            replicas: None,
            ready_replicas: None,
            secret_name: Some(secret_name.clone()),
        },
        StoreSettings::ProvisionedPostgres(_) => {
            let (ready, replicas, ready_replicas) = provisioned(readiness.postgres);
            StoreStatus {
                type_: StoreType::Postgres,
                placement: Some(Placement::Provisioned),
                ready,
                replicas,
                ready_replicas,
                secret_name: Some(stack.names.postgres_credentials.clone()),
            }
        }
    };
    let cache = stack.cache.as_ref().map(|cache| match cache {
        CacheSettings::External { .. } => CacheStatus {
            placement: Placement::External,
            ready: true,
            replicas: None,
            ready_replicas: None,
        },
        CacheSettings::Provisioned(_) => {
            let (ready, replicas, ready_replicas) = provisioned(readiness.redis);
            CacheStatus {
                placement: Placement::Provisioned,
                ready,
                replicas,
                ready_replicas,
            }
        }
    });
    (store, cache)
}

fn component(c: ComponentReadiness) -> ComponentStatus {
    ComponentStatus {
        replicas: c.replicas,
        ready_replicas: c.ready_replicas,
    }
}

/// Computes the next status (pure).
pub fn next_status(report: &Report<'_>, now: Timestamp) -> PingPongStackStatus {
    let previous = report.previous;
    let conditions = status::conditions(
        &report.outcome,
        report.paused,
        report.generation,
        &previous.conditions,
        Time(now),
    );
    let readiness: Option<&Readiness> = match &report.outcome {
        Outcome::Converged(r) => Some(r),
        _ => None,
    };
    PingPongStackStatus {
        // A failed reconcile did not realise this generation: keep the last one that was.
        observed_generation: match report.outcome {
            Outcome::Failed { .. } => previous.observed_generation,
            _ => report.generation,
        },
        conditions,
        ping: readiness
            .map(|r| component(r.ping))
            .or_else(|| previous.ping.clone()),
        pong: readiness
            .map(|r| component(r.pong))
            .or_else(|| previous.pong.clone()),
        rabbitmq: readiness
            .map(|r| component(r.rabbitmq))
            .or_else(|| previous.rabbitmq.clone()),
        endpoint: report
            .endpoint
            .clone()
            .or_else(|| previous.endpoint.clone()),
        credentials_secret: report
            .credentials_secret
            .clone()
            .or_else(|| previous.credentials_secret.clone()),
        store: match readiness {
            Some(_) => report.store.clone(),
            None => previous.store.clone(),
        },
        cache: match readiness {
            Some(_) => report.cache.clone(),
            None => previous.cache.clone(),
        },
    }
}

/// Applies `status` to the stack `name` in `namespace` through the status subresource.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &PingPongStackStatus,
) -> Result<(), Error> {
    let api: Api<PingPongStack> = Api::namespaced(client.clone(), namespace);
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

/// Computes the next status, writes it if it changed, and publishes transition Events.
/// Returns the status now stored.
pub async fn report(
    client: &Client,
    recorder: &Recorder,
    regarding: &ObjectReference,
    report: Report<'_>,
) -> Result<PingPongStackStatus, Error> {
    let next = next_status(&report, Timestamp::now());
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
        report.applied,
    );
    events::publish(recorder, regarding, notices).await;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_to_memory_drops_placement_replicas_and_cache() {
        let provisioned = PingPongStackStatus {
            store: Some(StoreStatus {
                type_: StoreType::Postgres,
                placement: Some(Placement::Provisioned),
                ready: true,
                replicas: Some(1),
                ready_replicas: Some(1),
                secret_name: Some("demo-postgres-credentials".into()),
            }),
            cache: Some(CacheStatus {
                placement: Placement::Provisioned,
                ready: true,
                replicas: Some(1),
                ready_replicas: Some(1),
            }),
            ..PingPongStackStatus::default()
        };
        let memory = StoreStatus {
            type_: StoreType::Memory,
            ready: true,
            ..StoreStatus::default()
        };
        let report = Report {
            outcome: Outcome::Converged(Readiness::default()),
            paused: false,
            applied: true,
            endpoint: None,
            credentials_secret: None,
            store: Some(memory.clone()),
            cache: None,
            generation: Some(2),
            previous: &provisioned,
        };
        let next = next_status(&report, Timestamp::UNIX_EPOCH);
        assert_eq!(next.store, Some(memory));
        assert_eq!(next.cache, None);
        let serialized = serde_json::to_value(&next).unwrap();
        assert_eq!(
            serialized["store"],
            serde_json::json!({"type": "memory", "ready": true})
        );
        assert!(serialized.get("cache").is_none());
    }

    #[test]
    fn failure_keeps_observed_generation_and_component_counts() {
        let ok = Report {
            outcome: Outcome::Converged(Readiness::default()),
            paused: false,
            applied: true,
            endpoint: Some("http://demo.example".into()),
            credentials_secret: Some("demo-rabbitmq-credentials".into()),
            store: Some(StoreStatus {
                type_: StoreType::Memory,
                ready: true,
                ..StoreStatus::default()
            }),
            cache: None,
            generation: Some(1),
            previous: &PingPongStackStatus::default(),
        };
        let first = next_status(&ok, Timestamp::UNIX_EPOCH);
        assert_eq!(first.observed_generation, Some(1));
        assert_eq!(first.ping, Some(ComponentStatus::default()));
        let failed = Report {
            outcome: Outcome::Failed {
                reason: "ApplyFailed",
                message: "boom".into(),
            },
            applied: false,
            endpoint: None,
            credentials_secret: None,
            store: None,
            cache: None,
            generation: Some(2),
            previous: &first,
            ..ok
        };
        let second = next_status(&failed, Timestamp::UNIX_EPOCH);
        assert_eq!(second.observed_generation, Some(1));
        assert_eq!(second.ping, first.ping);
        assert_eq!(second.endpoint.as_deref(), Some("http://demo.example"));
        assert_eq!(
            second.store, first.store,
            "a failure keeps the store status"
        );
    }
}
