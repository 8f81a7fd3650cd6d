//! The scaling decision: a pure function of the policy, the broker's numbers, the replicas now and
//! what the previous decisions remember. No clock (the caller passes `now`), no I/O.
//!
//! - demand = max(ceil((backlog + growth × [`LOOKAHEAD`]) / target), the pods that drain the
//!   backlog within `maxDrain` at the observed per-pod rate, 1 while any message moves);
//! - replicas = clamp(demand, min, max);
//! - out at once; in only after the demand stayed lower for `scaleDownDelay`, one pod per
//!   decision and only once the previous step finished (the Deployment runs what was decided);
//! - zero only when nothing is queued, unacknowledged, published or delivered for the whole
//!   delay, and the first message (ready, or a publish) wakes it: no loop, because waking needs
//!   a message and sleeping needs the delay without one.

use std::time::Duration;

/// How far ahead a growing backlog is projected: about the time a new pong pod needs to start
/// and take deliveries.
pub const LOOKAHEAD: Duration = Duration::from_secs(30);

/// What the user asked for (`spec.pong.autoscaling`), typed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Fewest replicas (0 scales to zero).
    pub min: i32,
    /// Most replicas.
    pub max: i32,
    /// Backlog one replica should have waiting at most (≥ 1).
    pub target: u64,
    /// How long demand must stay lower before one replica goes.
    pub scale_down_delay: Duration,
    /// The backlog must drain within this time at the observed per-pod rate.
    pub max_drain: Duration,
}

/// The broker's numbers for pong's queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signal {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers on the queue.
    pub consumers: u32,
    /// Share of time the queue could deliver to its consumers at once (0..1), when known.
    pub utilisation: Option<f64>,
    /// Messages published into the queue per second.
    pub publish_rate: f64,
    /// Messages delivered to consumers per second.
    pub deliver_rate: f64,
    /// Messages acknowledged per second.
    pub ack_rate: f64,
}

impl Signal {
    /// The signal of a queue split in partitions, from each partition's: messages and rates
    /// add up; every pong replica consumes every partition, so the consumers are the most any
    /// partition has (a replica still registered on one counts), and the utilisation is the
    /// lowest known (the partition that keeps its consumers busiest).
    pub fn sum(partitions: &[Signal]) -> Signal {
        partitions
            .iter()
            .fold(Signal::default(), |total, p| Signal {
                ready: total.ready.saturating_add(p.ready),
                unacked: total.unacked.saturating_add(p.unacked),
                consumers: total.consumers.max(p.consumers),
                utilisation: match (total.utilisation, p.utilisation) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                publish_rate: total.publish_rate + p.publish_rate,
                deliver_rate: total.deliver_rate + p.deliver_rate,
                ack_rate: total.ack_rate + p.ack_rate,
            })
    }

    /// Ready + unacknowledged: everything the broker still holds for pong.
    pub fn backlog(&self) -> u64 {
        self.ready.saturating_add(self.unacked)
    }

    /// Messages per second the backlog grows by (0 when it shrinks).
    pub fn growth(&self) -> f64 {
        let consumed = self.deliver_rate.max(self.ack_rate);
        (self.publish_rate - consumed).max(0.0)
    }

    /// Whether any message is queued, held or moving.
    pub fn active(&self) -> bool {
        self.backlog() > 0 || self.publish_rate > 0.0 || self.deliver_rate > 0.0
    }

    /// Messages one consumer acknowledges per second, when consumers work and the rate is known.
    pub fn per_consumer_rate(&self) -> Option<f64> {
        (self.consumers > 0 && self.ack_rate > 0.0)
            .then(|| self.ack_rate / f64::from(self.consumers))
    }
}

/// What one decision remembers for the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Since when (caller's clock) the demand has been below the replicas.
    pub lower_since: Option<Duration>,
}

/// The replicas now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    /// The replicas last decided (what the Deployment is told).
    pub replicas: i32,
    /// Whether the Deployment runs exactly that many pods (a scale-in step finished).
    pub settled: bool,
}

/// Why the replicas are what they are (a fixed set: Event reasons and metric labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The backlog needs more replicas.
    ScaledOut,
    /// The backlog is growing: scaled out before it is large.
    BacklogGrowing,
    /// Scaled from zero: a message arrived.
    WokenByMessage,
    /// `minReplicas` rose above the replicas.
    BelowMinimum,
    /// One replica fewer: the demand stayed lower for the whole delay.
    ScaledIn,
    /// `maxReplicas` fell below the replicas.
    AboveMaximum,
    /// Demand is lower, but not yet for the whole delay.
    WaitingForDelay,
    /// Demand is lower, but the previous scale-in step has not finished.
    WaitingForPods,
    /// The demand is above `maxReplicas`.
    AtMaximum,
    /// The replicas match the demand.
    Steady,
    /// The broker's numbers could not be read: nothing changes.
    SignalUnavailable,
}

impl Reason {
    /// Every reason, so metric series exist from the first scrape.
    pub const ALL: [Self; 11] = [
        Self::ScaledOut,
        Self::BacklogGrowing,
        Self::WokenByMessage,
        Self::BelowMinimum,
        Self::ScaledIn,
        Self::AboveMaximum,
        Self::WaitingForDelay,
        Self::WaitingForPods,
        Self::AtMaximum,
        Self::Steady,
        Self::SignalUnavailable,
    ];

    /// The PascalCase name (status reason, Event reason, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledOut => "ScaledOut",
            Self::BacklogGrowing => "BacklogGrowing",
            Self::WokenByMessage => "WokenByMessage",
            Self::BelowMinimum => "BelowMinimum",
            Self::ScaledIn => "ScaledIn",
            Self::AboveMaximum => "AboveMaximum",
            Self::WaitingForDelay => "WaitingForDelay",
            Self::WaitingForPods => "WaitingForPods",
            Self::AtMaximum => "AtMaximum",
            Self::Steady => "Steady",
            Self::SignalUnavailable => "SignalUnavailable",
        }
    }
}

/// The demand behind a decision, term by term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// ceil(backlog / target).
    pub backlog: i64,
    /// ceil((backlog + growth × lookahead) / target).
    pub growing: i64,
    /// Pods that drain the backlog within `maxDrain` at the per-pod rate (0 when unknown).
    pub drain: i64,
    /// The largest term, at least 1 while anything moves.
    pub total: i64,
}

/// One decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas to run.
    pub replicas: i32,
    /// The demand it follows.
    pub demand: Demand,
    /// Why.
    pub reason: Reason,
    /// For the next decision.
    pub memory: Memory,
}

impl Decision {
    /// The decision in words, with its numbers (status message, Event note).
    pub fn message(&self, current: i32, signal: &Signal) -> String {
        format!(
            "{} → {} replicas ({}): backlog {} ({} ready, {} unacked), {} consumers, publish {:.1}/s, deliver {:.1}/s; demand {} (backlog {}, growing {}, drain {})",
            current,
            self.replicas,
            self.reason.as_str(),
            signal.backlog(),
            signal.ready,
            signal.unacked,
            signal.consumers,
            signal.publish_rate,
            signal.deliver_rate,
            self.demand.total,
            self.demand.backlog,
            self.demand.growing,
            self.demand.drain,
        )
    }
}

fn ceil_div(value: f64, by: f64) -> i64 {
    if value <= 0.0 || by <= 0.0 {
        return 0;
    }
    // Saturating: `as` clamps a huge or infinite quotient to i64::MAX.
    (value / by).ceil() as i64
}

/// The demand for `signal` under `policy`.
pub fn demand(policy: &Policy, signal: &Signal) -> Demand {
    let target = policy.target.max(1) as f64;
    let backlog = signal.backlog() as f64;
    let by_backlog = ceil_div(backlog, target);
    let projected = backlog + signal.growth() * LOOKAHEAD.as_secs_f64();
    let growing = ceil_div(projected, target).max(by_backlog);
    let drain = signal.per_consumer_rate().map_or(0, |rate| {
        ceil_div(backlog, rate * policy.max_drain.as_secs_f64().max(1.0))
    });
    let keep_alive = i64::from(signal.active());
    Demand {
        backlog: by_backlog,
        growing,
        drain,
        total: growing.max(drain).max(keep_alive),
    }
}

/// Decides the replicas for `signal` when `current` runs, at `now` on the caller's clock.
pub fn decide(
    policy: &Policy,
    signal: &Signal,
    current: Current,
    memory: Memory,
    now: Duration,
) -> Decision {
    let demand = demand(policy, signal);
    let (min, max) = (policy.min.max(0), policy.max.max(policy.min.max(0)));
    let wanted = i32::try_from(demand.total.clamp(i64::from(min), i64::from(max))).unwrap_or(max);
    let replicas = current.replicas;
    let decision = |replicas, reason, memory| Decision {
        replicas,
        demand,
        reason,
        memory,
    };
    let cleared = Memory { lower_since: None };
    if replicas < min {
        return decision(wanted.max(min), Reason::BelowMinimum, cleared);
    }
    if replicas > max {
        return decision(max, Reason::AboveMaximum, cleared);
    }
    if wanted > replicas {
        let reason = if replicas == 0 {
            Reason::WokenByMessage
        } else if demand.growing > demand.backlog && i64::from(wanted) > demand.backlog {
            Reason::BacklogGrowing
        } else {
            Reason::ScaledOut
        };
        return decision(wanted, reason, cleared);
    }
    if wanted == replicas {
        let reason = if demand.total > i64::from(max) {
            Reason::AtMaximum
        } else {
            Reason::Steady
        };
        return decision(replicas, reason, cleared);
    }
    // Lower demand: wait for the delay, then one step per decision once the last step finished.
    let since = memory.lower_since.unwrap_or(now);
    let waiting = Memory {
        lower_since: Some(since),
    };
    if now.saturating_sub(since) < policy.scale_down_delay {
        return decision(replicas, Reason::WaitingForDelay, waiting);
    }
    if !current.settled {
        return decision(replicas, Reason::WaitingForPods, waiting);
    }
    decision(replicas - 1, Reason::ScaledIn, waiting)
}

#[cfg(test)]
mod tests;
