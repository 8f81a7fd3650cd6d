//! Plan step 2 (pure): build every child object of a [`ValidatedStack`] into a [`DesiredState`].
//!
//! One file per owned resource; each builder is a plain function of the validated stack (plus
//! the few observed facts in [`PlanInputs`]). Builders never see a client, the clock, randomness
//! or the environment: generated credentials arrive through [`PlanInputs`].
//!
//! # Apply order
//!
//! [`DesiredState::to_yaml_documents`] and the apply step use the same order, chosen so that
//! every object exists before something refers to it:
//! 1. Secrets (broker credentials, Erlang cookie, PostgreSQL credentials) and the broker
//!    ConfigMap — pods mount or read them;
//! 2. the broker's headless and client Services, then its StatefulSet — the headless Service
//!    must exist for stable pod DNS names;
//! 3. the provisioned PostgreSQL's Service and StatefulSet, the provisioned Redis's Service and
//!    Deployment — pong connects to them;
//! 4. ping and pong Services, then Deployments — their pods connect to the broker;
//! 5. the NetworkPolicies and PodDisruptionBudgets;
//! 6. the Ingress / HTTPRoute — only route traffic once the backends exist;
//! 7. ServiceMonitors.

pub mod app;
pub mod common;
pub mod httproute;
pub mod ingress;
pub mod names;
pub mod networkpolicy;
pub mod pdb;
pub mod ping;
pub mod pong;
pub mod postgres;
pub mod quantity;
pub mod rabbitmq;
pub mod redis;
pub mod secret;
pub mod servicemonitor;
pub mod yaml;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use serde::Serialize;

pub use httproute::http_route_api_resource;
pub use servicemonitor::{SERVICE_MONITOR_CRD, service_monitor_api_resource};

use crate::credentials::{BrokerCredentials, SecretValue};
use crate::reconcile::validate::ValidatedStack;

/// Where the broker credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsSource {
    /// The credentials Secret does not exist yet: create it with these freshly generated values.
    Generated(BrokerCredentials),
    /// The credentials Secret exists (or is the user's `credentialsSecret`): never written.
    Existing {
        /// Its name.
        secret_name: String,
    },
}

/// Where the Erlang cookie comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieSource {
    /// The cookie Secret does not exist yet: create it with this freshly generated cookie.
    Generated(SecretValue),
    /// The cookie Secret exists: never written.
    Existing,
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

/// Facts from the observe step that the plan needs besides the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInputs {
    /// The broker credentials.
    pub credentials: CredentialsSource,
    /// The Erlang cookie.
    pub erlang_cookie: CookieSource,
    /// A freshly generated password for the provisioned PostgreSQL, when its Secret must be
    /// created; `None` when it exists or the store is not a provisioned PostgreSQL.
    pub postgres_password: Option<SecretValue>,
    /// Whether the Prometheus Operator's ServiceMonitor CRD is installed.
    pub service_monitor_crd: bool,
}

impl PlanInputs {
    /// Inputs for a stack whose Secrets were looked up: `generate` and `generate_password` are
    /// called only when a Secret the operator must create is missing (never when the user names
    /// `credentialsSecret`), so existing credentials are never rotated.
    pub fn from_observed(
        stack: &ValidatedStack,
        existing: ExistingSecrets,
        service_monitor_crd: bool,
        generate: impl FnOnce() -> BrokerCredentials,
        generate_password: impl FnOnce() -> SecretValue,
    ) -> Self {
        let credentials_secret_exists = existing.credentials;
        let erlang_cookie_secret_exists = existing.erlang_cookie;
        let need_postgres = stack.store.provisioned().is_some() && !existing.postgres;
        let need_credentials = !credentials_secret_exists && !stack.rabbitmq.user_credentials;
        let fresh = (need_credentials || !erlang_cookie_secret_exists).then(generate);
        let credentials = match (&fresh, need_credentials) {
            (Some(fresh), true) => CredentialsSource::Generated(fresh.clone()),
            _ => CredentialsSource::Existing {
                secret_name: stack.names.credentials_secret.clone(),
            },
        };
        let erlang_cookie = match fresh {
            Some(fresh) if !erlang_cookie_secret_exists => {
                CookieSource::Generated(fresh.erlang_cookie)
            }
            _ => CookieSource::Existing,
        };
        Self {
            credentials,
            erlang_cookie,
            postgres_password: need_postgres.then(generate_password),
            service_monitor_crd,
        }
    }

    /// Inputs for a stack none of whose Secrets exist yet (render, tests): every Secret the
    /// operator manages is created from `credentials` and `postgres_password`.
    pub fn fresh(
        stack: &ValidatedStack,
        credentials: BrokerCredentials,
        postgres_password: SecretValue,
        service_monitor_crd: bool,
    ) -> Self {
        Self::from_observed(
            stack,
            ExistingSecrets::default(),
            service_monitor_crd,
            || credentials,
            || postgres_password,
        )
    }
}

/// Every object the operator wants for one stack: one field per owned object, in apply order.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// Broker credentials Secret; `None` when it exists or is the user's.
    pub credentials_secret: Option<Secret>,
    /// Erlang cookie Secret; `None` when it exists.
    pub erlang_cookie_secret: Option<Secret>,
    /// Provisioned PostgreSQL credentials Secret; `None` when it exists or is not needed.
    pub postgres_secret: Option<Secret>,
    /// Broker ConfigMap.
    pub rabbitmq_config: ConfigMap,
    /// Broker headless Service.
    pub rabbitmq_headless_service: Service,
    /// Broker client Service.
    pub rabbitmq_service: Service,
    /// Broker StatefulSet.
    pub rabbitmq_statefulset: StatefulSet,
    /// Provisioned PostgreSQL: headless Service.
    pub postgres_service: Option<Service>,
    /// Provisioned PostgreSQL: StatefulSet.
    pub postgres_statefulset: Option<StatefulSet>,
    /// Provisioned Redis: Service.
    pub redis_service: Option<Service>,
    /// Provisioned Redis: Deployment.
    pub redis_deployment: Option<Deployment>,
    /// ping Service.
    pub ping_service: Service,
    /// ping Deployment.
    pub ping_deployment: Deployment,
    /// pong Service.
    pub pong_service: Service,
    /// pong Deployment.
    pub pong_deployment: Deployment,
    /// NetworkPolicy guarding the broker.
    pub network_policy: NetworkPolicy,
    /// NetworkPolicy guarding the provisioned PostgreSQL.
    pub postgres_network_policy: Option<NetworkPolicy>,
    /// NetworkPolicy guarding the provisioned Redis.
    pub redis_network_policy: Option<NetworkPolicy>,
    /// Broker PodDisruptionBudget (replicas ≥ 2).
    pub pdb_rabbitmq: Option<PodDisruptionBudget>,
    /// ping PodDisruptionBudget (replicas ≥ 2).
    pub pdb_ping: Option<PodDisruptionBudget>,
    /// pong PodDisruptionBudget (replicas ≥ 2, so only with PostgreSQL).
    pub pdb_pong: Option<PodDisruptionBudget>,
    /// Ingress, when enabled.
    pub ingress: Option<Ingress>,
    /// HTTPRoute (gateway.networking.k8s.io/v1), when `spec.gateway` is set.
    pub http_route: Option<DynamicObject>,
    /// ServiceMonitors (monitoring.coreos.com/v1), when asked for and the CRD exists.
    pub service_monitors: Vec<DynamicObject>,
}

/// Why the desired state could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An object could not be serialized.
    #[error("failed to serialize {kind} {name}")]
    Serialize {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_yaml::Error,
    },
}

impl BuildError {
    /// Stable PascalCase category of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Serialize { .. } => "Serialize",
        }
    }
}

/// Builds every child object of `stack`.
pub fn build_desired(stack: &ValidatedStack, inputs: &PlanInputs) -> DesiredState {
    DesiredState {
        credentials_secret: match &inputs.credentials {
            CredentialsSource::Generated(credentials) => {
                Some(secret::build_credentials_secret(stack, credentials))
            }
            CredentialsSource::Existing { .. } => None,
        },
        erlang_cookie_secret: match &inputs.erlang_cookie {
            CookieSource::Generated(cookie) => {
                Some(secret::build_erlang_cookie_secret(stack, cookie))
            }
            CookieSource::Existing => None,
        },
        postgres_secret: inputs
            .postgres_password
            .as_ref()
            .and_then(|password| secret::build_postgres_secret(stack, password)),
        rabbitmq_config: rabbitmq::build_rabbitmq_config(stack),
        rabbitmq_headless_service: rabbitmq::build_rabbitmq_headless_service(stack),
        rabbitmq_service: rabbitmq::build_rabbitmq_service(stack),
        rabbitmq_statefulset: rabbitmq::build_rabbitmq_statefulset(stack),
        postgres_service: postgres::build_postgres_service(stack),
        postgres_statefulset: postgres::build_postgres_statefulset(stack),
        redis_service: redis::build_redis_service(stack),
        redis_deployment: redis::build_redis_deployment(stack),
        ping_service: ping::build_ping_service(stack),
        ping_deployment: ping::build_ping_deployment(stack),
        pong_service: pong::build_pong_service(stack),
        pong_deployment: pong::build_pong_deployment(stack),
        network_policy: networkpolicy::build_network_policy(stack),
        postgres_network_policy: networkpolicy::build_postgres_network_policy(stack),
        redis_network_policy: networkpolicy::build_redis_network_policy(stack),
        pdb_rabbitmq: pdb::build_rabbitmq_pdb(stack),
        pdb_ping: pdb::build_ping_pdb(stack),
        pdb_pong: pdb::build_pong_pdb(stack),
        ingress: ingress::build_ingress(stack),
        http_route: httproute::build_http_route(stack),
        service_monitors: servicemonitor::build_service_monitors(stack, inputs.service_monitor_crd),
    }
}

impl DesiredState {
    /// Every object as a YAML document (no `---` separators), in apply order.
    pub fn to_yaml_documents(&self) -> Result<Vec<String>, BuildError> {
        let Self {
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
        } = self;
        let mut docs = Documents::default();
        docs.push_opt(credentials_secret.as_ref(), "Secret", |s| &s.metadata.name)?;
        for secret in [erlang_cookie_secret, postgres_secret] {
            docs.push_opt(secret.as_ref(), "Secret", |s| &s.metadata.name)?;
        }
        docs.push(rabbitmq_config, "ConfigMap", &rabbitmq_config.metadata.name)?;
        for service in [rabbitmq_headless_service, rabbitmq_service] {
            docs.push(service, "Service", &service.metadata.name)?;
        }
        docs.push(
            rabbitmq_statefulset,
            "StatefulSet",
            &rabbitmq_statefulset.metadata.name,
        )?;
        docs.push_opt(postgres_service.as_ref(), "Service", |s| &s.metadata.name)?;
        docs.push_opt(postgres_statefulset.as_ref(), "StatefulSet", |s| {
            &s.metadata.name
        })?;
        docs.push_opt(redis_service.as_ref(), "Service", |s| &s.metadata.name)?;
        docs.push_opt(redis_deployment.as_ref(), "Deployment", |d| {
            &d.metadata.name
        })?;
        docs.push(ping_service, "Service", &ping_service.metadata.name)?;
        docs.push(
            ping_deployment,
            "Deployment",
            &ping_deployment.metadata.name,
        )?;
        docs.push(pong_service, "Service", &pong_service.metadata.name)?;
        docs.push(
            pong_deployment,
            "Deployment",
            &pong_deployment.metadata.name,
        )?;
        docs.push(
            network_policy,
            "NetworkPolicy",
            &network_policy.metadata.name,
        )?;
        for policy in [postgres_network_policy, redis_network_policy] {
            docs.push_opt(policy.as_ref(), "NetworkPolicy", |p| &p.metadata.name)?;
        }
        for pdb in [pdb_rabbitmq, pdb_ping, pdb_pong] {
            docs.push_opt(pdb.as_ref(), "PodDisruptionBudget", |p| &p.metadata.name)?;
        }
        docs.push_opt(ingress.as_ref(), "Ingress", |i| &i.metadata.name)?;
        docs.push_opt(http_route.as_ref(), "HTTPRoute", |r| &r.metadata.name)?;
        for monitor in service_monitors {
            docs.push(monitor, "ServiceMonitor", &monitor.metadata.name)?;
        }
        Ok(docs.0)
    }
}

#[derive(Default)]
struct Documents(Vec<String>);

impl Documents {
    fn push(
        &mut self,
        object: &impl Serialize,
        kind: &str,
        name: &Option<String>,
    ) -> Result<(), BuildError> {
        let yaml = yaml::to_yaml(object).map_err(|source| BuildError::Serialize {
            kind: kind.to_owned(),
            name: name.clone().unwrap_or_default(),
            source,
        })?;
        self.0.push(yaml);
        Ok(())
    }

    fn push_opt<T: Serialize>(
        &mut self,
        object: Option<&T>,
        kind: &str,
        name: impl Fn(&T) -> &Option<String>,
    ) -> Result<(), BuildError> {
        match object {
            Some(object) => self.push(object, kind, name(object)),
            None => Ok(()),
        }
    }
}
