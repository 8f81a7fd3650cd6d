//! ServiceMonitors (monitoring.coreos.com/v1) for ping, pong and RabbitMQ, created when
//! `spec.monitoring.serviceMonitor` is set and the Prometheus Operator CRD exists. The broker's
//! scrapes both its aggregated `/metrics` and the per-queue families of `/metrics/detailed`.
//!
//! k8s-openapi has no Prometheus Operator types: each monitor is built from the typed structs
//! below and carried as a [`DynamicObject`].

use std::collections::BTreeMap;

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
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Endpoint {
    port: &'static str,
    path: &'static str,
    interval: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<&'static str, Vec<&'static str>>,
}

/// RabbitMQ's per-queue endpoint: its default `/metrics` aggregates every queue into one series,
/// so the stack's alerts (backlog, consumers, dead-letter queue) read these per-queue families,
/// named `rabbitmq_detailed_queue_*`.
const RABBITMQ_DETAILED_PATH: &str = "/metrics/detailed";
/// The cheap per-queue families: depth (ready, unacked, total) and consumer count.
const RABBITMQ_DETAILED_FAMILIES: &[&str] = &["queue_coarse_metrics", "queue_consumer_count"];

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
            match_labels: stack.service_selector(component),
        },
        endpoints: endpoints(component, port),
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

fn endpoints(component: Component, port: &'static str) -> Vec<Endpoint> {
    let endpoint = |path, params| Endpoint {
        port,
        path,
        interval: "30s",
        params,
    };
    let mut out = vec![endpoint(METRICS_PATH, BTreeMap::new())];
    if component == Component::RabbitMq {
        out.push(endpoint(
            RABBITMQ_DETAILED_PATH,
            BTreeMap::from([("family", RABBITMQ_DETAILED_FAMILIES.to_vec())]),
        ));
    }
    out
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
        Component::Postgres | Component::Redis | Component::Gateway | Component::Alerts => {
            return None;
        }
    };
    Some(monitor(stack, component, name, port))
}
