//! Unit tests of the conditions and the next status.

use super::condition_type::*;
use super::*;
use k8s_openapi::jiff::Timestamp;

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn get<'a>(cs: &'a [Condition], type_: &str) -> &'a Condition {
    cs.iter().find(|c| c.type_ == type_).unwrap()
}

fn readiness(ready: i32) -> Readiness {
    let c = ComponentStatus {
        replicas: 1,
        ready_replicas: ready,
    };
    Readiness::new([
        (Component::RabbitMq, c),
        (Component::Ping, c),
        (Component::Pong, c),
    ])
}

#[test]
fn provisioned_store_and_cache_gate_ready() {
    let r = readiness(1);
    let cs = conditions(&converged(r), false, Some(1), &[], t(0));
    assert_eq!(
        get(&cs, READY).message,
        "rabbitmq, ping and pong have all desired replicas ready"
    );
    let status = |ready_replicas| ComponentStatus {
        replicas: 1,
        ready_replicas,
    };
    let with_backing = |postgres| {
        Readiness::new([
            (Component::RabbitMq, status(1)),
            (Component::Postgres, status(postgres)),
            (Component::Redis, status(1)),
            (Component::Ping, status(1)),
            (Component::Pong, status(1)),
        ])
    };
    let cs = conditions(&converged(with_backing(0)), false, Some(1), &[], t(0));
    assert_eq!(get(&cs, READY).status, "False");
    assert_eq!(get(&cs, READY).message, "waiting for postgres 0/1 ready");
    let cs = conditions(&converged(with_backing(1)), false, Some(1), &[], t(0));
    assert_eq!(get(&cs, READY).status, "True");
    assert_eq!(
        get(&cs, READY).message,
        "rabbitmq, postgres, redis, ping and pong have all desired replicas ready"
    );
}

#[test]
fn converging_then_ready() {
    let first = conditions(&converged(readiness(0)), false, Some(1), &[], t(0));
    let ready = get(&first, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ComponentsNotReady")
    );
    assert_eq!(
        ready.message,
        "waiting for rabbitmq 0/1 ready, ping 0/1 ready, pong 0/1 ready"
    );
    assert_eq!(get(&first, PROGRESSING).status, "True");
    assert_eq!(get(&first, DEGRADED).status, "False");
    assert_eq!(get(&first, PAUSED).status, "False");
    assert!(first.iter().all(|c| c.observed_generation == Some(1)));

    let second = conditions(&converged(readiness(1)), false, Some(1), &first, t(10));
    assert_eq!(get(&second, READY).status, "True");
    assert_eq!(get(&second, READY).last_transition_time, t(10));
    assert_eq!(get(&second, PROGRESSING).reason, "RolloutComplete");
    // Degraded and Paused did not change status: their transition time is kept.
    assert_eq!(get(&second, DEGRADED).last_transition_time, t(0));
    assert_eq!(get(&second, PAUSED).last_transition_time, t(0));
}

#[test]
fn a_second_identical_report_changes_nothing() {
    let first = conditions(&converged(readiness(1)), false, Some(3), &[], t(0));
    let again = conditions(&converged(readiness(1)), false, Some(3), &first, t(50));
    assert_eq!(first, again);
}

#[test]
fn invalid_spec_is_degraded_and_not_ready() {
    let outcome = Outcome::Invalid {
        reason: reason::INVALID_SPEC,
        message: "spec.pong.replicas: must be at most 1".into(),
    };
    let cs = conditions(&outcome, false, Some(2), &[], t(0));
    assert_eq!(get(&cs, READY).status, "False");
    assert_eq!(get(&cs, READY).reason, "InvalidSpec");
    assert_eq!(get(&cs, DEGRADED).status, "True");
    assert_eq!(
        get(&cs, DEGRADED).message,
        "spec.pong.replicas: must be at most 1"
    );
    assert_eq!(get(&cs, PROGRESSING).status, "False");
}

#[test]
fn failure_keeps_ready_and_sets_degraded_without_unknown() {
    let ok = conditions(&converged(readiness(1)), false, Some(1), &[], t(0));
    let failed = Outcome::Failed {
        reason: "ApplyConflict",
        message: "failed to apply Deployment demo-ping".into(),
    };
    let cs = conditions(&failed, false, Some(1), &ok, t(5));
    assert_eq!(get(&cs, READY), get(&ok, READY));
    assert_eq!(get(&cs, DEGRADED).status, "True");
    assert_eq!(get(&cs, DEGRADED).reason, "ApplyConflict");
    assert_eq!(get(&cs, DEGRADED).last_transition_time, t(5));
    assert!(cs.iter().all(|c| c.status == "True" || c.status == "False"));

    let first_failure = conditions(&failed, false, Some(1), &[], t(0));
    assert_eq!(get(&first_failure, READY).reason, "Reconciling");
}

#[test]
fn paused_is_reported() {
    let cs = conditions(&converged(readiness(0)), true, Some(4), &[], t(0));
    assert_eq!(get(&cs, PAUSED).status, "True");
    assert_eq!(get(&cs, PAUSED).reason, "PausedBySpec");
    assert_eq!(get(&cs, PROGRESSING).status, "False");
    assert_eq!(get(&cs, PROGRESSING).reason, "PausedBySpec");
    assert!(is_true(&cs, PAUSED));
    assert!(!is_true(&cs, READY));
}

#[test]
fn switching_to_memory_drops_placement_replicas_and_cache() {
    let provisioned = PingPongStackStatus {
        store: Some(StoreStatus {
            type_: StoreType::Postgres,
            placement: Some(Placement::Provisioned),
            ready: true,
            replicas: Some(1),
            ready_replicas: Some(1),
            secret_name: Some("demo-postgres-credentials".into()),
            data_major_version: Some(17),
        }),
        cache: Some(CacheStatus {
            placement: Placement::Provisioned,
            ready: true,
            replicas: Some(1),
            ready_replicas: Some(1),
        }),
        ..PingPongStackStatus::default()
    };
    let memory = StoreStatus {
        type_: StoreType::Memory,
        ready: true,
        ..StoreStatus::default()
    };
    let report = Report {
        outcome: converged(Readiness::default()),
        paused: false,
        generation: Some(2),
        previous: &provisioned,
    };
    let next = next_status(&report, Timestamp::UNIX_EPOCH);
    assert_eq!(next.store, Some(memory));
    assert_eq!(next.cache, None);
    let serialized = serde_json::to_value(&next).unwrap();
    assert_eq!(
        serialized["store"],
        serde_json::json!({"type": "memory", "ready": true})
    );
    assert!(serialized.get("cache").is_none());
}

#[test]
fn failure_keeps_observed_generation_and_component_counts() {
    let mut outcome = converged(Readiness::default());
    if let Outcome::Converged(c) = &mut outcome {
        c.endpoint = Some("http://demo.example".into());
    }
    let ok = Report {
        outcome,
        paused: false,
        generation: Some(1),
        previous: &PingPongStackStatus::default(),
    };
    assert!(ok.applied());
    let first = next_status(&ok, Timestamp::UNIX_EPOCH);
    assert_eq!(first.observed_generation, Some(1));
    assert_eq!(first.ping, Some(ComponentStatus::default()));
    let failed = Report {
        outcome: Outcome::Failed {
            reason: "ApplyFailed",
            message: "boom".into(),
        },
        generation: Some(2),
        previous: &first,
        ..ok
    };
    assert!(!failed.applied());
    let second = next_status(&failed, Timestamp::UNIX_EPOCH);
    assert_eq!(second.observed_generation, Some(1));
    assert_eq!(second.ping, first.ping);
    assert_eq!(second.endpoint.as_deref(), Some("http://demo.example"));
    assert_eq!(
        second.store, first.store,
        "a failure keeps the store status"
    );
}

fn with_problems(ready: i32, problems: Vec<Problem>) -> Outcome {
    let Outcome::Converged(mut c) = converged(readiness(ready)) else {
        unreachable!("converged() is converged")
    };
    c.problems = problems;
    Outcome::Converged(c)
}

#[test]
fn a_problem_keeps_ready_false_with_its_reason_and_degrades_only_when_a_user_must_act() {
    use crate::reconcile::health::reason as why;
    let pull = Problem {
        reason: why::IMAGE_PULL_FAILED,
        message: "pod p: container ping is ImagePullBackOff".into(),
        needs_action: true,
    };
    let cs = conditions(
        &with_problems(0, vec![pull.clone()]),
        false,
        Some(1),
        &[],
        t(0),
    );
    assert_eq!(get(&cs, READY).status, "False");
    assert_eq!(get(&cs, READY).reason, why::IMAGE_PULL_FAILED);
    assert_eq!(
        get(&cs, READY).message,
        "pod p: container ping is ImagePullBackOff (waiting for rabbitmq 0/1 ready, ping 0/1 ready, \
         pong 0/1 ready)"
    );
    assert_eq!(get(&cs, DEGRADED).status, "True");
    assert_eq!(get(&cs, DEGRADED).reason, why::IMAGE_PULL_FAILED);
    assert_eq!(get(&cs, PROGRESSING).status, "True");

    // Every workload ready, the route not accepted yet: never Ready, not degraded while pending.
    let pending = Problem {
        reason: why::ROUTE_PENDING,
        message: "HTTPRoute demo: waiting".into(),
        needs_action: false,
    };
    let cs = conditions(&with_problems(1, vec![pending]), false, Some(1), &[], t(0));
    assert_eq!(
        (
            get(&cs, READY).status.as_str(),
            get(&cs, READY).reason.as_str()
        ),
        ("False", why::ROUTE_PENDING)
    );
    assert_eq!(get(&cs, READY).message, "HTTPRoute demo: waiting");
    assert_eq!(get(&cs, DEGRADED).status, "False");
    assert_eq!(get(&cs, PROGRESSING).status, "True");

    // A stalled rollout stops Progressing.
    let stalled = Problem {
        reason: why::PROGRESS_DEADLINE_EXCEEDED,
        message: "Deployment demo-ping: timed out".into(),
        needs_action: true,
    };
    let cs = conditions(
        &with_problems(0, vec![stalled, pull]),
        false,
        Some(1),
        &[],
        t(0),
    );
    assert_eq!(get(&cs, PROGRESSING).status, "False");
    assert_eq!(
        get(&cs, PROGRESSING).reason,
        why::PROGRESS_DEADLINE_EXCEEDED
    );
    assert!(
        get(&cs, DEGRADED)
            .message
            .contains("Deployment demo-ping: timed out; pod p")
    );
}
