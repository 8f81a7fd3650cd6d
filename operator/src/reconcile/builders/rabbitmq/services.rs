//! The broker's headless Service (stable pod DNS names for clustering) and client Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::common::{
    AMQP_PORT, EPMD_PORT, ERLANG_DIST_PORT, RABBITMQ_MANAGEMENT_PORT, RABBITMQ_METRICS_PORT,
    object_meta,
};
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

/// Container port names of the broker.
pub(super) mod port_names {
    /// AMQP 0-9-1.
    pub const AMQP: &str = "amqp";
    /// Prometheus plugin.
    pub const PROMETHEUS: &str = "prometheus";
    /// Management UI/API.
    pub const MANAGEMENT: &str = "management";
    /// Erlang port mapper.
    pub const EPMD: &str = "epmd";
    /// Erlang distribution.
    pub const CLUSTER_RPC: &str = "cluster-rpc";
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service `<stack>-rabbitmq-nodes`: publishes not-ready addresses so nodes find
/// each other while booting; epmd 4369, Erlang distribution 25672 and AMQP 5672.
pub fn build_rabbitmq_headless_service(stack: &ValidatedStack) -> Service {
    Service {
        metadata: object_meta(stack, &stack.names.rabbitmq_headless, Component::RabbitMq),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            type_: Some("ClusterIP".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(stack.service_selector(Component::RabbitMq)),
            ports: Some(vec![
                port(port_names::EPMD, EPMD_PORT),
                port(port_names::CLUSTER_RPC, ERLANG_DIST_PORT),
                port(port_names::AMQP, AMQP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The client Service `<stack>-rabbitmq` (ClusterIP only): AMQP 5672, metrics 15692 and
/// management 15672.
pub fn build_rabbitmq_service(stack: &ValidatedStack) -> Service {
    Service {
        metadata: object_meta(stack, &stack.names.rabbitmq, Component::RabbitMq),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(stack.service_selector(Component::RabbitMq)),
            ports: Some(vec![
                port(port_names::AMQP, AMQP_PORT),
                port(port_names::PROMETHEUS, RABBITMQ_METRICS_PORT),
                port(port_names::MANAGEMENT, RABBITMQ_MANAGEMENT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
