//! The body of one reconcile, and the apply order.
//!
//! [`run`] is the pipeline: validate (pure) → observe (reads) → build (pure) → apply, or only
//! read readiness while paused → report. Each failure is reported in status before it is
//! returned, so the error policy's backoff and the user's view agree.

use super::apply::Applier;
use super::build::servicemonitor::{SERVICE_MONITOR_CRD, SERVICE_MONITOR_KIND};
use super::build::{DesiredState, build_desired, http_route_api_resource};
use super::build::{httproute::HTTP_ROUTE_KIND, service_monitor_api_resource};
use super::observe::{self, HTTP_ROUTE_CRD, deployment_readiness, statefulset_readiness};
use super::report::{self, Report};
use super::status::{Outcome, Readiness, reason};
use super::validate::validate;
use super::{Context, MISSING_REFERENCE_REQUEUE, SUCCESS_REQUEUE, events};
use crate::crd::{CacheStatus, PingPongStack, PingPongStackStatus, StoreStatus};
use crate::error::Error;
use crate::labels;
use crate::metrics::ReconcileResult;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::ApiResource;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;

/// Kinds that exist only when their CRD is installed: (CRD name, resource).
pub fn optional_kinds() -> Vec<(&'static str, ApiResource)> {
    vec![
        (HTTP_ROUTE_CRD, http_route_api_resource()),
        (SERVICE_MONITOR_CRD, service_monitor_api_resource()),
    ]
}

fn names<'a, T: Resource + 'a>(objects: impl IntoIterator<Item = &'a T>) -> Vec<String> {
    objects
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

fn strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// Applies `desired` in the documented order (see [`super::build`]), then deletes the children
/// of the optional kinds that the plan no longer contains (the provisioned PostgreSQL's and
/// Redis's StatefulSet, Deployment, Services and NetworkPolicies when the store or cache is
/// switched off). Secrets are never deleted here: the PostgreSQL credentials Secret stays with
/// the retained data volume until the stack is deleted. Returns the workloads' readiness as the
/// API reported it in the apply responses.
pub async fn apply_desired(
    applier: &Applier<'_>,
    desired: DesiredState,
    owner_uid: &str,
    selector: &str,
) -> Result<Readiness, Error> {
    // No `..`: a new field in DesiredState must be handled here or the build fails.
    let DesiredState {
        credentials_secret,
        erlang_cookie_secret,
        postgres_secret,
        rabbitmq_config,
        rabbitmq_headless_service,
        rabbitmq_service,
        rabbitmq_statefulset,
        postgres_service,
        postgres_statefulset,
        redis_service,
        redis_deployment,
        ping_service,
        ping_deployment,
        pong_service,
        pong_deployment,
        network_policy,
        postgres_network_policy,
        redis_network_policy,
        pdb_rabbitmq,
        pdb_ping,
        pdb_pong,
        ingress,
        http_route,
        service_monitors,
    } = desired;
    // 1. Secrets and the broker ConfigMap: pods mount or read them.
    for secret in [&credentials_secret, &erlang_cookie_secret, &postgres_secret]
        .into_iter()
        .flatten()
    {
        applier.apply(secret).await?;
    }
    applier.apply(&rabbitmq_config).await?;
    // 2. Broker Services (the headless one gives pods stable DNS names), then the StatefulSet.
    applier.apply(&rabbitmq_headless_service).await?;
    applier.apply(&rabbitmq_service).await?;
    let rabbitmq = statefulset_readiness(&applier.apply(&rabbitmq_statefulset).await?);
    // 3. pong's provisioned PostgreSQL and Redis: Service, then workload.
    let mut postgres = None;
    if let Some(sts) = &postgres_statefulset {
        if let Some(service) = &postgres_service {
            applier.apply(service).await?;
        }
        postgres = Some(statefulset_readiness(&applier.apply(sts).await?));
    }
    let mut redis = None;
    if let Some(deployment) = &redis_deployment {
        if let Some(service) = &redis_service {
            applier.apply(service).await?;
        }
        redis = Some(deployment_readiness(&applier.apply(deployment).await?));
    }
    // 4. ping and pong: Service, then Deployment.
    applier.apply(&ping_service).await?;
    let ping = deployment_readiness(&applier.apply(&ping_deployment).await?);
    applier.apply(&pong_service).await?;
    let pong = deployment_readiness(&applier.apply(&pong_deployment).await?);
    // 5. NetworkPolicies and PodDisruptionBudgets.
    let policies: Vec<NetworkPolicy> = [
        Some(network_policy),
        postgres_network_policy,
        redis_network_policy,
    ]
    .into_iter()
    .flatten()
    .collect();
    for policy in &policies {
        applier.apply(policy).await?;
    }
    let pdbs: Vec<PodDisruptionBudget> = [pdb_rabbitmq, pdb_ping, pdb_pong]
        .into_iter()
        .flatten()
        .collect();
    for pdb in &pdbs {
        applier.apply(pdb).await?;
    }
    // 6. Routes, once the backends exist.
    if let Some(ingress) = &ingress {
        applier.apply(ingress).await?;
    }
    let route_resource = http_route_api_resource();
    if let Some(route) = &http_route {
        applier
            .apply_dynamic(HTTP_ROUTE_KIND, &route_resource, route)
            .await?;
    }
    // 7. ServiceMonitors.
    let monitor_resource = service_monitor_api_resource();
    for monitor in &service_monitors {
        applier
            .apply_dynamic(SERVICE_MONITOR_KIND, &monitor_resource, monitor)
            .await?;
    }
    // Orphans: children of the kinds the spec can drop that the plan no longer contains.
    let keep_sts = names(
        [&rabbitmq_statefulset]
            .into_iter()
            .chain(&postgres_statefulset),
    );
    let keep_deployments = names(
        [&ping_deployment, &pong_deployment]
            .into_iter()
            .chain(&redis_deployment),
    );
    let keep_services = names(
        [
            &rabbitmq_headless_service,
            &rabbitmq_service,
            &ping_service,
            &pong_service,
        ]
        .into_iter()
        .chain(&postgres_service)
        .chain(&redis_service),
    );
    let keep_policies = names(&policies);
    applier
        .delete_orphans::<StatefulSet>(selector, owner_uid, &strs(&keep_sts))
        .await?;
    applier
        .delete_orphans::<Deployment>(selector, owner_uid, &strs(&keep_deployments))
        .await?;
    applier
        .delete_orphans::<Service>(selector, owner_uid, &strs(&keep_services))
        .await?;
    applier
        .delete_orphans::<NetworkPolicy>(selector, owner_uid, &strs(&keep_policies))
        .await?;
    let keep_pdbs = names(&pdbs);
    let keep_ingress = names(&ingress);
    let keep_routes = names(&http_route);
    let keep_monitors = names(&service_monitors);
    applier
        .delete_orphans::<PodDisruptionBudget>(selector, owner_uid, &strs(&keep_pdbs))
        .await?;
    applier
        .delete_orphans::<Ingress>(selector, owner_uid, &strs(&keep_ingress))
        .await?;
    applier
        .delete_orphans_dynamic(
            HTTP_ROUTE_KIND,
            &route_resource,
            selector,
            owner_uid,
            &strs(&keep_routes),
        )
        .await?;
    applier
        .delete_orphans_dynamic(
            SERVICE_MONITOR_KIND,
            &monitor_resource,
            selector,
            owner_uid,
            &strs(&keep_monitors),
        )
        .await?;
    Ok(Readiness {
        ping,
        pong,
        rabbitmq,
        postgres,
        redis,
    })
}

/// Reports status for one stack; wraps the fields that stay the same through a reconcile.
struct Reporter<'a> {
    ctx: &'a Context,
    regarding: ObjectReference,
    previous: &'a PingPongStackStatus,
    generation: Option<i64>,
    paused: bool,
}

impl Reporter<'_> {
    async fn send(
        &self,
        outcome: Outcome,
        applied: bool,
        endpoint: Option<String>,
        credentials_secret: Option<String>,
        backing: Option<(StoreStatus, Option<CacheStatus>)>,
    ) -> Result<(), Error> {
        let (store, cache) = match backing {
            Some((store, cache)) => (Some(store), cache),
            None => (None, None),
        };
        let report = Report {
            outcome,
            paused: self.paused,
            applied,
            endpoint,
            credentials_secret,
            store,
            cache,
            generation: self.generation,
            previous: self.previous,
        };
        report::report(
            &self.ctx.client,
            &self.ctx.recorder,
            &self.regarding,
            report,
        )
        .await?;
        Ok(())
    }

    /// Puts a failure into status (best effort) and hands it back.
    async fn failed<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let outcome = Outcome::Failed {
            reason: error.kind(),
            message: error.chain(),
        };
        if let Err(status_error) = self.send(outcome, false, None, None, None).await {
            tracing::warn!(error = %status_error.chain(), "could not report the failure in status");
        }
        Err(error)
    }
}

/// One reconcile of a decoded stack.
pub(super) async fn run(
    stack: &PingPongStack,
    ctx: &Context,
) -> Result<(ReconcileResult, Action), Error> {
    let meta = &stack.metadata;
    let namespace = meta
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let uid = meta.uid.as_deref().ok_or(Error::MissingObjectKey("uid"))?;
    let name = meta
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("name"))?;
    if meta.deletion_timestamp.is_some() {
        // Re-applying children now would fight the garbage collector.
        tracing::debug!("stack is being deleted; nothing to reconcile");
        return Ok((ReconcileResult::Skipped, Action::await_change()));
    }
    let previous = stack.status.clone().unwrap_or_default();
    let reporter = Reporter {
        ctx,
        regarding: stack.object_ref(&()),
        previous: &previous,
        generation: meta.generation,
        paused: stack.spec.paused,
    };

    // Plan, part 1 (pure): validate the spec into typed settings.
    let validated = match validate(stack, &ctx.images) {
        Ok(validated) => validated,
        Err(invalid) => {
            tracing::info!(reason = invalid.kind(), error = %invalid, "spec cannot be realised");
            ctx.metrics.reconcile_failed(invalid.kind());
            let outcome = Outcome::Invalid {
                reason: invalid.kind(),
                message: invalid.to_string(),
            };
            reporter.send(outcome, false, None, None, None).await?;
            return Ok((ReconcileResult::Invalid, Action::await_change()));
        }
    };

    // Observe (reads only): Secrets, CRDs; generates credentials only for missing Secrets.
    let observed = reporter
        .failed(observe::observe(&ctx.client, &validated).await)
        .await?;
    if let Some(missing) = observed.missing {
        tracing::info!(reason = missing.reason, "spec refers to something missing");
        ctx.metrics.reconcile_failed(missing.reason);
        let outcome = Outcome::Invalid {
            reason: missing.reason,
            message: missing.message,
        };
        reporter.send(outcome, false, None, None, None).await?;
        return Ok((
            ReconcileResult::Invalid,
            Action::requeue(MISSING_REFERENCE_REQUEUE),
        ));
    }

    // Plan, part 2 (pure): every desired child object.
    let desired = build_desired(&validated, &observed.plan_inputs);

    // Apply, or only read readiness while paused.
    let readiness = if validated.paused {
        observe::readiness(&ctx.client, &validated).await
    } else {
        let applier = Applier::new(&ctx.client, namespace, &ctx.metrics);
        let selector = labels::children_selector(name);
        // Boxed: the apply future holds every child object; inline it would make the reconcile
        // future large enough to overflow a 2 MiB thread stack in debug builds.
        Box::pin(apply_desired(&applier, desired, uid, &selector)).await
    };
    let readiness = reporter.failed(readiness).await?;

    // Report.
    let endpoint = validated.endpoint();
    let credentials_secret = Some(validated.names.credentials_secret.clone());
    let backing = report::backing_status(&validated, &readiness);
    reporter
        .send(
            Outcome::Converged(readiness),
            !validated.paused,
            endpoint,
            credentials_secret,
            Some(backing),
        )
        .await?;
    tracing::info!(paused = validated.paused, "reconciled");
    let result = if validated.paused {
        ReconcileResult::Paused
    } else {
        ReconcileResult::Success
    };
    Ok((result, Action::requeue(SUCCESS_REQUEUE)))
}

/// An object that does not deserialize into a PingPongStack (the schema should prevent it):
/// a Warning Event says why, and the controller waits for the next change.
pub(super) async fn report_undecodable(
    invalid: &InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    tracing::warn!(
        stack = meta.name.as_deref().unwrap_or(""),
        namespace = meta.namespace.as_deref().unwrap_or(""),
        error = %invalid.error,
        "PingPongStack does not match the schema"
    );
    ctx.metrics.reconcile_failed(reason::INVALID_SPEC);
    let regarding = ObjectReference {
        api_version: Some(PingPongStack::api_version(&()).into_owned()),
        kind: Some(PingPongStack::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    let notice = events::Notice {
        warning: true,
        reason: reason::INVALID_SPEC.to_owned(),
        action: "Reconcile",
        note: format!(
            "the object does not match the PingPongStack schema: {}",
            invalid.error
        ),
    };
    events::publish(&ctx.recorder, &regarding, vec![notice]).await;
    Ok(Action::await_change())
}
