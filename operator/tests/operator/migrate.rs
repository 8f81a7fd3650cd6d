//! Selector migration against an in-memory API: a stack whose workloads an earlier release
//! created with the `app.kubernetes.io/{instance,component}` selector keeps it under
//! `upgradePolicy: Manual` (nothing of its pods changes, `UpgradeAvailable` says why), and once
//! annotated `pingpong.dev/migrate-selectors: "true"` its workloads are replaced with the unique
//! selector, their pods and ReplicaSets relabelled first, the Services switching one pass later.

use crate::support::api::{NAME, NS, Started};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use pingpong_operator::crd::{PingPongStack, PingPongStackSpec};
use pingpong_operator::labels::{self, Component, Scheme};
use pretty_assertions::assert_eq;
use serde_json::json;
use std::collections::BTreeMap;

fn legacy(component: Component) -> BTreeMap<String, String> {
    labels::legacy_selector_labels(NAME, component)
}

fn unique(component: Component) -> BTreeMap<String, String> {
    labels::selector_labels(NAME, component)
}

/// Strips what the API server sets, so the object can be created again.
fn fresh(meta: &mut ObjectMeta) {
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    meta.managed_fields = None;
}

/// Re-creates the broker StatefulSet and the ping Deployment as the release before the unique
/// selectors rendered them (legacy selector and pod labels), the Services selecting alike, and
/// the pods and the ReplicaSet their controllers made. Returns the uids of the pods.
async fn as_previous_release(k8s: &Started) -> (String, String) {
    let old_labels = |c| labels::component_labels(NAME, c, Scheme::Legacy);
    let sts_api = k8s.api::<StatefulSet>();
    let mut sts = sts_api.get(&format!("{NAME}-rabbitmq")).await.unwrap();
    sts_api
        .delete(&sts.name_any(), &Default::default())
        .await
        .unwrap();
    fresh(&mut sts.metadata);
    sts.metadata.labels = Some(old_labels(Component::RabbitMq));
    let spec = sts.spec.as_mut().unwrap();
    spec.selector.match_labels = Some(legacy(Component::RabbitMq));
    spec.template.metadata.as_mut().unwrap().labels = Some(old_labels(Component::RabbitMq));
    let sts = sts_api.create(&PostParams::default(), &sts).await.unwrap();

    let deploy_api = k8s.api::<Deployment>();
    let mut ping = deploy_api.get(&format!("{NAME}-ping")).await.unwrap();
    deploy_api
        .delete(&ping.name_any(), &Default::default())
        .await
        .unwrap();
    fresh(&mut ping.metadata);
    ping.metadata.labels = Some(old_labels(Component::Ping));
    let spec = ping.spec.as_mut().unwrap();
    spec.selector.match_labels = Some(legacy(Component::Ping));
    spec.template.metadata.as_mut().unwrap().labels = Some(old_labels(Component::Ping));
    let ping = deploy_api
        .create(&PostParams::default(), &ping)
        .await
        .unwrap();

    for (service, component) in [
        (format!("{NAME}-rabbitmq"), Component::RabbitMq),
        (format!("{NAME}-ping"), Component::Ping),
    ] {
        let api = k8s.api::<Service>();
        let mut live = api.get(&service).await.unwrap();
        api.delete(&service, &Default::default()).await.unwrap();
        fresh(&mut live.metadata);
        live.spec.as_mut().unwrap().selector = Some(legacy(component));
        api.create(&PostParams::default(), &live).await.unwrap();
    }

    let controlled_by =
        |owner: &dyn Fn() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference| {
            Some(vec![owner()])
        };
    let broker_pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-rabbitmq-0")),
            labels: Some(old_labels(Component::RabbitMq)),
            owner_references: controlled_by(&|| sts.controller_owner_ref(&()).unwrap()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    let broker_pod = k8s
        .api::<Pod>()
        .create(&PostParams::default(), &broker_pod)
        .await
        .unwrap();
    let mut rs_labels = old_labels(Component::Ping);
    rs_labels.insert("pod-template-hash".into(), "abc123".into());
    let mut template = ping.spec.clone().unwrap().template;
    template.metadata.as_mut().unwrap().labels = Some(rs_labels.clone());
    let set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-ping-abc123")),
            labels: Some(rs_labels.clone()),
            owner_references: controlled_by(&|| ping.controller_owner_ref(&()).unwrap()),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(rs_labels.clone()),
                match_expressions: None,
            },
            template: Some(template),
            ..Default::default()
        }),
        status: None,
    };
    let set = k8s
        .api::<ReplicaSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    let ping_pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-ping-abc123-x1y2z")),
            labels: Some(rs_labels),
            owner_references: controlled_by(&|| set.controller_owner_ref(&()).unwrap()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    let ping_pod = k8s
        .api::<Pod>()
        .create(&PostParams::default(), &ping_pod)
        .await
        .unwrap();
    (broker_pod.uid().unwrap(), ping_pod.uid().unwrap())
}

fn condition(stack: &PingPongStack, type_: &str) -> (String, String, String) {
    let c = stack
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// The broker StatefulSet's selector and its client Service's. The in-memory API's apply merges
/// maps instead of removing the keys a manager stopped applying, so the Service's is reduced to
/// the unique keys when it holds them (the e2e test checks the exact selector on a real API
/// server).
async fn selectors(k8s: &Started) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let sts = broker(k8s).await;
    let service = k8s
        .api::<Service>()
        .get(&format!("{NAME}-rabbitmq"))
        .await
        .unwrap();
    let mut service = service.spec.unwrap().selector.unwrap();
    if service.contains_key(labels::STACK) {
        service.retain(|k, _| k.starts_with("pingpong.dev/"));
    }
    (sts.spec.unwrap().selector.match_labels.unwrap(), service)
}

async fn broker(k8s: &Started) -> StatefulSet {
    k8s.api::<StatefulSet>()
        .get(&format!("{NAME}-rabbitmq"))
        .await
        .unwrap()
}

fn template_labels(sts: &StatefulSet) -> Option<BTreeMap<String, String>> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .labels
        .clone()
}

async fn pod_labels(k8s: &Started, name: &str) -> BTreeMap<String, String> {
    k8s.api::<Pod>()
        .get(name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap()
}

#[tokio::test]
async fn a_new_stack_selects_with_the_unique_selector_only() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let (workload, service) = selectors(&k8s).await;
    assert_eq!(workload, unique(Component::RabbitMq));
    assert_eq!(service, unique(Component::RabbitMq));
    let ping = k8s
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    let template = ping
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    // The app.kubernetes.io labels stay, as ordinary labels.
    assert_eq!(template[labels::INSTANCE], NAME);
    assert_eq!(template[labels::STACK], NAME);
}

#[tokio::test]
async fn a_manual_stack_keeps_its_selectors_until_it_opts_in_then_migrates() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let (broker_pod, ping_pod) = as_previous_release(&k8s).await;
    let sts_before = broker(&k8s).await;

    // Manual (the default): nothing changes that would restart a pod, and status says why.
    k8s.reconcile().await.unwrap();
    let sts = broker(&k8s).await;
    assert_eq!(sts.uid(), sts_before.uid(), "not re-created");
    assert_eq!(
        template_labels(&sts),
        template_labels(&sts_before),
        "the pod template keeps exactly its labels"
    );
    assert_eq!(
        selectors(&k8s).await,
        (legacy(Component::RabbitMq), legacy(Component::RabbitMq))
    );
    let (status, reason, message) = condition(&k8s.stack().await, "UpgradeAvailable");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SelectorMigration")
    );
    assert!(
        message.contains(&format!("StatefulSet {NAME}-rabbitmq")),
        "{message}"
    );
    assert!(message.contains(labels::MIGRATE_SELECTORS), "{message}");
    assert!(
        !pod_labels(&k8s, &format!("{NAME}-rabbitmq-0"))
            .await
            .contains_key(labels::STACK)
    );

    // Opted in: the workloads are replaced; their pods and ReplicaSet carry the new labels
    // first; the Services keep the legacy selector, which matches them all, for this pass.
    let patch = json!({"metadata": {"annotations": {labels::MIGRATE_SELECTORS: "true"}}});
    kube::Api::<PingPongStack>::namespaced(k8s.client.clone(), NS)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let sts = broker(&k8s).await;
    assert_ne!(sts.uid(), sts_before.uid(), "re-created");
    let migrated = ("Normal".to_owned(), "SelectorsMigrated".to_owned());
    assert!(k8s.events().await.contains(&migrated));
    assert_eq!(
        selectors(&k8s).await,
        (unique(Component::RabbitMq), legacy(Component::RabbitMq))
    );
    let ping = k8s
        .api::<Deployment>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    assert_eq!(
        ping.spec.unwrap().selector.match_labels.unwrap(),
        unique(Component::Ping)
    );
    let broker = k8s
        .api::<Pod>()
        .get(&format!("{NAME}-rabbitmq-0"))
        .await
        .unwrap();
    assert_eq!(broker.uid().unwrap(), broker_pod, "the pod is kept");
    for (k, v) in unique(Component::RabbitMq)
        .into_iter()
        .chain(legacy(Component::RabbitMq))
    {
        assert_eq!(broker.labels().get(&k), Some(&v), "{k}");
    }
    let set = k8s
        .api::<ReplicaSet>()
        .get(&format!("{NAME}-ping-abc123"))
        .await
        .unwrap();
    let template_labels = set
        .spec
        .unwrap()
        .template
        .unwrap()
        .metadata
        .unwrap()
        .labels
        .unwrap();
    for (k, v) in unique(Component::Ping) {
        assert_eq!(
            set.metadata.labels.as_ref().unwrap().get(&k),
            Some(&v),
            "{k}"
        );
        assert_eq!(template_labels.get(&k), Some(&v), "{k}");
    }
    let pod = k8s
        .api::<Pod>()
        .get(&format!("{NAME}-ping-abc123-x1y2z"))
        .await
        .unwrap();
    assert_eq!(pod.uid().unwrap(), ping_pod);
    assert_eq!(
        pod.labels().get(labels::STACK).map(String::as_str),
        Some(NAME)
    );

    // Every workload migrated: the Services switch, and nothing is announced any more.
    k8s.reconcile().await.unwrap();
    assert_eq!(
        selectors(&k8s).await,
        (unique(Component::RabbitMq), unique(Component::RabbitMq))
    );
    let service = k8s
        .api::<Service>()
        .get(&format!("{NAME}-ping"))
        .await
        .unwrap();
    let selector = service.spec.unwrap().selector.unwrap();
    for (k, v) in unique(Component::Ping) {
        assert_eq!(selector.get(&k), Some(&v), "{k}");
    }
    let (status, reason, _) = condition(&k8s.stack().await, "UpgradeAvailable");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ImagesCurrent")
    );
}

#[tokio::test]
async fn an_automatic_stack_migrates_only_with_an_upgrade_slot() {
    use crate::support::api::{self, Setup};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use pingpong_operator::apis::ServedApis;
    use pingpong_operator::crd::{PingPongStackStatus, UpgradePolicy};
    use pingpong_operator::reconcile::upgrade_gate::UpgradeGate;
    use std::sync::Arc;

    let automatic = PingPongStackSpec {
        upgrade_policy: UpgradePolicy::Automatic,
        ..PingPongStackSpec::default()
    };
    // Another stack holds the one upgrade slot.
    let mut busy = api::stack(PingPongStackSpec::default());
    busy.metadata.name = Some("busy".to_owned());
    busy.status = Some(PingPongStackStatus {
        conditions: vec![Condition {
            type_: "Upgrading".to_owned(),
            status: "True".to_owned(),
            reason: "RollingToNewDefaults".to_owned(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            observed_generation: None,
        }],
        ..PingPongStackStatus::default()
    });
    let k8s = Started::new(Setup {
        stacks: vec![api::stack(automatic), busy],
        ..Setup::default()
    })
    .await;
    k8s.reconcile().await.unwrap();
    as_previous_release(&k8s).await;
    let sts_before = broker(&k8s).await;

    let served = ServedApis::discover(&k8s.client).await.unwrap();
    let one_slot = Arc::new(
        api::bare_context(&k8s.client, served).with_upgrade_gate(UpgradeGate::new(1, None)),
    );
    api::reconcile_once(&k8s.client, &one_slot).await.unwrap();
    assert_eq!(
        broker(&k8s).await.uid(),
        sts_before.uid(),
        "waits for a slot"
    );
    let (status, reason, message) = condition(&k8s.stack().await, "UpgradeAvailable");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "WaitingForUpgradeSlot")
    );
    assert!(message.contains("stacks are rolling"), "{message}");
    assert!(
        message.contains(&format!("StatefulSet {NAME}-rabbitmq")),
        "{message}"
    );

    // The slot frees: the stack migrates and holds it while it is not Ready.
    k8s.api::<PingPongStack>()
        .patch_status(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": []}})),
        )
        .await
        .unwrap();
    api::reconcile_once(&k8s.client, &one_slot).await.unwrap();
    let sts = broker(&k8s).await;
    assert_ne!(sts.uid(), sts_before.uid(), "migrated");
    assert_eq!(
        sts.spec.unwrap().selector.match_labels.unwrap(),
        unique(Component::RabbitMq)
    );
    let (status, reason, _) = condition(&k8s.stack().await, "Upgrading");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RollingToNewDefaults")
    );
}
