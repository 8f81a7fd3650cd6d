//! Reconcile of pong's store and cache against an in-memory API (kube-fake-client): a
//! PostgreSQL store creates its StatefulSet, Service, Secret and NetworkPolicy; the generated
//! password is never rotated; switching back to memory deletes the provisioned objects but not
//! the Secret or the data volume; status reports store and cache readiness; an external
//! database's missing Secret is reported.

use crate::support::api::{self, NAME, NS, Setup, Started, diff};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube_fake_client::interceptor;
use pingpong_operator::crd::{
    CacheSpec, ExternalPostgres, PingPongStack, PingPongStackSpec, Placement, PostgresSpec,
    ProvisionedRedis, StoreSpec, StoreType,
};
use pingpong_operator::labels;
use pingpong_operator::metrics::ChildOperation;
use pingpong_operator::reconcile::MISSING_REFERENCE_REQUEUE;
use pretty_assertions::assert_eq;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The objects a provisioned PostgreSQL and Redis add to a stack.
const PROVISIONED: [&str; 7] = [
    "NetworkPolicy/stack-postgres",
    "NetworkPolicy/stack-redis",
    "Secret/stack-postgres-credentials",
    "Service/stack-postgres",
    "Service/stack-redis",
    "StatefulSet/stack-postgres",
    "Deployment/stack-redis",
];

fn postgres_spec(replicas: i32, cache: bool) -> PingPongStackSpec {
    let mut spec = PingPongStackSpec::default();
    spec.pong.replicas = replicas;
    spec.pong.store = StoreSpec {
        type_: StoreType::Postgres,
        postgres: None,
    };
    spec.pong.cache = cache.then(|| CacheSpec::Provisioned(ProvisionedRedis::default()));
    spec
}

fn ready_condition(status: &pingpong_operator::crd::PingPongStackStatus) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (c.status.clone(), c.message.clone())
}

#[tokio::test]
async fn a_postgres_store_creates_the_database_and_status_follows_its_readiness() {
    let k8s = Started::reconciled(postgres_spec(1, true)).await;

    let objects = k8s.children().await;
    let uid = k8s.stack().await.metadata.uid.unwrap();
    for key in PROVISIONED {
        let object = objects.get(key).unwrap_or_else(|| panic!("{key} missing"));
        // The credentials outlive the stack like the retained volume they open.
        let owner = match key {
            "Secret/stack-postgres-credentials" => serde_json::Value::Null,
            _ => serde_json::Value::from(uid.as_str()),
        };
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"], owner,
            "{key}"
        );
    }
    let pong = &objects["Deployment/stack-pong"]["spec"];
    assert_eq!(pong["strategy"]["type"], "RollingUpdate");
    let env = pong["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let names: BTreeSet<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    for var in ["PONG_STORE", "PGHOST", "PGPASSWORD_FILE", "REDIS_URL"] {
        assert!(names.contains(var), "{var} missing from {names:?}");
    }

    // Nothing ready yet: the store and cache say so, and Ready waits for them.
    let status = k8s.status().await;
    let store = status.store.clone().unwrap();
    assert_eq!(store.type_, StoreType::Postgres);
    assert_eq!(store.placement, Some(Placement::Provisioned));
    assert!(!store.ready);
    assert_eq!(
        store.secret_name.as_deref(),
        Some("stack-postgres-credentials")
    );
    assert!(!status.cache.unwrap().ready);

    // Everything but the database ready: still not Ready, and the message names postgres.
    k8s.set_ready(
        &["stack-rabbitmq"],
        &["stack-ping", "stack-pong", "stack-redis"],
    )
    .await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    let (ready, message) = ready_condition(&status);
    assert_eq!(ready, "False");
    assert_eq!(message, "waiting for postgres 0/1 ready");
    assert!(status.cache.unwrap().ready);

    k8s.set_ready(&["stack-postgres"], &[]).await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    assert_eq!(ready_condition(&status).0, "True");
    let store = status.store.unwrap();
    assert!(store.ready);
    assert_eq!((store.replicas, store.ready_replicas), (Some(1), Some(1)));
}

#[tokio::test]
async fn the_generated_postgres_password_is_never_rotated() {
    let k8s = Started::reconciled(postgres_spec(2, false)).await;
    let secrets = k8s.api::<Secret>();
    let original = secrets.get("stack-postgres-credentials").await.unwrap();
    let password = original.data.as_ref().unwrap()["password"].0.clone();
    assert_eq!(password.len(), 40);

    for replicas in [3, 4] {
        k8s.edit_spec(|spec| spec.pong.replicas = replicas).await;
        k8s.reconcile().await.unwrap();
    }
    k8s.reconcile().await.unwrap();
    let now = secrets.get("stack-postgres-credentials").await.unwrap();
    assert_eq!(now.data, original.data);
    assert_eq!(
        now.metadata.resource_version, original.metadata.resource_version,
        "the Secret was not even rewritten"
    );
    let pdb = k8s.children().await["PodDisruptionBudget/stack-pong"].clone();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
}

#[tokio::test]
async fn a_re_created_stack_reuses_the_postgres_credentials_of_its_data() {
    let k8s = Started::reconciled(postgres_spec(1, false)).await;
    let secrets = k8s.api::<Secret>();
    let original = secrets.get("stack-postgres-credentials").await.unwrap();
    assert_eq!(
        original.metadata.owner_references, None,
        "not garbage-collected with the stack: it opens the retained volume"
    );

    // The stack is deleted (its owned children would go) and created again: a new uid.
    let stacks = k8s.api::<PingPongStack>();
    stacks.delete(NAME, &DeleteParams::default()).await.unwrap();
    stacks
        .create(&PostParams::default(), &api::stack(postgres_spec(1, false)))
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let now = secrets.get("stack-postgres-credentials").await.unwrap();
    assert_eq!(now.data, original.data, "the old data directory's password");
    assert_eq!(
        now.metadata.resource_version,
        original.metadata.resource_version
    );
}

#[tokio::test]
async fn generated_secrets_are_created_never_applied() {
    let patched = Arc::new(AtomicUsize::new(0));
    let p = patched.clone();
    let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = applied.clone();
    let interceptors = interceptor::Funcs::new().patch(move |ctx| {
        if ctx.patch.get("kind").and_then(|k| k.as_str()) == Some("Secret") {
            p.fetch_add(1, Ordering::SeqCst);
            let name = ctx.patch["metadata"]["name"].as_str().unwrap_or_default();
            a.lock().unwrap().push(name.to_owned());
        }
        Ok(None)
    });
    let k8s = Started::new(Setup {
        interceptors: Some(interceptors),
        ..Setup::for_stack(postgres_spec(1, false))
    })
    .await;
    k8s.reconcile().await.unwrap();
    let objects = k8s.children().await;
    for name in [
        "stack-rabbitmq-credentials",
        "stack-rabbitmq-erlang-cookie",
        "stack-postgres-credentials",
    ] {
        assert!(objects.contains_key(&format!("Secret/{name}")), "{name}");
    }
    // Only the Secret rendered from the credentials (the broker definitions) is applied.
    assert_eq!(
        *applied.lock().unwrap(),
        ["stack-rabbitmq-definitions"],
        "no generated Secret is ever applied"
    );
    assert_eq!(patched.load(Ordering::SeqCst), 1);
    assert_eq!(
        k8s.ctx
            .metrics
            .child_operations("Secret", ChildOperation::Create, true),
        3
    );
}

#[tokio::test]
async fn back_to_memory_deletes_the_provisioned_objects_but_keeps_the_secret_and_the_volume() {
    // The claim the StatefulSet controller would have created: our labels, no owner reference
    // (the retention policy is Retain).
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data-stack-postgres-0".into()),
            namespace: Some(NS.into()),
            labels: Some(labels::component_labels(
                NAME,
                labels::Component::Postgres,
                labels::Scheme::Unique,
            )),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    };
    let k8s = Started::new(Setup {
        objects: vec![serde_json::to_value(&claim).unwrap()],
        ..Setup::for_stack(postgres_spec(2, true))
    })
    .await;
    k8s.reconcile().await.unwrap();
    let before = k8s.children().await;

    k8s.edit_spec(|spec| {
        spec.pong.replicas = 1;
        spec.pong.store = StoreSpec::default();
        spec.pong.cache = None;
    })
    .await;
    k8s.reconcile().await.unwrap();
    let after = k8s.children().await;

    let mut changed = diff(&before, &after);
    changed.sort();
    let mut expected: Vec<String> = PROVISIONED
        .iter()
        .filter(|k| !k.starts_with("Secret/"))
        .map(|k| format!("-{k}"))
        .collect();
    expected.extend([
        "-PodDisruptionBudget/stack-pong".to_owned(),
        "~Deployment/stack-pong".to_owned(),
        // pong's egress no longer opens PostgreSQL and Redis.
        "~NetworkPolicy/stack-pong".to_owned(),
    ]);
    expected.sort();
    assert_eq!(changed, expected);
    assert!(after.contains_key("Secret/stack-postgres-credentials"));
    assert!(
        k8s.api::<PersistentVolumeClaim>()
            .get_opt("data-stack-postgres-0")
            .await
            .unwrap()
            .is_some()
    );
    let pong = &after["Deployment/stack-pong"]["spec"];
    assert_eq!(pong["strategy"]["type"], "Recreate");

    // The status apply no longer sets placement, replica counts or the Secret name; a real API
    // server drops them (server-side apply removes fields their only manager stopped
    // applying), while the in-memory API merges the patch and keeps them. So only the fields
    // the apply sets are compared here; `report::next_status` is unit-tested for the rest.
    let store = k8s.status().await.store.unwrap();
    assert_eq!((store.type_, store.ready), (StoreType::Memory, true));

    // Back to PostgreSQL: the kept Secret is reused, not regenerated.
    let secrets = k8s.api::<Secret>();
    let kept = secrets.get("stack-postgres-credentials").await.unwrap();
    k8s.edit_spec(|spec| *spec = postgres_spec(2, false)).await;
    k8s.reconcile().await.unwrap();
    let again = secrets.get("stack-postgres-credentials").await.unwrap();
    assert_eq!(again.data, kept.data);
    assert!(
        k8s.children()
            .await
            .contains_key("StatefulSet/stack-postgres")
    );
}

#[tokio::test]
async fn an_external_database_needs_its_secret_with_every_key() {
    let mut spec = postgres_spec(2, false);
    spec.pong.store.postgres = Some(PostgresSpec::External(ExternalPostgres {
        secret_name: "orders-db".into(),
    }));
    let k8s = Started::new(Setup::for_stack(spec)).await;
    let action = k8s.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(MISSING_REFERENCE_REQUEUE));
    let degraded = |status: &pingpong_operator::crd::PingPongStackStatus| {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    };
    let (state, reason, message) = degraded(&k8s.status().await);
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "PostgresSecretMissing")
    );
    assert!(message.contains("orders-db"), "{message}");
    assert!(k8s.children().await.is_empty());

    let secrets = k8s.api::<Secret>();
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some("orders-db".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"s3cret".to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let (_, reason, message) = degraded(&k8s.status().await);
    assert_eq!(reason, "PostgresSecretMissing");
    assert!(
        message.contains("host, port, database, username"),
        "{message}"
    );

    let data = secret.data.get_or_insert_default();
    for key in ["host", "port", "database", "username"] {
        data.insert(key.to_owned(), ByteString(b"x".to_vec()));
    }
    secrets
        .replace("orders-db", &PostParams::default(), &{
            let mut s = secret.clone();
            s.metadata.resource_version = secrets
                .get("orders-db")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    // Complete, but not opted in: a stack may not hand an arbitrary Secret to its pods.
    k8s.reconcile().await.unwrap();
    let (_, reason, message) = degraded(&k8s.status().await);
    assert_eq!(reason, "SecretNotReferable");
    assert!(message.contains("pingpong.dev/referable=true"), "{message}");
    let objects = k8s.children().await;
    assert_eq!(objects.keys().collect::<Vec<_>>(), ["Secret/orders-db"]);

    let label = serde_json::json!({"metadata": {"labels": {"pingpong.dev/referable": "true"}}});
    secrets
        .patch("orders-db", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let objects = k8s.children().await;
    assert!(objects.contains_key("Deployment/stack-pong"));
    assert!(
        objects.keys().all(|k| !k.contains("postgres")),
        "nothing provisioned for an external database"
    );
    let status = k8s.status().await;
    assert_eq!(degraded(&status).0, "False");
    let store = status.store.unwrap();
    assert_eq!(store.placement, Some(Placement::External));
    assert!(store.ready);
    assert_eq!(store.secret_name.as_deref(), Some("orders-db"));
}

#[tokio::test]
async fn a_paused_stack_still_reports_the_database_readiness() {
    let k8s = Started::reconciled(postgres_spec(1, true)).await;
    k8s.edit_spec(|spec| spec.paused = true).await;
    k8s.set_ready(&["stack-postgres"], &["stack-redis"]).await;
    let before = k8s.children().await;

    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), Vec::<String>::new());
    let status = k8s.status().await;
    let store = status.store.unwrap();
    assert!(store.ready, "read from the StatefulSet while paused");
    assert_eq!(store.ready_replicas, Some(1));
    assert!(status.cache.unwrap().ready);
}

/// The pod-template annotations (configuration hash and Secret digest) of every workload.
fn pod_annotations(objects: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    objects
        .iter()
        .filter(|(key, _)| key.starts_with("StatefulSet/") || key.starts_with("Deployment/"))
        .map(|(key, object)| {
            let annotations = &object["spec"]["template"]["metadata"]["annotations"];
            (key.clone(), annotations.to_string())
        })
        .collect()
}

/// The keys whose value differs between `before` and `after`.
fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
        .collect()
}

#[tokio::test]
async fn a_regenerated_secret_rolls_exactly_the_workloads_that_read_it() {
    let k8s = Started::reconciled(postgres_spec(1, true)).await;
    let secrets = k8s.api::<Secret>();
    let first = pod_annotations(&k8s.children().await);
    for (key, annotations) in &first {
        let expected = key != "Deployment/stack-redis"; // reads no Secret
        assert_eq!(
            annotations.contains(labels::SECRET_DIGEST),
            expected,
            "{key}: {annotations}"
        );
    }
    // Nothing changed: nothing rolls.
    k8s.reconcile().await.unwrap();
    assert_eq!(pod_annotations(&k8s.children().await), first);

    // The PostgreSQL Secret is deleted and generated again: the database (whose postStart hook
    // sets the new password) and pong (which logs in with it) roll; nothing else.
    let password = |s: Secret| s.data.unwrap()["password"].0.clone();
    let old = password(secrets.get("stack-postgres-credentials").await.unwrap());
    secrets
        .delete("stack-postgres-credentials", &DeleteParams::default())
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let new = password(secrets.get("stack-postgres-credentials").await.unwrap());
    assert_ne!(old, new, "a new password was generated");
    let second = pod_annotations(&k8s.children().await);
    assert_eq!(
        changed(&first, &second),
        ["Deployment/stack-pong", "StatefulSet/stack-postgres"]
    );

    // The Erlang cookie Secret is deleted and generated again: only the broker rolls.
    secrets
        .delete("stack-rabbitmq-erlang-cookie", &DeleteParams::default())
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    let third = pod_annotations(&k8s.children().await);
    assert_eq!(changed(&second, &third), ["StatefulSet/stack-rabbitmq"]);

    // A key no workload reads changes nothing.
    let patch = serde_json::json!({"data": {"note": "dW51c2Vk"}});
    secrets
        .patch(
            "stack-postgres-credentials",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    assert_eq!(pod_annotations(&k8s.children().await), third);
    for object in k8s.children().await.values() {
        if object["kind"] != "Secret" {
            let text = object.to_string();
            assert!(!text.contains(&String::from_utf8(new.clone()).unwrap()));
        }
    }
}
