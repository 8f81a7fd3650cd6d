//! PodDisruptionBudgets, one per component whose replicas allow one (two or more): at most one
//! pod is voluntarily evicted at a time. With a single replica a budget would block node drains,
//! so none is created.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::object_meta;
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

/// A budget of `maxUnavailable: 1` for `component` when `replicas >= 2`.
pub fn build_pdb(
    stack: &ValidatedStack,
    component: Component,
    name: &str,
    replicas: i32,
) -> Option<PodDisruptionBudget> {
    (replicas >= 2).then(|| PodDisruptionBudget {
        metadata: object_meta(stack, name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(stack.service_selector(component)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// The broker's budget (`<stack>-rabbitmq`).
pub fn build_rabbitmq_pdb(stack: &ValidatedStack) -> Option<PodDisruptionBudget> {
    build_pdb(
        stack,
        Component::RabbitMq,
        &stack.names.rabbitmq,
        stack.rabbitmq.replicas,
    )
}

/// The ping budget (`<stack>-ping`).
pub fn build_ping_pdb(stack: &ValidatedStack) -> Option<PodDisruptionBudget> {
    build_pdb(
        stack,
        Component::Ping,
        &stack.names.ping,
        stack.ping.replicas,
    )
}

/// The pong budget (`<stack>-pong`); none while pong is limited to one replica.
pub fn build_pong_pdb(stack: &ValidatedStack) -> Option<PodDisruptionBudget> {
    build_pdb(
        stack,
        Component::Pong,
        &stack.names.pong,
        stack.pong.replicas,
    )
}
