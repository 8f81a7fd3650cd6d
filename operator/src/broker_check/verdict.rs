//! The verdict on a clustered broker's membership (pure): the broker pods, each ready pod's
//! view of its cluster and what the last checks saw → `status.brokerCluster`.
//!
//! The rule: every *ready* broker pod must see every ready broker pod's node as a running member
//! of its cluster, and no running node may report a partition. Pods that are not ready are left
//! to the pod checks of the reconcile (`PodNotReady`, `CrashLoopBackOff`, ...): a node that is
//! restarting is not a split. A pod whose view cannot be read is *unknown*, never a split: when
//! the views that were read agree and include that pod's node as running, the cluster is whole;
//! when no view could be read, the state is `Unknown`, which does not change `Ready`, and a
//! split seen before stays reported until a check shows the pods agree again. A disagreement
//! becomes `Partitioned` only when seen in [`CONFIRM_CHECKS`] consecutive checks (a node that has
//! just become ready may not be listed as running by its peers for a moment); agreement clears
//! it at once.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{BrokerClusterState, BrokerClusterStatus, BrokerPodView};

/// Consecutive checks that must see the same kind of disagreement before it is reported.
pub const CONFIRM_CHECKS: u32 = 2;

/// One broker pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerPod {
    /// The pod's name.
    pub name: String,
    /// The Erlang node name the pod gives itself (`rabbit@<pod>.<headless>.<namespace>`).
    pub node: String,
    /// Ready (and not being deleted), with an address to read its view at.
    pub ready: bool,
}

/// One node of a pod's view (an entry of `GET /api/nodes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Erlang node name.
    pub name: String,
    /// Whether the node runs, as the answering node sees it.
    pub running: bool,
    /// Nodes this one is partitioned from (Mnesia's view), when it runs.
    pub partitions: Vec<String>,
}

/// A pod's view: its cluster's nodes, or the fixed kind of the error that kept it unread.
pub type Read = Result<Vec<NodeView>, &'static str>;

/// What one check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Every view read agrees (maybe with some pods unread, whose nodes the others see running).
    Agree(String),
    /// Some ready pod does not see another as a running member of its cluster, or a partition.
    Disagree(String),
    /// No ready pod's view could be read.
    Unknown(String),
}

/// What the check remembers of a stack between checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Consecutive checks that saw a disagreement (an unknown check neither adds nor resets).
    pub disagreements: u32,
}

fn pod_of<'a>(pods: &'a [BrokerPod], node: &'a str) -> &'a str {
    pods.iter()
        .find(|p| p.node == node)
        .map_or(node, |p| p.name.as_str())
}

/// Each ready pod's view for the status, and what the check saw.
pub fn observe(
    pods: &[BrokerPod],
    reads: &BTreeMap<String, Read>,
) -> (Observation, Vec<BrokerPodView>) {
    let mut ready: Vec<&BrokerPod> = pods.iter().filter(|p| p.ready).collect();
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    let expected: BTreeSet<&str> = ready.iter().map(|p| p.node.as_str()).collect();
    let mut views = Vec::new();
    let mut disagreements = Vec::new();
    let mut unread = Vec::new();
    for pod in &ready {
        match reads.get(&pod.name) {
            None => {
                unread.push(format!("{} (not read)", pod.name));
                views.push(BrokerPodView {
                    pod: pod.name.clone(),
                    running_nodes: Vec::new(),
                    error: Some("NotRead".to_owned()),
                });
            }
            Some(Err(kind)) => {
                unread.push(format!("{} ({kind})", pod.name));
                views.push(BrokerPodView {
                    pod: pod.name.clone(),
                    running_nodes: Vec::new(),
                    error: Some((*kind).to_owned()),
                });
            }
            Some(Ok(nodes)) => {
                let running: BTreeSet<&str> = nodes
                    .iter()
                    .filter(|n| n.running)
                    .map(|n| n.name.as_str())
                    .collect();
                let missing: Vec<&str> = expected
                    .difference(&running)
                    .map(|node| pod_of(pods, node))
                    .collect();
                if !missing.is_empty() {
                    let sees: Vec<&str> = running.iter().map(|n| pod_of(pods, n)).collect();
                    disagreements.push(format!(
                        "pod {} sees a cluster of {} running node(s) ({}) without ready pod(s) {}",
                        pod.name,
                        running.len(),
                        sees.join(", "),
                        missing.join(", ")
                    ));
                }
                for node in nodes
                    .iter()
                    .filter(|n| n.running && !n.partitions.is_empty())
                {
                    let from: Vec<&str> = node.partitions.iter().map(|n| pod_of(pods, n)).collect();
                    disagreements.push(format!(
                        "pod {} reports node {} partitioned from {}",
                        pod.name,
                        pod_of(pods, &node.name),
                        from.join(", ")
                    ));
                }
                views.push(BrokerPodView {
                    pod: pod.name.clone(),
                    running_nodes: running.iter().map(|n| (*n).to_owned()).collect(),
                    error: None,
                });
            }
        }
    }
    let unread_note = if unread.is_empty() {
        String::new()
    } else {
        format!("; management API not read on {}", unread.join(", "))
    };
    let observation = if !disagreements.is_empty() {
        Observation::Disagree(format!("{}{unread_note}", disagreements.join("; ")))
    } else if unread.len() < ready.len() {
        Observation::Agree(format!(
            "{} ready broker pod(s) see one cluster with every ready node running{unread_note}",
            ready.len()
        ))
    } else if ready.is_empty() {
        Observation::Unknown("no broker pod is ready; nothing to compare".to_owned())
    } else {
        Observation::Unknown(format!(
            "the cluster view of no ready broker pod could be read{unread_note}"
        ))
    };
    (observation, views)
}

/// The next `status.brokerCluster` (`None`: keep the previous one, nothing to write) and memory.
/// `lastTransitionTime` is left to the caller (it moves only when `state` changes).
pub fn next(
    previous: Option<&BrokerClusterStatus>,
    observation: Observation,
    views: Vec<BrokerPodView>,
    memory: Memory,
) -> (Option<BrokerClusterStatus>, Memory) {
    let was = previous.map(|p| p.state);
    let status = |state, message| BrokerClusterStatus {
        state,
        message,
        pods: views.clone(),
        last_transition_time: None,
    };
    match observation {
        Observation::Agree(message) => (
            Some(status(BrokerClusterState::Clustered, message)),
            Memory { disagreements: 0 },
        ),
        Observation::Disagree(message) => {
            let disagreements = memory.disagreements.saturating_add(1);
            let memory = Memory { disagreements };
            if disagreements >= CONFIRM_CHECKS {
                let message = format!("broker cluster split: {message}");
                (
                    Some(status(BrokerClusterState::Partitioned, message)),
                    memory,
                )
            } else {
                // Not confirmed yet: keep what was reported.
                (None, memory)
            }
        }
        Observation::Unknown(message) => {
            if was == Some(BrokerClusterState::Partitioned) {
                // Unreadable is not healed: the split stays reported until the pods agree.
                (None, memory)
            } else {
                (Some(status(BrokerClusterState::Unknown, message)), memory)
            }
        }
    }
}

/// Whether a write is worth it: the state, the message or a view changed.
pub fn changed(previous: Option<&BrokerClusterStatus>, next: &BrokerClusterStatus) -> bool {
    previous
        .is_none_or(|p| p.state != next.state || p.message != next.message || p.pods != next.pods)
}

#[cfg(test)]
mod tests;
