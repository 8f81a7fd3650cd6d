//! The NetworkPolicy that guards the broker pods.
//!
//! Only this stack's ping and pong pods reach AMQP 5672; broker pods reach each other on epmd
//! 4369 and Erlang distribution 25672; the Prometheus port 15692 is open to scrapers anywhere;
//! the management port 15672 is open to pods of the stack's namespace only.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    AMQP_PORT, EPMD_PORT, ERLANG_DIST_PORT, RABBITMQ_MANAGEMENT_PORT, RABBITMQ_METRICS_PORT,
    object_meta,
};
use crate::labels::{self, Component};
use crate::reconcile::validate::ValidatedStack;

fn pods(stack: &ValidatedStack, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels::selector_labels(&stack.name, component)),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(ports: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        ports
            .iter()
            .map(|port| NetworkPolicyPort {
                port: Some(IntOrString::Int(*port)),
                protocol: Some("TCP".to_owned()),
                end_port: None,
            })
            .collect(),
    )
}

/// The NetworkPolicy `<stack>-rabbitmq`.
pub fn build_network_policy(stack: &ValidatedStack) -> NetworkPolicy {
    let same_namespace = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: object_meta(stack, &stack.names.rabbitmq, Component::RabbitMq),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&stack.name, Component::RabbitMq)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![
                        pods(stack, Component::Ping),
                        pods(stack, Component::Pong),
                    ]),
                    ports: tcp(&[AMQP_PORT]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![pods(stack, Component::RabbitMq)]),
                    ports: tcp(&[EPMD_PORT, ERLANG_DIST_PORT]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: tcp(&[RABBITMQ_METRICS_PORT]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![same_namespace]),
                    ports: tcp(&[RABBITMQ_MANAGEMENT_PORT]),
                },
            ]),
            egress: None,
        }),
    }
}
