//! The stack's PrometheusRule: built only when asked for and served, the alerts that depend on
//! the stack (broker nodes, store kind), and the links every alert must carry. The rules' firing
//! behaviour is tested with `promtool test rules` on the full golden
//! (tests/deploy/test_deploy_alerts.py).

use crate::support::fixtures::*;
use pingpong_operator::apis::ServedApis;
use pingpong_operator::reconcile::builders::prometheusrule::{
    RUNBOOK_URL, STACK_LABEL, build_prometheus_rule,
};
use serde_json::Value;

fn rules(rule: &kube::api::DynamicObject) -> Vec<Value> {
    let groups = rule.data["spec"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    groups[0]["rules"].as_array().unwrap().clone()
}

fn alert_names(rule: &kube::api::DynamicObject) -> Vec<String> {
    rules(rule)
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn full_stack_gets_every_alert_with_links() {
    let (stack, desired) = desired_for(&load_fixture("full"));
    let rule = desired
        .prometheus_rule
        .as_ref()
        .expect("asked for and served");
    assert_eq!(rule.metadata.name.as_deref(), Some("demo-full-alerts"));
    assert_eq!(rule.metadata.namespace.as_deref(), Some("pingpong"));
    let labels = rule.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["release"], "kube-prometheus-stack");
    assert_eq!(labels["app.kubernetes.io/component"], "alerts");
    assert!(rule.metadata.owner_references.is_some());
    assert_eq!(
        alert_names(rule),
        [
            "PingPongBacklogGrowing",
            "PingPongQueueNoConsumer",
            "PingPongPublishConfirmSlow",
            "PingPongPublishUnavailable",
            "PingPongDeadLetterGrowing",
            "PingPongBrokerMemoryAlarm",
            "PingPongBrokerDiskAlarm",
            "PingPongBrokerNodeDown",
            "PingPongBrokerPartitioned",
            "PingPongStoreErrors",
        ]
    );
    for r in rules(rule) {
        let alert = r["alert"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        assert!(
            expr.contains("namespace=\"pingpong\""),
            "{alert} selects the stack's namespace: {expr}"
        );
        assert_eq!(r["labels"][STACK_LABEL], stack.name.as_str());
        assert!(["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap()));
        assert_eq!(
            r["annotations"]["runbook_url"],
            format!("{RUNBOOK_URL}#{}", alert.to_lowercase()).as_str()
        );
        let dashboard = r["annotations"]["dashboard_url"].as_str().unwrap();
        assert!(
            dashboard.contains("var-namespace=pingpong&viewPanel="),
            "{dashboard}"
        );
        assert!(!r["annotations"]["summary"].as_str().unwrap().is_empty());
    }
}

#[test]
fn single_node_memory_stack_has_no_partition_nor_store_alert() {
    let stack = stack_from_spec("solo", "  monitoring:\n    prometheusRule: true\n");
    let (_, desired) = desired_for(&stack);
    let rule = desired.prometheus_rule.unwrap();
    let names = alert_names(&rule);
    assert!(!names.iter().any(|n| n == "PingPongBrokerPartitioned"));
    assert!(!names.iter().any(|n| n == "PingPongStoreErrors"));
    let node_down = rules(&rule)
        .into_iter()
        .find(|r| r["alert"] == "PingPongBrokerNodeDown")
        .unwrap();
    assert_eq!(node_down["labels"]["severity"], "critical");
    assert!(node_down["expr"].as_str().unwrap().ends_with("< 1"));
    assert!(
        node_down["expr"]
            .as_str()
            .unwrap()
            .contains("job=\"solo-rabbitmq\"")
    );
}

/// The `expr` of every alert on the queues, by name.
fn queue_exprs(spec: &str) -> Vec<(String, String)> {
    let (_, desired) = desired_for(&stack_from_spec("parts", spec));
    rules(&desired.prometheus_rule.unwrap())
        .into_iter()
        .filter(|r| r["expr"].as_str().unwrap().contains("queue"))
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn queue_alerts_cover_every_partition_and_keep_one_queue_as_it_was() {
    let base = "  monitoring:\n    prometheusRule: true\n  rabbitmq:\n    queue: orders.v1\n";
    let one = queue_exprs(base);
    let names: Vec<&str> = one.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "PingPongBacklogGrowing",
            "PingPongQueueNoConsumer",
            "PingPongDeadLetterGrowing"
        ]
    );
    for (name, expr) in &one {
        let wanted = if name == "PingPongDeadLetterGrowing" {
            "queue=\"orders.v1.dead\""
        } else {
            "queue=\"orders.v1\""
        };
        assert!(expr.contains(wanted), "{name}: {expr}");
    }
    let four = queue_exprs(&format!("{base}    partitions: 4\n"));
    for (name, expr) in &four {
        // PromQL regexes are anchored; `.` in the name is escaped, and `<queue>.dead` is not a
        // partition of the work queue.
        let wanted = if name == "PingPongDeadLetterGrowing" {
            r#"queue=~"orders\\.v1(\\.[0-9]+)?\\.dead""#
        } else {
            r#"queue=~"orders\\.v1(\\.[0-9]+)?""#
        };
        assert!(expr.contains(wanted), "{name}: {expr}");
    }
}

#[test]
fn built_only_when_asked_for_and_served() {
    let asked = validated(&stack_from_spec(
        "a",
        "  monitoring:\n    prometheusRule: true\n",
    ));
    assert!(build_prometheus_rule(&asked, true).is_some());
    assert!(build_prometheus_rule(&asked, false).is_none());
    let not_asked = validated(&stack_from_spec(
        "b",
        "  monitoring:\n    serviceMonitor: true\n",
    ));
    assert!(build_prometheus_rule(&not_asked, true).is_none());
    let served = ServedApis::ALL;
    assert!(served.prometheus_rule);
}
