use super::*;

const NS: &str = "team-a";

fn node(i: usize) -> String {
    format!("rabbit@ha-rabbitmq-{i}.ha-rabbitmq-nodes.{NS}")
}

fn pods(ready: &[bool]) -> Vec<BrokerPod> {
    ready
        .iter()
        .enumerate()
        .map(|(i, ready)| BrokerPod {
            name: format!("ha-rabbitmq-{i}"),
            node: node(i),
            ready: *ready,
        })
        .collect()
}

/// A view listing `running` nodes as running and `down` as members that do not run.
fn view(running: &[usize], down: &[usize]) -> Read {
    Ok(running
        .iter()
        .map(|i| (i, true))
        .chain(down.iter().map(|i| (i, false)))
        .map(|(i, running)| NodeView {
            name: node(*i),
            running,
            partitions: Vec::new(),
        })
        .collect())
}

fn reads(entries: Vec<(usize, Read)>) -> BTreeMap<String, Read> {
    entries
        .into_iter()
        .map(|(i, r)| (format!("ha-rabbitmq-{i}"), r))
        .collect()
}

fn kind(observation: &Observation) -> &'static str {
    match observation {
        Observation::Agree(_) => "agree",
        Observation::Disagree(_) => "disagree",
        Observation::Unknown(_) => "unknown",
    }
}

/// What, which pods are ready, each pod's view, the observation expected.
type Case = (&'static str, Vec<bool>, Vec<(usize, Read)>, &'static str);

#[test]
fn views_to_observations() {
    let all = [true, true, true];
    let cases: Vec<Case> = vec![
        (
            "one cluster of three",
            all.to_vec(),
            vec![
                (0, view(&[0, 1, 2], &[])),
                (1, view(&[0, 1, 2], &[])),
                (2, view(&[0, 1, 2], &[])),
            ],
            "agree",
        ),
        (
            "a blank node started a cluster of its own",
            all.to_vec(),
            vec![
                (0, view(&[0, 1], &[])),
                (1, view(&[0, 1], &[])),
                (2, view(&[2], &[])),
            ],
            "disagree",
        ),
        (
            "the others still list it, not running",
            all.to_vec(),
            vec![
                (0, view(&[0, 1], &[2])),
                (1, view(&[0, 1], &[2])),
                (2, view(&[2], &[])),
            ],
            "disagree",
        ),
        (
            "the lone node alone is enough to tell",
            all.to_vec(),
            vec![
                (0, Err("Timeout")),
                (1, Err("Timeout")),
                (2, view(&[2], &[])),
            ],
            "disagree",
        ),
        (
            "a restarting pod is not ready: not a split",
            vec![true, true, false],
            vec![(0, view(&[0, 1], &[2])), (1, view(&[0, 1], &[2]))],
            "agree",
        ),
        (
            "an unreadable pod the others see running",
            all.to_vec(),
            vec![
                (0, view(&[0, 1, 2], &[])),
                (1, Err("Unreachable")),
                (2, view(&[0, 1, 2], &[])),
            ],
            "agree",
        ),
        (
            "no view read at all",
            all.to_vec(),
            vec![(0, Err("Timeout")), (1, Err("Unreachable"))],
            "unknown",
        ),
        (
            "no pod ready (a namespace being deleted)",
            vec![false, false, false],
            vec![],
            "unknown",
        ),
        (
            "a stale member after a scale-down does not count",
            vec![true, true],
            vec![(0, view(&[0, 1], &[2])), (1, view(&[0, 1], &[2]))],
            "agree",
        ),
    ];
    for (what, ready, entries, want) in cases {
        let (observation, views) = observe(&pods(&ready), &reads(entries));
        assert_eq!(kind(&observation), want, "{what}: {observation:?}");
        assert_eq!(
            views.len(),
            ready.iter().filter(|r| **r).count(),
            "{what}: one view per ready pod"
        );
    }
}

#[test]
fn a_partition_reported_by_a_node_is_a_disagreement() {
    let mut nodes = view(&[0, 1, 2], &[]).unwrap();
    nodes[0].partitions = vec![node(2)];
    let entries = vec![
        (0, Ok(nodes)),
        (1, view(&[0, 1, 2], &[])),
        (2, view(&[0, 1, 2], &[])),
    ];
    let (observation, _) = observe(&pods(&[true, true, true]), &reads(entries));
    let Observation::Disagree(message) = observation else {
        panic!("{observation:?}")
    };
    assert_eq!(
        message,
        "pod ha-rabbitmq-0 reports node ha-rabbitmq-0 partitioned from ha-rabbitmq-2"
    );
}

#[test]
fn the_message_names_the_pods_and_what_they_see() {
    let entries = vec![
        (0, view(&[0, 1], &[])),
        (1, Err("Timeout")),
        (2, view(&[2], &[])),
    ];
    let (observation, views) = observe(&pods(&[true, true, true]), &reads(entries));
    let Observation::Disagree(message) = observation else {
        panic!("{observation:?}")
    };
    assert_eq!(
        message,
        "pod ha-rabbitmq-0 sees a cluster of 2 running node(s) (ha-rabbitmq-0, ha-rabbitmq-1) \
         without ready pod(s) ha-rabbitmq-2; pod ha-rabbitmq-2 sees a cluster of 1 running \
         node(s) (ha-rabbitmq-2) without ready pod(s) ha-rabbitmq-0, ha-rabbitmq-1; management \
         API not read on ha-rabbitmq-1 (Timeout)"
    );
    assert_eq!(views[1].error.as_deref(), Some("Timeout"));
    assert_eq!(views[2].running_nodes, vec![node(2)]);
}

fn status(state: BrokerClusterState) -> BrokerClusterStatus {
    BrokerClusterStatus {
        state,
        message: "before".into(),
        ..BrokerClusterStatus::default()
    }
}

fn state(next: &Option<BrokerClusterStatus>) -> Option<BrokerClusterState> {
    next.as_ref().map(|s| s.state)
}

#[test]
fn a_split_is_reported_only_when_seen_twice_in_a_row() {
    use BrokerClusterState::{Clustered, Partitioned};
    let clustered = status(Clustered);
    let split = || Observation::Disagree("pod x sees ...".into());
    let (first, memory) = next(Some(&clustered), split(), Vec::new(), Memory::default());
    assert_eq!(state(&first), None, "one check is not enough");
    let (second, _) = next(Some(&clustered), split(), Vec::new(), memory);
    assert_eq!(state(&second), Some(Partitioned));
    assert!(
        second
            .unwrap()
            .message
            .starts_with("broker cluster split: pod x")
    );
    // An agreeing check in between starts the count again.
    let (_, memory) = next(Some(&clustered), split(), Vec::new(), Memory::default());
    let (healed, memory) = next(
        Some(&clustered),
        Observation::Agree("ok".into()),
        Vec::new(),
        memory,
    );
    assert_eq!(state(&healed), Some(Clustered));
    let (again, _) = next(Some(&clustered), split(), Vec::new(), memory);
    assert_eq!(state(&again), None);
}

#[test]
fn unreadable_views_never_flip_the_verdict() {
    use BrokerClusterState::{Clustered, Partitioned, Unknown};
    let unknown = || Observation::Unknown("no view".into());
    // From Clustered: Unknown, which does not make Ready false.
    let (next_state, _) = next(
        Some(&status(Clustered)),
        unknown(),
        Vec::new(),
        Memory::default(),
    );
    assert_eq!(state(&next_state), Some(Unknown));
    // A split stays reported while nothing can be read.
    let memory = Memory { disagreements: 2 };
    let (kept, memory) = next(Some(&status(Partitioned)), unknown(), Vec::new(), memory);
    assert_eq!(state(&kept), None);
    assert_eq!(
        memory.disagreements, 2,
        "an unknown check neither adds nor resets"
    );
    // Agreement clears it at once.
    let (healed, memory) = next(
        Some(&status(Partitioned)),
        Observation::Agree("ok".into()),
        Vec::new(),
        memory,
    );
    assert_eq!(state(&healed), Some(Clustered));
    assert_eq!(memory, Memory::default());
}

#[test]
fn only_changes_are_written() {
    let a = status(BrokerClusterState::Clustered);
    assert!(changed(None, &a));
    assert!(!changed(Some(&a), &a.clone()));
    let b = BrokerClusterStatus {
        message: "other".into(),
        ..a.clone()
    };
    assert!(changed(Some(&a), &b));
}
