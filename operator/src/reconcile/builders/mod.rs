//! Plan step 2 (pure): build every child object of a [`ValidatedStack`] into a [`DesiredState`].
//!
//! One file per owned resource; each builder is a plain function of the validated stack (plus
//! the few observed facts in [`PlanInputs`]). Builders never see a client, the clock, randomness
//! or the environment: generated credentials arrive through [`PlanInputs`]. The order in which
//! the children are applied is documented and written once, in [`DesiredState::children`].

pub mod app;
pub mod common;
pub mod httproute;
pub mod ingress;
pub mod keda;
pub mod networkpolicy;
pub mod pdb;
pub mod ping;
pub mod pong;
pub mod postgres;
pub mod prometheusrule;
pub mod rabbitmq;
pub mod redis;
pub mod secret;
pub mod secret_digest;
pub mod secret_files;
pub mod servicemonitor;

use crate::apis::ServedApis;
use crate::labels::Component;
use crate::reconcile::desired::{
    AppObjects, BrokerObjects, DesiredState, PostgresObjects, RedisObjects, RouteObjects,
};
use k8s_openapi::api::core::v1::Secret;

use crate::credentials::{BrokerCredentials, BrokerLogin, SecretValue};
use crate::reconcile::observe::ExistingSecrets;
use crate::reconcile::validate::ValidatedStack;
use secret_digest::SecretDigests;

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
    /// Which optional APIs the cluster serves.
    pub served: ServedApis,
    /// Per-key digests of the existing Secrets the workloads read (observe reads them in full;
    /// Secrets generated in this plan are added by the build). The pod templates carry a digest
    /// of the keys they consume, so a changed or regenerated Secret rolls its readers.
    pub secret_digests: SecretDigests,
    /// The broker user and password: the generated ones, or those observe read from the
    /// existing credentials Secret (`None` when unknown: no definitions Secret is planned).
    pub broker_login: Option<BrokerLogin>,
    /// Users the current definitions Secret declares (observed), kept in the next one without
    /// a password so a renamed user's old credentials stop working.
    pub former_users: Vec<String>,
}

impl PlanInputs {
    /// Inputs for a stack whose Secrets were looked up: `generate` and `generate_password` are
    /// called only when a Secret the operator must create is missing (never when the user names
    /// `credentialsSecret`), so existing credentials are never rotated.
    pub fn from_observed(
        stack: &ValidatedStack,
        existing: ExistingSecrets,
        served: ServedApis,
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
        let broker_login = match &credentials {
            CredentialsSource::Generated(fresh) => Some(fresh.login()),
            CredentialsSource::Existing { .. } => None,
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
            served,
            secret_digests: SecretDigests::default(),
            broker_login,
            former_users: Vec::new(),
        }
    }

    /// Takes what the plan reads from the Secrets that exist (observe reads them from the
    /// cluster, render from its input): the per-key digests of each, which the pod templates
    /// follow; unless this plan generated it, the broker login of the credentials Secret; and
    /// the users the definitions Secret declares, kept without a password in the next one.
    pub fn with_existing(mut self, stack: &ValidatedStack, secrets: &[Secret]) -> Self {
        let named = |name: &str| {
            secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
        };
        for secret in secrets {
            self.secret_digests.insert(secret);
        }
        if self.broker_login.is_none() {
            self.broker_login =
                named(&stack.names.credentials_secret).and_then(crate::credentials::broker_login);
        }
        self.former_users = named(&stack.names.rabbitmq_definitions)
            .and_then(|s| s.data.as_ref()?.get(rabbitmq::DEFINITIONS_KEY))
            .map(|bytes| rabbitmq::declared_users(&bytes.0))
            .unwrap_or_default();
        self
    }

    /// Inputs for a stack none of whose Secrets exist yet (render, tests): every Secret the
    /// operator manages is created from `credentials` and `postgres_password`.
    pub fn fresh(
        stack: &ValidatedStack,
        credentials: BrokerCredentials,
        postgres_password: SecretValue,
        served: ServedApis,
    ) -> Self {
        Self::from_observed(
            stack,
            ExistingSecrets::default(),
            served,
            || credentials,
            || postgres_password,
        )
    }
}

/// Builds every child object of `stack`.
pub fn build_desired(stack: &ValidatedStack, inputs: &PlanInputs) -> DesiredState {
    let monitors = inputs.served.service_monitor;
    let credentials_secret = match &inputs.credentials {
        CredentialsSource::Generated(credentials) => {
            Some(secret::build_credentials_secret(stack, credentials))
        }
        CredentialsSource::Existing { .. } => None,
    };
    // The broker user as every node imports it at boot.
    let definitions_secret = inputs.broker_login.as_ref().map(|login| {
        rabbitmq::build_rabbitmq_definitions_secret(stack, login, &inputs.former_users)
    });
    let app = |component, service, deployment, network_policy, pdb| AppObjects {
        service,
        deployment,
        network_policy,
        pdb,
        service_monitor: servicemonitor::build_service_monitor(stack, component, monitors),
    };
    let mut desired = DesiredState {
        rabbitmq: BrokerObjects {
            credentials_secret,
            erlang_cookie_secret: match &inputs.erlang_cookie {
                CookieSource::Generated(cookie) => {
                    Some(secret::build_erlang_cookie_secret(stack, cookie))
                }
                CookieSource::Existing => None,
            },
            definitions_secret,
            config: rabbitmq::build_rabbitmq_config(stack),
            headless_service: rabbitmq::build_rabbitmq_headless_service(stack),
            service: rabbitmq::build_rabbitmq_service(stack),
            statefulset: rabbitmq::build_rabbitmq_statefulset(stack),
            network_policy: networkpolicy::build_network_policy(stack),
            pdb: pdb::build_rabbitmq_pdb(stack),
            service_monitor: servicemonitor::build_service_monitor(
                stack,
                Component::RabbitMq,
                monitors,
            ),
        },
        postgres: postgres::build_postgres_statefulset(stack).and_then(|statefulset| {
            Some(PostgresObjects {
                secret: inputs
                    .postgres_password
                    .as_ref()
                    .and_then(|password| secret::build_postgres_secret(stack, password)),
                service: postgres::build_postgres_service(stack)?,
                statefulset,
                network_policy: networkpolicy::build_postgres_network_policy(stack)?,
            })
        }),
        redis: redis::build_redis_deployment(stack).and_then(|deployment| {
            Some(RedisObjects {
                service: redis::build_redis_service(stack)?,
                deployment,
                network_policy: networkpolicy::build_redis_network_policy(stack)?,
            })
        }),
        ping: app(
            Component::Ping,
            ping::build_ping_service(stack),
            ping::build_ping_deployment(stack),
            networkpolicy::build_ping_network_policy(stack),
            pdb::build_ping_pdb(stack),
        ),
        pong: app(
            Component::Pong,
            pong::build_pong_service(stack),
            pong::build_pong_deployment(stack),
            networkpolicy::build_pong_network_policy(stack),
            pdb::build_pong_pdb(stack),
        ),
        keda: keda::build_keda(stack, inputs.served),
        routes: RouteObjects {
            ingress: ingress::build_ingress(stack),
            http_route: httproute::build_http_route(stack),
        },
        prometheus_rule: prometheusrule::build_prometheus_rule(
            stack,
            inputs.served.prometheus_rule,
        ),
    };
    // What the pods will read: the existing Secrets, replaced by those this plan writes.
    let mut digests = inputs.secret_digests.clone();
    for secret in desired.secrets() {
        digests.insert(secret);
    }
    for template in desired.pod_templates_mut() {
        secret_digest::stamp(template, &digests);
    }
    // The cookie alone, on the broker: tells which nodes run with another cookie.
    let cookie = digests.keys_digest(
        &stack.names.erlang_cookie_secret,
        &[common::ERLANG_COOKIE_KEY],
    );
    if let Some(meta) = desired
        .rabbitmq
        .statefulset
        .spec
        .as_mut()
        .and_then(|spec| spec.template.metadata.as_mut())
    {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(crate::labels::ERLANG_COOKIE_DIGEST.to_owned(), cookie);
    }
    desired
}
