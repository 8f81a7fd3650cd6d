//! ServiceMonitors (monitoring.coreos.com/v1) for ping, pong and RabbitMQ, created when
//! `spec.monitoring.serviceMonitor` is set and the Prometheus Operator CRD exists.
//!
//! k8s-openapi has no Prometheus Operator types: each monitor is built from the typed structs
//! below and carried as a [`DynamicObject`].

use kube::api::{ApiResource, DynamicObject, TypeMeta};
use serde::Serialize;

use super::common::{HTTP_PORT_NAME, METRICS_PATH, object_meta};
use crate::labels::{self, Component};
use crate::reconcile::validate::ValidatedStack;

/// API group of the Prometheus Operator.
pub const MONITORING_GROUP: &str = "monitoring.coreos.com";
/// Kind of the monitor.
pub const SERVICE_MONITOR_KIND: &str = "ServiceMonitor";
/// Name of the CRD whose presence enables ServiceMonitors.
pub const SERVICE_MONITOR_CRD: &str = "servicemonitors.monitoring.coreos.com";

/// The ServiceMonitor resource, for a dynamic `Api` and for discovery.
pub fn service_monitor_api_resource() -> ApiResource {
    ApiResource {
        group: MONITORING_GROUP.to_owned(),
        version: "v1".to_owned(),
        api_version: format!("{MONITORING_GROUP}/v1"),
        kind: SERVICE_MONITOR_KIND.to_owned(),
        plural: "servicemonitors".to_owned(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: Selector,
    endpoints: Vec<Endpoint>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Endpoint {
    port: &'static str,
    path: &'static str,
    interval: &'static str,
}

fn monitor(
    stack: &ValidatedStack,
    component: Component,
    name: &str,
    port: &'static str,
) -> DynamicObject {
    let resource = service_monitor_api_resource();
    let mut metadata = object_meta(stack, name, component);
    metadata.labels = Some(labels::with_user_labels(
        &stack.name,
        component,
        &stack.monitoring.service_monitor_labels,
    ));
    let spec = ServiceMonitorSpec {
        selector: Selector {
            match_labels: labels::selector_labels(&stack.name, component),
        },
        endpoints: vec![Endpoint {
            port,
            path: METRICS_PATH,
            interval: "30s",
        }],
    };
    DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata,
        data: serde_json::json!({ "spec": spec }),
    }
}

/// The ServiceMonitors for ping, pong and the broker, or none when not asked for or when the
/// Prometheus Operator CRD is missing (`crd_present`).
pub fn build_service_monitors(stack: &ValidatedStack, crd_present: bool) -> Vec<DynamicObject> {
    if !(stack.monitoring.service_monitor && crd_present) {
        return Vec::new();
    }
    // The broker's headless Service carries the same labels as the client Service but has no
    // `prometheus` port, so only the client Service's endpoints are scraped.
    vec![
        monitor(stack, Component::Ping, &stack.names.ping, HTTP_PORT_NAME),
        monitor(stack, Component::Pong, &stack.names.pong, HTTP_PORT_NAME),
        monitor(
            stack,
            Component::RabbitMq,
            &stack.names.rabbitmq,
            "prometheus",
        ),
    ]
}
