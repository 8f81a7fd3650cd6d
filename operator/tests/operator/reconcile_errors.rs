//! Reconcile against an in-memory API when things go wrong: injected API errors and conflicts,
//! invalid specs, missing references, undecodable objects, and `paused`.

use crate::support::api::{self, NS, Setup, Started, diff};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube_fake_client::interceptor;
use pingpong_operator::crd::{GatewayParentRef, GatewaySpec, PingPongStack, PingPongStackSpec};
use pingpong_operator::metrics::{ChildOperation, ReconcileResult};
use pingpong_operator::reconcile::{self, MISSING_REFERENCE_REQUEUE, NOT_READY_REQUEUE};
use pretty_assertions::assert_eq;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn condition(stack: &PingPongStack, type_: &str) -> (String, String, String) {
    let status = stack.status.as_ref().expect("status");
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// An interceptor that fails patches of `kind` objects with `error()` while `on` is set.
fn failing_patches(
    kind: &'static str,
    on: Arc<AtomicBool>,
    error: fn() -> kube_fake_client::Error,
) -> interceptor::Funcs {
    interceptor::Funcs::new().patch(move |ctx| {
        if on.load(Ordering::SeqCst) && ctx.patch.get("kind").and_then(|k| k.as_str()) == Some(kind)
        {
            return Err(error());
        }
        Ok(None)
    })
}

fn policy(
    stack: PingPongStack,
    error: &pingpong_operator::error::Error,
    ctx: &Arc<reconcile::Context>,
) -> Action {
    reconcile::error_policy(Arc::new(DeserializeGuard(Ok(stack))), error, ctx.clone())
}

#[tokio::test]
async fn injected_api_errors_end_in_status_events_and_metrics_with_backoff() {
    let failing = Arc::new(AtomicBool::new(true));
    let k8s = Started::new(Setup {
        interceptors: Some(failing_patches("Deployment", failing.clone(), || {
            kube_fake_client::Error::Internal("injected outage".into())
        })),
        ..Setup::for_stack(PingPongStackSpec::default())
    })
    .await;

    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(error.kind(), "ApplyFailed");
    let stack = k8s.stack().await;
    let (status, reason, message) = condition(&stack, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ApplyFailed"));
    assert!(
        message.starts_with("failed to apply Deployment stack-ping"),
        "{message}"
    );
    assert!(message.contains("injected outage"), "{message}");
    assert_eq!(condition(&stack, "Ready").1, "Reconciling");
    assert_eq!(condition(&stack, "Progressing").1, "Retrying");
    // Nothing was realised yet, so no generation is claimed as observed.
    assert_eq!(stack.status.as_ref().unwrap().observed_generation, None);
    assert_eq!(
        k8s.events().await,
        [("Warning".into(), "ApplyFailed".into())]
    );
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Error), 1);
    assert_eq!(k8s.ctx.metrics.reconcile_errors("ApplyFailed"), 1);
    // Both Deployments were attempted (one failure does not stop the other) and failed.
    assert_eq!(
        k8s.ctx
            .metrics
            .child_operations("Deployment", ChildOperation::Apply, false),
        2
    );
    assert!(
        message.contains("failed to apply Deployment stack-pong"),
        "{message}"
    );

    // Backoff: exponential per stack, starting at 5 s for a server error.
    assert_eq!(
        policy(stack.clone(), &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        policy(stack.clone(), &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(10))
    );

    // The same failure again: status unchanged, so the stack is not written (no self-trigger).
    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(
        policy(stack.clone(), &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(20))
    );
    let again = k8s.stack().await;
    assert_eq!(
        again.metadata.resource_version,
        stack.metadata.resource_version
    );
    assert_eq!(k8s.events().await.len(), 1);

    // Recovery clears Degraded, says so once, and resets the backoff; the stack is not Ready
    // yet, so it is looked at again soon.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        k8s.reconcile().await.unwrap(),
        Action::requeue(NOT_READY_REQUEUE)
    );
    let recovered = k8s.stack().await;
    assert_eq!(condition(&recovered, "Degraded").0, "False");
    let reasons: Vec<_> = k8s.events().await.into_iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"Recovered".to_owned()), "{reasons:?}");
    assert_eq!(
        policy(recovered, &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn a_refused_child_does_not_stop_the_others_nor_orphan_deletion() {
    let failing = Arc::new(AtomicBool::new(false));
    let k8s = Started::new(Setup {
        interceptors: Some(failing_patches("StatefulSet", failing.clone(), || {
            kube_fake_client::Error::InvalidRequest(
                "StatefulSet.apps \"stack-rabbitmq\" is invalid: spec: Forbidden: updates to \
                 statefulset spec for fields other than 'replicas' are forbidden"
                    .into(),
            )
        })),
        ..Setup::for_stack(PingPongStackSpec::default())
    })
    .await;
    k8s.reconcile().await.unwrap();
    assert!(k8s.children().await.contains_key("Ingress/stack"));

    // The API server now refuses the broker StatefulSet (as it does a changed
    // volumeClaimTemplates); the user changes the broker (an unchanged StatefulSet would not be
    // applied at all), scales ping and drops the Ingress.
    failing.store(true, Ordering::SeqCst);
    k8s.edit_spec(|spec| {
        spec.rabbitmq.resources = Some(
            serde_json::from_value(serde_json::json!({"limits": {"memory": "1536Mi"}})).unwrap(),
        );
        spec.ping.replicas = 3;
        spec.ingress.enabled = Some(false);
    })
    .await;
    let error = k8s.reconcile().await.unwrap_err();
    let after = k8s.children().await;
    assert_eq!(
        after["Deployment/stack-ping"]["spec"]["replicas"], 3,
        "children after the refused one are still applied"
    );
    assert!(
        !after.contains_key("Ingress/stack"),
        "orphan deletion still runs"
    );
    assert!(
        after.contains_key("StatefulSet/stack-rabbitmq"),
        "a child that failed to apply is never deleted as an orphan"
    );
    let stack = k8s.stack().await;
    let (status, reason, message) = condition(&stack, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ApplyFailed"));
    assert!(
        message.starts_with("failed to apply StatefulSet stack-rabbitmq"),
        "{message}"
    );
    assert!(
        message.contains("updates to statefulset spec for fields other than"),
        "the API's message is in status: {message}"
    );
    // A 422 is permanent for this spec: retried, with a long backoff.
    assert_eq!(
        policy(stack, &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn conflicts_are_reported_and_retried_sooner() {
    let failing = Arc::new(AtomicBool::new(true));
    let k8s = Started::new(Setup {
        interceptors: Some(failing_patches("Service", failing, || {
            kube_fake_client::Error::Conflict("Apply failed with 1 conflict".into())
        })),
        ..Setup::for_stack(PingPongStackSpec::default())
    })
    .await;
    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(error.kind(), "ApplyConflict");
    let stack = k8s.stack().await;
    let (status, reason, _) = condition(&stack, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ApplyConflict")
    );
    assert_eq!(
        k8s.events().await,
        [("Warning".into(), "ApplyConflict".into())]
    );
    assert_eq!(k8s.ctx.metrics.reconcile_errors("ApplyConflict"), 1);
    assert_eq!(
        policy(stack.clone(), &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        policy(stack, &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(4))
    );
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_and_waits_for_a_change() {
    let mut spec = PingPongStackSpec::default();
    spec.pong.replicas = 2;
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let action = k8s.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change(), "no requeue storm");
    assert!(k8s.children().await.is_empty(), "nothing applied");
    let stack = k8s.stack().await;
    let (ready, ready_reason, _) = condition(&stack, "Ready");
    let (degraded, reason, message) = condition(&stack, "Degraded");
    assert_eq!(ready, "False");
    assert_eq!(degraded, "True");
    assert_eq!(ready_reason, reason);
    assert!(
        message.contains("pong.replicas"),
        "message names the field: {message}"
    );
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Invalid), 1);
    assert_eq!(k8s.ctx.metrics.reconcile_errors(&reason), 1);
    assert_eq!(k8s.events().await, [("Warning".into(), reason.clone())]);

    // Reconciling again writes nothing: no status change, no Event, no hot loop.
    k8s.reconcile().await.unwrap();
    let again = k8s.stack().await;
    assert_eq!(
        again.metadata.resource_version,
        stack.metadata.resource_version
    );
    assert_eq!(k8s.events().await.len(), 1);

    // Fixing the spec creates the stack.
    k8s.edit_spec(|spec| spec.pong.replicas = 1).await;
    k8s.reconcile().await.unwrap();
    assert!(!k8s.children().await.is_empty());
    assert_eq!(condition(&k8s.stack().await, "Degraded").0, "False");
}

#[tokio::test]
async fn a_broker_cluster_on_an_image_older_than_3_10_is_degraded() {
    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.replicas = 3;
    spec.rabbitmq.image = Some("rabbitmq:3.9.29-management".into());
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let action = k8s.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(k8s.children().await.is_empty(), "nothing applied");
    let stack = k8s.stack().await;
    let (degraded, reason, message) = condition(&stack, "Degraded");
    assert_eq!(degraded, "True");
    assert_eq!(reason, "BrokerImageTooOld");
    for part in [
        "spec.rabbitmq.image",
        "rabbitmq:3.9.29-management",
        "RabbitMQ 3.9",
        "3.10 or newer",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    // The same image on one node is fine, and so is a tag without a version on three (a
    // version step the operator cannot judge, which the annotation lets through).
    for (replicas, image) in [(1, "rabbitmq:3.9.29-management"), (3, "rabbitmq:latest")] {
        k8s.edit_spec(|spec| {
            spec.rabbitmq.replicas = replicas;
            spec.rabbitmq.image = Some(image.into());
        })
        .await;
        k8s.annotate(pingpong_operator::labels::RABBITMQ_UPGRADE, image)
            .await;
        k8s.reconcile().await.unwrap();
        let (degraded, _, message) = condition(&k8s.stack().await, "Degraded");
        assert_eq!(degraded, "False", "{replicas} x {image}: {message}");
    }
}

#[tokio::test]
async fn paused_stops_writes_to_children_but_reports_status() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;

    k8s.edit_spec(|spec| {
        spec.paused = true;
        spec.ping.replicas = 3;
        spec.ingress.enabled = Some(false);
    })
    .await;
    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), Vec::<String>::new());
    let stack = k8s.stack().await;
    assert_eq!(condition(&stack, "Paused").0, "True");
    assert_eq!(condition(&stack, "Progressing").1, "PausedBySpec");
    let status = stack.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, stack.metadata.generation);
    assert_eq!(status.ping.as_ref().unwrap().replicas, 1, "reads what runs");
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Paused), 1);
    let reasons: Vec<_> = k8s.events().await.into_iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"Paused".to_owned()), "{reasons:?}");

    k8s.edit_spec(|spec| spec.paused = false).await;
    k8s.reconcile().await.unwrap();
    let after = k8s.children().await;
    assert_eq!(after["Deployment/stack-ping"]["spec"]["replicas"], 3);
    assert!(!after.contains_key("Ingress/stack"));
    assert_eq!(condition(&k8s.stack().await, "Paused").0, "False");
}

#[tokio::test]
async fn a_stack_paused_from_the_start_creates_nothing() {
    let spec = PingPongStackSpec {
        paused: true,
        ..PingPongStackSpec::default()
    };
    let k8s = Started::new(Setup::for_stack(spec)).await;
    k8s.reconcile().await.unwrap();
    assert!(k8s.children().await.is_empty());
    let stack = k8s.stack().await;
    assert_eq!(condition(&stack, "Paused").0, "True");
    assert_eq!(condition(&stack, "Ready").0, "False");
}

#[tokio::test]
async fn a_missing_credentials_secret_is_reported_then_used_once_created() {
    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.credentials_secret = Some("my-broker-user".into());
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let action = k8s.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(MISSING_REFERENCE_REQUEUE));
    let (status, reason, message) = condition(&k8s.stack().await, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "CredentialsSecretMissing")
    );
    assert!(message.contains("my-broker-user"), "{message}");
    assert!(k8s.children().await.is_empty());

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("my-broker-user".into()),
            labels: Some(BTreeMap::from([(
                pingpong_operator::labels::REFERABLE.to_owned(),
                pingpong_operator::labels::REFERABLE_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("username".to_owned(), ByteString(b"app".to_vec())),
            ("password".to_owned(), ByteString(b"s3cret-value".to_vec())),
        ])),
        ..Secret::default()
    };
    let secrets = k8s.api::<Secret>();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let objects = k8s.children().await;
    assert!(
        !objects.contains_key("Secret/stack-rabbitmq-credentials"),
        "not generated"
    );
    assert!(objects.contains_key("Secret/stack-rabbitmq-erlang-cookie"));
    let user = secrets.get("my-broker-user").await.unwrap();
    assert_eq!(user.data, secret.data, "the user's Secret is never written");
    assert!(user.metadata.owner_references.is_none());
    let stack = k8s.stack().await;
    assert_eq!(
        stack.status.unwrap().credentials_secret.as_deref(),
        Some("my-broker-user")
    );
}

#[tokio::test]
async fn a_missing_optional_api_holds_back_only_the_children_that_need_it() {
    let mut spec = PingPongStackSpec {
        gateway: Some(GatewaySpec {
            parent_ref: GatewayParentRef {
                name: "public".into(),
                namespace: None,
                section_name: None,
            },
            hostname: None,
        }),
        ..PingPongStackSpec::default()
    };
    spec.monitoring.service_monitor = true;
    // The in-memory API serves neither the Gateway API nor the Prometheus Operator.
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(error.kind(), "GatewayApiMissing");
    let objects = k8s.children().await;
    for child in [
        "StatefulSet/stack-rabbitmq",
        "Deployment/stack-ping",
        "Deployment/stack-pong",
        "Service/stack-ping",
        "Secret/stack-rabbitmq-credentials",
    ] {
        assert!(objects.contains_key(child), "{child} applied: {objects:?}");
    }
    let stack = k8s.stack().await;
    let (status, reason, message) = condition(&stack, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "GatewayApiMissing")
    );
    assert!(
        message.contains("spec.gateway needs the HTTPRoute API")
            && message.contains("spec.monitoring.serviceMonitor needs the ServiceMonitor API")
            && message.contains("servicemonitors.monitoring.coreos.com"),
        "{message}"
    );
    // No retry soon: the operator looks for the API on its own timer.
    assert_eq!(
        policy(stack, &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_service_monitor_without_the_prometheus_operator_is_not_silently_ignored() {
    let mut spec = PingPongStackSpec::default();
    spec.monitoring.service_monitor = true;
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(error.kind(), "PrometheusOperatorMissing");
    assert!(k8s.children().await.contains_key("Deployment/stack-pong"));
    let (status, reason, _) = condition(&k8s.stack().await, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "PrometheusOperatorMissing")
    );
}

#[tokio::test]
async fn an_undecodable_object_gets_a_warning_and_no_retry() {
    let raw = serde_json::json!({
        "apiVersion": "pingpong.dev/v1alpha1",
        "kind": "PingPongStack",
        "metadata": { "name": "broken", "namespace": NS },
        "spec": { "ping": { "replicas": "three" } }
    });
    let k8s = Started::new(Setup {
        objects: vec![raw],
        ..Setup::default()
    })
    .await;
    let guard = k8s
        .api::<DeserializeGuard<PingPongStack>>()
        .get("broken")
        .await
        .unwrap();
    assert!(guard.0.is_err());
    let action = reconcile::reconcile_guarded(Arc::new(guard), k8s.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        k8s.events().await,
        [("Warning".into(), "InvalidSpec".into())]
    );
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Invalid), 1);
}

#[tokio::test]
async fn a_stack_being_deleted_is_left_to_the_garbage_collector() {
    let mut stack = api::stack(PingPongStackSpec::default());
    stack.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    stack.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let k8s = Started::new(Setup {
        stacks: vec![stack],
        ..Setup::default()
    })
    .await;
    let before = k8s.stack().await;
    let action = k8s.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(k8s.children().await.is_empty());
    let after = k8s.stack().await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Skipped), 1);
}

#[tokio::test]
async fn the_failure_count_of_a_deleted_stack_is_forgotten() {
    let failing = Arc::new(AtomicBool::new(true));
    let k8s = Started::new(Setup {
        interceptors: Some(failing_patches("Deployment", failing, || {
            kube_fake_client::Error::Internal("injected outage".into())
        })),
        ..Setup::for_stack(PingPongStackSpec::default())
    })
    .await;
    let error = k8s.reconcile().await.unwrap_err();
    let stack = k8s.stack().await;
    assert_eq!(
        policy(stack.clone(), &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(k8s.ctx.failing_stacks(), 1);
    // Still there: kept, and the backoff goes on.
    k8s.ctx
        .forget_deleted(|ns, name| ns == NS && name == api::NAME);
    assert_eq!(k8s.ctx.failing_stacks(), 1);
    // Deleted: forgotten, so a stack re-created under the name starts at the first delay.
    k8s.ctx.forget_deleted(|_, _| false);
    assert_eq!(k8s.ctx.failing_stacks(), 0);
    assert_eq!(
        policy(stack, &error, &k8s.ctx),
        Action::requeue(Duration::from_secs(5))
    );
}
