//! Observe step (I/O, reads only): what exists that the plan depends on.
//!
//! For a validated stack this reads the credentials, definitions, Erlang-cookie and PostgreSQL
//! credentials Secrets (in full: the pods that read them follow a digest of their content, see
//! [`super::builders::secret_digest`]), and whether the user's Secrets (`credentialsSecret`, an
//! external PostgreSQL's or Redis's) exist with the keys pong and ping need and may be used:
//! they carry the opt-in label or the admin listed them (read by name, never watched). Which
//! optional APIs are served comes from the context (learned by the controller on its own timer,
//! never here); [`unserved_apis`] names the children the cluster cannot hold. Observe hands over
//! facts ([`Observed`]: which generated Secrets exist, the Secrets read); the pipeline turns them
//! into the build's inputs, generating credentials only for a Secret the operator must create,
//! so an existing password is never rotated. Observe imports no later stage.
//! [`workloads`] reads the plan's workloads and route when nothing was applied; [`pods_of`] reads
//! the pods of the workloads that are not ready, so status can say why. This module never
//! writes.

use std::collections::BTreeMap;

use super::context::Context;
use super::desired::{Child, DesiredState};
use super::rollout::{Workloads, deployment_rollout, statefulset_rollout};
use super::validate::{CacheSettings, StoreSettings, ValidatedStack};
use crate::apis::{OptionalApi, ServedApis};
use crate::config::AllowedSecrets;
use crate::credentials::broker_login;
use crate::error::Error;
use crate::labels::{Component, REFERABLE, REFERABLE_VALUE};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};

/// At most this many pods are read per workload that is not ready (the ones
/// [`super::health::problems`] explains).
pub const PODS_PER_WORKLOAD: u32 = 50;

/// Keys the user's `credentialsSecret` must have.
pub const CREDENTIAL_KEYS: [&str; 2] = ["username", "password"];

/// Keys an external PostgreSQL's Secret must have.
pub const POSTGRES_KEYS: [&str; 5] = ["host", "port", "database", "username", "password"];

/// A reference in the spec that cannot be satisfied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingReference {
    /// PascalCase condition reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

/// Which of the Secrets the operator generates already exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExistingSecrets {
    /// The broker credentials Secret (generated or the user's).
    pub credentials: bool,
    /// The Erlang-cookie Secret.
    pub erlang_cookie: bool,
    /// The provisioned PostgreSQL's credentials Secret.
    pub postgres: bool,
}

/// What observe found: the facts the build step turns into its inputs. No `Debug`: it holds
/// Secrets in full, which must never reach a log.
#[derive(Clone)]
pub struct Observed {
    /// Which of the Secrets the operator generates exist (the others get new credentials).
    pub existing: ExistingSecrets,
    /// The existing Secrets the workloads read, in full (their digests roll the readers).
    pub secrets: Vec<Secret>,
    /// Which optional APIs the cluster serves, as the controller last learned it.
    pub served: ServedApis,
    /// Something the spec refers to is missing; nothing should be applied.
    pub missing: Option<MissingReference>,
}

fn read(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Read { kind, name, source }
}

/// The children `stack` asks for whose optional API the cluster does not serve (`served`, as the
/// controller last learned it): each one is reported, and every other child is still applied.
pub fn unserved_apis(stack: &ValidatedStack, served: ServedApis) -> Vec<Error> {
    let wanted = [
        (
            stack.gateway.is_some(),
            OptionalApi::HttpRoute,
            "spec.gateway",
        ),
        (
            stack.monitoring.service_monitor,
            OptionalApi::ServiceMonitor,
            "spec.monitoring.serviceMonitor",
        ),
        (
            stack.monitoring.prometheus_rule,
            OptionalApi::PrometheusRule,
            "spec.monitoring.prometheusRule",
        ),
    ];
    wanted
        .into_iter()
        .filter(|(asked, api, _)| *asked && !served.serves(*api))
        .map(|(_, api, field)| Error::ApiNotServed { api, field })
        .collect()
}

/// The Secret `name`, when it exists (read in full: the pods that read it follow a digest of
/// its content).
async fn get(secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    secrets.get_opt(name).await.map_err(read("Secret", name))
}

/// The keys of `wanted` that `secret` lacks (all of them when it does not exist).
fn absent_keys<'a>(secret: Option<&Secret>, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|key| {
            secret
                .and_then(|s| s.data.as_ref())
                .is_none_or(|d| !d.contains_key(*key))
        })
        .collect()
}

/// Checks a user Secret the spec names: it must exist, have `keys`, and be referable. Returns
/// what is wrong, and the Secret when it may be used (its digest rolls pong).
async fn check_user_secret(
    secrets: &Api<Secret>,
    stack: &ValidatedStack,
    allowed: &AllowedSecrets,
    field: &str,
    name: &str,
    keys: &[&str],
    reason: &'static str,
) -> Result<(Option<MissingReference>, Option<Secret>), Error> {
    let secret = get(secrets, name).await?;
    let missing = missing_keys(stack, field, name, secret.as_ref(), keys, reason)
        .or_else(|| not_referable(stack, allowed, field, name, secret.as_ref()));
    Ok(match missing {
        Some(missing) => (Some(missing), None),
        None => (None, secret),
    })
}

/// Why the user's `secret` (named `name` by `field`) may not be handed to the stack: it lacks
/// the opt-in label [`REFERABLE`] and the cluster admin did not list it. Without this, whoever
/// may create a stack could name any Secret of the namespace and read it through a pod the
/// operator mounts it into (a pong image of their own), a confused deputy.
pub fn not_referable(
    stack: &ValidatedStack,
    allowed: &AllowedSecrets,
    field: &str,
    name: &str,
    secret: Option<&Secret>,
) -> Option<MissingReference> {
    let labelled = secret
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|labels| labels.get(REFERABLE))
        .is_some_and(|value| value == REFERABLE_VALUE);
    if secret.is_none() || labelled || allowed.contains(&stack.namespace, name) {
        return None;
    }
    Some(MissingReference {
        reason: super::terms::reason::SECRET_NOT_REFERABLE,
        message: format!(
            "{field} names Secret {name:?}, which does not carry the label \
             {REFERABLE}={REFERABLE_VALUE}; a stack may only use a Secret that its owner opted in \
             (kubectl -n {} label secret {name} {REFERABLE}={REFERABLE_VALUE}) or that the \
             operator's allowedSecrets list names",
            stack.namespace
        ),
    })
}

/// Why `secret` (named `name` by `field`) cannot be used: missing, or lacking some of `keys`.
fn missing_keys(
    stack: &ValidatedStack,
    field: &str,
    name: &str,
    secret: Option<&Secret>,
    keys: &[&str],
    reason: &'static str,
) -> Option<MissingReference> {
    let absent = absent_keys(secret, keys);
    match secret {
        None => Some(MissingReference {
            reason,
            message: format!(
                "{field} names Secret {name:?}, which does not exist in namespace {}; create it \
                 with the key(s) {}",
                stack.namespace,
                keys.join(", ")
            ),
        }),
        Some(_) if !absent.is_empty() => Some(MissingReference {
            reason,
            message: format!(
                "Secret {name:?} ({field}) lacks the key(s) {}",
                absent.join(", ")
            ),
        }),
        Some(_) => None,
    }
}

/// Checks the Secrets of an external PostgreSQL and an external Redis; those that may be used
/// are added to `read`.
async fn check_store_and_cache_secrets(
    secrets: &Api<Secret>,
    stack: &ValidatedStack,
    allowed: &AllowedSecrets,
    read: &mut Vec<Secret>,
) -> Result<Option<MissingReference>, Error> {
    use super::terms::reason::{CACHE_SECRET_MISSING, POSTGRES_SECRET_MISSING};
    if let StoreSettings::ExternalPostgres { secret_name } = &stack.store {
        let (missing, secret) = check_user_secret(
            secrets,
            stack,
            allowed,
            "spec.pong.store.postgres.external.secretName",
            secret_name,
            &POSTGRES_KEYS,
            POSTGRES_SECRET_MISSING,
        )
        .await?;
        if missing.is_some() {
            return Ok(missing);
        }
        read.extend(secret);
    }
    if let Some(CacheSettings::External { secret_name, key }) = &stack.cache {
        let (missing, secret) = check_user_secret(
            secrets,
            stack,
            allowed,
            "spec.pong.cache.external.secretName",
            secret_name,
            &[key.as_str()],
            CACHE_SECRET_MISSING,
        )
        .await?;
        read.extend(secret);
        return Ok(missing);
    }
    Ok(None)
}

/// Reads what the plan depends on.
pub async fn observe(ctx: &Context, stack: &ValidatedStack) -> Result<Observed, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &stack.namespace);
    let names = &stack.names;
    // Read in full: its content's digest rolls ping and pong when the credentials change.
    let credentials = secrets
        .get_opt(&names.credentials_secret)
        .await
        .map_err(read("Secret", &names.credentials_secret))?;
    let mut missing = None;
    if stack.rabbitmq.user_credentials {
        missing = missing_keys(
            stack,
            "spec.rabbitmq.credentialsSecret",
            &names.credentials_secret,
            credentials.as_ref(),
            &CREDENTIAL_KEYS,
            super::terms::reason::CREDENTIALS_SECRET_MISSING,
        )
        .or_else(|| {
            not_referable(
                stack,
                &ctx.allowed_secrets,
                "spec.rabbitmq.credentialsSecret",
                &names.credentials_secret,
                credentials.as_ref(),
            )
        });
    }
    if missing.is_none()
        && credentials
            .as_ref()
            .is_some_and(|s| broker_login(s).is_none())
    {
        missing = Some(MissingReference {
            reason: super::terms::reason::CREDENTIALS_SECRET_MISSING,
            message: format!(
                "Secret {:?} must hold a non-empty UTF-8 username and password (a trailing line \
                 break is ignored)",
                names.credentials_secret
            ),
        });
    }
    // The users the broker was last told about: a renamed user is kept without a password.
    let definitions = secrets
        .get_opt(&names.rabbitmq_definitions)
        .await
        .map_err(read("Secret", &names.rabbitmq_definitions))?;
    let cookie = get(&secrets, &names.erlang_cookie_secret).await?;
    let postgres = match stack.store.provisioned() {
        Some(_) => get(&secrets, &names.postgres_credentials).await?,
        None => None,
    };
    let existing = ExistingSecrets {
        credentials: credentials.is_some(),
        erlang_cookie: cookie.is_some(),
        postgres: postgres.is_some(),
    };
    let mut read: Vec<Secret> = [credentials, definitions, cookie, postgres]
        .into_iter()
        .flatten()
        .collect();
    if missing.is_none() {
        missing =
            check_store_and_cache_secrets(&secrets, stack, &ctx.allowed_secrets, &mut read).await?;
    }
    let served = ctx.served();
    if missing.is_none() {
        missing = crate::autoscale::keda::missing_keda(stack, served);
    }
    Ok(Observed {
        existing,
        secrets: read,
        served,
        missing,
    })
}

/// Reads the workloads and the HTTPRoute of `desired` without writing (used while paused). A
/// missing workload is left out ([`Readiness::of`] counts it as its desired replicas with none
/// ready).
pub async fn workloads(
    client: &Client,
    namespace: &str,
    desired: &DesiredState,
) -> Result<Workloads, Error> {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &OptionalApi::HttpRoute.resource(),
    );
    let mut found = Workloads::default();
    for (component, child) in desired.children() {
        let name = child.name();
        let rollout = match child {
            Child::StatefulSet(_) => sts
                .get_opt(name)
                .await
                .map_err(read("StatefulSet", name))?
                .as_ref()
                .map(statefulset_rollout),
            Child::Deployment(_) => deployments
                .get_opt(name)
                .await
                .map_err(read("Deployment", name))?
                .as_ref()
                .map(deployment_rollout),
            Child::HttpRoute(_) => {
                found.route = routes
                    .get_opt(name)
                    .await
                    .map_err(read("HTTPRoute", name))?;
                None
            }
            _ => None,
        };
        found.rollouts.extend(rollout.map(|r| (component, r)));
    }
    Ok(found)
}

/// The pods of every workload in `workloads` that is not ready (at most
/// [`PODS_PER_WORKLOAD`] each, listed by the workload's selector): what
/// [`super::health::problems`] reads to say why. Ready workloads cost nothing.
pub async fn pods_of(
    client: &Client,
    namespace: &str,
    workloads: &Workloads,
) -> Result<BTreeMap<Component, Vec<Pod>>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut found = BTreeMap::new();
    for (component, rollout) in workloads.not_ready() {
        let Some(selector) = rollout.selector.as_deref() else {
            continue;
        };
        let params = ListParams::default()
            .labels(selector)
            .limit(PODS_PER_WORKLOAD);
        let list = pods.list(&params).await.map_err(|source| Error::List {
            kind: "Pod",
            source,
        })?;
        found.insert(component, list.items);
    }
    Ok(found)
}
