//! ServiceMonitors (monitoring.coreos.com/v1) for ping, pong and RabbitMQ, created when
//! `spec.monitoring.serviceMonitor` is set and the Prometheus Operator CRD exists.
//!
//! k8s-openapi has no Prometheus Operator types: each monitor is built from the typed structs
//! below and carried as a [`DynamicObject`].

use kube::api::{DynamicObject, TypeMeta};
use serde::Serialize;

use super::common::{HTTP_PORT_NAME, METRICS_PATH, object_meta};
use crate::apis::OptionalApi;
use crate::labels::{self, Component};
use crate::reconcile::validate::ValidatedStack;

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
    let resource = OptionalApi::ServiceMonitor.resource();
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

/// The ServiceMonitor of `component` (ping, pong or the broker), or `None` when not asked for,
/// when the Prometheus Operator CRD is not served (`served`), or for a component without one.
/// The broker's headless Service carries the same labels as the client Service but has no
/// `prometheus` port, so only the client Service's endpoints are scraped.
pub fn build_service_monitor(
    stack: &ValidatedStack,
    component: Component,
    served: bool,
) -> Option<DynamicObject> {
    if !(stack.monitoring.service_monitor && served) {
        return None;
    }
    let (name, port) = match component {
        Component::Ping => (&stack.names.ping, HTTP_PORT_NAME),
        Component::Pong => (&stack.names.pong, HTTP_PORT_NAME),
        Component::RabbitMq => (&stack.names.rabbitmq, "prometheus"),
        Component::Postgres | Component::Redis | Component::Gateway => return None,
    };
    Some(monitor(stack, component, name, port))
}
