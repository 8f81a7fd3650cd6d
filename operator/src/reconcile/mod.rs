//! The reconcile driver: validate → observe → build → apply → report, one call each.
//!
//! [`reconcile`] runs one stack through the pipeline in [`run`]. Validation and building are
//! pure ([`validate`], [`builders`]); [`observe`] reads (never writes); [`apply`] writes the
//! children in the order [`desired::DesiredState::children`] documents, except those
//! [`applied`] remembers as unchanged since their last apply, and deletes orphans;
//! [`report`] writes the status that [`status`] computes, and the Events, after [`health`]
//! explained, from the pods of the workloads that are not ready, why they are not; from the same
//! pods, [`restart`] deletes together the broker nodes that run with an old Erlang cookie;
//! before the apply, [`migrate`] replaces the workloads that still select with an earlier
//! release's selector (gated like an upgrade). Every failure a user
//! can act on ends in a status condition before it is returned, so the error policy's backoff
//! and the user's view agree. All state comes through the injected [`Context`]: no globals, so
//! tests drive it against an in-memory API.

pub mod applied;
pub mod apply;
pub mod builders;
pub mod cache;
pub mod context;
pub mod desired;
pub mod events;
pub mod health;
pub mod migrate;
pub mod names;
pub mod observe;
pub mod ownership;
pub mod quantity;
pub mod report;
pub mod restart;
pub mod rollout;
pub mod status;
pub mod terms;
pub mod upgrade_gate;
pub mod validate;
pub mod yaml;

/// Field manager of every child apply ([`apply`]).
pub const FIELD_MANAGER: &str = "pingpong-operator";
/// Field manager of the status apply ([`report`]).
pub const STATUS_FIELD_MANAGER: &str = "pingpong-operator/status";

pub use context::Context;

use crate::crd::PingPongStack;
use crate::credentials;
use crate::error::Error;
use crate::labels;
use crate::metrics::ReconcileResult;
use apply::Applier;
use builders::PlanInputs;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use rollout::Readiness;
use status::{Converged, Outcome, Report, reason};
use std::sync::Arc;
use std::time::Duration;
use validate::ValidatedStack;
use validate::rabbitmq_upgrade::{self, RABBITMQ_UPGRADE_CHECKED};

/// Safety-net requeue after a successful reconcile (children are also watched).
pub const SUCCESS_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while the stack is not Ready: pod failures and a Gateway's verdict do not always
/// change a watched object.
pub const NOT_READY_REQUEUE: Duration = Duration::from_secs(30);
/// Deadline of one reconcile; a hung API call fails it with `Timeout` (retried with backoff).
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requeue while a referenced object (the user's credentials Secret) is missing.
pub const MISSING_REFERENCE_REQUEUE: Duration = Duration::from_secs(60);

/// Whether the stack's `Ready` condition is `True`.
pub fn is_ready(stack: &PingPongStack) -> bool {
    stack
        .status
        .as_ref()
        .is_some_and(|s| status::is_true(&s.conditions, status::condition_type::READY))
}

/// Reconciles one stack: validate → observe → build → apply → report.
#[tracing::instrument(skip_all, fields(stack = %stack.name_any(), namespace = stack.namespace().as_deref().unwrap_or("")))]
pub async fn reconcile(stack: Arc<PingPongStack>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    // Boxed: the pipeline's future is large (it holds the desired objects); on the heap it
    // leaves the worker thread's stack to the API calls.
    let result = tokio::time::timeout(RECONCILE_TIMEOUT, Box::pin(run(&stack, &ctx)))
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
            report_undecodable(invalid, &ctx).await;
            ctx.metrics.reconciled(ReconcileResult::Invalid);
            Ok(Action::await_change())
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

/// Writes the status for one outcome of one stack.
struct Reporter<'a> {
    ctx: &'a Context,
    stack: &'a PingPongStack,
}

impl Reporter<'_> {
    async fn send(&self, outcome: Outcome) -> Result<(), Error> {
        let previous = self.stack.status.clone().unwrap_or_default();
        let report = Report {
            outcome,
            paused: self.stack.spec.paused,
            generation: self.stack.metadata.generation,
            previous: &previous,
        };
        let regarding = self.stack.object_ref(&());
        report::report(&self.ctx.client, &self.ctx.recorder, &regarding, report).await?;
        Ok(())
    }

    /// Puts a failure into status (best effort) and hands it back.
    async fn failed<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let outcome = Outcome::Failed {
            reason: error.kind(),
            message: error.chain(),
        };
        if let Err(status_error) = self.send(outcome).await {
            tracing::warn!(error = %status_error.chain(), "could not report the failure in status");
        }
        Err(error)
    }

    /// Reports a spec that cannot be realised (yet).
    async fn invalid(&self, reason: &'static str, message: String) -> Result<(), Error> {
        tracing::info!(reason, error = %message, "spec cannot be realised");
        self.ctx.metrics.reconcile_failed(reason);
        self.send(Outcome::Invalid { reason, message }).await
    }
}

/// The pipeline for one decoded stack.
async fn run(stack: &PingPongStack, ctx: &Context) -> Result<(ReconcileResult, Action), Error> {
    let meta = &stack.metadata;
    meta.namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    meta.name
        .as_deref()
        .ok_or(Error::MissingObjectKey("name"))?;
    let uid = meta.uid.as_deref().ok_or(Error::MissingObjectKey("uid"))?;
    if meta.deletion_timestamp.is_some() {
        // Re-applying children now would fight the garbage collector.
        tracing::debug!("stack is being deleted; nothing to reconcile");
        ctx.last_applied.forget_stack(uid);
        return Ok((ReconcileResult::Skipped, Action::await_change()));
    }
    let reporter = Reporter { ctx, stack };

    // 1. Validate (pure): the spec into typed settings.
    let validated = match validate::validate(stack, &ctx.images) {
        Ok(validated) => validated,
        Err(invalid) => {
            reporter
                .invalid(invalid.kind(), invalid.to_string())
                .await?;
            return Ok((ReconcileResult::Invalid, Action::await_change()));
        }
    };

    // A change of RabbitMQ series waits until the running broker shows nothing that blocks it
    // (its feature flags and deprecated features, read from a ready broker pod).
    let validated = broker_series_change(stack, ctx, validated).await;

    // Which workloads still select with an earlier release's selector (the caches answer for
    // the others).
    let live = migrate::observe(&ctx.client, &ctx.children, &validated, uid);
    let live = reporter.failed(live.await).await?;
    let selector_migration = migrate::needs_migration(&live) && migrate::opted_in(stack);

    // At most N stacks roll to new default images, or migrate their selectors, at a time; the
    // others keep theirs for now.
    let gated = upgrade_gate::gate(
        &ctx.upgrades,
        &ctx.client,
        stack,
        validated,
        &ctx.images,
        selector_migration,
    );
    let gated = reporter.failed(gated.await).await?;
    let mut validated = gated.validated;
    let migrating = selector_migration && gated.upgrading && !validated.paused;
    let selectors = migrate::decide(&live, migrating);
    validated.selectors = selectors.selectors.clone();

    // 2. Observe (reads only): Secrets, optional APIs; credentials only for missing Secrets.
    let observed = reporter
        .failed(observe::observe(ctx, &validated).await)
        .await?;
    if let Some(missing) = observed.missing {
        reporter.invalid(missing.reason, missing.message).await?;
        let requeue = Action::requeue(MISSING_REFERENCE_REQUEUE);
        return Ok((ReconcileResult::Invalid, requeue));
    }

    // The route of a stack that chose none: the operator's default Gateway where the Gateway
    // API is served, else the Ingress validate planned.
    let validated =
        validated.with_default_route(ctx.default_gateway.as_ref(), observed.served.http_route);

    // 3. Build (pure): every desired child object.
    // New credentials only for the Secrets the operator must create: an existing password is
    // never rotated.
    let inputs = PlanInputs::from_observed(
        &validated,
        observed.existing,
        observed.served,
        credentials::generate,
        credentials::generate_password,
    )
    .with_existing(&validated, &observed.secrets);
    let desired = builders::build_desired(&validated, &inputs);

    // 4. Apply, or only read the workloads while paused.
    let workloads = if validated.paused {
        observe::workloads(&ctx.client, &validated.namespace, &desired).await
    } else {
        // Workloads with an earlier release's selector: deleted with their pods kept, and
        // created again by the apply below.
        let migrated = migrate::execute(&ctx.client, &validated, &selectors, &desired);
        let migrated = reporter.failed(migrated.await).await?;
        if !migrated.is_empty() {
            ctx.last_applied.forget_stack(uid);
            let regarding = stack.object_ref(&());
            events::publish(&ctx.recorder, &regarding, vec![migrate::notice(&migrated)]).await;
        }
        // Before pong's Deployment is applied without `replicas`; not needed once this process
        // applied it so (the operator's field manager owns `replicas` no longer).
        let pong = desired::Child::Deployment(&desired.pong.deployment);
        if validated.keda.is_some() && !ctx.last_applied.last_wrote(uid, &pong) {
            let handover = crate::autoscale::keda::hand_over_replicas(&ctx.client, &validated);
            reporter.failed(handover.await).await?;
        }
        // Children unchanged since their last apply are not written, except on a full pass.
        let full_pass = ctx.last_applied.begin(uid, tokio::time::Instant::now());
        let mut applier = Applier::new(
            &ctx.client,
            &validated.namespace,
            &validated.name,
            uid,
            &ctx.metrics,
            observed.served,
            &ctx.children,
        )
        .skipping_unchanged(&ctx.last_applied, full_pass);
        let selector = labels::children_selector(&validated.name);
        // A child whose API is not served is reported; it does not hold back the others.
        let unserved = observe::unserved_apis(&validated, observed.served);
        apply::apply_desired(&mut applier, &desired, uid, &selector, unserved).await
    };
    let workloads = reporter.failed(workloads).await?;

    // 5. Report: why what is not ready is not, from the pods of those workloads (read only for
    // them) and the route's status.
    let pods = observe::pods_of(&ctx.client, &validated.namespace, &workloads);
    let pods = reporter.failed(pods.await).await?;
    // A clustered broker whose cookie changed: its nodes restart together, or never rejoin.
    if !validated.paused {
        let broker_pods = pods.get(&labels::Component::RabbitMq);
        let stale = restart::stale_cookie_pods(
            &desired.rabbitmq.statefulset,
            broker_pods.map(Vec::as_slice).unwrap_or_default(),
        );
        if !stale.is_empty() {
            let restarted = restart::restart(&ctx.client, &validated.namespace, &stale);
            reporter.failed(restarted.await).await?;
            let regarding = stack.object_ref(&());
            events::publish(&ctx.recorder, &regarding, vec![restart::notice(&stale)]).await;
        }
    }
    let mut problems = health::problems(
        &workloads,
        &pods,
        validated.gateway.as_ref(),
        &validated.namespace,
        k8s_openapi::jiff::Timestamp::now(),
    );
    // A split broker: every pod ready, each node in a cluster of its own (the periodic check's
    // verdict in the status; never read from the brokers here).
    problems.extend(health::broker_problem(stack));
    let converged = Converged::new(&validated, Readiness::of(&desired, &workloads))
        .with_problems(problems)
        .with_upgrade(gated.upgrading, gated.waiting.clone())
        .with_selector_migration(migrate::pending_message(&selectors.pending));
    let ready = converged.problems.is_empty() && converged.readiness.is_ready();
    reporter
        .send(Outcome::Converged(Box::new(converged)))
        .await?;
    // The status now says `Upgrading`: other stacks count this one.
    drop(gated.slot);
    tracing::info!(paused = validated.paused, ready, "reconciled");
    let result = if validated.paused {
        ReconcileResult::Paused
    } else {
        ReconcileResult::Success
    };
    // Pods change without their workload's status changing (a pull that turns into a
    // back-off, a broker node that never gets ready): look again soon until Ready (a paused
    // stack waits for its watches: nothing of it is being changed).
    let requeue = if gated.waiting.is_some() {
        // Waiting for an upgrade slot changes no watched object of this stack.
        NOT_READY_REQUEUE
    } else if ready || validated.paused {
        SUCCESS_REQUEUE
    } else {
        NOT_READY_REQUEUE
    };
    Ok((result, Action::requeue(requeue)))
}

/// `validated` once the running broker was asked about a change of series its broker image
/// would make: unchanged when it cleared the step (an Event says so), else keeping the image it
/// runs with `RabbitMQUpgradeRefused` saying why. No request without such a change.
async fn broker_series_change(
    stack: &PingPongStack,
    ctx: &Context,
    validated: ValidatedStack,
) -> ValidatedStack {
    let change = match rabbitmq_upgrade::series_change(stack, &validated.rabbitmq.image) {
        Some(change) if !validated.paused => change,
        _ => return validated,
    };
    let asked = crate::broker_check::upgrade::ask_running(
        &ctx.broker_views,
        &ctx.client,
        &validated.namespace,
        &validated.name,
        &validated.names,
    )
    .await;
    let view = asked.as_ref().map(|a| a.view.clone()).map_err(Clone::clone);
    if let Some(why) = change.hold(&view) {
        tracing::info!(from = %change.running, to = %change.wanted, why = %why.message, "a change of series waits");
        let spec_image = stack.spec.rabbitmq.image.is_some();
        return validated.keeping_broker(&change.running, spec_image, &ctx.images, why);
    }
    if let Ok(asked) = asked {
        tracing::info!(from = %change.running, to = %change.wanted, pod = %asked.pod, "the running broker cleared the change of series");
        let notice = events::Notice {
            warning: false,
            reason: RABBITMQ_UPGRADE_CHECKED.to_owned(),
            action: "CheckRabbitMQUpgrade",
            note: change.cleared(&asked.pod, &asked.view),
        };
        events::publish(&ctx.recorder, &stack.object_ref(&()), vec![notice]).await;
    }
    validated
}

/// An object that does not deserialize into a PingPongStack (the schema should prevent it):
/// a Warning Event says why, and the controller waits for the next change.
async fn report_undecodable(invalid: &InvalidObject, ctx: &Context) {
    let meta = &invalid.metadata;
    tracing::warn!(
        stack = meta.name.as_deref().unwrap_or(""),
        namespace = meta.namespace.as_deref().unwrap_or(""),
        error = %invalid.error,
        "PingPongStack does not match the schema"
    );
    ctx.metrics.reconcile_failed(reason::INVALID_SPEC);
    let regarding = ObjectReference {
        api_version: Some(PingPongStack::api_version(&()).into_owned()),
        kind: Some(PingPongStack::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    let notice = events::Notice {
        warning: true,
        reason: reason::INVALID_SPEC.to_owned(),
        action: "Reconcile",
        note: format!(
            "the object does not match the PingPongStack schema: {}",
            invalid.error
        ),
    };
    events::publish(&ctx.recorder, &regarding, vec![notice]).await;
}
