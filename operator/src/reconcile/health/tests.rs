use super::*;
use crate::crd::{ComponentStatus, GatewayParentRef};
use crate::reconcile::rollout::Rollout;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

fn now() -> Timestamp {
    Timestamp::from_second(1_000_000).unwrap()
}

fn ago(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_000_000 - seconds).unwrap())
}

fn pod(name: &str, status: PodStatus) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(status),
    }
}

fn waiting(container: &str, why: &str, message: &str) -> ContainerStatus {
    ContainerStatus {
        name: container.into(),
        ready: false,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(why.into()),
                message: Some(message.into()),
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn ready_condition(status: &str, since: i64) -> PodCondition {
    PodCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: (status == "False").then(|| "ContainersNotReady".into()),
        last_transition_time: Some(ago(since)),
        ..PodCondition::default()
    }
}

#[test]
fn an_image_pull_failure_names_the_pod_container_and_the_kubelets_message() {
    let p = pod(
        "demo-ping-6b7-x2",
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![waiting(
                "ping",
                "ImagePullBackOff",
                "Back-off pulling image \"ping:nope\"",
            )]),
            ..PodStatus::default()
        },
    );
    let problem = pod_problem(&p, now(), NOT_READY_GRACE).expect("a problem");
    assert_eq!(problem.reason, reason::IMAGE_PULL_FAILED);
    assert_eq!(
        problem.message,
        "pod demo-ping-6b7-x2: container ping is ImagePullBackOff: Back-off pulling image \
         \"ping:nope\""
    );
    assert!(problem.needs_action);
}

#[test]
fn a_crash_loop_quotes_the_last_exit() {
    let mut c = waiting(
        "rabbitmq",
        "CrashLoopBackOff",
        "back-off 40s restarting failed container",
    );
    c.restart_count = 3;
    c.last_state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 1,
            reason: Some("Error".into()),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    });
    let p = pod(
        "demo-rabbitmq-0",
        PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![c]),
            ..PodStatus::default()
        },
    );
    let problem = pod_problem(&p, now(), NOT_READY_GRACE).expect("a problem");
    assert_eq!(problem.reason, reason::CRASH_LOOP_BACK_OFF);
    assert!(
        problem
            .message
            .starts_with("pod demo-rabbitmq-0: container rabbitmq is CrashLoopBackOff")
            && problem
                .message
                .ends_with("(last exit code 1, Error, 3 restarts)"),
        "{}",
        problem.message
    );
}

#[test]
fn an_init_container_failure_comes_first_and_benign_waits_are_not_problems() {
    let p = pod(
        "demo-pong-1",
        PodStatus {
            init_container_statuses: Some(vec![waiting(
                "wait",
                "CreateContainerConfigError",
                "secret \"x\" not found",
            )]),
            container_statuses: Some(vec![waiting("pong", "PodInitializing", "")]),
            ..PodStatus::default()
        },
    );
    let problem = pod_problem(&p, now(), NOT_READY_GRACE).expect("a problem");
    assert_eq!(problem.reason, reason::CONTAINER_FAILED);
    let starting = pod(
        "demo-pong-2",
        PodStatus {
            container_statuses: Some(vec![waiting("pong", "ContainerCreating", "")]),
            ..PodStatus::default()
        },
    );
    assert_eq!(pod_problem(&starting, now(), NOT_READY_GRACE), None);
}

#[test]
fn a_pod_that_no_node_accepts_is_reported() {
    let p = pod(
        "demo-rabbitmq-2",
        PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient memory.".into()),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        },
    );
    let problem = pod_problem(&p, now(), NOT_READY_GRACE).expect("a problem");
    assert_eq!(problem.reason, reason::POD_UNSCHEDULABLE);
    assert!(problem.message.contains("3 Insufficient memory"));
}

#[test]
fn a_running_pod_is_unready_too_long_only_after_the_grace() {
    let status = |since| PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![ready_condition("False", since)]),
        container_statuses: Some(vec![ContainerStatus {
            name: "rabbitmq".into(),
            ready: false,
            ..ContainerStatus::default()
        }]),
        ..PodStatus::default()
    };
    let young = pod("demo-rabbitmq-1", status(60));
    assert_eq!(pod_problem(&young, now(), NOT_READY_GRACE), None);
    let old = pod("demo-rabbitmq-1", status(301));
    let problem = pod_problem(&old, now(), NOT_READY_GRACE).expect("a problem");
    assert_eq!(problem.reason, reason::POD_NOT_READY);
    assert_eq!(
        problem.message,
        "pod demo-rabbitmq-1 has been running for 301s without becoming ready: \
         ContainersNotReady (containers not ready: rabbitmq)"
    );
    let ready = pod(
        "demo-rabbitmq-1",
        PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![ready_condition("True", 900)]),
            ..PodStatus::default()
        },
    );
    assert_eq!(pod_problem(&ready, now(), NOT_READY_GRACE), None);
}

#[test]
fn a_terminating_pod_is_not_a_problem() {
    let mut p = pod(
        "old",
        PodStatus {
            container_statuses: Some(vec![waiting("ping", "CrashLoopBackOff", "")]),
            ..PodStatus::default()
        },
    );
    p.metadata.deletion_timestamp = Some(ago(1));
    assert_eq!(pod_problem(&p, now(), NOT_READY_GRACE), None);
}

fn gateway(section: Option<&str>) -> GatewaySettings {
    GatewaySettings {
        parent_ref: GatewayParentRef {
            name: "public".into(),
            namespace: Some("gateway-system".into()),
            section_name: section.map(Into::into),
        },
        hostname: None,
    }
}

fn route(generation: i64, status: serde_json::Value) -> DynamicObject {
    DynamicObject {
        types: None,
        metadata: ObjectMeta {
            name: Some("demo".into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        },
        data: serde_json::json!({ "spec": {}, "status": status }),
    }
}

fn parent(
    section: Option<&str>,
    accepted: (&str, &str, i64),
    resolved: (&str, i64),
) -> serde_json::Value {
    let mut parent_ref = serde_json::json!({
        "group": "gateway.networking.k8s.io", "kind": "Gateway",
        "name": "public", "namespace": "gateway-system",
    });
    if let Some(section) = section {
        parent_ref["sectionName"] = section.into();
    }
    serde_json::json!({
        "controllerName": "traefik.io/gateway-controller",
        "parentRef": parent_ref,
        "conditions": [
            {"type": "Accepted", "status": accepted.0, "reason": accepted.1,
             "message": "listener http does not allow routes from namespace demo",
             "observedGeneration": accepted.2},
            {"type": "ResolvedRefs", "status": resolved.0, "reason": "ResolvedRefs",
             "message": "", "observedGeneration": resolved.1},
        ],
    })
}

#[test]
fn an_accepted_route_with_resolved_backends_is_no_problem() {
    let r = route(
        2,
        serde_json::json!({"parents": [parent(None, ("True", "Accepted", 2), ("True", 2))]}),
    );
    assert_eq!(route_problem(&r, &gateway(None), "demo"), None);
}

#[test]
fn a_refused_route_quotes_the_gateways_reason() {
    let r = route(
        1,
        serde_json::json!({"parents": [parent(None, ("False", "NotAllowedByListeners", 1), ("True", 1))]}),
    );
    let problem = route_problem(&r, &gateway(None), "demo").expect("a problem");
    assert_eq!(problem.reason, reason::ROUTE_NOT_ACCEPTED);
    assert_eq!(
        problem.message,
        "HTTPRoute demo: Gateway gateway-system/public did not accept it: Accepted=False \
         NotAllowedByListeners: listener http does not allow routes from namespace demo"
    );
    let r = route(
        1,
        serde_json::json!({"parents": [parent(None, ("True", "Accepted", 1), ("False", 1))]}),
    );
    let problem = route_problem(&r, &gateway(None), "demo").expect("a problem");
    assert!(
        problem.message.contains("cannot resolve its backends"),
        "{}",
        problem.message
    );
}

#[test]
fn a_route_without_status_for_our_parent_or_at_an_old_generation_is_pending() {
    let none = route(1, serde_json::json!({}));
    let problem = route_problem(&none, &gateway(None), "demo").expect("pending");
    assert_eq!(problem.reason, reason::ROUTE_PENDING);
    assert!(!problem.needs_action);
    // Another listener's status is not ours.
    let other = route(
        1,
        serde_json::json!({"parents": [parent(Some("https"), ("True", "Accepted", 1), ("True", 1))]}),
    );
    assert_eq!(
        route_problem(&other, &gateway(None), "demo").map(|p| p.reason),
        Some(reason::ROUTE_PENDING)
    );
    assert_eq!(route_problem(&other, &gateway(Some("https")), "demo"), None);
    let stale = route(
        3,
        serde_json::json!({"parents": [parent(None, ("True", "Accepted", 2), ("True", 2))]}),
    );
    let problem = route_problem(&stale, &gateway(None), "demo").expect("pending");
    assert_eq!(problem.reason, reason::ROUTE_PENDING);
    assert!(
        problem.message.contains("generation 2, the route is at 3"),
        "{}",
        problem.message
    );
}

#[test]
fn problems_are_read_only_for_workloads_that_are_not_ready() {
    let rollout = |ready, deadline: Option<&str>| Rollout {
        name: "demo-ping".into(),
        counts: ComponentStatus {
            replicas: 1,
            ready_replicas: ready,
        },
        selector: Some("a=b".into()),
        deadline_exceeded: deadline.map(Into::into),
    };
    let failing = pod(
        "demo-ping-1",
        PodStatus {
            container_statuses: Some(vec![waiting("ping", "ErrImagePull", "not found")]),
            ..PodStatus::default()
        },
    );
    let pods: BTreeMap<_, _> = [(Component::Ping, vec![failing])].into_iter().collect();
    let mut workloads = Workloads::default();
    workloads.rollouts.insert(Component::Ping, rollout(1, None));
    assert!(problems(&workloads, &pods, None, "demo", now()).is_empty());
    workloads
        .rollouts
        .insert(Component::Ping, rollout(0, Some("timed out")));
    let found = problems(&workloads, &pods, None, "demo", now());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reason, reason::IMAGE_PULL_FAILED);
    // Without a pod problem, the stalled rollout is the problem.
    let found = problems(&workloads, &BTreeMap::new(), None, "demo", now());
    assert_eq!(found[0].reason, reason::PROGRESS_DEADLINE_EXCEEDED);
    assert_eq!(found[0].message, "Deployment demo-ping: timed out");
}
