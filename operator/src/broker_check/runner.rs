//! The broker membership check's loop: one round every [`INTERVAL`] over the stacks the
//! controller's cache holds, never inside a reconcile.
//!
//! Cost per round, bounded: stacks with one broker node, paused or being deleted, or with no
//! ready broker replica (from their own status) cost nothing. Each other stack costs one pod
//! list (its broker pods, by label), one `GET /api/nodes` per ready broker pod (three columns,
//! each with a deadline), a Secret read only on its first round or after the broker refused the
//! credentials, and a status write and an Event only when the conclusion changes. At most
//! [`CONCURRENCY`] stacks are checked at once.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::verdict::{self, BrokerPod, Memory, Read};
use super::{BROKER_CLUSTERED, BROKER_PARTITIONED, FIELD_MANAGER, NODES_PATH, parse_nodes};
use crate::autoscale::signal::{
    Credentials, MANAGEMENT_PORT, ManagementClient, SignalError, read_credentials,
};
use crate::crd::{BrokerClusterState, BrokerClusterStatus, PingPongStack};
use crate::labels::{self, Component};
use crate::reconcile::events::{self, Notice};
use crate::reconcile::migrate::{WorkloadKind, pod_selector};
use crate::reconcile::names::ChildNames;
use crate::reconcile::report::apply_status_fields;

/// Time between rounds.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// Stacks checked at once in a round.
pub const CONCURRENCY: usize = 16;
/// Event action of the check's Events.
const ACTION: &str = "CheckBrokerCluster";

/// What the check remembers of one stack between rounds.
#[derive(Clone, Debug, Default)]
struct StackState {
    memory: Memory,
    /// The Secret name and what it held.
    credentials: Option<(String, Credentials)>,
}

fn key(stack: &PingPongStack) -> String {
    format!(
        "{}/{}",
        stack.namespace().unwrap_or_default(),
        stack.name_any()
    )
}

/// Whether the check looks at `stack`: a clustered broker, not paused, not being deleted.
pub fn checked(stack: &PingPongStack) -> bool {
    stack.spec.rabbitmq.replicas > 1
        && !stack.spec.paused
        && stack.metadata.deletion_timestamp.is_none()
}

/// Whether `stack` has a broker replica ready, as its own status last said (nothing to read
/// otherwise).
fn any_broker_ready(stack: &PingPongStack) -> bool {
    stack
        .status
        .as_ref()
        .and_then(|s| s.rabbitmq)
        .is_some_and(|r| r.ready_replicas > 0)
}

/// Whether `stack` is no longer checked but still shows the check's last conclusion.
fn stale(stack: &PingPongStack) -> bool {
    !checked(stack)
        && stack.metadata.deletion_timestamp.is_none()
        && stack
            .status
            .as_ref()
            .is_some_and(|s| s.broker_cluster.is_some())
}

/// The broker pods of a pod list: name, Erlang node name, and whether its view can be read.
pub fn broker_pods(
    pods: &[Pod],
    headless: &str,
    namespace: &str,
) -> Vec<(BrokerPod, Option<IpAddr>)> {
    pods.iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let status = pod.status.as_ref();
            let ip = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            let ready = pod.metadata.deletion_timestamp.is_none()
                && ip.is_some()
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let node = format!("rabbit@{name}.{headless}.{namespace}");
            Some((BrokerPod { name, node, ready }, ip))
        })
        .collect()
}

/// The broker pods of the stack `stack` in `namespace`, as its StatefulSet selects them (an
/// earlier release's selector until the stack migrates; the operator's without a StatefulSet).
pub async fn list_broker_pods(
    client: &Client,
    namespace: &str,
    stack: &str,
    names: &ChildNames,
) -> Result<Vec<Pod>, kube::Error> {
    let workload = WorkloadKind::StatefulSet;
    let selector = pod_selector(client, namespace, workload, &names.rabbitmq)
        .await?
        .unwrap_or_else(|| {
            labels::to_selector_string(&labels::selector_labels(stack, Component::RabbitMq))
        });
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The URL of a pod's node list.
fn nodes_url(ip: IpAddr) -> String {
    format!("{}{NODES_PATH}", management_url(ip))
}

/// The management API of a pod at `ip` (`http://10.0.0.5:15672`, `http://[fd00::1]:15672`).
pub fn management_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{MANAGEMENT_PORT}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{MANAGEMENT_PORT}"),
    }
}

/// The broker membership check task.
pub struct BrokerCheck {
    client: Client,
    recorder: Recorder,
    management: ManagementClient,
    states: HashMap<String, StackState>,
}

impl BrokerCheck {
    /// A check that writes with `client`.
    pub fn new(client: Client, recorder: Recorder) -> Self {
        Self {
            client,
            recorder,
            management: ManagementClient::default(),
            states: HashMap::new(),
        }
    }

    /// Runs rounds over `stacks` until `stop`.
    pub async fn run(
        mut self,
        stacks: Store<DeserializeGuard<PingPongStack>>,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let all = stacks.state();
            let decoded = all.iter().filter_map(|guard| guard.0.as_ref().ok());
            let current: Vec<Arc<PingPongStack>> = decoded
                .clone()
                .filter(|stack| checked(stack) && any_broker_ready(stack))
                .map(|stack| Arc::new(stack.clone()))
                .collect();
            for stack in decoded.filter(|stack| stale(stack)) {
                self.clear(stack).await;
            }
            self.round(current).await;
        }
    }

    /// One round over `stacks` (every one checked).
    pub async fn round(&mut self, stacks: Vec<Arc<PingPongStack>>) {
        let mut states = std::mem::take(&mut self.states);
        let jobs: Vec<_> = stacks
            .into_iter()
            .map(|stack| {
                let state = states.remove(&key(&stack)).unwrap_or_default();
                (stack, state)
            })
            .collect();
        let this = &*self;
        let outcomes: Vec<(String, StackState)> = futures::stream::iter(jobs)
            .map(|(stack, state)| this.step(stack, state))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        // Stacks gone or no longer checked are forgotten with `states`.
        self.states = outcomes.into_iter().collect();
    }

    async fn step(&self, stack: Arc<PingPongStack>, mut state: StackState) -> (String, StackState) {
        let key = key(&stack);
        let namespace = stack.namespace().unwrap_or_default();
        let name = stack.name_any();
        let names = ChildNames::new(&name, stack.spec.rabbitmq.credentials_secret.as_deref());
        let listed = match list_broker_pods(&self.client, &namespace, &name, &names).await {
            Ok(pods) => pods,
            Err(error) => {
                tracing::warn!(stack = %name, namespace = %namespace, error = %crate::error::chain(&error), "cannot list the broker pods; checking the cluster again next round");
                return (key, state);
            }
        };
        let pods = broker_pods(&listed, &names.rabbitmq_headless, &namespace);
        let reads = self.read_views(&namespace, &names, &pods, &mut state).await;
        let brokers: Vec<BrokerPod> = pods.into_iter().map(|(pod, _)| pod).collect();
        let (observation, views) = verdict::observe(&brokers, &reads);
        let previous = stack
            .status
            .as_ref()
            .and_then(|s| s.broker_cluster.as_ref());
        let (next, memory) = verdict::next(previous, observation, views, state.memory);
        state.memory = memory;
        let Some(mut next) = next.filter(|n| verdict::changed(previous, n)) else {
            return (key, state);
        };
        let was = previous.map(|p| p.state);
        next.last_transition_time = match previous {
            Some(p) if p.state == next.state => p.last_transition_time.clone(),
            _ => Some(Time(Timestamp::now())),
        };
        if let Err(error) = self.write(&stack, &next).await {
            tracing::warn!(stack = %name, namespace = %namespace, error = %crate::error::chain(&error), "cannot write status.brokerCluster; checking again next round");
            return (key, state);
        }
        if was != Some(next.state) {
            tracing::info!(stack = %name, namespace = %namespace, state = ?next.state, message = %next.message, "broker cluster check");
        }
        let notice = match (was, next.state) {
            (Some(BrokerClusterState::Partitioned), BrokerClusterState::Partitioned) => None,
            (_, BrokerClusterState::Partitioned) => Some(Notice {
                warning: true,
                reason: BROKER_PARTITIONED.to_owned(),
                action: ACTION,
                note: next.message.clone(),
            }),
            (Some(BrokerClusterState::Partitioned), BrokerClusterState::Clustered) => {
                Some(Notice {
                    warning: false,
                    reason: BROKER_CLUSTERED.to_owned(),
                    action: ACTION,
                    note: next.message.clone(),
                })
            }
            _ => None,
        };
        if let Some(notice) = notice {
            events::publish(&self.recorder, &stack.object_ref(&()), vec![notice]).await;
        }
        (key, state)
    }

    /// Each ready pod's view, read at once (one request per pod, each with a deadline).
    async fn read_views(
        &self,
        namespace: &str,
        names: &ChildNames,
        pods: &[(BrokerPod, Option<IpAddr>)],
        state: &mut StackState,
    ) -> BTreeMap<String, Read> {
        let cached = state
            .credentials
            .as_ref()
            .filter(|(name, _)| *name == names.credentials_secret)
            .map(|(_, c)| c.clone());
        let credentials = match cached {
            Some(c) => Ok(c),
            None => read_credentials(&self.client, namespace, &names.credentials_secret).await,
        };
        let credentials = match credentials {
            Ok(c) => c,
            Err(error) => {
                let kind = error.kind();
                return pods
                    .iter()
                    .filter(|(p, _)| p.ready)
                    .map(|(p, _)| (p.name.clone(), Err(kind)))
                    .collect();
            }
        };
        state.credentials = Some((names.credentials_secret.clone(), credentials.clone()));
        let requests = pods.iter().filter(|(p, _)| p.ready).filter_map(|(p, ip)| {
            let ip = (*ip)?;
            let credentials = &credentials;
            Some(async move {
                let read = match self.management.get_ok(nodes_url(ip), credentials).await {
                    Ok(body) => parse_nodes(&body),
                    Err(error) => Err(error),
                };
                (p.name.clone(), read)
            })
        });
        let answers = futures::future::join_all(requests).await;
        let mut reads = BTreeMap::new();
        for (pod, read) in answers {
            if let Err(SignalError::Unauthorized(_)) = &read {
                // Rotated: read the Secret again next round.
                state.credentials = None;
            }
            reads.insert(pod, read.map_err(|e| e.kind()));
        }
        reads
    }

    async fn write(
        &self,
        stack: &PingPongStack,
        status: &BrokerClusterStatus,
    ) -> Result<(), kube::Error> {
        self.apply(stack, serde_json::json!({ "brokerCluster": status }))
            .await
    }

    /// Removes `status.brokerCluster` (an apply of this field manager without it) from a stack
    /// that is no longer checked (scaled to one node, paused).
    async fn clear(&self, stack: &PingPongStack) {
        if let Err(error) = self.apply(stack, serde_json::json!({})).await {
            tracing::warn!(
                stack = %stack.name_any(),
                namespace = stack.namespace().as_deref().unwrap_or(""),
                error = %crate::error::chain(&error),
                "cannot clear status.brokerCluster; trying again next round"
            );
        }
    }

    async fn apply(
        &self,
        stack: &PingPongStack,
        fields: serde_json::Value,
    ) -> Result<(), kube::Error> {
        apply_status_fields(&self.client, stack, FIELD_MANAGER, fields).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn ready_pods_with_an_address_are_read() {
        let pods = [
            pod("ha-rabbitmq-0", Some("10.88.0.5"), true),
            pod("ha-rabbitmq-1", None, true),
            pod("ha-rabbitmq-2", Some("10.88.0.7"), false),
        ];
        let found = broker_pods(&pods, "ha-rabbitmq-nodes", "team-a");
        let ready: Vec<bool> = found.iter().map(|(p, _)| p.ready).collect();
        assert_eq!(ready, vec![true, false, false]);
        assert_eq!(
            found[0].0.node,
            "rabbit@ha-rabbitmq-0.ha-rabbitmq-nodes.team-a"
        );
        assert_eq!(
            nodes_url(found[0].1.unwrap()),
            "http://10.88.0.5:15672/api/nodes?columns=name,running,partitions"
        );
        assert_eq!(
            nodes_url("fd00::1".parse().unwrap()),
            "http://[fd00::1]:15672/api/nodes?columns=name,running,partitions"
        );
    }

    #[test]
    fn only_clustered_brokers_are_checked() {
        let mut stack = PingPongStack::new("demo", Default::default());
        assert!(!checked(&stack), "one node: nothing to compare");
        stack.spec.rabbitmq.replicas = 3;
        assert!(checked(&stack));
        assert!(!any_broker_ready(&stack), "no status yet: nothing to read");
        stack.spec.paused = true;
        assert!(!checked(&stack));
        stack.status = Some(crate::crd::PingPongStackStatus {
            broker_cluster: Some(BrokerClusterStatus::default()),
            ..Default::default()
        });
        assert!(stale(&stack), "a paused stack's conclusion is cleared");
    }
}
