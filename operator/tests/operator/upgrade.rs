//! Operator upgrades against an in-memory API: a stack records the image of every component in
//! `status.images`; when the operator's defaults change, `upgradePolicy: Manual` keeps them and
//! reports the newer default, `Automatic` rolls to it, and an image named in the spec is never
//! touched.

use crate::support::api::{self as api, NAME, Setup, Started};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use pingpong_operator::apis::ServedApis;
use pingpong_operator::broker_check::upgrade::{BrokerView, BrokerViews};
use pingpong_operator::crd::{ImageSource, PingPongStackSpec, PingPongStackStatus, UpgradePolicy};
use pingpong_operator::images::{self, Images};
use pingpong_operator::reconcile::Context;
use pretty_assertions::assert_eq;
use std::sync::Arc;

/// The defaults of the "next release": every component the operator configures changes.
fn upgraded() -> Images {
    Images {
        ping: "ghcr.io/pingpong-operator/ping:9.9.9".to_owned(),
        pong: "ghcr.io/pingpong-operator/pong:9.9.9".to_owned(),
        rabbitmq: "rabbitmq:4.3-management".to_owned(),
        ..Images::default()
    }
}

/// A Context of the same in-memory API with other default images (the upgraded operator).
async fn operator_with(started: &Started, defaults: Images) -> Arc<Context> {
    let served = ServedApis::discover(&started.client).await.unwrap();
    let base = api::bare_context(&started.client, served);
    Arc::new(
        Context::new(
            base.client.clone(),
            pingpong_operator::metrics::Metrics::new().unwrap(),
            base.recorder.clone(),
            defaults,
            served,
        )
        .with_broker_views(api::cleared_broker()),
    )
}

/// A Context of the same in-memory API whose brokers answer `views` before a change of series.
async fn operator_asking(started: &Started, views: BrokerViews) -> Arc<Context> {
    let served = ServedApis::discover(&started.client).await.unwrap();
    Arc::new(api::bare_context(&started.client, served).with_broker_views(views))
}

fn condition(status: &PingPongStackStatus, type_: &str) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"));
    (c.status.clone(), c.reason.clone())
}

async fn images_applied(started: &Started) -> (String, String, String) {
    let image = |spec: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
        spec.and_then(|t| t.spec)
            .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
            .unwrap()
    };
    let broker = started
        .api::<StatefulSet>()
        .get(&format!("{NAME}-rabbitmq"))
        .await
        .unwrap();
    let ping = started
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    let pong = started
        .api::<Deployment>()
        .get(&format!("{NAME}-pong"))
        .await
        .unwrap();
    (
        image(ping.spec.map(|s| s.template)),
        image(pong.spec.map(|s| s.template)),
        image(broker.spec.map(|s| s.template)),
    )
}

#[tokio::test]
async fn status_records_the_image_of_every_component() {
    let started = Started::reconciled(PingPongStackSpec::default()).await;
    let status = started.status().await;
    let recorded = status.images.clone().expect("status.images");
    assert_eq!(recorded.rabbitmq.image, images::RABBITMQ);
    assert_eq!(recorded.rabbitmq.source, ImageSource::OperatorDefault);
    assert_eq!(recorded.ping.image, images::PING);
    assert_eq!(recorded.pong.image, images::PONG);
    assert_eq!(recorded.postgres, None);
    assert_eq!(
        condition(&status, "UpgradeAvailable"),
        ("False".to_owned(), "ImagesCurrent".to_owned())
    );
    // The stack's default policy is Manual.
    assert_eq!(
        started.stack().await.spec.upgrade_policy,
        UpgradePolicy::Manual
    );
}

#[tokio::test]
async fn manual_keeps_its_images_when_the_operator_defaults_change() {
    let started = Started::reconciled(PingPongStackSpec::default()).await;
    let before = started.children().await;

    let upgraded_operator = operator_with(&started, upgraded()).await;
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();

    assert_eq!(
        api::diff(&before, &started.children().await),
        Vec::<String>::new()
    );
    let status = started.status().await;
    let recorded = status.images.clone().unwrap();
    assert_eq!(recorded.rabbitmq.image, images::RABBITMQ);
    assert_eq!(
        recorded.rabbitmq.available.as_deref(),
        Some("rabbitmq:4.3-management")
    );
    assert_eq!(
        recorded.ping.available.as_deref(),
        Some("ghcr.io/pingpong-operator/ping:9.9.9")
    );
    let (upgrade, reason) = condition(&status, "UpgradeAvailable");
    assert_eq!(
        (upgrade.as_str(), reason.as_str()),
        ("True", "NewerDefaultImage")
    );

    // Switching the policy takes the new defaults.
    started
        .edit_spec(|spec| spec.upgrade_policy = UpgradePolicy::Automatic)
        .await;
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();
    let expected = upgraded();
    assert_eq!(
        images_applied(&started).await,
        (expected.ping, expected.pong, expected.rabbitmq.clone())
    );
    let status = started.status().await;
    // (`available` itself is dropped by the API server's server-side apply, which removes a
    // field its manager stops applying; the in-memory API merges, so the e2e test checks it.)
    assert_eq!(
        status.images.clone().unwrap().rabbitmq.image,
        "rabbitmq:4.3-management"
    );
    let (upgrade, _) = condition(&status, "UpgradeAvailable");
    assert_eq!(upgrade, "False");
}

#[tokio::test]
async fn automatic_rolls_to_the_new_defaults_and_spec_images_stay() {
    let spec = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    let mut setup = Setup::for_stack(spec);
    setup.stacks[0].spec.pong.image = Some("registry.example.com/pong:1".to_owned());
    let started = Started::new(setup).await;
    started.reconcile().await.unwrap();

    let upgraded_operator = operator_with(&started, upgraded()).await;
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();

    let expected = upgraded();
    assert_eq!(
        images_applied(&started).await,
        (
            expected.ping,
            "registry.example.com/pong:1".to_owned(),
            expected.rabbitmq
        )
    );
    let recorded = started.status().await.images.unwrap();
    assert_eq!(recorded.pong.source, ImageSource::Spec);
    assert_eq!(recorded.pong.available, None);
}

fn postgres_store(image: Option<&str>) -> pingpong_operator::crd::StoreSpec {
    use pingpong_operator::crd::{PostgresSpec, ProvisionedPostgres, StoreSpec, StoreType};
    StoreSpec {
        type_: StoreType::Postgres,
        postgres: Some(PostgresSpec::Provisioned(ProvisionedPostgres {
            image: image.map(str::to_owned),
            ..ProvisionedPostgres::default()
        })),
    }
}

/// The first container's image of the StatefulSet `name`.
async fn statefulset_image(started: &Started, name: &str) -> String {
    let set = started.api::<StatefulSet>().get(name).await.unwrap();
    set.spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
        .unwrap()
}

async fn postgres_image(started: &Started) -> String {
    statefulset_image(started, &format!("{NAME}-postgres")).await
}

#[tokio::test]
async fn a_postgres_major_change_is_refused_and_everything_else_applied() {
    let mut spec = PingPongStackSpec::default();
    spec.pong.store = postgres_store(Some("postgres:16.4"));
    let started = Started::reconciled(spec).await;
    let store = started.status().await.store.unwrap();
    assert_eq!(store.data_major_version, Some(16));

    // A new major and, in the same edit, more ping replicas.
    started
        .edit_spec(|spec| {
            spec.pong.store = postgres_store(Some("postgres:17"));
            spec.ping.replicas = 3;
        })
        .await;
    started.reconcile().await.unwrap();

    assert_eq!(postgres_image(&started).await, "postgres:16.4");
    let ping = started
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    assert_eq!(ping.spec.unwrap().replicas, Some(3));
    let status = started.status().await;
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".to_owned(), "PostgresMajorUpgradeRefused".to_owned())
    );
    assert_eq!(status.store.unwrap().data_major_version, Some(16));
    assert_eq!(
        status.images.unwrap().postgres.unwrap().image,
        "postgres:16.4"
    );

    // The documented path: the annotation names the new major.
    started
        .annotate(pingpong_operator::labels::POSTGRES_MAJOR_UPGRADE, "17")
        .await;
    started.reconcile().await.unwrap();
    assert_eq!(postgres_image(&started).await, "postgres:17");
    let status = started.status().await;
    assert_eq!(status.store.clone().unwrap().data_major_version, Some(17));
    let (degraded, _) = condition(&status, "Degraded");
    assert_eq!(degraded, "False");
}

#[tokio::test]
async fn a_new_default_postgres_major_does_not_reach_an_automatic_stack() {
    let mut spec = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    spec.pong.store = postgres_store(None);
    let started = Started::reconciled(spec).await;
    assert_eq!(postgres_image(&started).await, images::POSTGRES);

    let next = Images {
        postgres: "postgres:18".to_owned(),
        ..Images::default()
    };
    let upgraded_operator = operator_with(&started, next).await;
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();
    assert_eq!(postgres_image(&started).await, images::POSTGRES);
    let (degraded, reason) = condition(&started.status().await, "Degraded");
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "PostgresMajorUpgradeRefused")
    );
}

#[tokio::test]
async fn a_rabbitmq_series_skip_is_refused_and_everything_else_applied() {
    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.image = Some("rabbitmq:4.0-management".into());
    let started = Started::reconciled(spec).await;
    let broker = format!("{NAME}-rabbitmq");

    // 4.0 → 4.2 skips 4.1; in the same edit, more ping replicas.
    started
        .edit_spec(|spec| {
            spec.rabbitmq.image = Some("rabbitmq:4.2-management".into());
            spec.ping.replicas = 3;
        })
        .await;
    started.reconcile().await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.0-management"
    );
    let ping = started
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    assert_eq!(ping.spec.unwrap().replicas, Some(3));
    let status = started.status().await;
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".to_owned(), "RabbitMQUpgradeRefused".to_owned())
    );
    assert_eq!(
        status.images.unwrap().rabbitmq.image,
        "rabbitmq:4.0-management"
    );
    let events = started.events().await;
    assert!(
        events
            .iter()
            .any(|(_, reason)| reason == "RabbitMQUpgradeRefused"),
        "{events:?}"
    );

    // The supported step is applied.
    started
        .edit_spec(|spec| spec.rabbitmq.image = Some("rabbitmq:4.1-management".into()))
        .await;
    started.reconcile().await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.1-management"
    );
    assert_eq!(condition(&started.status().await, "Degraded").0, "False");

    // A tag without a version is refused until the annotation names it.
    started
        .edit_spec(|spec| spec.rabbitmq.image = Some("rabbitmq:latest".into()))
        .await;
    started.reconcile().await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.1-management"
    );
    started
        .annotate(
            pingpong_operator::labels::RABBITMQ_UPGRADE,
            "rabbitmq:latest",
        )
        .await;
    started.reconcile().await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:latest"
    );
    assert_eq!(condition(&started.status().await, "Degraded").0, "False");
}

/// The message of the stack's `Degraded` condition.
async fn degraded_message(started: &Started) -> String {
    let status = started.status().await;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "RabbitMQUpgradeRefused")
    );
    c.message.clone()
}

#[tokio::test]
async fn a_change_of_series_waits_until_the_running_broker_clears_it() {
    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.image = Some("rabbitmq:4.1-management".into());
    let started = Started::reconciled(spec).await;
    let broker = format!("{NAME}-rabbitmq");
    started
        .edit_spec(|spec| {
            spec.rabbitmq.image = Some("rabbitmq:4.2-management".into());
            spec.ping.replicas = 3;
        })
        .await;

    // A stable feature flag disabled and a deprecated feature in use: the broker keeps 4.1,
    // everything else is applied, the condition names both and what to run.
    let blocked = BrokerView {
        disabled_feature_flags: vec!["message_containers".into()],
        deprecated_features_in_use: vec!["transient_nonexcl_queues".into()],
        feature_flags: 20,
    };
    let ctx = operator_asking(&started, BrokerViews::Fixed(Ok(blocked))).await;
    api::reconcile_once(&started.client, &ctx).await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.1-management"
    );
    let ping = started
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    assert_eq!(ping.spec.unwrap().replicas, Some(3));
    let message = degraded_message(&started).await;
    for part in [
        "RabbitMQ 4.1 → 4.2",
        "message_containers",
        "rabbitmqctl enable_feature_flag all",
        "transient_nonexcl_queues",
        "keeps running rabbitmq:4.1-management",
        "pingpong.dev/rabbitmq-upgrade=rabbitmq:4.2-management",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    let images = started.status().await.images.unwrap();
    assert_eq!(images.rabbitmq.image, "rabbitmq:4.1-management");
    assert_eq!(images.rabbitmq.source, ImageSource::Spec);

    // A broker that cannot be read holds the change too: its answer is what clears it.
    let ctx = operator_asking(&started, BrokerViews::Fixed(Err("timed out".into()))).await;
    api::reconcile_once(&started.client, &ctx).await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.1-management"
    );
    let message = degraded_message(&started).await;
    assert!(
        message.contains("could not be read (timed out)"),
        "{message}"
    );
    // The operator's own reader finds no ready broker pod here (the in-memory API runs none).
    let ctx = operator_asking(&started, BrokerViews::default()).await;
    api::reconcile_once(&started.client, &ctx).await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.1-management"
    );
    let message = degraded_message(&started).await;
    assert!(
        message.contains("no broker pod is ready to answer"),
        "{message}"
    );

    // Cleared: applied, recorded, an Event says what the broker reported.
    started.reconcile().await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.2-management"
    );
    let status = started.status().await;
    assert_eq!(condition(&status, "Degraded").0, "False");
    assert_eq!(
        status.images.unwrap().rabbitmq.image,
        "rabbitmq:4.2-management"
    );
    let events = started.events().await;
    assert!(
        events
            .iter()
            .any(|(kind, reason)| kind == "Normal" && reason == "RabbitMQUpgradeChecked"),
        "{events:?}"
    );

    // The annotation naming the image lets a change through without asking.
    started
        .annotate(
            pingpong_operator::labels::RABBITMQ_UPGRADE,
            "rabbitmq:4.3-management",
        )
        .await;
    started
        .edit_spec(|spec| spec.rabbitmq.image = Some("rabbitmq:4.3-management".into()))
        .await;
    let ctx = operator_asking(&started, BrokerViews::Fixed(Err("unreachable".into()))).await;
    api::reconcile_once(&started.client, &ctx).await.unwrap();
    assert_eq!(
        statefulset_image(&started, &broker).await,
        "rabbitmq:4.3-management"
    );
}

#[tokio::test]
async fn a_new_default_broker_series_waits_for_the_broker_of_an_automatic_stack() {
    let spec = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    let started = Started::reconciled(spec).await;
    let served = ServedApis::discover(&started.client).await.unwrap();
    let base = api::bare_context(&started.client, served);
    let upgraded_operator = Arc::new(
        Context::new(
            base.client.clone(),
            pingpong_operator::metrics::Metrics::new().unwrap(),
            base.recorder.clone(),
            upgraded(),
            served,
        )
        .with_broker_views(BrokerViews::Fixed(Err("timed out".into()))),
    );
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();
    // ping and pong roll to the new defaults; the broker keeps its series and shows the new
    // default as available.
    let (ping, pong, rabbitmq) = images_applied(&started).await;
    assert_eq!(
        (ping.as_str(), pong.as_str()),
        (upgraded().ping.as_str(), upgraded().pong.as_str())
    );
    assert_eq!(rabbitmq, images::RABBITMQ);
    let images = started.status().await.images.unwrap();
    assert_eq!(images.rabbitmq.image, images::RABBITMQ);
    assert_eq!(
        images.rabbitmq.available.as_deref(),
        Some("rabbitmq:4.3-management")
    );
    assert!(
        degraded_message(&started)
            .await
            .contains("could not be read")
    );
}

#[tokio::test]
async fn a_new_default_broker_that_skips_a_series_does_not_reach_an_automatic_stack() {
    let spec = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    let started = Started::reconciled(spec).await;
    let broker = format!("{NAME}-rabbitmq");
    assert_eq!(statefulset_image(&started, &broker).await, images::RABBITMQ);
    let next = Images {
        rabbitmq: "rabbitmq:9.9-management".to_owned(),
        ..Images::default()
    };
    let upgraded_operator = operator_with(&started, next).await;
    api::reconcile_once(&started.client, &upgraded_operator)
        .await
        .unwrap();
    assert_eq!(statefulset_image(&started, &broker).await, images::RABBITMQ);
    let (degraded, reason) = condition(&started.status().await, "Degraded");
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "RabbitMQUpgradeRefused")
    );
}

/// Reconciles the stored stack `name` with `ctx`.
async fn reconcile_named(started: &Started, ctx: &Arc<Context>, name: &str) {
    let stack = started
        .api::<pingpong_operator::crd::PingPongStack>()
        .get(name)
        .await
        .unwrap();
    pingpong_operator::reconcile::reconcile(Arc::new(stack), ctx.clone())
        .await
        .unwrap();
}

async fn broker_image(started: &Started, stack: &str) -> String {
    statefulset_image(started, &format!("{stack}-rabbitmq")).await
}

async fn named_status(started: &Started, name: &str) -> PingPongStackStatus {
    started
        .api::<pingpong_operator::crd::PingPongStack>()
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap()
}

#[tokio::test]
async fn at_most_n_automatic_stacks_roll_at_a_time() {
    use pingpong_operator::reconcile::upgrade_gate::UpgradeGate;
    let automatic = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    let mut setup = Setup::default();
    for name in ["first", "second"] {
        let mut stack = api::stack(automatic.clone());
        stack.metadata.name = Some(name.to_owned());
        setup.stacks.push(stack);
    }
    let started = Started::new(setup).await;
    for name in ["first", "second"] {
        reconcile_named(&started, &started.ctx, name).await;
    }

    let served = ServedApis::discover(&started.client).await.unwrap();
    let base = api::bare_context(&started.client, served);
    let one_at_a_time = Arc::new(
        Context::new(
            base.client.clone(),
            pingpong_operator::metrics::Metrics::new().unwrap(),
            base.recorder.clone(),
            upgraded(),
            served,
        )
        .with_upgrade_gate(UpgradeGate::new(1, None))
        .with_broker_views(api::cleared_broker()),
    );
    reconcile_named(&started, &one_at_a_time, "first").await;
    reconcile_named(&started, &one_at_a_time, "second").await;

    assert_eq!(
        broker_image(&started, "first").await,
        "rabbitmq:4.3-management"
    );
    let first = named_status(&started, "first").await;
    assert_eq!(
        condition(&first, "Upgrading"),
        ("True".to_owned(), "RollingToNewDefaults".to_owned())
    );
    // The second keeps its images and says why.
    assert_eq!(broker_image(&started, "second").await, images::RABBITMQ);
    let second = named_status(&started, "second").await;
    assert_eq!(
        condition(&second, "UpgradeAvailable"),
        ("True".to_owned(), "WaitingForUpgradeSlot".to_owned())
    );
    assert_eq!(condition(&second, "Upgrading").0, "False");

    // The first is Ready again: its slot frees, and the second rolls.
    started
        .set_ready(&["first-rabbitmq"], &["first-ping", "first-pong"])
        .await;
    reconcile_named(&started, &one_at_a_time, "first").await;
    let first = named_status(&started, "first").await;
    assert_eq!(condition(&first, "Ready").0, "True");
    assert_eq!(condition(&first, "Upgrading").0, "False");
    reconcile_named(&started, &one_at_a_time, "second").await;
    assert_eq!(
        broker_image(&started, "second").await,
        "rabbitmq:4.3-management"
    );
    assert_eq!(
        condition(&named_status(&started, "second").await, "Upgrading").0,
        "True"
    );
}
