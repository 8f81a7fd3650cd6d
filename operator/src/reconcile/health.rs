//! Why a stack is not ready, in the words of its pods and its Gateway (pure).
//!
//! Replica counts say *that* a workload is not ready; a user needs to know *why*: a pod that
//! cannot pull its image, one that crash-loops, a container that cannot be created, a pod no
//! node accepts, a broker pod that never becomes ready (it never joined the cluster), a
//! Deployment past its progress deadline, an HTTPRoute its Gateway refused, a broker split
//! into clusters that each look healthy ([`broker_problem`], from the periodic check's verdict). [`problems`] turns
//! the workloads, the pods of those that are not ready and the applied HTTPRoute into
//! [`Problem`]s, each naming the object and quoting its own reason and message. Report puts
//! them into `Ready=False` (and `Degraded=True` when a user must act). This module does no I/O:
//! the pods are listed by [`super::observe::pods_of`] and the clock is passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde::Deserialize;

use super::rollout::Workloads;
use super::validate::GatewaySettings;
use crate::crd::{BrokerClusterState, PingPongStack};
use crate::labels::Component;

/// Condition reasons of the problems (a fixed PascalCase set).
pub mod reason {
    /// A container's image cannot be pulled (`ErrImagePull`, `ImagePullBackOff`,
    /// `InvalidImageName`, ...).
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    /// A container keeps crashing (`CrashLoopBackOff`).
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// A container cannot be created or started (`CreateContainerConfigError`, ...).
    pub const CONTAINER_FAILED: &str = "ContainerFailed";
    /// No node accepts the pod.
    pub const POD_UNSCHEDULABLE: &str = "PodUnschedulable";
    /// A running pod has not become ready within [`super::NOT_READY_GRACE`] (a broker node that
    /// never joined the cluster, a service that cannot reach the broker).
    pub const POD_NOT_READY: &str = "PodNotReady";
    /// A Deployment's rollout exceeded its `progressDeadlineSeconds`.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = super::super::rollout::PROGRESS_DEADLINE_EXCEEDED;
    /// The Gateway refused the HTTPRoute (`Accepted=False`) or could not resolve its backends
    /// (`ResolvedRefs=False`).
    pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
    /// No Gateway controller has reported on the HTTPRoute's current generation yet.
    pub const ROUTE_PENDING: &str = "RoutePending";
    /// The broker pods do not form one cluster (`status.brokerCluster.state: Partitioned`): a
    /// ready pod does not see another ready one as a running member of its cluster.
    pub const BROKER_PARTITIONED: &str = "BrokerPartitioned";
}

/// How long a running pod may stay unready before it is reported ([`reason::POD_NOT_READY`]):
/// longer than a broker node's boot and peer discovery, shorter than a user's patience.
pub const NOT_READY_GRACE: Duration = Duration::from_secs(300);

/// Why the stack is not ready: one object and its own reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A constant of [`reason`].
    pub reason: &'static str,
    /// Names the object and quotes its reason and message.
    pub message: String,
    /// A user must act (a pending route is only waiting, not degraded).
    pub needs_action: bool,
}

/// The condition reason of a container's waiting reason, when it is a failure.
fn waiting_category(waiting_reason: &str) -> Option<&'static str> {
    match waiting_reason {
        "ErrImagePull"
        | "ImagePullBackOff"
        | "InvalidImageName"
        | "ErrImageNeverPull"
        | "RegistryUnavailable"
        | "SignatureValidationFailed" => Some(reason::IMAGE_PULL_FAILED),
        "CrashLoopBackOff" => Some(reason::CRASH_LOOP_BACK_OFF),
        "CreateContainerConfigError"
        | "CreateContainerError"
        | "RunContainerError"
        | "PreStartHookError"
        | "PostStartHookError"
        | "PreCreateHookError" => Some(reason::CONTAINER_FAILED),
        _ => None,
    }
}

/// A container's failure: its waiting reason, message and last exit.
fn container_problem(pod: &str, status: &ContainerStatus) -> Option<Problem> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let why = waiting.reason.as_deref()?;
    let category = waiting_category(why)?;
    let mut message = format!("pod {pod}: container {} is {why}", status.name);
    if let Some(detail) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(&format!(": {detail}"));
    }
    if let Some(last) = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
    {
        message.push_str(&format!(
            " (last exit code {}{}, {} restarts)",
            last.exit_code,
            last.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            status.restart_count
        ));
    }
    Some(Problem {
        reason: category,
        message,
        needs_action: true,
    })
}

/// What is wrong with one pod, if anything: a failing container (init containers first), no
/// node to run on, or running but unready for longer than `grace` at `now`.
pub fn pod_problem(pod: &Pod, now: Timestamp, grace: Duration) -> Option<Problem> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    if let Some(problem) = containers.filter_map(|c| container_problem(name, c)).next() {
        return Some(problem);
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    if let Some(scheduled) = condition("PodScheduled")
        && scheduled.status == "False"
        && scheduled.reason.as_deref() == Some("Unschedulable")
    {
        return Some(Problem {
            reason: reason::POD_UNSCHEDULABLE,
            message: format!(
                "pod {name} cannot be scheduled: {}",
                scheduled.message.as_deref().unwrap_or("no node fits")
            ),
            needs_action: true,
        });
    }
    let ready = condition("Ready")?;
    let running = status.phase.as_deref() == Some("Running");
    let since = ready
        .last_transition_time
        .as_ref()
        .map(|t| now.duration_since(t.0).as_secs());
    let overdue = since.is_some_and(|s| s >= grace.as_secs() as i64);
    if ready.status == "True" || !running || !overdue {
        return None;
    }
    let unready: Vec<&str> = status
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    Some(Problem {
        reason: reason::POD_NOT_READY,
        message: format!(
            "pod {name} has been running for {}s without becoming ready{}{}",
            since.unwrap_or_default(),
            ready
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            if unready.is_empty() {
                String::new()
            } else {
                format!(" (containers not ready: {})", unready.join(", "))
            }
        ),
        needs_action: true,
    })
}

/// `HTTPRoute.status`, the part read here.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RouteStatus {
    #[serde(default)]
    parents: Vec<RouteParentStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteParentStatus {
    parent_ref: StatusParentRef,
    #[serde(default)]
    conditions: Vec<RouteCondition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusParentRef {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    section_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    observed_generation: Option<i64>,
}

/// Whether the HTTPRoute `route` (in `namespace`) is accepted by the Gateway in `gateway`, with
/// its backends resolved, at its current generation; the problem otherwise.
pub fn route_problem(
    route: &DynamicObject,
    gateway: &GatewaySettings,
    namespace: &str,
) -> Option<Problem> {
    let name = route.metadata.name.as_deref().unwrap_or("");
    let generation = route.metadata.generation;
    let want = &gateway.parent_ref;
    let want_ns = want.namespace.as_deref().unwrap_or(namespace);
    let parent = format!("{want_ns}/{}", want.name);
    let status: RouteStatus = route
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let ours = status.parents.iter().find(|p| {
        p.parent_ref.name == want.name
            && p.parent_ref.namespace.as_deref().unwrap_or(namespace) == want_ns
            && p.parent_ref.section_name == want.section_name
    });
    let pending = |detail: String| {
        Some(Problem {
            reason: reason::ROUTE_PENDING,
            message: format!(
                "HTTPRoute {name}: waiting for Gateway {parent} to accept it ({detail}); check \
                 that the Gateway exists and that a Gateway controller serves its class"
            ),
            needs_action: false,
        })
    };
    let Some(ours) = ours else {
        return pending("no status from the Gateway's controller yet".to_owned());
    };
    for type_ in ["Accepted", "ResolvedRefs"] {
        let Some(c) = ours.conditions.iter().find(|c| c.type_ == type_) else {
            return pending(format!("no {type_} condition yet"));
        };
        if let (Some(want), Some(seen)) = (generation, c.observed_generation)
            && seen < want
        {
            return pending(format!(
                "{type_} describes generation {seen}, the route is at {want}"
            ));
        }
        if c.status != "True" {
            let what = if type_ == "Accepted" {
                "did not accept it"
            } else {
                "cannot resolve its backends"
            };
            return Some(Problem {
                reason: reason::ROUTE_NOT_ACCEPTED,
                message: format!(
                    "HTTPRoute {name}: Gateway {parent} {what}: {type_}={} {}: {}",
                    c.status, c.reason, c.message
                ),
                needs_action: true,
            });
        }
    }
    None
}

/// A split broker, as the broker membership check ([`crate::broker_check`]) last concluded in
/// `status.brokerCluster`; only while the spec asks for a cluster (a conclusion left from a
/// larger broker does not count).
pub fn broker_problem(stack: &PingPongStack) -> Option<Problem> {
    let verdict = stack.status.as_ref()?.broker_cluster.as_ref()?;
    (stack.spec.rabbitmq.replicas > 1 && verdict.state == BrokerClusterState::Partitioned).then(
        || Problem {
            reason: reason::BROKER_PARTITIONED,
            message: verdict.message.clone(),
            needs_action: true,
        },
    )
}

/// Every problem of the stack: per workload that is not ready, the first problem among its
/// `pods` (by name) or else its stalled rollout; then the route's.
pub fn problems(
    workloads: &Workloads,
    pods: &BTreeMap<Component, Vec<Pod>>,
    gateway: Option<&GatewaySettings>,
    namespace: &str,
    now: Timestamp,
) -> Vec<Problem> {
    let mut found = Vec::new();
    for (component, rollout) in workloads.not_ready() {
        let mut sorted: Vec<&Pod> = pods.get(&component).into_iter().flatten().collect();
        sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let from_pods = sorted
            .into_iter()
            .find_map(|p| pod_problem(p, now, NOT_READY_GRACE));
        let stalled = rollout.deadline_exceeded.as_ref().map(|message| Problem {
            reason: reason::PROGRESS_DEADLINE_EXCEEDED,
            message: format!("Deployment {}: {message}", rollout.name),
            needs_action: true,
        });
        found.extend(from_pods.or(stalled));
    }
    if let (Some(route), Some(gateway)) = (&workloads.route, gateway) {
        found.extend(route_problem(route, gateway, namespace));
    }
    found
}

#[cfg(test)]
mod tests;
