//! Scale-in removes the least busy pong pod: before the autoscaler lowers pong's replicas it sets
//! `controller.kubernetes.io/pod-deletion-cost` on every running pong pod to the messages that
//! pod holds unacknowledged, so the ReplicaSet controller deletes the one with the fewest in
//! flight (among pods equally ready, it deletes the lowest cost first).
//!
//! The load comes from the broker's management API, `GET /api/channels`: each channel's
//! `messages_unacknowledged` and its connection's `peer_host`, which is the pod's IP (pong
//! connects straight to the broker Service, no proxy). pong's own metrics would need a scrape of
//! every pod; the broker already knows every consumer's load in one request. A pod the broker does
//! not know (not connected yet) costs 0: it holds nothing.
//!
//! [`parse_channels`] and [`deletion_costs`] are pure; [`annotate`] writes the annotation with a
//! field manager of its own ([`FIELD_MANAGER`]), so it never touches what others own. The chosen
//! pod still leaves cleanly: pong's SIGTERM path cancels its consumer (`basic.cancel`), stores and
//! acknowledges what it holds, then exits; this only makes that work as small as it can be.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use super::signal::SignalError;

/// The annotation the ReplicaSet controller reads (an int32 as a string; lower goes first).
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Field manager of the annotation.
pub const FIELD_MANAGER: &str = "pingpong-operator/pod-deletion-cost";

/// One AMQP channel's load, as the management API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelLoad {
    /// The client's address (for pong: its pod IP).
    pub peer_host: String,
    /// Messages delivered on the channel and not yet acknowledged.
    pub unacked: u64,
}

/// A pong pod and its IP (none while it is being scheduled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAddress {
    /// Pod name.
    pub name: String,
    /// `status.podIP`.
    pub ip: Option<String>,
}

/// An address as RabbitMQ may print it: IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the IPv4 one.
fn normalise(host: &str) -> &str {
    host.strip_prefix("::ffff:").unwrap_or(host)
}

/// Reads `GET /api/channels` (a JSON array of channel objects). Channels without a peer (none in
/// practice) are skipped; a missing count is zero.
pub fn parse_channels(body: &[u8]) -> Result<Vec<ChannelLoad>, SignalError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SignalError::Parse(e.to_string()))?;
    let channels = value
        .as_array()
        .ok_or_else(|| SignalError::Parse("channels: not a JSON array".to_owned()))?;
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        let Some(peer) = channel
            .pointer("/connection_details/peer_host")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let unacked = match channel.get("messages_unacknowledged") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                SignalError::Parse(format!("messages_unacknowledged is not a count: {v}"))
            })?,
        };
        out.push(ChannelLoad {
            peer_host: normalise(peer).to_owned(),
            unacked,
        });
    }
    Ok(out)
}

/// Each pod's deletion cost: the unacknowledged messages of the channels whose peer is its IP
/// (0 for a pod the broker does not know), capped at `i32::MAX`.
pub fn deletion_costs(pods: &[PodAddress], channels: &[ChannelLoad]) -> BTreeMap<String, i32> {
    pods.iter()
        .map(|pod| {
            let held: u64 = pod.ip.as_deref().map_or(0, |ip| {
                channels
                    .iter()
                    .filter(|c| c.peer_host == normalise(ip))
                    .map(|c| c.unacked)
                    .fold(0u64, u64::saturating_add)
            });
            (pod.name.clone(), i32::try_from(held).unwrap_or(i32::MAX))
        })
        .collect()
}

/// The pod the ReplicaSet controller will remove first among these (lowest cost; by name on a
/// tie, which is only for the log: the controller breaks ties its own way).
pub fn least_busy(costs: &BTreeMap<String, i32>) -> Option<(&str, i32)> {
    costs
        .iter()
        .min_by_key(|(name, cost)| (**cost, name.as_str()))
        .map(|(name, cost)| (name.as_str(), *cost))
}

/// The running pong pods of the Deployment selected by `selector` in `namespace` (one list).
pub async fn pong_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<PodAddress>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector).limit(100))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodAddress {
            name: p.name_any(),
            ip: p.status.and_then(|s| s.pod_ip),
        })
        .collect())
}

/// Writes each pod's cost (a server-side apply of the annotation alone, with [`FIELD_MANAGER`]).
/// Returns how many were written; stops at the first failure.
pub async fn annotate(
    client: &Client,
    namespace: &str,
    costs: &BTreeMap<String, i32>,
) -> Result<usize, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, cost) in costs {
        let body = serde_json::json!({
            "apiVersion": Pod::api_version(&()),
            "kind": Pod::kind(&()),
            "metadata": { "name": name, "annotations": { ANNOTATION: cost.to_string() } },
        });
        api.patch(name, &params, &Patch::Apply(&body)).await?;
    }
    Ok(costs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>) -> PodAddress {
        PodAddress {
            name: name.into(),
            ip: ip.map(Into::into),
        }
    }

    #[test]
    fn channels_are_read_with_their_peer_and_unacknowledged_count() {
        let body = br#"[
            {"name": "10.244.0.7:40000 -> 10.244.0.2:5672 (1)", "messages_unacknowledged": 512,
             "consumer_count": 1,
             "connection_details": {"name": "10.244.0.7:40000 -> 10.244.0.2:5672", "peer_host": "10.244.0.7", "peer_port": 40000}},
            {"messages_unacknowledged": null, "connection_details": {"peer_host": "::ffff:10.244.0.8"}},
            {"messages_unacknowledged": 3, "connection_details": {}}
        ]"#;
        assert_eq!(
            parse_channels(body).unwrap(),
            [
                ChannelLoad {
                    peer_host: "10.244.0.7".into(),
                    unacked: 512
                },
                ChannelLoad {
                    peer_host: "10.244.0.8".into(),
                    unacked: 0
                },
            ]
        );
        assert_eq!(parse_channels(b"{}").unwrap_err().kind(), "BadResponse");
        let negative =
            br#"[{"messages_unacknowledged": -2, "connection_details": {"peer_host": "a"}}]"#;
        assert_eq!(parse_channels(negative).unwrap_err().kind(), "BadResponse");
    }

    #[test]
    fn the_pod_holding_the_fewest_messages_costs_least() {
        let pods = [
            pod("pong-a", Some("10.0.0.1")),
            pod("pong-b", Some("10.0.0.2")),
            pod("pong-c", Some("10.0.0.3")),
            pod("pong-new", None),
        ];
        let channels = [
            ChannelLoad {
                peer_host: "10.0.0.1".into(),
                unacked: 300,
            },
            // Two channels of one pod add up (a consumer and, say, a publisher channel).
            ChannelLoad {
                peer_host: "10.0.0.2".into(),
                unacked: 40,
            },
            ChannelLoad {
                peer_host: "10.0.0.2".into(),
                unacked: 2,
            },
            ChannelLoad {
                peer_host: "10.0.0.3".into(),
                unacked: 512,
            },
            // Another client of the broker (ping): no pod of ours.
            ChannelLoad {
                peer_host: "10.0.0.9".into(),
                unacked: 7,
            },
        ];
        let costs = deletion_costs(&pods, &channels);
        assert_eq!(
            costs,
            BTreeMap::from([
                ("pong-a".to_owned(), 300),
                ("pong-b".to_owned(), 42),
                ("pong-c".to_owned(), 512),
                ("pong-new".to_owned(), 0),
            ])
        );
        assert_eq!(least_busy(&costs), Some(("pong-new", 0)));
        let running = deletion_costs(&pods[..3], &channels);
        assert_eq!(least_busy(&running), Some(("pong-b", 42)));
        assert_eq!(least_busy(&BTreeMap::new()), None);
    }

    #[test]
    fn costs_are_capped_at_int32() {
        let channels = [
            ChannelLoad {
                peer_host: "10.0.0.1".into(),
                unacked: u64::MAX,
            },
            ChannelLoad {
                peer_host: "10.0.0.1".into(),
                unacked: 1,
            },
        ];
        let costs = deletion_costs(&[pod("p", Some("10.0.0.1"))], &channels);
        assert_eq!(costs["p"], i32::MAX);
    }
}
