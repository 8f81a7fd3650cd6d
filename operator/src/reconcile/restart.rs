//! A clustered broker whose Erlang cookie changed restarts all its nodes together.
//!
//! Erlang nodes with different cookies cannot talk to each other. A regenerated cookie Secret
//! rolls the broker StatefulSet (its `pingpong.dev/secret-digest` changes), but a rolling update
//! restarts one node at a time: the first restarted node, with the new cookie, cannot reach the
//! others and waits for them at boot, is never ready, and the rollout stops there for good. So
//! when a broker of more than one node has pods whose [`labels::ERLANG_COOKIE_DIGEST`] differs
//! from its pod template's, every such pod is deleted at once; the StatefulSet controller
//! recreates them at the new revision (`podManagementPolicy: Parallel`), they boot together with
//! the same cookie and form the cluster again on their kept volumes. A single node, or pods
//! created before the annotation existed (an operator upgrade: the cookie did not change), are
//! left to the usual rolling update.
//!
//! [`stale_cookie_pods`] is pure; [`restart`] deletes exactly the pods it names, each with its
//! uid as a precondition, so a pod recreated under the same name in between is never touched.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};

use super::events::Notice;
use crate::error::Error;
use crate::labels;

/// Event reason of a restart of every node of a broker after a cookie change.
pub const COOKIE_CHANGED: &str = "ErlangCookieChanged";

/// A pod to delete: its name and uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Pod uid (the delete's precondition).
    pub uid: String,
}

fn cookie_digest(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<&str> {
    annotations?
        .get(labels::ERLANG_COOKIE_DIGEST)
        .map(String::as_str)
}

/// The pods of `broker` (a StatefulSet as desired) that run with another Erlang cookie than its
/// template, when it has more than one replica; empty otherwise. Pods being deleted and pods
/// without the annotation are never named.
pub fn stale_cookie_pods(broker: &StatefulSet, pods: &[Pod]) -> Vec<PodRef> {
    let Some(spec) = broker.spec.as_ref() else {
        return Vec::new();
    };
    if spec.replicas.unwrap_or(1) <= 1 {
        return Vec::new();
    }
    let Some(want) = cookie_digest(
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    ) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let have = cookie_digest(pod.metadata.annotations.as_ref())?;
            if have == want {
                return None;
            }
            Some(PodRef {
                name: pod.metadata.name.clone()?,
                uid: pod.metadata.uid.clone()?,
            })
        })
        .collect()
}

/// The Event that says why the broker's nodes restart together.
pub fn notice(pods: &[PodRef]) -> Notice {
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    Notice {
        warning: true,
        reason: COOKIE_CHANGED.to_owned(),
        action: "RestartBroker",
        note: format!(
            "the Erlang cookie Secret changed: restarting the broker pods {} together, since a \
             node with the new cookie cannot reach nodes that still run with the old one",
            names.join(", ")
        ),
    }
}

/// Deletes `pods` in `namespace`, each only while it still has its uid; a pod already gone or
/// replaced is skipped.
pub async fn restart(client: &Client, namespace: &str, pods: &[PodRef]) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods {
        let params = DeleteParams::default().preconditions(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        });
        match api.delete(&pod.name, &params).await {
            Ok(_) => {}
            // Gone (404) or replaced by a pod of the same name (409: the uid precondition).
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: "Pod",
                    name: pod.name.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn annotated(digest: Option<&str>) -> Option<BTreeMap<String, String>> {
        digest.map(|d| BTreeMap::from([(labels::ERLANG_COOKIE_DIGEST.to_owned(), d.to_owned())]))
    }

    fn broker(replicas: i32, digest: &str) -> StatefulSet {
        StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        annotations: annotated(Some(digest)),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                },
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn pod(name: &str, digest: Option<&str>, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                annotations: annotated(digest),
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_cluster_restarts_every_node_with_another_cookie_together() {
        let pods = [
            pod("b-0", Some("old"), false),
            pod("b-1", Some("old"), false),
            pod("b-2", Some("new"), false),
            pod("b-3", Some("old"), true),
            pod("b-4", None, false),
        ];
        let stale = stale_cookie_pods(&broker(3, "new"), &pods);
        let names: Vec<&str> = stale.iter().map(|p| p.name.as_str()).collect();
        // Not the one with the new cookie, not one already going, not one from before the
        // annotation existed (an operator upgrade changes no cookie).
        assert_eq!(names, ["b-0", "b-1"]);
        assert_eq!(stale[0].uid, "uid-b-0");
        let note = notice(&stale);
        assert!(note.warning && note.note.contains("b-0, b-1"), "{note:?}");
    }

    #[test]
    fn a_single_node_or_an_unchanged_cookie_restarts_nothing() {
        let pods = [pod("b-0", Some("old"), false)];
        assert!(stale_cookie_pods(&broker(1, "new"), &pods).is_empty());
        assert!(stale_cookie_pods(&broker(3, "old"), &pods).is_empty());
        assert!(stale_cookie_pods(&StatefulSet::default(), &pods).is_empty());
    }
}
