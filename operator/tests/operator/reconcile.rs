//! Reconcile against an in-memory API (kube-fake-client): creation, idempotence, drift,
//! spec changes, orphan deletion and credentials that are never rotated.

use crate::support::api::{self as api, NAME, Setup, Started, client, diff};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use pingpong_operator::crd::{GatewayParentRef, GatewaySpec, PingPongStackSpec};
use pingpong_operator::labels::MANAGED_BY;
use pingpong_operator::metrics::ReconcileResult;
use pretty_assertions::assert_eq;
use std::collections::BTreeSet;

fn condition<'a>(
    status: &'a pingpong_operator::crd::PingPongStackStatus,
    type_: &str,
) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"));
    (c.status.as_str(), c.reason.as_str())
}

fn keys(map: &std::collections::BTreeMap<String, serde_json::Value>) -> BTreeSet<String> {
    map.keys().cloned().collect()
}

#[tokio::test]
async fn first_reconcile_creates_every_child_with_an_owner_reference() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;

    let stack = k8s.stack().await;
    let uid = stack.metadata.uid.clone().unwrap();
    let objects = k8s.children().await;
    let expected: BTreeSet<String> = [
        "ConfigMap/stack-rabbitmq-config",
        "Deployment/stack-ping",
        "Deployment/stack-pong",
        "Ingress/stack",
        "NetworkPolicy/stack-ping",
        "NetworkPolicy/stack-pong",
        "NetworkPolicy/stack-rabbitmq",
        "Secret/stack-rabbitmq-credentials",
        "Secret/stack-rabbitmq-definitions",
        "Secret/stack-rabbitmq-erlang-cookie",
        "Service/stack-ping",
        "Service/stack-pong",
        "Service/stack-rabbitmq",
        "Service/stack-rabbitmq-nodes",
        "StatefulSet/stack-rabbitmq",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys(&objects), expected);
    for (key, object) in &objects {
        let owners = object["metadata"]["ownerReferences"]
            .as_array()
            .unwrap_or_else(|| panic!("{key} has no ownerReferences"));
        assert_eq!(owners.len(), 1, "{key}");
        assert_eq!(owners[0]["uid"], uid.as_str(), "{key}");
        assert_eq!(owners[0]["kind"], "PingPongStack", "{key}");
        assert_eq!(owners[0]["controller"], true, "{key}");
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], NAME, "{key}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGED_BY, "{key}");
    }

    let status = stack.status.unwrap();
    assert_eq!(status.observed_generation, stack.metadata.generation);
    assert_eq!(condition(&status, "Ready"), ("False", "ComponentsNotReady"));
    assert_eq!(condition(&status, "Progressing"), ("True", "RollingOut"));
    assert_eq!(
        condition(&status, "Degraded"),
        ("False", "ReconcileSucceeded")
    );
    assert_eq!(condition(&status, "Paused"), ("False", "NotPaused"));
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("stack-rabbitmq-credentials")
    );
    let ping = status.ping.unwrap();
    assert_eq!((ping.replicas, ping.ready_replicas), (1, 0));
    assert_eq!(k8s.events().await, [("Normal".into(), "Created".into())]);
    assert_eq!(k8s.ctx.metrics.reconciliations(ReconcileResult::Success), 1);
}

#[tokio::test]
async fn a_second_reconcile_changes_no_object() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;
    let stack_before = k8s.stack().await;

    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), Vec::<String>::new());
    // The status was already right, so the stack was not written at all.
    let stack_after = k8s.stack().await;
    assert_eq!(
        stack_after.metadata.resource_version,
        stack_before.metadata.resource_version
    );
    assert_eq!(k8s.events().await.len(), 1, "no new Event in steady state");
}

#[tokio::test]
async fn a_deleted_child_comes_back() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;

    k8s.api::<Deployment>()
        .delete("stack-ping", &DeleteParams::default())
        .await
        .unwrap();
    assert!(!keys(&k8s.children().await).contains("Deployment/stack-ping"));

    k8s.reconcile().await.unwrap();
    let after = k8s.children().await;
    assert_eq!(keys(&after), keys(&before));
    let key = "Deployment/stack-ping";
    assert_eq!(after[key]["spec"], before[key]["spec"]);
    assert_eq!(
        after[key]["metadata"]["labels"],
        before[key]["metadata"]["labels"]
    );
    assert_eq!(
        after[key]["metadata"]["ownerReferences"],
        before[key]["metadata"]["ownerReferences"]
    );
}

#[tokio::test]
async fn a_spec_change_patches_only_what_changed() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;

    k8s.edit_spec(|spec| spec.pong.max_messages = 500).await;
    k8s.reconcile().await.unwrap();
    let after = k8s.children().await;
    assert_eq!(diff(&before, &after), ["~Deployment/stack-pong"]);
    let env = after["Deployment/stack-pong"]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        env.iter()
            .any(|e| e["name"] == "PONG_MAX_MESSAGES" && e["value"] == "500"),
        "{env:?}"
    );

    let stack = k8s.stack().await;
    let status = stack.status.unwrap();
    assert_eq!(status.observed_generation, stack.metadata.generation);
    assert_eq!(status.observed_generation, Some(2));
    let reasons: Vec<_> = k8s.events().await.into_iter().map(|e| e.1).collect();
    assert_eq!(reasons, ["Created", "Updated"]);
}

#[tokio::test]
async fn more_replicas_add_a_disruption_budget_and_fewer_remove_it() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let one = k8s.children().await;

    k8s.edit_spec(|spec| spec.ping.replicas = 3).await;
    k8s.reconcile().await.unwrap();
    let three = k8s.children().await;
    let changed = diff(&one, &three);
    assert!(
        changed.contains(&"~Deployment/stack-ping".to_owned()),
        "{changed:?}"
    );
    assert!(
        changed.contains(&"~PodDisruptionBudget/stack-ping".to_owned()),
        "{changed:?}"
    );
    assert!(
        changed.iter().all(|k| k.ends_with("/stack-ping")),
        "only ping objects change: {changed:?}"
    );
    assert_eq!(three["Deployment/stack-ping"]["spec"]["replicas"], 3);

    k8s.edit_spec(|spec| spec.ping.replicas = 1).await;
    k8s.reconcile().await.unwrap();
    let back = k8s.children().await;
    assert!(!back.contains_key("PodDisruptionBudget/stack-ping"));
    assert_eq!(keys(&back), keys(&one));
}

#[tokio::test]
async fn disabling_the_ingress_deletes_it_and_nothing_else() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;
    assert!(before.contains_key("Ingress/stack"));

    k8s.edit_spec(|spec| spec.ingress.enabled = Some(false))
        .await;
    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), ["-Ingress/stack"]);
}

#[tokio::test]
async fn an_ingress_without_a_host_is_a_status_warning_until_a_host_is_set() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;
    let status = k8s.status().await;
    assert_eq!(status.warnings.len(), 1, "{:?}", status.warnings);
    for part in [
        "spec.ingress.host is not set",
        "Ingress stack",
        "/ping and /pong",
        "IngressClass (the cluster's default)",
        "set spec.ingress.host",
    ] {
        assert!(
            status.warnings[0].contains(part),
            "{part:?} not in {status:?}"
        );
    }
    // A warning, not a failure: the stack is applied and not degraded.
    assert_eq!(
        condition(&status, "Degraded"),
        ("False", "ReconcileSucceeded")
    );
    assert!(before.contains_key("Ingress/stack"));
    assert!(
        before["Ingress/stack"]["spec"]["rules"][0]
            .get("host")
            .is_none()
    );

    // Naming a host clears it, and so does turning the Ingress off.
    k8s.edit_spec(|spec| spec.ingress.host = Some("pingpong.example.com".into()))
        .await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    assert_eq!(status.warnings, Vec::<String>::new());
    k8s.edit_spec(|spec| {
        spec.ingress.host = None;
        spec.ingress.enabled = Some(false);
    })
    .await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    assert_eq!(status.warnings, Vec::<String>::new());
}

#[tokio::test]
async fn removing_the_gateway_deletes_the_http_route() {
    let mut spec = PingPongStackSpec::default();
    spec.ingress.enabled = Some(false);
    spec.gateway = Some(GatewaySpec {
        parent_ref: GatewayParentRef {
            name: "public".into(),
            namespace: Some("gateways".into()),
            section_name: None,
        },
        hostname: Some("pingpong.example.com".into()),
    });
    let k8s = Started::new(Setup {
        gateway_crd: true,
        ..Setup::for_stack(spec)
    })
    .await;
    k8s.reconcile().await.unwrap();
    let before = k8s.children().await;
    let route = &before["HTTPRoute/stack"];
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "public");
    let status = k8s.status().await;
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://pingpong.example.com")
    );

    k8s.edit_spec(|spec| spec.gateway = None).await;
    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), ["-HTTPRoute/stack"]);
}

#[tokio::test]
async fn a_reconcile_never_asks_for_optional_apis_and_unserved_kinds_are_never_listed() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (lists, crd_gets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (l, g) = (lists.clone(), crd_gets.clone());
    let interceptors = kube_fake_client::interceptor::Funcs::new()
        .list(move |ctx| {
            // Pods of the workloads not ready yet are read page-bounded (`limit`) to explain
            // why; only the orphan lists of child kinds are counted here.
            if ctx.params.limit.is_none() {
                l.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None)
        })
        .get(move |ctx| {
            if ctx.name.contains(".gateway.networking.k8s.io")
                || ctx.name.contains(".monitoring.coreos.com")
            {
                g.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None)
        });
    let spec = PingPongStackSpec {
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
    // The Gateway API is not served when the operator starts.
    let k8s = Started::new(Setup {
        interceptors: Some(interceptors),
        ..Setup::for_stack(spec)
    })
    .await;
    crd_gets.store(0, Ordering::SeqCst);
    let apis_changed = k8s.ctx.subscribe_apis();
    let error = k8s.reconcile().await.unwrap_err();
    assert_eq!(error.kind(), "GatewayApiMissing");
    k8s.reconcile().await.unwrap_err();
    assert_eq!(
        crd_gets.load(Ordering::SeqCst),
        0,
        "a reconcile never asks, even for a stack that needs a missing API"
    );
    // Orphans are looked for in the six built-in prunable kinds only, on each reconcile.
    assert_eq!(lists.swap(0, Ordering::SeqCst), 12);

    // The Gateway API is installed; the controller's timer asks again and is told.
    let crds: Api<CustomResourceDefinition> = Api::all(k8s.client.clone());
    crds.create(
        &PostParams::default(),
        &api::crd("gateway.networking.k8s.io", "httproutes", "HTTPRoute"),
    )
    .await
    .unwrap();
    k8s.ctx.relearn_apis().await.unwrap();
    assert_eq!(crd_gets.swap(0, Ordering::SeqCst), 3, "every optional API");
    assert!(k8s.ctx.served().http_route && !k8s.ctx.served().service_monitor);
    assert!(
        apis_changed.has_changed().unwrap(),
        "the controller is told"
    );
    k8s.reconcile().await.unwrap();
    assert_eq!(crd_gets.load(Ordering::SeqCst), 0, "not asked again");
    assert_eq!(lists.load(Ordering::SeqCst), 7, "HTTPRoutes are served now");
    assert!(k8s.children().await.contains_key("HTTPRoute/stack"));
}

#[tokio::test]
async fn service_monitors_follow_the_spec_when_the_crd_exists() {
    let mut spec = PingPongStackSpec::default();
    spec.monitoring.service_monitor = true;
    let k8s = Started::new(Setup {
        service_monitor_crd: true,
        ..Setup::for_stack(spec)
    })
    .await;
    k8s.reconcile().await.unwrap();
    let with = k8s.children().await;
    let monitors: Vec<_> = with
        .keys()
        .filter(|k| k.starts_with("ServiceMonitor/"))
        .collect();
    assert!(!monitors.is_empty());

    k8s.edit_spec(|spec| spec.monitoring.service_monitor = false)
        .await;
    k8s.reconcile().await.unwrap();
    let without = k8s.children().await;
    assert!(without.keys().all(|k| !k.starts_with("ServiceMonitor/")));
    assert_eq!(
        diff(&with, &without).len(),
        monitors.len(),
        "only the ServiceMonitors go"
    );
}

#[tokio::test]
async fn rotated_credentials_reach_the_broker_definitions_and_roll_every_pod() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;
    let hash = |objects: &std::collections::BTreeMap<String, serde_json::Value>, key: &str| {
        objects[key]["spec"]["template"]["metadata"]["annotations"]["pingpong.dev/secret-digest"]
            .clone()
    };
    let secrets = k8s.api::<Secret>();
    let definitions = |secret: Secret| {
        String::from_utf8(secret.data.unwrap()["definitions.json"].0.clone()).unwrap()
    };
    let username = String::from_utf8(
        secrets
            .get("stack-rabbitmq-credentials")
            .await
            .unwrap()
            .data
            .unwrap()["username"]
            .0
            .clone(),
    )
    .unwrap();
    let first = definitions(secrets.get("stack-rabbitmq-definitions").await.unwrap());
    assert!(
        first.contains(&format!("\"name\": \"{username}\"")),
        "{first}"
    );
    // The user edits the credentials Secret by hand: a merge patch of its data.
    let edit_credentials = async |data: serde_json::Value| {
        let patch = serde_json::json!({ "data": data });
        secrets
            .patch(
                "stack-rabbitmq-credentials",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    };
    // The user rotates the password in the Secret only: the operator carries it out.
    edit_credentials(serde_json::json!({"password": "cm90YXRlZC1wYXNzd29yZA=="})).await;
    k8s.reconcile().await.unwrap();
    let after = k8s.children().await;
    // The broker nodes restart and import the new password; ping and pong roll with it.
    for key in [
        "StatefulSet/stack-rabbitmq",
        "Deployment/stack-ping",
        "Deployment/stack-pong",
    ] {
        assert_ne!(hash(&before, key), hash(&after, key), "{key} rolls");
    }
    let rotated = definitions(secrets.get("stack-rabbitmq-definitions").await.unwrap());
    assert!(
        rotated.contains("\"password\": \"rotated-password\""),
        "{rotated}"
    );
    assert!(!rotated.contains("guest"));
    // Only digests reach the pod templates.
    for object in after.values() {
        assert!(!object.to_string().contains("rotated-password"));
    }
    // A renamed user: the new one gets the password, the old one is kept without any.
    edit_credentials(serde_json::json!({"username": "bmV3LXVzZXI="})).await;
    k8s.reconcile().await.unwrap();
    let renamed: serde_json::Value = serde_json::from_str(&definitions(
        secrets.get("stack-rabbitmq-definitions").await.unwrap(),
    ))
    .unwrap();
    assert_eq!(
        renamed["users"],
        serde_json::json!([
            {"name": "new-user", "password": "rotated-password", "tags": ["administrator"]},
            {"name": username, "tags": []},
        ])
    );
    assert_eq!(renamed["permissions"][0]["user"], "new-user");
    let secret = secrets.get("stack-rabbitmq-credentials").await.unwrap();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"rotated-password",
        "the operator never writes an existing Secret back"
    );
}

#[tokio::test]
async fn the_credentials_secret_survives_reconciles_unchanged() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let secrets = k8s.api::<Secret>();
    let original = secrets.get("stack-rabbitmq-credentials").await.unwrap();
    let cookie = secrets.get("stack-rabbitmq-erlang-cookie").await.unwrap();
    let data = original.data.clone().unwrap();
    assert!(data.contains_key("username") && data.contains_key("password"));
    assert_ne!(data["username"].0, b"guest");

    for replicas in [2, 3] {
        k8s.edit_spec(|spec| spec.rabbitmq.replicas = replicas)
            .await;
        k8s.reconcile().await.unwrap();
    }
    k8s.reconcile().await.unwrap();
    let now = secrets.get("stack-rabbitmq-credentials").await.unwrap();
    assert_eq!(now.data, original.data);
    assert_eq!(
        now.metadata.resource_version,
        original.metadata.resource_version
    );
    let cookie_now = secrets.get("stack-rabbitmq-erlang-cookie").await.unwrap();
    assert_eq!(cookie_now.data, cookie.data);

    // The pods read the same Secret the status names.
    let status = k8s.status().await;
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("stack-rabbitmq-credentials")
    );
}

#[tokio::test]
async fn ready_workloads_make_the_stack_ready() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    k8s.set_ready(&["stack-rabbitmq"], &["stack-ping", "stack-pong"])
        .await;

    k8s.reconcile().await.unwrap();
    let stack = k8s.stack().await;
    assert!(pingpong_operator::reconcile::is_ready(&stack));
    let status = stack.status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "AllComponentsReady"));
    assert_eq!(
        condition(&status, "Progressing"),
        ("False", "RolloutComplete")
    );
    assert_eq!(status.rabbitmq.unwrap().ready_replicas, 1);
    let reasons: Vec<_> = k8s.events().await.into_iter().map(|e| e.1).collect();
    assert_eq!(reasons, ["Created", "Ready"]);
}

#[tokio::test]
async fn the_start_up_crd_check_sees_whether_a_crd_is_installed() {
    use pingpong_operator::apis::crd_serves;
    let name = "httproutes.gateway.networking.k8s.io";
    let without = client(Setup::default()).await;
    assert!(!crd_serves(&without, name, "v1").await.unwrap());
    let with = client(Setup {
        gateway_crd: true,
        ..Setup::default()
    })
    .await;
    assert!(crd_serves(&with, name, "v1").await.unwrap());
    assert!(
        !crd_serves(&with, name, "v2").await.unwrap(),
        "a CRD that does not serve the version is not enough"
    );
}

#[tokio::test]
async fn children_and_status_are_applied_by_their_field_managers() {
    use pingpong_operator::reconcile::{FIELD_MANAGER, STATUS_FIELD_MANAGER};
    let k8s = Started::new(Setup {
        managed_fields: true,
        ..Setup::for_stack(PingPongStackSpec::default())
    })
    .await;
    k8s.reconcile().await.unwrap();

    let deployment = k8s.api::<Deployment>().get("stack-ping").await.unwrap();
    let managers: Vec<_> = deployment
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, [(FIELD_MANAGER.to_owned(), "Apply".to_owned())]);

    let stack = k8s.stack().await;
    let status_manager = stack
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.subresource.as_deref() == Some("status"))
        .expect("status written through the status subresource");
    assert_eq!(
        status_manager.manager.as_deref(),
        Some(STATUS_FIELD_MANAGER)
    );
    assert_eq!(status_manager.operation.as_deref(), Some("Apply"));
}

#[tokio::test]
async fn a_pod_that_cannot_pull_its_image_is_named_in_ready_and_degraded() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    use pingpong_operator::reconcile::{NOT_READY_REQUEUE, SUCCESS_REQUEUE};
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    k8s.set_ready(&["stack-rabbitmq"], &["stack-pong"]).await;
    // ping's new pod, selected by the Deployment's own selector, cannot pull its image.
    let ping: Deployment = k8s.api().get("stack-ping").await.unwrap();
    let labels = ping.spec.unwrap().selector.match_labels.unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stack-ping-5d8f-x7k2q", "labels": labels},
        "spec": {"containers": [{"name": "ping", "image": "ping:nope"}]},
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "ping", "image": "ping:nope", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": "Back-off pulling image \"ping:nope\""}},
        }]},
    }))
    .unwrap();
    k8s.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();

    assert_eq!(
        k8s.reconcile().await.unwrap(),
        Action::requeue(NOT_READY_REQUEUE)
    );
    let status = k8s.status().await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ImagePullFailed")
    );
    assert_eq!(
        ready.message,
        "pod stack-ping-5d8f-x7k2q: container ping is ImagePullBackOff: Back-off pulling image \
         \"ping:nope\" (waiting for ping 0/1 ready)"
    );
    assert_eq!(condition(&status, "Degraded"), ("True", "ImagePullFailed"));

    // Fixed: the pod is gone and ping is ready; so is the stack.
    k8s.api::<Pod>()
        .delete("stack-ping-5d8f-x7k2q", &DeleteParams::default())
        .await
        .unwrap();
    k8s.set_ready(&[], &["stack-ping"]).await;
    assert_eq!(
        k8s.reconcile().await.unwrap(),
        Action::requeue(SUCCESS_REQUEUE)
    );
    let status = k8s.status().await;
    assert_eq!(condition(&status, "Ready"), ("True", "AllComponentsReady"));
    assert_eq!(
        condition(&status, "Degraded"),
        ("False", "ReconcileSucceeded")
    );
}

#[tokio::test]
async fn a_stack_that_chooses_no_route_gets_an_httproute_to_the_default_gateway() {
    use crate::support::api::bare_context;
    use pingpong_operator::apis::ServedApis;
    use std::sync::Arc;
    let public = GatewayParentRef {
        name: "public".into(),
        namespace: Some("gateway-system".into()),
        section_name: Some("http".into()),
    };
    let start = |served: bool| {
        let public = public.clone();
        async move {
            let client = client(Setup {
                gateway_crd: true,
                ..Setup::for_stack(PingPongStackSpec::default())
            })
            .await;
            let served = ServedApis {
                http_route: served,
                ..ServedApis::default()
            };
            let ctx = Arc::new(bare_context(&client, served).with_default_gateway(Some(public)));
            Started { client, ctx }
        }
    };
    let k8s = start(true).await;
    k8s.reconcile().await.unwrap();
    let children = k8s.children().await;
    assert!(
        !children.contains_key("Ingress/stack"),
        "the HTTPRoute replaces the Ingress"
    );
    let route = &children["HTTPRoute/stack"];
    assert_eq!(
        route["spec"]["parentRefs"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "name": "public", "namespace": "gateway-system", "sectionName": "http"}])
    );
    assert_eq!(route["spec"].get("hostnames"), None);

    // The stack's own host is the route's hostname.
    k8s.edit_spec(|spec| spec.ingress.host = Some("demo.example.com".into()))
        .await;
    k8s.reconcile().await.unwrap();
    let route = &k8s.children().await["HTTPRoute/stack"];
    assert_eq!(
        route["spec"]["hostnames"],
        serde_json::json!(["demo.example.com"])
    );

    // Asking for the Ingress (as every stack stored before this default did) keeps only it.
    let before = k8s.children().await;
    k8s.edit_spec(|spec| spec.ingress.enabled = Some(true))
        .await;
    k8s.reconcile().await.unwrap();
    assert_eq!(
        diff(&before, &k8s.children().await),
        ["~Ingress/stack", "-HTTPRoute/stack"]
    );
    // No route at all when the Ingress is switched off and no Gateway is set.
    k8s.edit_spec(|spec| spec.ingress.enabled = Some(false))
        .await;
    k8s.reconcile().await.unwrap();
    let children = k8s.children().await;
    assert!(!children.contains_key("Ingress/stack") && !children.contains_key("HTTPRoute/stack"));

    // Where the Gateway API is not served, the same default stack falls back to an Ingress of
    // the cluster's default IngressClass.
    let k8s = start(false).await;
    k8s.reconcile().await.unwrap();
    let children = k8s.children().await;
    assert!(!children.contains_key("HTTPRoute/stack"));
    assert_eq!(
        children["Ingress/stack"]["spec"].get("ingressClassName"),
        None
    );
}

/// A broker pod as the StatefulSet controller would create it from a template with `cookie`
/// as its Erlang-cookie digest (`None`: a pod from before the annotation existed).
async fn broker_pod(k8s: &Started, ordinal: u32, cookie: Option<&str>) {
    use k8s_openapi::api::core::v1::Pod;
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(cookie) = cookie {
        annotations.insert(
            pingpong_operator::labels::ERLANG_COOKIE_DIGEST.to_owned(),
            cookie.to_owned(),
        );
    }
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{NAME}-rabbitmq-{ordinal}")),
            labels: Some(pingpong_operator::labels::selector_labels(
                NAME,
                pingpong_operator::labels::Component::RabbitMq,
            )),
            annotations: Some(annotations),
            ..Default::default()
        },
        ..Pod::default()
    };
    k8s.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

fn cookie_digest(objects: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    objects["StatefulSet/stack-rabbitmq"]["spec"]["template"]["metadata"]["annotations"]
        ["pingpong.dev/erlang-cookie-digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn broker_pod_names(k8s: &Started) -> BTreeSet<String> {
    k8s.api::<k8s_openapi::api::core::v1::Pod>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test]
async fn a_regenerated_cookie_restarts_every_node_of_a_cluster_together() {
    let mut spec = PingPongStackSpec::default();
    spec.rabbitmq.replicas = 3;
    let k8s = Started::reconciled(spec).await;
    let old = cookie_digest(&k8s.children().await);
    broker_pod(&k8s, 0, Some(&old)).await;
    broker_pod(&k8s, 1, Some(&old)).await;
    broker_pod(&k8s, 2, None).await; // from before the annotation: left to the rolling update
    // Nothing changed: nothing is restarted.
    k8s.reconcile().await.unwrap();
    assert_eq!(broker_pod_names(&k8s).await.len(), 3);

    k8s.api::<Secret>()
        .delete("stack-rabbitmq-erlang-cookie", &DeleteParams::default())
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    assert_ne!(cookie_digest(&k8s.children().await), old, "a new cookie");
    // The nodes with the old cookie are deleted together (the StatefulSet controller recreates
    // them with the new one), with a Warning Event that says why.
    assert_eq!(
        broker_pod_names(&k8s).await,
        BTreeSet::from(["stack-rabbitmq-2".to_owned()])
    );
    let events = k8s.events().await;
    assert!(
        events.contains(&("Warning".to_owned(), "ErlangCookieChanged".to_owned())),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_single_broker_node_is_left_to_its_rolling_update() {
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let old = cookie_digest(&k8s.children().await);
    broker_pod(&k8s, 0, Some(&old)).await;
    k8s.api::<Secret>()
        .delete("stack-rabbitmq-erlang-cookie", &DeleteParams::default())
        .await
        .unwrap();
    k8s.reconcile().await.unwrap();
    assert_ne!(cookie_digest(&k8s.children().await), old);
    assert_eq!(broker_pod_names(&k8s).await.len(), 1);
}

/// The resourceVersion of every child, keyed `Kind/name` (the in-memory API bumps it on every
/// write, even an apply that changes nothing).
async fn child_versions(k8s: &Started) -> std::collections::BTreeMap<String, String> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
    use kube::api::{ApiResource, DynamicObject, ListParams};
    let resources = [
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Ingress>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ];
    let mut out = std::collections::BTreeMap::new();
    for resource in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(k8s.client.clone(), api::NS, &resource);
        for o in api.list(&ListParams::default()).await.unwrap().items {
            let key = format!("{}/{}", resource.kind, o.metadata.name.unwrap_or_default());
            out.insert(key, o.metadata.resource_version.unwrap_or_default());
        }
    }
    out
}

#[tokio::test]
async fn a_steady_state_reconcile_writes_no_child() {
    use pingpong_operator::metrics::ChildOperation;
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let versions = child_versions(&k8s).await;
    let applies = k8s
        .ctx
        .metrics
        .child_operations("Deployment", ChildOperation::Apply, true);

    k8s.reconcile().await.unwrap();
    k8s.reconcile().await.unwrap();
    assert_eq!(child_versions(&k8s).await, versions, "no child was written");
    assert_eq!(
        k8s.ctx
            .metrics
            .child_operations("Deployment", ChildOperation::Apply, true),
        applies
    );
    assert_eq!(
        k8s.ctx
            .metrics
            .child_operations("Deployment", ChildOperation::Skip, true),
        4,
        "ping and pong, twice"
    );
}

#[tokio::test]
async fn a_child_edited_or_relabelled_behind_the_operator_is_applied_again() {
    use k8s_openapi::api::core::v1::Service;
    let k8s = Started::reconciled(PingPongStackSpec::default()).await;
    let before = k8s.children().await;
    let edit = PatchParams::default();
    // Someone scales ping (a spec change: a new generation) ...
    k8s.api::<Deployment>()
        .patch(
            "stack-ping",
            &edit,
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    // ... and drops a label the operator sets from a Service (a kind without a generation).
    k8s.api::<Service>()
        .patch(
            "stack-pong",
            &edit,
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/instance": null}}}),
            ),
        )
        .await
        .unwrap();
    assert_ne!(diff(&before, &k8s.children().await), Vec::<String>::new());

    k8s.reconcile().await.unwrap();
    assert_eq!(diff(&before, &k8s.children().await), Vec::<String>::new());
    // Healed, and then left alone.
    let versions = child_versions(&k8s).await;
    k8s.reconcile().await.unwrap();
    assert_eq!(child_versions(&k8s).await, versions);
}
