//! `status.brokerCluster`: what the operator's periodic check of a clustered broker
//! (`spec.rabbitmq.replicas` above 1) last concluded about its membership.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether the broker pods form one cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BrokerClusterState {
    /// Every ready broker pod sees every ready broker pod's node as a running member of its
    /// cluster.
    Clustered,
    /// In two consecutive checks a ready broker pod did not see another ready one as a running
    /// member of its cluster (a node that started a cluster of its own, a network partition):
    /// `Ready` is False with reason `BrokerPartitioned`.
    Partitioned,
    /// No ready pod's view could be read (management API unreachable); `Ready` is not changed by
    /// it, and a split seen before stays reported until a check shows the pods agree.
    #[default]
    Unknown,
}

/// One broker pod's view of its cluster, as its management API (`GET /api/nodes`) answered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerPodView {
    /// The pod.
    pub pod: String,
    /// The running nodes of the cluster this pod's node belongs to, as it sees them, sorted.
    #[serde(default)]
    pub running_nodes: Vec<String>,
    /// Why its view could not be read (`Timeout`, `Unreachable`, `Unauthorized`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last conclusion of the broker membership check. Written by the field manager
/// `pingpong-operator/broker-check`, only when it changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterStatus {
    /// `Clustered`, `Partitioned` or `Unknown`.
    pub state: BrokerClusterState,
    /// What the pods see, naming the pods that disagree.
    pub message: String,
    /// Each ready broker pod's view, by pod name.
    #[serde(default)]
    pub pods: Vec<BrokerPodView>,
    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}
