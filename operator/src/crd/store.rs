//! The pong store and cache part of the `PingPongStack` API: `spec.pong.store`, `spec.pong.cache`
//! and their status. Types only, like the rest of [`crate::crd`].
//!
//! `store: {type: postgres}` alone means a PostgreSQL the operator provisions with every default;
//! `cache: {provisioned: {}}` a Redis with every default. The alternatives `external` /
//! `provisioned` are Rust enums, which become a `oneOf` in the schema: exactly one may be set.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::StorageSpec;

/// Default Secret key of an external Redis URL.
pub const DEFAULT_REDIS_URL_KEY: &str = "url";

/// Where pong keeps the messages it consumed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("!has(self.postgres) || self.type == 'postgres'").message(
    "pong.store.postgres is only used with pong.store.type: postgres; set the type or remove the postgres block"
))]
// The provisioned PostgreSQL's storage, compared with its defaults filled in: a store created as
// `type: postgres` alone has no `postgres` block, so a rule on `storage` itself would never see
// the old value (the default `1Gi` and `ephemeral: false` must match `DEFAULT_STORAGE_SIZE` and
// `StorageSpec::default()`; tests/operator/crd_schema.rs checks both cases).
#[x_kube(validation = kube::core::Rule::new(
    "!((self.type == 'postgres' && (!has(self.postgres) || has(self.postgres.provisioned))) && (oldSelf.type == 'postgres' && (!has(oldSelf.postgres) || has(oldSelf.postgres.provisioned)))) || (((has(self.postgres) && has(self.postgres.provisioned.storage) && has(self.postgres.provisioned.storage.size)) ? self.postgres.provisioned.storage.size : '1Gi') == ((has(oldSelf.postgres) && has(oldSelf.postgres.provisioned.storage) && has(oldSelf.postgres.provisioned.storage.size)) ? oldSelf.postgres.provisioned.storage.size : '1Gi') && ((has(self.postgres) && has(self.postgres.provisioned.storage) && has(self.postgres.provisioned.storage.storageClassName)) ? self.postgres.provisioned.storage.storageClassName : '') == ((has(oldSelf.postgres) && has(oldSelf.postgres.provisioned.storage) && has(oldSelf.postgres.provisioned.storage.storageClassName)) ? oldSelf.postgres.provisioned.storage.storageClassName : '') && ((has(self.postgres) && has(self.postgres.provisioned.storage) && has(self.postgres.provisioned.storage.ephemeral)) ? self.postgres.provisioned.storage.ephemeral : false) == ((has(oldSelf.postgres) && has(oldSelf.postgres.provisioned.storage) && has(oldSelf.postgres.provisioned.storage.ephemeral)) ? oldSelf.postgres.provisioned.storage.ephemeral : false))"
).message(
    "pong.store.postgres.provisioned.storage cannot be changed after creation, also when it was left to its default (size 1Gi, the default StorageClass, not ephemeral): it is the PostgreSQL StatefulSet's volumeClaimTemplates, which Kubernetes does not let change; expand the PersistentVolumeClaim data-<stack>-postgres-0 yourself where the StorageClass allows it"
))]
#[serde(rename_all = "camelCase")]
pub struct StoreSpec {
    /// `memory` (default): messages live in the pong process, are lost on restart, and pong runs
    /// at most one replica. `postgres`: messages are rows in PostgreSQL, survive restarts, and
    /// several pong replicas serve the same list.
    #[serde(default, rename = "type")]
    pub type_: StoreType,
    /// The PostgreSQL database (only with `type: postgres`). Unset: a database the operator
    /// provisions with every default, as with `provisioned: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
}

/// Store types of pong.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StoreType {
    /// In the pong process (`PONG_STORE=memory`).
    #[default]
    Memory,
    /// In PostgreSQL (`PONG_STORE=postgres`).
    Postgres,
}

impl StoreType {
    /// The value of `PONG_STORE` and of `status.store.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Postgres => "postgres",
        }
    }
}

/// A PostgreSQL database for pong: one that exists (`external`) or one the operator runs
/// (`provisioned`). Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PostgresSpec {
    /// An existing database, with its connection settings in a Secret.
    External(ExternalPostgres),
    /// A single-instance PostgreSQL StatefulSet the operator creates (`<stack>-postgres`), with
    /// a generated password in the Secret `<stack>-postgres-credentials`.
    Provisioned(ProvisionedPostgres),
}

impl Default for PostgresSpec {
    fn default() -> Self {
        Self::Provisioned(ProvisionedPostgres::default())
    }
}

/// An existing PostgreSQL database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPostgres {
    /// Name of a Secret in the stack's namespace with the keys `host`, `port`, `database`,
    /// `username` and `password`. pong reads `host` … `username` through secretKeyRefs (as
    /// `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`) and `password` as a mounted file
    /// (`PGPASSWORD_FILE`); the user needs the right to create tables in the database. The
    /// operator never writes this Secret. It must carry the label `pingpong.dev/referable=true`
    /// (or be in the operator's `allowedSecrets`), else the stack is `SecretNotReferable`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// A PostgreSQL the operator provisions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionedPostgres {
    /// Container image: an official `postgres` image (Debian based, user 999) or compatible.
    /// Defaults to `postgres:17`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Storage of the database directory. The PersistentVolumeClaim is kept when the store is
    /// switched off or the stack is deleted; delete it yourself to drop the data. Fixed at
    /// creation (it becomes the StatefulSet's volumeClaimTemplates): a change is rejected.
    // The rule that keeps it is on `pong.store`, where a defaulted value is visible too.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory requests/limits of the PostgreSQL container. Defaults to requests of 100m
    /// CPU and 256Mi memory with a 1Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Run a postgres-exporter sidecar that serves Prometheus metrics on port 9187 (with
    /// `prometheus.io/*` scrape annotations on the pod).
    #[serde(default)]
    pub metrics: bool,
}

/// A Redis cache of pong's `GET /pong` responses: one that exists (`external`) or one the
/// operator runs (`provisioned`). Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CacheSpec {
    /// A Redis Deployment the operator creates (`<stack>-redis`, port 6379, no persistence).
    /// pong gets `REDIS_URL=redis://<stack>-redis:6379/0`.
    Provisioned(ProvisionedRedis),
    /// An existing Redis, with its URL in a Secret.
    External(ExternalRedis),
}

/// A Redis the operator provisions: a cache only (no persistence, no password; a NetworkPolicy
/// admits only this stack's pong pods).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionedRedis {
    /// Container image: an official `redis` image (user 999) or compatible. Defaults to
    /// `redis:7.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// CPU and memory requests/limits of the Redis container. Defaults to requests of 50m CPU
    /// and 64Mi memory with a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// An existing Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedis {
    /// Name of a Secret in the stack's namespace that holds the Redis URL
    /// (`redis://[user:password@]host:port/db` or `rediss://…`). pong reads it from the
    /// Secret mounted as a file (`REDIS_URL_FILE`), again after every Redis failure, so a
    /// rotated URL needs no restart. The operator never writes this Secret. It must carry the
    /// label `pingpong.dev/referable=true` (or be in the operator's `allowedSecrets`), else the
    /// stack is `SecretNotReferable`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the URL in the Secret.
    #[serde(default = "default_redis_url_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where a backing service of pong runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// Created and run by the operator for this stack.
    Provisioned,
    /// Given by the user through a Secret; the operator only checks the Secret.
    External,
}

/// Observed state of pong's store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// `memory` or `postgres`.
    #[serde(rename = "type")]
    pub type_: StoreType,
    /// `provisioned` or `external` (PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Whether the store is usable: always for memory; for an external database once its
    /// Secret has every key; for a provisioned one when its pod is ready.
    pub ready: bool,
    /// Desired PostgreSQL replicas (provisioned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready PostgreSQL replicas (provisioned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Name of the Secret with the PostgreSQL credentials (PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The PostgreSQL major version the provisioned database's data was initialised with
    /// (recorded at its first apply, kept while the store is off since the claim is kept). An
    /// image of another major is refused (`PostgresMajorUpgradeRefused`) unless the stack is
    /// annotated `pingpong.dev/postgres-major-upgrade: "<major>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_major_version: Option<u32>,
}

/// Observed state of pong's Redis cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// `provisioned` or `external`.
    pub placement: Placement,
    /// Whether the cache is usable: for an external Redis once its Secret has the key; for a
    /// provisioned one when its pod is ready. pong works without the cache, only slower.
    pub ready: bool,
    /// Desired Redis replicas (provisioned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready Redis replicas (provisioned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

fn default_redis_url_key() -> String {
    DEFAULT_REDIS_URL_KEY.to_owned()
}
