//! `spec.upgradePolicy` and `status.images`: which image each component runs, where it came
//! from, and what an operator upgrade would change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an operator upgrade (new default images) does to a running stack.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpgradePolicy {
    /// The stack keeps the default images recorded in `status.images` when the operator's
    /// defaults change; `status.images.<component>.available` names the new default and the
    /// condition `UpgradeAvailable` is True. Switch to `Automatic` (or set the image in the spec)
    /// to take it. A stack created by a release before the unique selectors
    /// (`pingpong.dev/stack`, `pingpong.dev/role`) also keeps its workloads' selectors until it is
    /// annotated `pingpong.dev/migrate-selectors: "true"` (`UpgradeAvailable` with reason
    /// `SelectorMigration`). The default: an operator upgrade never restarts a stack by surprise.
    #[default]
    Manual,
    /// The stack follows the operator's default images: an operator upgrade that changes a
    /// default rolls the component, and a stack created before the unique selectors migrates to
    /// them (the broker and the database restart, their data is kept); at most the operator's
    /// `maxConcurrentUpgrades` stacks at a time.
    Automatic,
}

/// Where a component's image came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImageSource {
    /// The operator's default (its configuration, or the default recorded for the stack under
    /// `upgradePolicy: Manual`).
    #[default]
    OperatorDefault,
    /// The image named in the spec: always the user's choice, never changed by an upgrade.
    Spec,
}

/// The image of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// The image the component's workload is applied with.
    pub image: String,
    /// `Spec` (named in the spec) or `OperatorDefault`.
    pub source: ImageSource,
    /// The operator's current default when it differs from `image` and `upgradePolicy` is
    /// `Manual` (unset otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
}

/// The image of every component the stack runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentImages {
    /// The ping service.
    pub ping: ResolvedImage,
    /// The pong service.
    pub pong: ResolvedImage,
    /// The RabbitMQ broker.
    pub rabbitmq: ResolvedImage,
    /// The provisioned PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ResolvedImage>,
    /// The postgres-exporter sidecar of a provisioned PostgreSQL with `metrics: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_exporter: Option<ResolvedImage>,
    /// The provisioned Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<ResolvedImage>,
}

impl ComponentImages {
    /// Every component's image with its component name, in a fixed order.
    pub fn all(&self) -> Vec<(&'static str, &ResolvedImage)> {
        let mut all = vec![
            ("ping", &self.ping),
            ("pong", &self.pong),
            ("rabbitmq", &self.rabbitmq),
        ];
        all.extend(self.postgres.as_ref().map(|i| ("postgres", i)));
        all.extend(
            self.postgres_exporter
                .as_ref()
                .map(|i| ("postgresExporter", i)),
        );
        all.extend(self.redis.as_ref().map(|i| ("redis", i)));
        all
    }
}
