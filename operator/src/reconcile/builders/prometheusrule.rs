//! The stack's PrometheusRule (monitoring.coreos.com/v1) `<stack>-alerts`: the alerts a user of
//! the data path feels, created when `spec.monitoring.prometheusRule` is set and the Prometheus
//! Operator's PrometheusRule CRD is served.
//!
//! Every expression selects this stack's series only: the `namespace` and `job` labels the
//! ServiceMonitors give the scraped Services (`job` is the Service name), and the stack's queue
//! and dead-letter queue by name. Every alert carries a `runbook_url` (a section of
//! `docs/runbooks.md`) and a `dashboard_url` (the Grafana panel that shows what it fires on, in
//! the chart's dashboard). Thresholds are constants here, documented in the runbooks; the rules are
//! tested with `promtool test rules` (tests/deploy/test_deploy_alerts.py). The operator's own
//! alerts ship in the chart (templates/prometheusrule.yaml).
//!
//! k8s-openapi has no Prometheus Operator types: the rule is built from the typed structs below
//! and carried as a [`DynamicObject`]. Pure: no client, no clock.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, TypeMeta};
use serde::Serialize;

use super::common::{object_meta, partitions_regex};
use crate::apis::OptionalApi;
use crate::labels::{self, Component};
use crate::reconcile::validate::ValidatedStack;

/// Where the runbooks live; each alert links to its section (`#<alert name in lowercase>`).
pub const RUNBOOK_URL: &str =
    "https://github.com/pingpong-operator/pingpong-operator/blob/main/docs/runbooks.md";
/// Path of the chart's Grafana dashboard (uid `pingpong-operator`), relative to Grafana's URL.
pub const DASHBOARD_PATH: &str = "/d/pingpong-operator/pingpong-operator";
/// Alert label naming the stack (Prometheus label names allow no `/` or `.`).
pub const STACK_LABEL: &str = "pingpong_stack";
/// Name of the rule group.
pub const GROUP_NAME: &str = "pingpong-stack";

/// A ready backlog below this many messages never alerts, however it grows.
pub const BACKLOG_MIN_MESSAGES: u32 = 1000;
/// 99th percentile of ping's publisher-confirm latency above which publishes are slow.
pub const CONFIRM_P99_SECONDS: f64 = 0.5;
/// Share of `POST /ping` answered 503 (broker unavailable or no confirm) that alerts.
pub const UNAVAILABLE_RATIO: f64 = 0.05;

/// Dashboard panels (ids in `charts/pingpong-operator/dashboards/pingpong-operator.json`).
mod panel {
    pub const CONFIRM_LATENCY: u32 = 12;
    pub const PING_UNAVAILABLE: u32 = 30;
    pub const STORE_ERRORS: u32 = 31;
    pub const QUEUE_BACKLOG: u32 = 25;
    pub const QUEUE_CONSUMERS: u32 = 26;
    pub const DEAD_LETTER: u32 = 27;
    pub const BROKER_ALARMS: u32 = 28;
    pub const BROKER_NODES: u32 = 29;
}

/// How urgent an alert is (`severity` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    /// Users are failing now.
    Critical,
    /// Users will fail soon or some of them are.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
        }
    }
}

#[derive(Serialize)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Serialize)]
struct RuleGroup {
    name: &'static str,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    alert: &'static str,
    expr: String,
    #[serde(rename = "for")]
    for_: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// One alert before the stack's labels and links are added.
struct Alert {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: Severity,
    summary: String,
    description: &'static str,
    panel: u32,
}

/// A PromQL string literal of `value` (double-quoted, `\` and `"` escaped).
fn promql_str(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The `queue` label matcher of the work queue (`dead`: of its dead-letter queue): the name
/// itself, or with several partitions a regular expression over every partition's queue
/// (`<queue>`, `<queue>.1`, ...), so each partition fires on its own.
fn queue_matcher(stack: &ValidatedStack, dead: bool) -> String {
    let queue = &stack.rabbitmq.queue;
    let suffix = if dead { ".dead" } else { "" };
    if stack.rabbitmq.partitions <= 1 {
        return format!("queue={}", promql_str(&format!("{queue}{suffix}")));
    }
    // PromQL anchors label regexes itself.
    let regex = partitions_regex(queue, suffix);
    format!("queue=~{}", promql_str(&regex))
}

/// The label matchers of the series scraped from the Service `job` of this stack.
fn selector(stack: &ValidatedStack, job: &str) -> String {
    format!(
        "namespace={}, job={}",
        promql_str(&stack.namespace),
        promql_str(job)
    )
}

fn alerts(stack: &ValidatedStack) -> Vec<Alert> {
    let ping = selector(stack, &stack.names.ping);
    let pong = selector(stack, &stack.names.pong);
    let broker = selector(stack, &stack.names.rabbitmq);
    let queue = queue_matcher(stack, false);
    let dead = queue_matcher(stack, true);
    let name = &stack.name;
    let mut out = vec![
        Alert {
            name: "PingPongBacklogGrowing",
            expr: format!(
                "max by (namespace, queue) (\n\
                 \x20 rabbitmq_detailed_queue_messages_ready{{{broker}, {queue}}} > {BACKLOG_MIN_MESSAGES}\n\
                 \x20 and\n\
                 \x20 delta(rabbitmq_detailed_queue_messages_ready{{{broker}, {queue}}}[10m]) > 0\n\
                 )"
            ),
            for_: "10m",
            severity: Severity::Warning,
            summary: format!("Stack {name}: the queue backlog grows faster than pong drains it"),
            description: "{{ $value }} ready messages in queue {{ $labels.queue }} and still growing: pong consumes slower than ping publishes, so GET /pong lags behind.",
            panel: panel::QUEUE_BACKLOG,
        },
        Alert {
            name: "PingPongQueueNoConsumer",
            expr: format!(
                "max by (namespace, queue) (rabbitmq_detailed_queue_consumers{{{broker}, {queue}}}) == 0"
            ),
            for_: "5m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: no consumer on the queue"),
            description: "Queue {{ $labels.queue }} has had no consumer for 5 minutes: published pings pile up and nothing reaches the store.",
            panel: panel::QUEUE_CONSUMERS,
        },
        Alert {
            name: "PingPongPublishConfirmSlow",
            expr: format!(
                "histogram_quantile(0.99, sum by (namespace, le) (rate(pingpong_ping_publish_confirm_duration_seconds_bucket{{{ping}}}[5m]))) > {CONFIRM_P99_SECONDS}"
            ),
            for_: "10m",
            severity: Severity::Warning,
            summary: format!("Stack {name}: the broker confirms publishes slowly"),
            description: "The 99th percentile of ping's publisher-confirm latency is {{ $value | humanizeDuration }}: POST /ping answers that late.",
            panel: panel::CONFIRM_LATENCY,
        },
        Alert {
            name: "PingPongPublishUnavailable",
            expr: format!(
                "sum by (namespace) (rate(pingpong_ping_http_requests_total{{{ping}, route=\"/ping\", status=\"503\"}}[5m]))\n\
                 /\n\
                 sum by (namespace) (rate(pingpong_ping_http_requests_total{{{ping}, route=\"/ping\"}}[5m]))\n\
                 > {UNAVAILABLE_RATIO}"
            ),
            for_: "5m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: POST /ping answers 503"),
            description: "{{ $value | humanizePercentage }} of POST /ping are refused with 503: the broker is unreachable or does not confirm the publishes.",
            panel: panel::PING_UNAVAILABLE,
        },
        Alert {
            name: "PingPongDeadLetterGrowing",
            expr: format!(
                "max by (namespace, queue) (delta(rabbitmq_detailed_queue_messages{{{broker}, {dead}}}[15m])) > 0"
            ),
            for_: "1m",
            severity: Severity::Warning,
            summary: format!("Stack {name}: messages are being dead-lettered"),
            description: "The dead-letter queue {{ $labels.queue }} grew in the last 15 minutes: pong rejected messages it can never store, or messages exceeded the delivery limit. They never reach GET /pong.",
            panel: panel::DEAD_LETTER,
        },
        Alert {
            name: "PingPongBrokerMemoryAlarm",
            expr: format!(
                "max by (namespace, pod) (rabbitmq_alarms_memory_used_watermark{{{broker}}}) == 1"
            ),
            for_: "1m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: broker memory alarm, publishers are blocked"),
            description: "RabbitMQ node {{ $labels.pod }} is above its memory high watermark and blocks every publisher: POST /ping times out with 503.",
            panel: panel::BROKER_ALARMS,
        },
        Alert {
            name: "PingPongBrokerDiskAlarm",
            expr: format!(
                "max by (namespace, pod) (rabbitmq_alarms_free_disk_space_watermark{{{broker}}}) == 1"
            ),
            for_: "1m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: broker disk alarm, publishers are blocked"),
            description: "RabbitMQ node {{ $labels.pod }} has less free disk than its limit and blocks every publisher: POST /ping times out with 503.",
            panel: panel::BROKER_ALARMS,
        },
        Alert {
            name: "PingPongBrokerNodeDown",
            expr: format!(
                "(count by (namespace) (up{{{broker}}} == 1)\n\
                 or on () label_replace(vector(0), \"namespace\", {namespace}, \"\", \"\"))\n\
                 < {replicas}",
                namespace = promql_str(&stack.namespace),
                replicas = stack.rabbitmq.replicas
            ),
            for_: "5m",
            severity: if stack.rabbitmq.replicas > 1 {
                Severity::Warning
            } else {
                Severity::Critical
            },
            summary: format!(
                "Stack {name}: fewer than {} broker nodes are up",
                stack.rabbitmq.replicas
            ),
            description: "Only {{ $value }} RabbitMQ nodes answer scrapes.",
            panel: panel::BROKER_NODES,
        },
    ];
    if stack.rabbitmq.replicas > 1 {
        out.push(Alert {
            name: "PingPongBrokerPartitioned",
            expr: format!(
                "max by (namespace, pod) (rabbitmq_unreachable_cluster_peers_count{{{broker}}}) > 0"
            ),
            for_: "2m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: a broker node cannot reach its peers"),
            description: "RabbitMQ node {{ $labels.pod }} cannot reach {{ $value }} cluster peers: with pause_minority the minority side stops serving clients.",
            panel: panel::BROKER_NODES,
        });
    }
    if stack.store.is_postgres() {
        out.push(Alert {
            name: "PingPongStoreErrors",
            expr: format!(
                "sum by (namespace) (rate(pingpong_pong_db_errors_total{{{pong}}}[5m])) > 0\n\
                 or\n\
                 min by (namespace) (pingpong_pong_store_ready{{{pong}}}) == 0"
            ),
            for_: "5m",
            severity: Severity::Critical,
            summary: format!("Stack {name}: pong cannot write to PostgreSQL"),
            description: "pong's PostgreSQL operations fail or its store is not ready: messages stay unacked in the queue and GET /pong does not show new ones.",
            panel: panel::STORE_ERRORS,
        });
    }
    out
}

fn rule(stack: &ValidatedStack, alert: Alert) -> Rule {
    let labels = BTreeMap::from([
        ("severity".to_owned(), alert.severity.as_str().to_owned()),
        (STACK_LABEL.to_owned(), stack.name.clone()),
    ]);
    let annotations = BTreeMap::from([
        ("summary".to_owned(), alert.summary),
        ("description".to_owned(), alert.description.to_owned()),
        (
            "runbook_url".to_owned(),
            format!("{RUNBOOK_URL}#{}", alert.name.to_lowercase()),
        ),
        (
            "dashboard_url".to_owned(),
            format!(
                "{DASHBOARD_PATH}?var-namespace={}&viewPanel={}",
                stack.namespace, alert.panel
            ),
        ),
    ]);
    Rule {
        alert: alert.name,
        expr: alert.expr,
        for_: alert.for_,
        labels,
        annotations,
    }
}

/// The PrometheusRule `<stack>-alerts`, or `None` when not asked for or when the Prometheus
/// Operator's PrometheusRule CRD is not served (`served`).
pub fn build_prometheus_rule(stack: &ValidatedStack, served: bool) -> Option<DynamicObject> {
    if !(stack.monitoring.prometheus_rule && served) {
        return None;
    }
    let resource = OptionalApi::PrometheusRule.resource();
    let mut metadata = object_meta(stack, &stack.names.alerts, Component::Alerts);
    metadata.labels = Some(labels::with_user_labels(
        &stack.name,
        Component::Alerts,
        &stack.monitoring.service_monitor_labels,
    ));
    let spec = RuleSpec {
        groups: vec![RuleGroup {
            name: GROUP_NAME,
            rules: alerts(stack)
                .into_iter()
                .map(|alert| rule(stack, alert))
                .collect(),
        }],
    };
    Some(DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata,
        data: serde_json::json!({ "spec": spec }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_strings_are_escaped() {
        assert_eq!(promql_str("a"), "\"a\"");
        assert_eq!(promql_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
