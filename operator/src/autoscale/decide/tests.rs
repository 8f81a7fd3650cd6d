use super::*;

fn policy() -> Policy {
    Policy {
        min: 1,
        max: 10,
        target: 100,
        scale_down_delay: Duration::from_secs(60),
        max_drain: Duration::from_secs(300),
    }
}

fn settled(replicas: i32) -> Current {
    Current {
        replicas,
        settled: true,
    }
}

fn backlog(ready: u64) -> Signal {
    Signal {
        ready,
        ..Signal::default()
    }
}

const T0: Duration = Duration::from_secs(1000);

#[test]
fn replicas_follow_the_backlog_over_the_target_rounded_up() {
    let d = decide(&policy(), &backlog(250), settled(1), Memory::default(), T0);
    assert_eq!(d.replicas, 3);
    assert_eq!(d.reason, Reason::ScaledOut);
    assert_eq!(d.demand.backlog, 3);
}

#[test]
fn unacknowledged_messages_count_as_backlog() {
    let signal = Signal {
        ready: 0,
        unacked: 450,
        consumers: 1,
        ..Signal::default()
    };
    assert_eq!(
        decide(&policy(), &signal, settled(1), Memory::default(), T0).replicas,
        5
    );
}

#[test]
fn clamped_to_max_and_reported_at_maximum() {
    let out = decide(
        &policy(),
        &backlog(1_000_000),
        settled(2),
        Memory::default(),
        T0,
    );
    assert_eq!((out.replicas, out.reason), (10, Reason::ScaledOut));
    let held = decide(
        &policy(),
        &backlog(1_000_000),
        settled(10),
        Memory::default(),
        T0,
    );
    assert_eq!((held.replicas, held.reason), (10, Reason::AtMaximum));
}

#[test]
fn a_growing_backlog_scales_out_before_it_is_large() {
    // 50 waiting is half a replica's target, but 20/s more arrive than are consumed: in 30 s it
    // is 650.
    let signal = Signal {
        ready: 50,
        consumers: 1,
        publish_rate: 40.0,
        deliver_rate: 20.0,
        ack_rate: 20.0,
        ..Signal::default()
    };
    let d = decide(&policy(), &signal, settled(1), Memory::default(), T0);
    assert_eq!(d.demand.backlog, 1);
    assert_eq!(d.demand.growing, 7);
    assert_eq!((d.replicas, d.reason), (7, Reason::BacklogGrowing));
}

#[test]
fn a_shrinking_backlog_adds_nothing() {
    let signal = Signal {
        ready: 150,
        consumers: 2,
        publish_rate: 10.0,
        deliver_rate: 50.0,
        ack_rate: 50.0,
        ..Signal::default()
    };
    assert_eq!(demand(&policy(), &signal).growing, 2);
}

#[test]
fn scales_in_only_after_the_delay_one_step_at_a_time() {
    let p = policy();
    let idle = Signal::default();
    let first = decide(&p, &idle, settled(5), Memory::default(), T0);
    assert_eq!((first.replicas, first.reason), (5, Reason::WaitingForDelay));
    assert_eq!(first.memory.lower_since, Some(T0));
    let almost = decide(
        &p,
        &idle,
        settled(5),
        first.memory,
        T0 + Duration::from_secs(59),
    );
    assert_eq!(
        (almost.replicas, almost.reason),
        (5, Reason::WaitingForDelay)
    );
    let step = decide(
        &p,
        &idle,
        settled(5),
        almost.memory,
        T0 + Duration::from_secs(60),
    );
    assert_eq!((step.replicas, step.reason), (4, Reason::ScaledIn));
    // The next step waits for the Deployment to run 4 pods.
    let pending = Current {
        replicas: 4,
        settled: false,
    };
    let wait = decide(
        &p,
        &idle,
        pending,
        step.memory,
        T0 + Duration::from_secs(61),
    );
    assert_eq!((wait.replicas, wait.reason), (4, Reason::WaitingForPods));
    let next = decide(
        &p,
        &idle,
        settled(4),
        wait.memory,
        T0 + Duration::from_secs(62),
    );
    assert_eq!((next.replicas, next.reason), (3, Reason::ScaledIn));
}

#[test]
fn demand_back_up_during_the_delay_restarts_it() {
    let p = policy();
    let lower = decide(&p, &backlog(100), settled(3), Memory::default(), T0);
    assert_eq!(lower.reason, Reason::WaitingForDelay);
    let back = decide(
        &p,
        &backlog(300),
        settled(3),
        lower.memory,
        T0 + Duration::from_secs(30),
    );
    assert_eq!((back.replicas, back.reason), (3, Reason::Steady));
    assert_eq!(back.memory.lower_since, None);
    let again = decide(
        &p,
        &backlog(100),
        settled(3),
        back.memory,
        T0 + Duration::from_secs(70),
    );
    assert_eq!(
        again.reason,
        Reason::WaitingForDelay,
        "the delay starts over"
    );
}

#[test]
fn scale_out_never_waits_even_during_a_scale_in_delay() {
    let p = policy();
    let lower = decide(&p, &backlog(0), settled(3), Memory::default(), T0);
    let burst = decide(
        &p,
        &backlog(900),
        settled(3),
        lower.memory,
        T0 + Duration::from_secs(1),
    );
    assert_eq!((burst.replicas, burst.reason), (9, Reason::ScaledOut));
}

#[test]
fn never_scales_in_below_the_pods_that_drain_the_backlog_in_time() {
    // 2000 waiting, target 1000 → 2 by backlog; but each pod acks only 1/s and 2000 must drain
    // within 300 s: 7 pods.
    let p = Policy {
        target: 1000,
        ..policy()
    };
    let signal = Signal {
        ready: 2000,
        consumers: 8,
        deliver_rate: 8.0,
        ack_rate: 8.0,
        ..Signal::default()
    };
    let d = demand(&p, &signal);
    assert_eq!((d.backlog, d.drain, d.total), (2, 7, 7));
    let step = decide(
        &p,
        &signal,
        settled(8),
        Memory {
            lower_since: Some(T0),
        },
        T0 + Duration::from_secs(600),
    );
    assert_eq!((step.replicas, step.reason), (7, Reason::ScaledIn));
    let hold = decide(
        &p,
        &signal,
        settled(7),
        step.memory,
        T0 + Duration::from_secs(601),
    );
    assert_eq!((hold.replicas, hold.reason), (7, Reason::Steady));
}

#[test]
fn min_and_max_changes_apply_at_once() {
    let p = Policy { min: 3, ..policy() };
    let up = decide(&p, &Signal::default(), settled(1), Memory::default(), T0);
    assert_eq!((up.replicas, up.reason), (3, Reason::BelowMinimum));
    let p = Policy { max: 4, ..policy() };
    let down = decide(&p, &backlog(5000), settled(9), Memory::default(), T0);
    assert_eq!((down.replicas, down.reason), (4, Reason::AboveMaximum));
}

#[test]
fn scale_to_zero_needs_the_whole_delay_without_any_message() {
    let p = Policy { min: 0, ..policy() };
    // Still delivering (the last messages are being acked): stays at one.
    let moving = Signal {
        deliver_rate: 0.4,
        ack_rate: 0.4,
        consumers: 1,
        ..Signal::default()
    };
    let d = decide(
        &p,
        &moving,
        settled(1),
        Memory::default(),
        T0 + Duration::from_secs(999),
    );
    assert_eq!((d.replicas, d.reason), (1, Reason::Steady));
    let quiet = decide(&p, &Signal::default(), settled(1), Memory::default(), T0);
    assert_eq!(quiet.reason, Reason::WaitingForDelay);
    let zero = decide(
        &p,
        &Signal::default(),
        settled(1),
        quiet.memory,
        T0 + Duration::from_secs(60),
    );
    assert_eq!((zero.replicas, zero.reason), (0, Reason::ScaledIn));
    // At zero with nothing to do: stays at zero, no flapping.
    let sleep = decide(
        &p,
        &Signal::default(),
        settled(0),
        zero.memory,
        T0 + Duration::from_secs(61),
    );
    assert_eq!((sleep.replicas, sleep.reason), (0, Reason::Steady));
}

#[test]
fn the_first_message_wakes_a_stack_at_zero() {
    let p = Policy { min: 0, ..policy() };
    let woken = decide(&p, &backlog(1), settled(0), Memory::default(), T0);
    assert_eq!((woken.replicas, woken.reason), (1, Reason::WokenByMessage));
    // A publish seen in the rate before the message is counted also wakes it.
    let publishing = Signal {
        publish_rate: 0.2,
        ..Signal::default()
    };
    let woken = decide(&p, &publishing, settled(0), Memory::default(), T0);
    assert_eq!((woken.replicas, woken.reason), (1, Reason::WokenByMessage));
}

#[test]
fn message_names_the_numbers() {
    let signal = Signal {
        ready: 250,
        unacked: 10,
        consumers: 1,
        ..Signal::default()
    };
    let d = decide(&policy(), &signal, settled(1), Memory::default(), T0);
    let text = d.message(1, &signal);
    assert!(
        text.starts_with("1 → 3 replicas (ScaledOut): backlog 260 (250 ready, 10 unacked)"),
        "{text}"
    );
}

#[test]
fn reasons_are_distinct_pascal_case() {
    let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    for name in names {
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{name}"
        );
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
    }
}

/// A queue fed by a burst and drained by the replicas each decision leaves running: the
/// replicas reach max, the backlog drains, and they come back to min one step at a time once
/// the delay has passed, without ever dropping below what the backlog needs.
#[test]
fn a_burst_rises_to_max_drains_and_returns_to_min() {
    let p = Policy {
        min: 0,
        max: 8,
        target: 1000,
        scale_down_delay: Duration::from_secs(60),
        max_drain: Duration::from_secs(300),
    };
    let per_pod = 200.0; // messages a pod acks per second
    let tick = Duration::from_secs(5);
    let mut ready: f64 = 100_000.0;
    let mut replicas = 0;
    let mut memory = Memory::default();
    let mut peak = 0;
    let mut drained_at = None;
    let mut history = Vec::new();
    for step in 0..400u64 {
        let now = tick * u32::try_from(step).unwrap();
        let consumed = (f64::from(replicas) * per_pod * tick.as_secs_f64()).min(ready);
        let signal = Signal {
            ready: ready as u64,
            consumers: u32::try_from(replicas).unwrap(),
            deliver_rate: consumed / tick.as_secs_f64(),
            ack_rate: consumed / tick.as_secs_f64(),
            ..Signal::default()
        };
        let d = decide(&p, &signal, settled(replicas), memory, now);
        assert!((0..=8).contains(&d.replicas));
        assert!(
            (d.replicas - replicas).abs() <= 1 || d.replicas > replicas,
            "scale-in is one step at a time: {replicas} → {}",
            d.replicas
        );
        if d.replicas < replicas {
            assert!(
                i64::from(d.replicas) >= d.demand.total,
                "never below the demand"
            );
        }
        ready -= consumed;
        replicas = d.replicas;
        memory = d.memory;
        peak = peak.max(replicas);
        if ready <= 0.0 && drained_at.is_none() {
            drained_at = Some(now);
        }
        history.push((now.as_secs(), replicas, d.reason));
        if drained_at.is_some() && replicas == 0 {
            break;
        }
    }
    assert_eq!(peak, 8, "rose to max: {history:?}");
    let drained_at = drained_at.expect("the backlog drained");
    assert_eq!(replicas, 0, "back to min: {history:?}");
    let first_in = history
        .iter()
        .position(|(_, _, r)| *r == Reason::ScaledIn)
        .unwrap();
    let waited_from = history[..first_in]
        .iter()
        .rposition(|(_, _, r)| *r != Reason::WaitingForDelay)
        .unwrap();
    assert!(
        history[first_in].0 >= history[waited_from + 1].0 + 60,
        "waited the delay: {history:?}"
    );
    assert!(drained_at.as_secs() > 0);
    assert_eq!(history[0].2, Reason::WokenByMessage);
}
