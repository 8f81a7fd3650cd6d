//! KEDA as pong's autoscaling engine: the ScaledObject and TriggerAuthentication the builder
//! renders (the whole set is in the `keda` golden), the pong Deployment without `replicas`, the
//! broker NetworkPolicy admitting KEDA's operator, and `KedaMissing` where KEDA is not served.

use crate::support::fixtures::*;
use pingpong_operator::apis::ServedApis;
use pingpong_operator::autoscale::keda::missing_keda;
use pingpong_operator::reconcile::builders::{PlanInputs, build_desired};
use pingpong_operator::reconcile::status::reason::KEDA_MISSING;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn keda_desired(served: ServedApis) -> pingpong_operator::reconcile::desired::DesiredState {
    let v = validated(&load_fixture("keda"));
    let inputs = PlanInputs::fresh(&v, fixed_credentials(), fixed_postgres_password(), served);
    build_desired(&v, &inputs)
}

#[test]
fn keda_sums_the_partitions_queues() {
    let mut stack = load_fixture("keda");
    stack.spec.rabbitmq.partitions = Some(4);
    let (_, desired) = desired_for(&stack);
    let scaled = serde_json::to_value(&desired.keda.unwrap().scaled_object).unwrap();
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    let metadata = &triggers[0]["metadata"];
    assert_eq!(metadata["queueName"], r"^orders(\.[0-9]+)?$");
    assert_eq!(metadata["useRegex"], "true");
    assert_eq!(metadata["operation"], "sum");
    let regex = regex::Regex::new(metadata["queueName"].as_str().unwrap()).unwrap();
    for (queue, matched) in [
        ("orders", true),
        ("orders.1", true),
        ("orders.31", true),
        ("orders.dead", false),
        ("orders.1.dead", false),
        ("ordersx", false),
        ("other", false),
    ] {
        assert_eq!(regex.is_match(queue), matched, "{queue}");
    }
}

#[test]
fn keda_engine_renders_a_scaled_object_on_the_management_api() {
    let desired = keda_desired(ServedApis::ALL);
    let keda = desired.keda.as_ref().expect("KEDA objects");
    let scaled = serde_json::to_value(&keda.scaled_object).unwrap();
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(scaled["kind"], "ScaledObject");
    assert_eq!(scaled["metadata"]["name"], "demo-keda-pong");
    assert_eq!(
        scaled["metadata"]["ownerReferences"][0]["name"], "demo-keda",
        "garbage-collected with the stack"
    );
    let spec = &scaled["spec"];
    assert_eq!(
        spec["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-keda-pong"})
    );
    assert_eq!(
        (
            &spec["minReplicaCount"],
            &spec["maxReplicaCount"],
            &spec["cooldownPeriod"]
        ),
        (&json!(0), &json!(8), &json!(120))
    );
    let down = &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"];
    assert_eq!(down["stabilizationWindowSeconds"], 120);
    assert_eq!(
        down["policies"],
        json!([{"type": "Pods", "value": 1, "periodSeconds": 15}])
    );
    let trigger = &spec["triggers"][0];
    assert_eq!(spec["triggers"].as_array().unwrap().len(), 1);
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(
        trigger["metadata"],
        json!({
            "protocol": "http",
            "mode": "QueueLength",
            "value": "500",
            "queueName": "orders",
            "host": "http://demo-keda-rabbitmq.pingpong.svc:15672",
            "vhostName": "/",
        })
    );
    assert_eq!(
        trigger["authenticationRef"],
        json!({"name": "demo-keda-pong"})
    );

    let auth = serde_json::to_value(&keda.trigger_authentication).unwrap();
    assert_eq!(auth["kind"], "TriggerAuthentication");
    assert_eq!(auth["metadata"]["name"], "demo-keda-pong");
    assert_eq!(
        auth["spec"],
        json!({"secretTargetRef": [
            {"parameter": "username", "name": "demo-keda-rabbitmq-credentials", "key": "username"},
            {"parameter": "password", "name": "demo-keda-rabbitmq-credentials", "key": "password"},
        ]})
    );
    // No credentials in either object: the Secret's keys are referenced, never copied.
    let creds = fixed_credentials();
    for object in [&scaled, &auth] {
        let text = object.to_string();
        assert!(!text.contains(creds.password.expose()), "{text}");
        assert!(!text.contains(&creds.username), "{text}");
    }
}

#[test]
fn keda_objects_follow_the_pong_deployment_in_the_apply_order() {
    let desired = keda_desired(ServedApis::ALL);
    let names: Vec<String> = objects(&desired).iter().map(kind_name).collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(at("Deployment/demo-keda-pong") < at("TriggerAuthentication/demo-keda-pong"));
    assert!(at("TriggerAuthentication/demo-keda-pong") < at("ScaledObject/demo-keda-pong"));
}

#[test]
fn keda_drives_replicas_so_the_pong_deployment_leaves_them_out() {
    let desired = keda_desired(ServedApis::ALL);
    let pong = serde_json::to_value(&desired.pong.deployment).unwrap();
    assert!(pong["spec"].get("replicas").is_none(), "{}", pong["spec"]);
    let ping = serde_json::to_value(&desired.ping.deployment).unwrap();
    assert_eq!(ping["spec"]["replicas"], 1, "ping keeps its replicas");

    // The operator's own engine: replicas applied, no KEDA objects.
    let mut stack = load_fixture("keda");
    stack.spec.pong.autoscaling.as_mut().unwrap().engine = Default::default();
    let (_, desired) = desired_for(&stack);
    assert!(desired.keda.is_none());
    let pong = serde_json::to_value(&desired.pong.deployment).unwrap();
    assert_eq!(pong["spec"]["replicas"], 1);
}

#[test]
fn the_broker_admits_keda_operator_pods_on_the_management_port_only() {
    let desired = keda_desired(ServedApis::ALL);
    let policy = serde_json::to_value(&desired.rabbitmq.network_policy).unwrap();
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let keda_peer =
        json!({"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "keda-operator"}}});
    let admitting: Vec<&Value> = rules
        .iter()
        .filter(|r| r["from"].as_array().is_some_and(|f| f.contains(&keda_peer)))
        .collect();
    assert_eq!(admitting.len(), 1, "{rules:?}");
    assert_eq!(
        admitting[0]["ports"],
        json!([{"port": 15672, "protocol": "TCP"}])
    );
    // Not the operator's pods: they do not read this stack's queue.
    assert!(!policy.to_string().contains("\"component\":\"operator\""));
}

#[test]
fn keda_where_it_is_not_served_stops_the_stack_instead_of_scaling_otherwise() {
    let v = validated(&load_fixture("keda"));
    assert!(missing_keda(&v, ServedApis::ALL).is_none());
    let none = ServedApis {
        http_route: true,
        ..ServedApis::default()
    };
    let missing = missing_keda(&v, none).expect("KEDA is missing");
    assert_eq!(missing.reason, KEDA_MISSING);
    assert!(
        missing.message.contains(
            "scaledobjects.keda.sh (v1alpha1), triggerauthentications.keda.sh (v1alpha1)"
        ),
        "{}",
        missing.message
    );
    let half = ServedApis {
        scaled_object: true,
        ..ServedApis::default()
    };
    let missing = missing_keda(&v, half).expect("one CRD is not enough");
    assert!(
        !missing.message.contains("scaledobjects"),
        "{}",
        missing.message
    );
    // Nothing is built for KEDA where it is not served.
    assert!(keda_desired(none).keda.is_none());
    // A stack on the operator's engine never needs KEDA.
    let (operator, _) = desired_for(&stack_from_spec(
        "auto",
        "  pong:\n    autoscaling:\n      maxReplicas: 1\n",
    ));
    assert!(missing_keda(&operator, none).is_none());
}

#[tokio::test]
async fn keda_asked_for_where_it_is_not_served_applies_nothing_and_says_so() {
    use crate::support::api::{Setup, Started};
    use pingpong_operator::crd::{AutoscalingEngine, PingPongStackSpec, PongAutoscaling};
    let mut spec = PingPongStackSpec::default();
    spec.pong.autoscaling = Some(PongAutoscaling {
        min_replicas: 1,
        max_replicas: 1,
        target_backlog_per_replica: 10,
        scale_down_delay_seconds: 30,
        max_drain_seconds: 60,
        engine: AutoscalingEngine::Keda,
    });
    let k8s = Started::new(Setup::for_stack(spec)).await;
    k8s.reconcile().await.unwrap();
    let status = k8s.status().await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", KEDA_MISSING)
    );
    assert!(status.autoscaling.is_none(), "no decision in KEDA's place");
    let children = k8s.children().await;
    assert!(
        !children.keys().any(|k| k.starts_with("Deployment/")),
        "nothing applied: {:?}",
        children.keys().collect::<Vec<_>>()
    );
    let events = k8s.events().await;
    assert!(
        events.contains(&("Warning".to_owned(), KEDA_MISSING.to_owned())),
        "a Warning Event: {events:?}"
    );
}
