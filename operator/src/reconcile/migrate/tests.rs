//! Table tests of the pure parts of the selector migration.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

fn workload(component: Component, kind: WorkloadKind, name: &str) -> Workload {
    Workload {
        component,
        kind,
        name: name.to_owned(),
    }
}

fn legacy(uid: &str) -> Live {
    Live::Legacy {
        uid: uid.to_owned(),
        deleting: false,
        replicas: None,
    }
}

fn broker() -> Workload {
    workload(
        Component::RabbitMq,
        WorkloadKind::StatefulSet,
        "demo-rabbitmq",
    )
}

fn ping() -> Workload {
    workload(Component::Ping, WorkloadKind::Deployment, "demo-ping")
}

#[test]
fn decide_table() {
    struct Case {
        name: &'static str,
        live: Vec<(Workload, Live)>,
        migrate_now: bool,
        legacy_workloads: Vec<Component>,
        services: Scheme,
        migrated: Vec<&'static str>,
        pending: usize,
    }
    let cases = [
        Case {
            name: "a new stack: unique throughout",
            live: vec![(broker(), Live::Absent), (ping(), Live::Absent)],
            migrate_now: false,
            legacy_workloads: vec![],
            services: Scheme::Unique,
            migrated: vec![],
            pending: 0,
        },
        Case {
            name: "migrated: the Services switch",
            live: vec![(broker(), Live::Current), (ping(), Live::Current)],
            migrate_now: true,
            legacy_workloads: vec![],
            services: Scheme::Unique,
            migrated: vec![],
            pending: 0,
        },
        Case {
            name: "legacy, not opted in: everything stays legacy",
            live: vec![(broker(), legacy("b")), (ping(), legacy("p"))],
            migrate_now: false,
            legacy_workloads: vec![Component::RabbitMq, Component::Ping],
            services: Scheme::Legacy,
            migrated: vec![],
            pending: 2,
        },
        Case {
            name: "legacy, opted in: workloads replaced, Services wait",
            live: vec![(broker(), legacy("b")), (ping(), legacy("p"))],
            migrate_now: true,
            legacy_workloads: vec![],
            services: Scheme::Legacy,
            migrated: vec!["demo-rabbitmq", "demo-ping"],
            pending: 0,
        },
        Case {
            name: "half migrated, not opted in any more: the migrated one stays unique",
            live: vec![(broker(), Live::Current), (ping(), legacy("p"))],
            migrate_now: false,
            legacy_workloads: vec![Component::Ping],
            services: Scheme::Legacy,
            migrated: vec![],
            pending: 1,
        },
        Case {
            name: "a workload added to a legacy stack starts unique",
            live: vec![(broker(), legacy("b")), (ping(), Live::Absent)],
            migrate_now: false,
            legacy_workloads: vec![Component::RabbitMq],
            services: Scheme::Legacy,
            migrated: vec![],
            pending: 1,
        },
    ];
    for case in cases {
        let decision = decide(&case.live, case.migrate_now);
        assert_eq!(
            decision.selectors.legacy_workloads,
            case.legacy_workloads.into_iter().collect(),
            "{}",
            case.name
        );
        assert_eq!(decision.selectors.services, case.services, "{}", case.name);
        let migrated: Vec<&str> = decision
            .migrate
            .iter()
            .map(|(w, _)| w.name.as_str())
            .collect();
        assert_eq!(migrated, case.migrated, "{}", case.name);
        assert_eq!(decision.pending.len(), case.pending, "{}", case.name);
        assert_eq!(
            pending_message(&decision.pending).is_some(),
            case.pending > 0,
            "{}",
            case.name
        );
    }
}

fn meta(name: &str, controller: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        uid: Some(format!("uid-{name}")),
        owner_references: controller.map(|uid| {
            vec![OwnerReference {
                uid: uid.to_owned(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        }),
        ..ObjectMeta::default()
    }
}

#[test]
fn classify_compares_the_live_selector_with_the_unique_one() {
    let desired = labels::selector_labels("demo", Component::Ping);
    let owned = meta("demo-ping", Some("stack"));
    let selector = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    };
    let unique = selector(desired.clone());
    let old = selector(labels::legacy_selector_labels("demo", Component::Ping));
    assert_eq!(
        classify(&owned, Some(&unique), None, &desired, "stack"),
        Live::Current
    );
    assert_eq!(
        classify(&owned, Some(&old), Some(3), &desired, "stack"),
        Live::Legacy {
            uid: "uid-demo-ping".to_owned(),
            deleting: false,
            replicas: Some(3)
        }
    );
    // Someone else's object of that name is never migrated (ownership reports it).
    let foreign = meta("demo-ping", Some("other"));
    assert_eq!(
        classify(&foreign, Some(&old), None, &desired, "stack"),
        Live::Absent
    );
}

#[test]
fn the_cache_answers_only_for_the_stacks_unique_workloads() {
    let desired = labels::selector_labels("demo", Component::Ping);
    let mut owned = meta("demo-ping", Some("stack"));
    assert!(!cached_current(&owned, &desired, "stack"));
    owned.labels = Some(labels::component_labels(
        "demo",
        Component::Ping,
        Scheme::Unique,
    ));
    assert!(cached_current(&owned, &desired, "stack"));
    assert!(!cached_current(&owned, &desired, "another-stack"));
}

#[test]
fn dependents_are_found_by_controller_or_by_name() {
    let sts = broker();
    let deploy = ping();
    let by_uid = Dependents::ControlledBy("sts-uid");
    assert!(is_dependent(
        &meta("demo-rabbitmq-0", Some("sts-uid")),
        &sts,
        by_uid
    ));
    assert!(!is_dependent(
        &meta("demo-rabbitmq-0", Some("x")),
        &sts,
        by_uid
    ));
    // Orphans: named like the workload's own, with no controller.
    let orphan = Dependents::Orphaned;
    assert!(is_dependent(&meta("demo-rabbitmq-2", None), &sts, orphan));
    assert!(!is_dependent(
        &meta("demo-rabbitmq-2", Some("x")),
        &sts,
        orphan
    ));
    assert!(!is_dependent(
        &meta("demo-rabbitmq-lookalike", None),
        &sts,
        orphan
    ));
    assert!(!is_dependent(&meta("other-release-0", None), &sts, orphan));
    assert!(is_dependent(
        &meta("demo-ping-5d8f7c9b4", None),
        &deploy,
        orphan
    ));
    assert!(!is_dependent(
        &meta("demo-ping-5d8f7c9b4-abcde", None),
        &deploy,
        orphan
    ));
    assert!(!is_dependent(
        &meta("demo-pingx-5d8f7c9b4", None),
        &deploy,
        orphan
    ));
}

#[test]
fn opting_in_takes_automatic_or_the_annotation() {
    use crate::crd::PingPongStackSpec;
    let mut stack = PingPongStack::new("demo", PingPongStackSpec::default());
    assert!(!opted_in(&stack));
    stack.metadata.annotations = Some([(MIGRATE_SELECTORS.to_owned(), "yes".to_owned())].into());
    assert!(!opted_in(&stack));
    stack.metadata.annotations = Some([(MIGRATE_SELECTORS.to_owned(), "true".to_owned())].into());
    assert!(opted_in(&stack));
    stack.metadata.annotations = None;
    stack.spec.upgrade_policy = UpgradePolicy::Automatic;
    assert!(opted_in(&stack));
}
