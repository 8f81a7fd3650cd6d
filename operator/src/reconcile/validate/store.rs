//! Validation of `spec.pong.store` and `spec.pong.cache`: the pong replica limit that follows
//! the store, user Secret names that must not clash with the operator's, and the defaults of a
//! provisioned PostgreSQL and Redis.

use super::settings::{
    CacheSettings, DataStorage, PostgresSettings, RedisSettings, StoreSettings, postgres_defaults,
    redis_defaults,
};
use super::{ValidationError, check_quantity, check_replicas, image, resources};
use crate::crd::{CacheSpec, PongSpec, PostgresSpec, StoreType};
use crate::images::Images;
use crate::reconcile::names::ChildNames;

/// Largest pong replica count with a PostgreSQL store (the CRD's maximum).
const MAX_PONG_REPLICAS: i32 = 100;

/// Checks `spec.pong.replicas` against the store: 0 or 1 in memory, up to 100 with PostgreSQL.
pub(super) fn check_pong_replicas(pong: &PongSpec) -> Result<(), ValidationError> {
    match pong.store.type_ {
        StoreType::Memory => check_replicas(
            "spec.pong.replicas",
            pong.replicas,
            0,
            1,
            "must be 0 or 1 while spec.pong.store.type is memory; set spec.pong.store.type: postgres to run more",
        ),
        StoreType::Postgres => check_replicas(
            "spec.pong.replicas",
            pong.replicas,
            0,
            MAX_PONG_REPLICAS,
            "must be 0 to 100",
        ),
    }
}

/// Checks `spec.pong.autoscaling` (the CRD's CEL rules reject the same at admission; a stack
/// stored before they existed is refused here): min ≤ max, and more than one replica only with
/// PostgreSQL.
pub(super) fn check_pong_autoscaling(pong: &PongSpec) -> Result<(), ValidationError> {
    let Some(autoscaling) = &pong.autoscaling else {
        return Ok(());
    };
    check_replicas(
        "spec.pong.autoscaling.minReplicas",
        autoscaling.min_replicas,
        0,
        MAX_PONG_REPLICAS,
        "must be 0 to 100",
    )?;
    let (max_allowed, reason) = match pong.store.type_ {
        StoreType::Memory => (
            1,
            "must be 1 while spec.pong.store.type is memory (more than one pong replica needs \
             PostgreSQL: each would hold a different part of the stream); set \
             spec.pong.store.type: postgres",
        ),
        StoreType::Postgres => (MAX_PONG_REPLICAS, "must be 1 to 100"),
    };
    check_replicas(
        "spec.pong.autoscaling.maxReplicas",
        autoscaling.max_replicas,
        autoscaling.min_replicas.max(1),
        max_allowed,
        if autoscaling.min_replicas > autoscaling.max_replicas {
            "must not be below spec.pong.autoscaling.minReplicas"
        } else {
            reason
        },
    )
}

/// A user Secret must not be one the operator writes for this stack (it would be read as the
/// user's, or, for the PostgreSQL credentials, be taken for the generated one).
fn check_user_secret(
    field: &'static str,
    name: &str,
    names: &ChildNames,
) -> Result<(), ValidationError> {
    if names.operator_secrets().contains(&name) {
        return Err(ValidationError::SecretNameConflict {
            field,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Resolves `spec.pong.store`.
pub(super) fn store_settings(
    pong: &PongSpec,
    names: &ChildNames,
    defaults: &Images,
) -> Result<StoreSettings, ValidationError> {
    let store = &pong.store;
    if store.type_ == StoreType::Memory {
        if store.postgres.is_some() {
            return Err(ValidationError::PostgresWithoutPostgresStore);
        }
        return Ok(StoreSettings::Memory);
    }
    let provisioned = match store.postgres.clone().unwrap_or_default() {
        PostgresSpec::External(external) => {
            check_user_secret(
                "spec.pong.store.postgres.external.secretName",
                &external.secret_name,
                names,
            )?;
            return Ok(StoreSettings::ExternalPostgres {
                secret_name: external.secret_name,
            });
        }
        PostgresSpec::Provisioned(provisioned) => provisioned,
    };
    let storage = if provisioned.storage.ephemeral {
        DataStorage::Ephemeral
    } else {
        let size = &provisioned.storage.size;
        check_quantity(
            "spec.pong.store.postgres.provisioned.storage.size".to_owned(),
            size,
        )?;
        DataStorage::Persistent {
            size: size.clone(),
            storage_class_name: provisioned.storage.storage_class_name.clone(),
        }
    };
    Ok(StoreSettings::ProvisionedPostgres(PostgresSettings {
        image: image(
            "spec.pong.store.postgres.provisioned.image",
            provisioned.image.as_deref(),
            &defaults.postgres,
        )?,
        storage,
        resources: resources(
            "spec.pong.store.postgres.provisioned.resources",
            provisioned.resources.as_ref(),
            postgres_defaults,
        )?,
        metrics: provisioned.metrics,
        exporter_image: defaults.postgres_exporter.clone(),
    }))
}

/// Resolves `spec.pong.cache`.
pub(super) fn cache_settings(
    pong: &PongSpec,
    names: &ChildNames,
    defaults: &Images,
) -> Result<Option<CacheSettings>, ValidationError> {
    let Some(cache) = &pong.cache else {
        return Ok(None);
    };
    let settings = match cache {
        CacheSpec::External(external) => {
            check_user_secret(
                "spec.pong.cache.external.secretName",
                &external.secret_name,
                names,
            )?;
            CacheSettings::External {
                secret_name: external.secret_name.clone(),
                key: external.key.clone(),
            }
        }
        CacheSpec::Provisioned(provisioned) => CacheSettings::Provisioned(RedisSettings {
            image: image(
                "spec.pong.cache.provisioned.image",
                provisioned.image.as_deref(),
                &defaults.redis,
            )?,
            resources: resources(
                "spec.pong.cache.provisioned.resources",
                provisioned.resources.as_ref(),
                redis_defaults,
            )?,
        }),
    };
    Ok(Some(settings))
}
