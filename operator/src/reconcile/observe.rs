//! Observe step (I/O, reads only): what exists that the plan depends on.
//!
//! For a validated stack this reads whether the credentials and Erlang-cookie Secrets exist,
//! whether the user's `credentialsSecret` exists with the keys the services need, and whether the
//! Gateway API and Prometheus Operator CRDs are installed. New credentials are generated here, at
//! the edge, only when a Secret the operator must create is missing, so an existing password is
//! never rotated. [`readiness`] reads the workloads' replica counts when nothing was applied.
//! This module never writes.

use super::build::{
    PlanInputs, SERVICE_MONITOR_CRD, http_route_api_resource, service_monitor_api_resource,
};
use super::status::{ComponentReadiness, Readiness};
use super::validate::ValidatedStack;
use crate::controller::crd_serves;
use crate::credentials;
use crate::error::Error;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

/// CRD name of the Gateway API HTTPRoute.
pub const HTTP_ROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

/// Keys the user's `credentialsSecret` must have.
pub const CREDENTIAL_KEYS: [&str; 2] = ["username", "password"];

/// A reference in the spec that cannot be satisfied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingReference {
    /// PascalCase condition reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

/// What observe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Inputs for the pure build step.
    pub plan_inputs: PlanInputs,
    /// Something the spec refers to is missing; nothing should be applied.
    pub missing: Option<MissingReference>,
}

fn read(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Read { kind, name, source }
}

async fn crd_installed(client: &Client, crd: &'static str, version: &str) -> Result<bool, Error> {
    crd_serves(client, crd, version)
        .await
        .map_err(read("CustomResourceDefinition", crd))
}

/// Reads what the plan depends on.
pub async fn observe(client: &Client, stack: &ValidatedStack) -> Result<Observed, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &stack.namespace);
    let names = &stack.names;
    let credentials = secrets
        .get_opt(&names.credentials_secret)
        .await
        .map_err(read("Secret", &names.credentials_secret))?;
    let cookie_exists = secrets
        .get_opt(&names.erlang_cookie_secret)
        .await
        .map_err(read("Secret", &names.erlang_cookie_secret))?
        .is_some();
    let mut missing = None;
    if stack.rabbitmq.user_credentials {
        let absent: Vec<&str> = CREDENTIAL_KEYS
            .into_iter()
            .filter(|key| {
                credentials
                    .as_ref()
                    .and_then(|s| s.data.as_ref())
                    .is_none_or(|d| !d.contains_key(*key))
            })
            .collect();
        if credentials.is_none() {
            missing = Some(MissingReference {
                reason: super::status::reason::CREDENTIALS_SECRET_MISSING,
                message: format!(
                    "spec.rabbitmq.credentialsSecret names Secret {:?}, which does not exist in \
                     namespace {}; create it with keys username and password",
                    names.credentials_secret, stack.namespace
                ),
            });
        } else if !absent.is_empty() {
            missing = Some(MissingReference {
                reason: super::status::reason::CREDENTIALS_SECRET_MISSING,
                message: format!(
                    "Secret {:?} (spec.rabbitmq.credentialsSecret) lacks the key(s) {}",
                    names.credentials_secret,
                    absent.join(", ")
                ),
            });
        }
    }
    let service_monitor_crd = if stack.monitoring.service_monitor {
        let version = service_monitor_api_resource().version;
        crd_installed(client, SERVICE_MONITOR_CRD, &version).await?
    } else {
        false
    };
    if stack.gateway.is_some() && missing.is_none() {
        let version = http_route_api_resource().version;
        if !crd_installed(client, HTTP_ROUTE_CRD, &version).await? {
            missing = Some(MissingReference {
                reason: super::status::reason::GATEWAY_API_MISSING,
                message: format!(
                    "spec.gateway is set but the Gateway API CRD {HTTP_ROUTE_CRD} ({version}) is \
                     not installed; install the Gateway API or remove spec.gateway"
                ),
            });
        }
    }
    let plan_inputs = PlanInputs::from_observed(
        stack,
        credentials.is_some(),
        cookie_exists,
        service_monitor_crd,
        credentials::generate,
    );
    Ok(Observed {
        plan_inputs,
        missing,
    })
}

/// Desired and ready replicas of a StatefulSet.
pub fn statefulset_readiness(sts: &StatefulSet) -> ComponentReadiness {
    ComponentReadiness {
        replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready_replicas: sts
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    }
}

/// Desired and ready replicas of a Deployment.
pub fn deployment_readiness(deployment: &Deployment) -> ComponentReadiness {
    ComponentReadiness {
        replicas: deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1),
        ready_replicas: deployment
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    }
}

/// Reads the workloads' readiness without writing (used while paused). A missing workload counts
/// as its desired replicas with none ready.
pub async fn readiness(client: &Client, stack: &ValidatedStack) -> Result<Readiness, Error> {
    let ns = &stack.namespace;
    let names = &stack.names;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let rabbitmq = sts
        .get_opt(&names.rabbitmq)
        .await
        .map_err(read("StatefulSet", &names.rabbitmq))?;
    let ping = deployments
        .get_opt(&names.ping)
        .await
        .map_err(read("Deployment", &names.ping))?;
    let pong = deployments
        .get_opt(&names.pong)
        .await
        .map_err(read("Deployment", &names.pong))?;
    let absent = |replicas| ComponentReadiness {
        replicas,
        ready_replicas: 0,
    };
    Ok(Readiness {
        rabbitmq: rabbitmq
            .as_ref()
            .map_or_else(|| absent(stack.rabbitmq.replicas), statefulset_readiness),
        ping: ping
            .as_ref()
            .map_or_else(|| absent(stack.ping.replicas), deployment_readiness),
        pong: pong
            .as_ref()
            .map_or_else(|| absent(stack.pong.replicas), deployment_readiness),
    })
}
