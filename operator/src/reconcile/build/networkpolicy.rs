//! The NetworkPolicies that guard the broker and pong's provisioned store and cache.
//!
//! Broker: only this stack's ping and pong pods reach AMQP 5672; broker pods reach each other on
//! epmd 4369 and Erlang distribution 25672; the Prometheus port 15692 is open to scrapers
//! anywhere; the management port 15672 is open to pods of the stack's namespace only.
//! PostgreSQL: only this stack's pong pods reach 5432 (the exporter sidecar connects over
//! localhost); its metrics port 9187 is open to scrapers anywhere. Redis: only this stack's pong
//! pods reach 6379.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    AMQP_PORT, EPMD_PORT, ERLANG_DIST_PORT, POSTGRES_EXPORTER_PORT, POSTGRES_PORT,
    RABBITMQ_MANAGEMENT_PORT, RABBITMQ_METRICS_PORT, REDIS_PORT, object_meta,
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
    let rules = vec![
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
    ];
    policy(stack, &stack.names.rabbitmq, Component::RabbitMq, rules)
}

/// A policy on `component`'s pods with the given ingress rules.
fn policy(
    stack: &ValidatedStack,
    name: &str,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(stack, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&stack.name, component)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// The NetworkPolicy `<stack>-postgres`, when the store is a provisioned PostgreSQL.
pub fn build_postgres_network_policy(stack: &ValidatedStack) -> Option<NetworkPolicy> {
    let settings = stack.store.provisioned()?;
    let mut rules = vec![NetworkPolicyIngressRule {
        from: Some(vec![pods(stack, Component::Pong)]),
        ports: tcp(&[POSTGRES_PORT]),
    }];
    if settings.metrics {
        rules.push(NetworkPolicyIngressRule {
            from: None,
            ports: tcp(&[POSTGRES_EXPORTER_PORT]),
        });
    }
    Some(policy(
        stack,
        &stack.names.postgres,
        Component::Postgres,
        rules,
    ))
}

/// The NetworkPolicy `<stack>-redis`, when the cache is a provisioned Redis.
pub fn build_redis_network_policy(stack: &ValidatedStack) -> Option<NetworkPolicy> {
    stack.cache.as_ref()?.provisioned()?;
    let rules = vec![NetworkPolicyIngressRule {
        from: Some(vec![pods(stack, Component::Pong)]),
        ports: tcp(&[REDIS_PORT]),
    }];
    Some(policy(stack, &stack.names.redis, Component::Redis, rules))
}
