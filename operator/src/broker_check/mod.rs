//! The broker membership check: on a timer, per stack with a clustered broker
//! (`spec.rabbitmq.replicas` above 1), read each ready broker pod's view of its cluster from the
//! management API (`GET /api/nodes`, at the pod's IP, with the stack's own credentials), decide
//! whether the pods form one cluster ([`verdict`], pure) and write the conclusion into
//! `status.brokerCluster` ([`runner`]). Never on the reconcile path.
//!
//! Why: a blank broker node (a wiped volume, a scale-up while every other node is down) that
//! finds no running peer within its discovery window starts a cluster of its own. Its pod is
//! Ready (AMQP accepts connections), so replica counts and pod conditions say nothing; only the
//! nodes' own views show the split. The reconcile turns `Partitioned` into `Ready=False` with
//! reason [`BROKER_PARTITIONED`] ([`crate::reconcile::health::broker_problem`]).
//!
//! This module writes only `status.brokerCluster` (with [`FIELD_MANAGER`]) and Events.

pub mod runner;
pub mod upgrade;
pub mod verdict;

use serde_json::Value;

use crate::autoscale::signal::SignalError;
use verdict::NodeView;

/// Field manager of `status.brokerCluster`.
pub const FIELD_MANAGER: &str = "pingpong-operator/broker-check";

/// Condition reason (and Event reason) of a split broker.
pub use crate::reconcile::health::reason::BROKER_PARTITIONED;

/// Event reason when a reported split is over.
pub const BROKER_CLUSTERED: &str = "BrokerClustered";

/// The path read on each pod: only the three columns the verdict needs.
pub const NODES_PATH: &str = "/api/nodes?columns=name,running,partitions";

/// Reads a management API node list (`GET /api/nodes`) into [`NodeView`]s.
pub fn parse_nodes(body: &[u8]) -> Result<Vec<NodeView>, SignalError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SignalError::Parse(e.to_string()))?;
    let Some(items) = value.as_array() else {
        return Err(SignalError::Parse("not a JSON array".to_owned()));
    };
    items
        .iter()
        .map(|item| {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| SignalError::Parse("a node without a name".to_owned()))?;
            let partitions = item
                .get("partitions")
                .and_then(Value::as_array)
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Ok(NodeView {
                name: name.to_owned(),
                running: item
                    .get("running")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                partitions,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_running_and_partitions() {
        let body = br#"[
            {"name": "rabbit@a", "running": true, "partitions": ["rabbit@c"]},
            {"name": "rabbit@b", "running": true, "partitions": []},
            {"name": "rabbit@c", "running": false}
        ]"#;
        let nodes = parse_nodes(body).unwrap();
        assert_eq!(
            nodes,
            vec![
                NodeView {
                    name: "rabbit@a".into(),
                    running: true,
                    partitions: vec!["rabbit@c".into()]
                },
                NodeView {
                    name: "rabbit@b".into(),
                    running: true,
                    partitions: vec![]
                },
                NodeView {
                    name: "rabbit@c".into(),
                    running: false,
                    partitions: vec![]
                },
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_cluster() {
        assert_eq!(parse_nodes(b"<html>").unwrap_err().kind(), "BadResponse");
        assert_eq!(parse_nodes(b"{}").unwrap_err().kind(), "BadResponse");
        assert_eq!(
            parse_nodes(br#"[{"running": true}]"#).unwrap_err().kind(),
            "BadResponse"
        );
    }
}
