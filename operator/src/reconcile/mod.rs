//! The reconcile driver: observe → plan → apply → report, and the Controller's error policy.
//!
//! [`reconcile`] reads like the pipeline it runs. Validation and building are pure
//! ([`validate`], [`build`]); [`observe`] reads (never writes); [`apply_desired`] writes the
//! children in a documented order and deletes orphans; [`report`] writes the status and Events.
//! Every failure a user can act on ends in a status condition. All state comes through the
//! injected [`Context`]: no globals, so tests drive it against an in-memory API.

pub mod apply;
pub mod build;
pub mod events;
pub mod observe;
pub mod report;
pub mod status;
pub mod validate;

mod driver;

pub use driver::{apply_desired, optional_kinds};

use crate::config::Images;
use crate::crd::PingPongStack;
use crate::error::Error;
use crate::metrics::{Metrics, ReconcileResult};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use validate::ImageDefaults;

/// Safety-net requeue after a successful reconcile (children are also watched).
pub const SUCCESS_REQUEUE: Duration = Duration::from_secs(300);
/// Deadline of one reconcile; a hung API call fails it with `Timeout` (retried with backoff).
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requeue while a referenced object (the user's credentials Secret) is missing.
pub const MISSING_REFERENCE_REQUEUE: Duration = Duration::from_secs(60);

/// Everything a reconcile needs, injected by the controller or by a test.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Default images.
    pub images: ImageDefaults,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    /// A context with no failure history.
    pub fn new(
        client: Client,
        metrics: Metrics,
        recorder: Recorder,
        images: ImageDefaults,
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            images,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(stack: &impl ResourceExt) -> (String, String) {
        (stack.namespace().unwrap_or_default(), stack.name_any())
    }

    /// Consecutive failures of this stack so far, then counts one more.
    fn next_attempt(&self, key: (String, String)) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        let attempt = *n;
        *n = n.saturating_add(1);
        attempt
    }

    fn reset_attempts(&self, key: &(String, String)) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// Converts the process configuration's images into the validator's defaults.
pub fn image_defaults(images: &Images) -> ImageDefaults {
    ImageDefaults {
        ping: images.ping.clone(),
        pong: images.pong.clone(),
        rabbitmq: images.rabbitmq.clone(),
    }
}

/// Whether the stack's `Ready` condition is `True`.
pub fn is_ready(stack: &PingPongStack) -> bool {
    stack
        .status
        .as_ref()
        .is_some_and(|s| status::is_true(&s.conditions, status::condition_type::READY))
}

/// Reconciles one stack: observe → plan → apply → report.
#[tracing::instrument(skip_all, fields(stack = %stack.name_any(), namespace = stack.namespace().as_deref().unwrap_or("")))]
pub async fn reconcile(stack: Arc<PingPongStack>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    // Boxed: the pipeline's future is large (it holds the desired objects); on the heap it
    // leaves the worker thread's stack to the API calls.
    let result = tokio::time::timeout(RECONCILE_TIMEOUT, Box::pin(driver::run(&stack, &ctx)))
        .await
        .unwrap_or(Err(Error::Timeout(RECONCILE_TIMEOUT)));
    match &result {
        Ok((outcome, _)) => {
            ctx.metrics.reconciled(*outcome);
            ctx.reset_attempts(&Context::key(stack.as_ref()));
        }
        Err(error) => {
            ctx.metrics.reconciled(ReconcileResult::Error);
            ctx.metrics.reconcile_failed(error.kind());
        }
    }
    result.map(|(_, action)| action)
}

/// The Controller's entry point: objects that do not even deserialize are reported, not retried.
pub async fn reconcile_guarded(
    guard: Arc<DeserializeGuard<PingPongStack>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &guard.0 {
        Ok(stack) => reconcile(Arc::new(stack.clone()), ctx).await,
        Err(invalid) => {
            let _timer = ctx.metrics.reconcile_timer();
            let result = driver::report_undecodable(invalid, &ctx).await;
            match &result {
                Ok(_) => ctx.metrics.reconciled(ReconcileResult::Invalid),
                Err(error) => {
                    ctx.metrics.reconciled(ReconcileResult::Error);
                    ctx.metrics.reconcile_failed(error.kind());
                }
            }
            result
        }
    }
}

/// Chooses the retry delay by error category, exponential per stack (never a fixed second).
pub fn error_policy(
    guard: Arc<DeserializeGuard<PingPongStack>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let attempt = ctx.next_attempt(Context::key(guard.as_ref()));
    let delay = error.category().backoff(attempt);
    tracing::warn!(
        stack = %guard.name_any(),
        namespace = guard.namespace().as_deref().unwrap_or(""),
        error = %error.chain(),
        kind = error.kind(),
        attempt,
        retry_in_s = delay.as_secs(),
        "reconcile failed; retrying with backoff"
    );
    Action::requeue(delay)
}
