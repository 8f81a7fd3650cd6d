//! What every reconcile shares, injected by the controller or by a test: the API client,
//! metrics, the Event recorder, default images and Gateway, the optional APIs the cluster serves,
//! and the per-stack failure counts behind the error policy's backoff. No globals.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::applied::LastApplied;
use super::cache::ChildCaches;
use super::upgrade_gate::UpgradeGate;
use crate::apis::ServedApis;
use crate::broker_check::upgrade::BrokerViews;
use crate::config::AllowedSecrets;
use crate::crd::GatewayParentRef;
use crate::images::Images;
use crate::metrics::Metrics;

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Default images.
    pub images: Images,
    /// The controller's metadata caches of the children (empty without a controller).
    pub children: ChildCaches,
    /// Secrets stacks may name without the opt-in label (the admin's list).
    pub allowed_secrets: AllowedSecrets,
    /// The Gateway of stacks that choose no route (the operator's `PINGPONG_DEFAULT_GATEWAY`).
    pub default_gateway: Option<GatewayParentRef>,
    /// At most N stacks roll to new default images at a time.
    pub upgrades: UpgradeGate,
    /// What each stack's reconcile last applied to its children (applies of unchanged children
    /// are skipped).
    pub last_applied: LastApplied,
    /// Where a running broker's feature flags and deprecated features are read before a change
    /// of RabbitMQ series.
    pub broker_views: BrokerViews,
    served: watch::Sender<ServedApis>,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    /// A context with no failure history; `served` is what the controller learned at start.
    pub fn new(
        client: Client,
        metrics: Metrics,
        recorder: Recorder,
        images: Images,
        served: ServedApis,
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            images,
            children: ChildCaches::default(),
            allowed_secrets: AllowedSecrets::default(),
            default_gateway: None,
            upgrades: UpgradeGate::default(),
            last_applied: LastApplied::default(),
            broker_views: BrokerViews::default(),
            served: watch::Sender::new(served),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context, with orphan deletion reading `children` instead of listing.
    pub fn with_child_caches(mut self, children: ChildCaches) -> Self {
        self.children = children;
        self
    }

    /// The same context, letting stacks name the Secrets in `allowed` without the opt-in label.
    pub fn with_allowed_secrets(mut self, allowed: AllowedSecrets) -> Self {
        self.allowed_secrets = allowed;
        self
    }

    /// The same context, attaching the HTTPRoute of stacks that choose no route to `gateway`
    /// where the Gateway API is served.
    pub fn with_default_gateway(mut self, gateway: Option<GatewayParentRef>) -> Self {
        self.default_gateway = gateway;
        self
    }

    /// The same context, letting at most `gate`'s number of stacks roll new default images at
    /// a time.
    pub fn with_upgrade_gate(mut self, gate: UpgradeGate) -> Self {
        self.upgrades = gate;
        self
    }

    /// The same context, reading running brokers' views from `views`.
    pub fn with_broker_views(mut self, views: BrokerViews) -> Self {
        self.broker_views = views;
        self
    }

    /// The optional APIs the cluster serves, as last learned.
    pub fn served(&self) -> ServedApis {
        *self.served.borrow()
    }

    /// Notified when [`Self::relearn_apis`] finds a change (the controller then restarts to
    /// watch the new kinds).
    pub fn subscribe_apis(&self) -> watch::Receiver<ServedApis> {
        self.served.subscribe()
    }

    /// Asks the API server again which optional APIs it serves (called by the controller on its
    /// own timer, never by a reconcile) and remembers the answer.
    pub async fn relearn_apis(&self) -> Result<ServedApis, kube::Error> {
        let served = ServedApis::discover(&self.client).await?;
        self.served.send_if_modified(|known| {
            let changed = *known != served;
            *known = served;
            changed
        });
        Ok(served)
    }

    pub(super) fn key(stack: &impl ResourceExt) -> (String, String) {
        (stack.namespace().unwrap_or_default(), stack.name_any())
    }

    /// Consecutive failures of this stack so far, then counts one more.
    pub(super) fn next_attempt(&self, key: (String, String)) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        let attempt = *n;
        *n = n.saturating_add(1);
        attempt
    }

    pub(super) fn reset_attempts(&self, key: &(String, String)) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// Forgets the failure counts of stacks that no longer exist (`exists` says which do): a
    /// deleted stack that failed last would otherwise keep its entry for the life of the process,
    /// and a stack re-created under its name would start deep in the backoff.
    pub fn forget_deleted(&self, exists: impl Fn(&str, &str) -> bool) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(namespace, name), _| exists(namespace, name));
    }

    /// Forgets what was applied for the stacks whose uid `exists` says no longer exist.
    pub fn forget_deleted_records(&self, exists: impl Fn(&str) -> bool) {
        self.last_applied.retain(exists);
    }

    /// How many stacks have a failure count (for tests and the controller's bookkeeping).
    pub fn failing_stacks(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
