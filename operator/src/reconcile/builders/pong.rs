//! The pong Deployment and Service (`<stack>-pong`, port 8002 behind Service port 80), and the
//! store and cache variables pong reads.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{EnvVar, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::app::{AppParams, build_app_deployment, build_app_service};
use super::common::{
    DATABASE_KEY, HOST_KEY, PASSWORD_KEY, PONG_PORT, PORT_KEY, POSTGRES_DATABASE, POSTGRES_PORT,
    POSTGRES_USER, USERNAME_KEY, env_from_secret, env_value, service_host,
};
use super::redis::provisioned_redis_url;
use super::secret_files::{
    POSTGRES_CREDENTIALS_DIR, POSTGRES_CREDENTIALS_VOLUME, REDIS_URL_DIR, REDIS_URL_VOLUME,
    SecretFiles, file_path,
};
use crate::crd::StoreType;
use crate::labels::Component;
use crate::reconcile::validate::{CacheSettings, StoreSettings, ValidatedStack};

/// The PostgreSQL password as a file (`PGPASSWORD_FILE`): the external database's Secret or the
/// generated `<stack>-postgres-credentials`. `None` with the in-memory store.
pub fn store_files(stack: &ValidatedStack) -> Option<SecretFiles> {
    let secret = match &stack.store {
        StoreSettings::Memory => return None,
        StoreSettings::ExternalPostgres { secret_name } => secret_name,
        StoreSettings::ProvisionedPostgres(_) => &stack.names.postgres_credentials,
    };
    Some(SecretFiles::new(
        POSTGRES_CREDENTIALS_VOLUME,
        secret,
        &[PASSWORD_KEY],
        POSTGRES_CREDENTIALS_DIR,
    ))
}

/// An external Redis's URL as a file (`REDIS_URL_FILE`): the key of the user's Secret. `None`
/// without a cache or with the provisioned one (its URL holds no password).
pub fn cache_files(stack: &ValidatedStack) -> Option<SecretFiles> {
    match &stack.cache {
        Some(CacheSettings::External { secret_name, key }) => Some(SecretFiles::new(
            REDIS_URL_VOLUME,
            secret_name,
            &[key.as_str()],
            REDIS_URL_DIR,
        )),
        None | Some(CacheSettings::Provisioned(_)) => None,
    }
}

/// The store and cache variables: `PONG_STORE` and the libpq `PG*` variables for PostgreSQL
/// (an external database's settings from its Secret; a provisioned one's from the stack), with
/// the password always as a file ([`store_files`], `PGPASSWORD_FILE`, read for every new
/// connection); `REDIS_URL` for the provisioned cache, `REDIS_URL_FILE` for an external one
/// ([`cache_files`]). Nothing for the in-memory default.
pub fn store_env(stack: &ValidatedStack) -> Vec<EnvVar> {
    let mut env = Vec::new();
    match &stack.store {
        StoreSettings::Memory => {}
        StoreSettings::ExternalPostgres { secret_name } => {
            env.push(env_value("PONG_STORE", StoreType::Postgres.as_str()));
            for (name, key) in [
                ("PGHOST", HOST_KEY),
                ("PGPORT", PORT_KEY),
                ("PGDATABASE", DATABASE_KEY),
                ("PGUSER", USERNAME_KEY),
            ] {
                env.push(env_from_secret(name, secret_name, key));
            }
            env.push(password_file_env());
        }
        StoreSettings::ProvisionedPostgres(_) => {
            let names = &stack.names;
            env.extend([
                env_value("PONG_STORE", StoreType::Postgres.as_str()),
                env_value("PGHOST", service_host(stack, &names.postgres)),
                env_value("PGPORT", POSTGRES_PORT.to_string()),
                env_value("PGDATABASE", POSTGRES_DATABASE),
                env_value("PGUSER", POSTGRES_USER),
                password_file_env(),
            ]);
        }
    }
    match &stack.cache {
        None => {}
        Some(CacheSettings::Provisioned(_)) => {
            env.push(env_value("REDIS_URL", provisioned_redis_url(stack)));
        }
        Some(CacheSettings::External { key, .. }) => {
            env.push(env_value("REDIS_URL_FILE", file_path(REDIS_URL_DIR, key)));
        }
    }
    env
}

fn password_file_env() -> EnvVar {
    env_value(
        "PGPASSWORD_FILE",
        file_path(POSTGRES_CREDENTIALS_DIR, PASSWORD_KEY),
    )
}

/// The in-memory store allows a single consumer: replace the pod instead of running two
/// consumers side by side during a rollout. With PostgreSQL every replica shares the store, so
/// pods roll one at a time, a new one first (`maxSurge: 1`, `maxUnavailable: 0`).
///
/// The rolling parameters are set explicitly, not left to API defaulting, so that this field
/// manager owns them: switching back to `Recreate` then removes them. Defaulted values would
/// stay, and the API server rejects `rollingUpdate` with `type: Recreate`.
fn strategy(stack: &ValidatedStack) -> DeploymentStrategy {
    if stack.store.is_postgres() {
        DeploymentStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }
    } else {
        DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        }
    }
}

fn params(stack: &ValidatedStack) -> AppParams<'_> {
    let mut extra_env = vec![env_value(
        "PONG_MAX_MESSAGES",
        stack.pong_max_messages.to_string(),
    )];
    extra_env.extend(store_env(stack));
    AppParams {
        component: Component::Pong,
        name: &stack.names.pong,
        container: "pong",
        settings: &stack.pong,
        port: PONG_PORT,
        extra_env,
        extra_files: store_files(stack)
            .into_iter()
            .chain(cache_files(stack))
            .collect(),
        strategy: Some(strategy(stack)),
    }
}

/// The pong Deployment: `Recreate` rollouts with the in-memory store (one consumer),
/// `RollingUpdate` with PostgreSQL; restricted pods, probes on /healthz and /readyz. While KEDA
/// scales pong (`autoscaling.engine: keda`) `replicas` is left out, so the operator's field
/// manager does not own it and never fights KEDA's HorizontalPodAutoscaler.
pub fn build_pong_deployment(stack: &ValidatedStack) -> Deployment {
    let mut deployment = build_app_deployment(stack, &params(stack));
    if stack.keda.is_some()
        && let Some(spec) = deployment.spec.as_mut()
    {
        spec.replicas = None;
    }
    deployment
}

/// The pong Service.
pub fn build_pong_service(stack: &ValidatedStack) -> Service {
    build_app_service(stack, &params(stack))
}
