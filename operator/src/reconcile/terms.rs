//! The words status is written in: condition types and reasons. Every stage may name them
//! (observe reports a missing reference, apply a refused child, report writes them all), so
//! they live below all of them; [`super::status`] re-exports both modules.

/// Condition types.
pub mod condition_type {
    /// Summary: every component has its desired number of ready replicas.
    pub const READY: &str = "Ready";
    /// The operator is still converging the stack (rollout or retry in progress).
    pub const PROGRESSING: &str = "Progressing";
    /// The operator cannot realise the spec, or the last reconcile failed.
    pub const DEGRADED: &str = "Degraded";
    /// `spec.paused` is true: children are left alone.
    pub const PAUSED: &str = "Paused";
    /// A component runs an older default image than the operator's current one
    /// (`upgradePolicy: Manual`); `status.images.<component>.available` names it.
    pub const UPGRADE_AVAILABLE: &str = "UpgradeAvailable";
    /// The stack applied new default images and is not Ready again yet: it holds one of the
    /// operator's `maxConcurrentUpgrades` slots.
    pub const UPGRADING: &str = "Upgrading";
}

/// Condition reasons (PascalCase, fixed set; error reasons come from `Error::kind()`).
pub mod reason {
    /// Ready=True.
    pub const ALL_COMPONENTS_READY: &str = "AllComponentsReady";
    /// Ready=False, Progressing=True: replicas are starting.
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    /// Progressing=True while children roll out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Progressing=False once every component is ready.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Progressing=True after a failed reconcile that will be retried.
    pub const RETRYING: &str = "Retrying";
    /// Ready=False before the first successful reconcile.
    pub const RECONCILING: &str = "Reconciling";
    /// Ready/Degraded/Progressing when the spec cannot be realised.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready/Degraded/Progressing when `rabbitmq.credentialsSecret` names a missing or
    /// incomplete Secret.
    pub const CREDENTIALS_SECRET_MISSING: &str = "CredentialsSecretMissing";
    /// Ready/Degraded/Progressing when `spec.gateway` is set but the Gateway API CRDs are not
    /// installed (every other child is applied): [`crate::apis::OptionalApi::missing_reason`].
    pub const GATEWAY_API_MISSING: &str = "GatewayApiMissing";
    /// Ready/Degraded/Progressing when `monitoring.serviceMonitor` or `monitoring.prometheusRule`
    /// is set but the Prometheus Operator's CRD is not installed (every other child is applied).
    pub const PROMETHEUS_OPERATOR_MISSING: &str = "PrometheusOperatorMissing";
    /// Ready/Degraded/Progressing when `spec.pong.autoscaling.engine` is `keda` but KEDA's
    /// CRDs are not installed.
    pub const KEDA_MISSING: &str = "KedaMissing";
    /// Ready/Degraded/Progressing when `pong.store.postgres.external.secretName` names a missing
    /// or incomplete Secret.
    pub const POSTGRES_SECRET_MISSING: &str = "PostgresSecretMissing";
    /// Ready/Degraded/Progressing when `pong.cache.external.secretName` names a missing Secret or
    /// one without the URL key.
    pub const CACHE_SECRET_MISSING: &str = "CacheSecretMissing";
    /// Ready/Degraded/Progressing when a Secret the spec names lacks the opt-in label
    /// `pingpong.dev/referable=true` and is not in the admin's list.
    pub const SECRET_NOT_REFERABLE: &str = "SecretNotReferable";
    /// Degraded=False.
    pub const RECONCILE_SUCCEEDED: &str = "ReconcileSucceeded";
    /// Paused=True, and Progressing=False while paused.
    pub const PAUSED_BY_SPEC: &str = "PausedBySpec";
    /// Paused=False.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// UpgradeAvailable=True: a newer default image is available and `upgradePolicy: Manual`
    /// keeps the recorded one.
    pub const NEWER_DEFAULT_IMAGE: &str = "NewerDefaultImage";
    /// UpgradeAvailable=False: every component runs the operator's current default or the
    /// image its spec names.
    pub const IMAGES_CURRENT: &str = "ImagesCurrent";
    /// UpgradeAvailable=True under `upgradePolicy: Automatic`: the operator's
    /// `maxConcurrentUpgrades` stacks are rolling, this one keeps its images until a slot frees.
    pub const WAITING_FOR_UPGRADE_SLOT: &str = "WaitingForUpgradeSlot";
    /// UpgradeAvailable=True: no newer default image, but workloads keep an earlier release's
    /// selectors (`upgradePolicy: Manual` without `pingpong.dev/migrate-selectors: "true"`);
    /// with a newer image too the reason stays `NewerDefaultImage` and the message names both.
    pub const SELECTOR_MIGRATION: &str = "SelectorMigration";
    /// Upgrading=True: new default images applied (or the selector migration started), waiting
    /// for the stack to be Ready.
    pub const ROLLING_TO_NEW_DEFAULTS: &str = "RollingToNewDefaults";
    /// Upgrading=False.
    pub const NO_UPGRADE_IN_PROGRESS: &str = "NoUpgradeInProgress";
}
