//! Ownership against an in-memory API: an object of a child's name that the stack does not
//! control is never modified, the stack says which object and who owns it, every other child is
//! still applied, orphan deletion leaves it alone, and only the documented annotation lets the
//! stack adopt an object that nothing controls.

use crate::support::api::{NAME, NS, Setup, Started, stack};
use k8s_openapi::api::networking::v1::Ingress;
use pingpong_operator::crd::PingPongStackSpec;
use pingpong_operator::labels::ADOPT;
use serde_json::{Value, json};

/// A user's Ingress named like the stack's route, with no owner and a rule of its own.
fn users_ingress(annotations: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": NAME, "namespace": NS, "annotations": annotations},
        "spec": {"rules": [{"host": "users.example", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "users-app", "port": {"number": 80}}}
        }]}}]}
    })
}

fn host(ingress: &Ingress) -> Option<String> {
    ingress.spec.as_ref()?.rules.as_ref()?.first()?.host.clone()
}

async fn started_with(objects: Vec<Value>) -> Started {
    Started::new(Setup {
        stacks: vec![stack(PingPongStackSpec::default())],
        objects,
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn a_foreign_object_is_left_unchanged_and_named_in_the_condition() {
    let k8s = started_with(vec![users_ingress(json!({}))]).await;

    let error = k8s.reconcile().await.expect_err("the name is taken");
    assert_eq!(error.kind(), "ChildNotOwned");

    let ingress = k8s.api::<Ingress>().get(NAME).await.unwrap();
    assert_eq!(ingress.metadata.owner_references, None, "the stack took it");
    assert_eq!(host(&ingress).as_deref(), Some("users.example"));
    assert_eq!(ingress.metadata.labels, None);

    let children = k8s.children().await;
    for applied in ["Deployment/stack-ping", "StatefulSet/stack-rabbitmq"] {
        assert!(children.contains_key(applied), "{applied} was not applied");
    }

    let status = k8s.status().await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ChildNotOwned")
    );
    assert!(
        degraded.message.contains("Ingress stack")
            && degraded.message.contains("no owner reference")
            && degraded.message.contains(ADOPT),
        "{}",
        degraded.message
    );

    // Turning the route off must not delete the user's object either.
    k8s.edit_spec(|spec| spec.ingress.enabled = Some(false))
        .await;
    k8s.reconcile().await.unwrap();
    let ingress = k8s.api::<Ingress>().get(NAME).await.unwrap();
    assert_eq!(host(&ingress).as_deref(), Some("users.example"));
}

#[tokio::test]
async fn an_object_controlled_by_another_owner_is_never_adopted() {
    let mut ingress = users_ingress(json!({ ADOPT: NAME }));
    ingress["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "users-app",
        "uid": "0000-users", "controller": true
    }]);
    let k8s = started_with(vec![ingress]).await;

    let error = k8s.reconcile().await.expect_err("the name is taken");
    assert!(
        error
            .chain()
            .contains("controlled by Deployment users-app (uid 0000-users)"),
        "{}",
        error.chain()
    );
    let stored = k8s.api::<Ingress>().get(NAME).await.unwrap();
    let owners = stored.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, "0000-users");
}

#[tokio::test]
async fn the_adopt_annotation_lets_the_stack_take_an_unowned_object() {
    let k8s = started_with(vec![users_ingress(json!({ ADOPT: NAME }))]).await;

    k8s.reconcile().await.unwrap();
    let stack = k8s.stack().await;
    let ingress = k8s.api::<Ingress>().get(NAME).await.unwrap();
    let owners = ingress.metadata.owner_references.unwrap();
    assert_eq!(owners[0].uid, stack.metadata.uid.unwrap());
    assert_eq!(owners[0].controller, Some(true));
}

#[tokio::test]
async fn the_stacks_own_children_are_applied_again() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    k8s.reconcile().await.unwrap();
    k8s.edit_spec(|spec| spec.ping.replicas = 2).await;
    k8s.reconcile().await.unwrap();
}

/// A stack naming `credentialsSecret: team-broker`, with that Secret complete but not opted in;
/// `allowed` is the admin's list.
async fn with_team_broker_secret(allowed: &str) -> Started {
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::events::{Recorder, Reporter};
    use pingpong_operator::apis::ServedApis;
    use pingpong_operator::config::AllowedSecrets;
    use pingpong_operator::images::Images;
    use pingpong_operator::metrics::Metrics;
    use pingpong_operator::reconcile::Context;

    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.credentials_secret = Some("team-broker".into());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("team-broker".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        string_data: None,
        data: Some(
            [("username", "team"), ("password", "a-long-team-password")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    let client = crate::support::api::client(Setup {
        stacks: vec![stack(spec)],
        objects: vec![serde_json::to_value(&secret).unwrap()],
        ..Setup::default()
    })
    .await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "pingpong-operator".into(),
            instance: None,
        },
    );
    let ctx = Context::new(
        client.clone(),
        Metrics::new().unwrap(),
        recorder,
        Images::default(),
        ServedApis::default(),
    )
    .with_allowed_secrets(AllowedSecrets::parse(allowed).unwrap());
    Started {
        client,
        ctx: std::sync::Arc::new(ctx),
    }
}

#[tokio::test]
async fn a_secret_without_the_opt_in_label_is_not_handed_to_the_stack() {
    let k8s = with_team_broker_secret("").await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "SecretNotReferable");
    assert!(
        degraded.message.contains("team-broker"),
        "{}",
        degraded.message
    );
    let objects = k8s.children().await;
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        ["Secret/team-broker"],
        "nothing may mount it"
    );
}

#[tokio::test]
async fn a_secret_the_admin_listed_needs_no_label() {
    let k8s = with_team_broker_secret(&format!("other/team-broker, {NS}/team-broker")).await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "ReconcileSucceeded");
    assert!(k8s.children().await.contains_key("Deployment/stack-ping"));
}
