//! The NetworkPolicies of every pod a stack runs: the broker, ping, pong, and pong's provisioned
//! store and cache.
//!
//! Broker: only this stack's ping and pong pods reach AMQP 5672; broker pods reach each other on
//! epmd 4369 and Erlang distribution 25672; the Prometheus port 15692 is open to scrapers
//! anywhere; the management port 15672 is open to pods of the stack's namespace only, and with
//! `spec.pong.autoscaling` or a clustered broker to the operator's pods (which read the queue's
//! backlog and each broker node's view of its cluster there), or to
//! KEDA's operator pods (`app: keda-operator`) with `engine: keda`.
//! PostgreSQL: only this stack's pong pods reach 5432 (the exporter sidecar connects over
//! localhost); its metrics port 9187 is open to scrapers anywhere. Redis: only this stack's pong
//! pods reach 6379.
//!
//! ping and pong (`<stack>-ping`, `<stack>-pong`):
//! - Ingress: only the HTTP container port (8001, 8002), from anywhere. The ingress controller or
//!   Gateway runs in a namespace the operator cannot know (ingress-nginx, a Gateway
//!   implementation, a cloud load balancer that sends node traffic) and the Prometheus metrics
//!   are served on the same port, so the port is the only thing a portable rule can pin. Kubelet
//!   probes come from the pod's node, whose traffic NetworkPolicy always admits.
//! - Egress: this is where the policy protects something (a compromised pod cannot reach other
//!   workloads, the cloud metadata endpoint or the internet). Allowed: DNS to any destination on
//!   53 and 5353, UDP and TCP (CoreDNS in `kube-system`, NodeLocal DNSCache on a link-local
//!   address, OpenShift's `dns-default` whose pods listen on 5353 behind Service port 53, and
//!   most plugins judge the translated address); AMQP 5672 to this stack's broker pods; for pong,
//!   5432 to its provisioned PostgreSQL pods and 6379 to its provisioned Redis pods.
//! - An external PostgreSQL or Redis (`pong.store.postgres.external`, `pong.cache.external`) is
//!   named by a host and port inside the user's Secret, which the operator does not read (it
//!   reads user Secrets only by name, never their content into a policy), and NetworkPolicy has
//!   no host-name peers anyway. pong's policy then restricts ingress only and leaves egress open;
//!   ping's egress stays restricted.
//!
//! The policies need a network plugin that enforces them (Calico, Cilium, OVN-Kubernetes, …);
//! without one (kwok, the e2e control plane) they are stored and have no effect.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    AMQP_PORT, EPMD_PORT, ERLANG_DIST_PORT, PING_PORT, PONG_PORT, POSTGRES_EXPORTER_PORT,
    POSTGRES_PORT, RABBITMQ_MANAGEMENT_PORT, RABBITMQ_METRICS_PORT, REDIS_PORT, object_meta,
};
use crate::labels::{self, Component};
use crate::reconcile::validate::{CacheSettings, StoreSettings, ValidatedStack};

/// DNS ports: 53, and 5353 where the DNS pods listen on it behind Service port 53 (OpenShift).
const DNS_PORTS: [i32; 2] = [53, 5353];

fn pods(stack: &ValidatedStack, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(stack.service_selector(component)),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(port: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

fn tcp(ports: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(ports.iter().map(|p| port(*p, "TCP")).collect())
}

/// The `app` label of KEDA's operator pods.
pub const KEDA_OPERATOR_APP: &str = "keda-operator";

/// Who reaches the management port: pods of the stack's namespace, and with autoscaling or a
/// clustered broker the operator's pods (labelled by its chart, in whatever namespace it runs),
/// which read the queue and each node's cluster view, or KEDA's operator pods with
/// `engine: keda`.
fn management_clients(
    stack: &ValidatedStack,
    same_namespace: NetworkPolicyPeer,
) -> Vec<NetworkPolicyPeer> {
    let mut peers = vec![same_namespace];
    if stack.keda.is_some() {
        // KEDA's operator runs the RabbitMQ scaler (labelled `app: keda-operator` by both its
        // manifests and its chart, in whatever namespace it runs).
        peers.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some([("app".to_owned(), KEDA_OPERATOR_APP.to_owned())].into()),
                match_expressions: None,
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    // The operator's autoscaler reads the queue there (not with KEDA); the broker membership
    // check reads each node's view of its cluster (`GET /api/nodes`) from a clustered broker.
    if (stack.autoscaling && stack.keda.is_none()) || stack.rabbitmq.replicas > 1 {
        peers.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [
                        (labels::NAME.to_owned(), labels::MANAGED_BY.to_owned()),
                        (labels::COMPONENT.to_owned(), "operator".to_owned()),
                    ]
                    .into(),
                ),
                match_expressions: None,
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    peers
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
            from: Some(management_clients(stack, same_namespace)),
            ports: tcp(&[RABBITMQ_MANAGEMENT_PORT]),
        },
    ];
    policy(
        stack,
        &stack.names.rabbitmq,
        Component::RabbitMq,
        rules,
        None,
    )
}

/// A policy on `component`'s pods with the given ingress rules and, when `egress` is set,
/// egress restricted to its rules.
fn policy(
    stack: &ValidatedStack,
    name: &str,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut types = vec!["Ingress".to_owned()];
    if egress.is_some() {
        types.push("Egress".to_owned());
    }
    NetworkPolicy {
        metadata: object_meta(stack, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(stack.service_selector(component)),
                match_expressions: None,
            }),
            policy_types: Some(types),
            ingress: Some(ingress),
            egress,
        }),
    }
}

/// Egress to DNS anywhere and to this stack's broker pods on AMQP.
fn app_egress(stack: &ValidatedStack) -> Vec<NetworkPolicyEgressRule> {
    let dns = DNS_PORTS
        .iter()
        .flat_map(|p| [port(*p, "UDP"), port(*p, "TCP")])
        .collect();
    vec![
        NetworkPolicyEgressRule {
            to: None,
            ports: Some(dns),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![pods(stack, Component::RabbitMq)]),
            ports: tcp(&[AMQP_PORT]),
        },
    ]
}

/// Ingress to the HTTP port (API, health and metrics) from anywhere.
fn http_ingress(http_port: i32) -> Vec<NetworkPolicyIngressRule> {
    vec![NetworkPolicyIngressRule {
        from: None,
        ports: tcp(&[http_port]),
    }]
}

/// The NetworkPolicy `<stack>-ping`: HTTP in; DNS and the broker out.
pub fn build_ping_network_policy(stack: &ValidatedStack) -> NetworkPolicy {
    policy(
        stack,
        &stack.names.ping,
        Component::Ping,
        http_ingress(PING_PORT),
        Some(app_egress(stack)),
    )
}

/// The NetworkPolicy `<stack>-pong`: HTTP in; DNS, the broker and the provisioned store and
/// cache out. Egress is left open when the store or the cache is external (see the module docs).
pub fn build_pong_network_policy(stack: &ValidatedStack) -> NetworkPolicy {
    let mut egress = Some(app_egress(stack));
    match &stack.store {
        StoreSettings::Memory => {}
        StoreSettings::ProvisionedPostgres(_) => {
            push_egress(&mut egress, pods(stack, Component::Postgres), POSTGRES_PORT)
        }
        StoreSettings::ExternalPostgres { .. } => egress = None,
    }
    match &stack.cache {
        None => {}
        Some(CacheSettings::Provisioned(_)) => {
            push_egress(&mut egress, pods(stack, Component::Redis), REDIS_PORT);
        }
        Some(CacheSettings::External { .. }) => egress = None,
    }
    policy(
        stack,
        &stack.names.pong,
        Component::Pong,
        http_ingress(PONG_PORT),
        egress,
    )
}

fn push_egress(egress: &mut Option<Vec<NetworkPolicyEgressRule>>, to: NetworkPolicyPeer, p: i32) {
    if let Some(rules) = egress {
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![to]),
            ports: tcp(&[p]),
        });
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
        None,
    ))
}

/// The NetworkPolicy `<stack>-redis`, when the cache is a provisioned Redis.
pub fn build_redis_network_policy(stack: &ValidatedStack) -> Option<NetworkPolicy> {
    stack.cache.as_ref()?.provisioned()?;
    let rules = vec![NetworkPolicyIngressRule {
        from: Some(vec![pods(stack, Component::Pong)]),
        ports: tcp(&[REDIS_PORT]),
    }];
    Some(policy(
        stack,
        &stack.names.redis,
        Component::Redis,
        rules,
        None,
    ))
}
