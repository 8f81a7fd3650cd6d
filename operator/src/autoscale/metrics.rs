//! The autoscaler's metrics, registered in the operator's registry.
//!
//! Labels are bounded: decision `reason` and signal error `kind` come from fixed sets. Per-stack
//! numbers (backlog, replicas) are in each stack's `status.autoscaling`; the gauges here are sums
//! over every autoscaled stack, refreshed each round.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use super::decide::Reason;
use super::signal::SignalError;

/// Buckets of the round and request durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Sums over the autoscaled stacks of one round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundTotals {
    /// Stacks read this round.
    pub stacks: i64,
    /// Ready + unacknowledged messages.
    pub backlog: i64,
    /// Consumers.
    pub consumers: i64,
    /// Publish rate, messages per second.
    pub publish_rate: f64,
    /// Deliver rate, messages per second.
    pub deliver_rate: f64,
    /// Replicas decided.
    pub desired_replicas: i64,
}

/// Every autoscaler metric.
#[derive(Clone)]
pub struct AutoscaleMetrics {
    decisions: IntCounterVec,
    scale_events: IntCounterVec,
    scale_in_rankings: IntCounterVec,
    signal_errors: IntCounterVec,
    signal_duration: Histogram,
    round_duration: Histogram,
    stacks: IntGauge,
    backlog: IntGauge,
    consumers: IntGauge,
    publish_rate: Gauge,
    deliver_rate: Gauge,
    desired_replicas: IntGauge,
}

impl AutoscaleMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()))
        };
        let m = Self {
            decisions: IntCounterVec::new(
                Opts::new(
                    "pingpong_operator_autoscaler_decisions_total",
                    "Autoscaling decisions, by reason.",
                ),
                &["reason"],
            )?,
            scale_events: IntCounterVec::new(
                Opts::new(
                    "pingpong_operator_autoscaler_scale_events_total",
                    "Changes of a stack's desired pong replicas, by direction (out, in).",
                ),
                &["direction"],
            )?,
            scale_in_rankings: IntCounterVec::new(
                Opts::new(
                    "pingpong_operator_autoscaler_scale_in_rankings_total",
                    "Pod deletion costs set before a scale-in step, by outcome (ranked: every pong \
                     pod annotated with its unacknowledged messages; failed: the ReplicaSet chose).",
                ),
                &["outcome"],
            )?,
            signal_errors: IntCounterVec::new(
                Opts::new(
                    "pingpong_operator_autoscaler_signal_errors_total",
                    "Failed reads of a queue's numbers from the management API, by kind.",
                ),
                &["kind"],
            )?,
            signal_duration: histogram(
                "pingpong_operator_autoscaler_signal_duration_seconds",
                "Time to read one queue's numbers from the management API.",
            )?,
            round_duration: histogram(
                "pingpong_operator_autoscaler_round_duration_seconds",
                "Time of one autoscaler round over every autoscaled stack.",
            )?,
            stacks: IntGauge::new(
                "pingpong_operator_autoscaler_stacks",
                "Stacks with spec.pong.autoscaling read in the last round.",
            )?,
            backlog: IntGauge::new(
                "pingpong_operator_autoscaler_backlog_messages",
                "Ready + unacknowledged messages of every autoscaled stack's queue (last round).",
            )?,
            consumers: IntGauge::new(
                "pingpong_operator_autoscaler_consumers",
                "Consumers on every autoscaled stack's queue (last round).",
            )?,
            publish_rate: Gauge::new(
                "pingpong_operator_autoscaler_publish_rate",
                "Messages per second published into every autoscaled stack's queue (last round).",
            )?,
            deliver_rate: Gauge::new(
                "pingpong_operator_autoscaler_deliver_rate",
                "Messages per second delivered from every autoscaled stack's queue (last round).",
            )?,
            desired_replicas: IntGauge::new(
                "pingpong_operator_autoscaler_desired_replicas",
                "pong replicas decided for every autoscaled stack (last round).",
            )?,
        };
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.scale_events.clone()))?;
        registry.register(Box::new(m.scale_in_rankings.clone()))?;
        registry.register(Box::new(m.signal_errors.clone()))?;
        registry.register(Box::new(m.signal_duration.clone()))?;
        registry.register(Box::new(m.round_duration.clone()))?;
        registry.register(Box::new(m.stacks.clone()))?;
        registry.register(Box::new(m.backlog.clone()))?;
        registry.register(Box::new(m.consumers.clone()))?;
        registry.register(Box::new(m.publish_rate.clone()))?;
        registry.register(Box::new(m.deliver_rate.clone()))?;
        registry.register(Box::new(m.desired_replicas.clone()))?;
        for reason in Reason::ALL {
            m.decisions.with_label_values(&[reason.as_str()]);
        }
        for direction in ["out", "in"] {
            m.scale_events.with_label_values(&[direction]);
        }
        for outcome in ["ranked", "failed"] {
            m.scale_in_rankings.with_label_values(&[outcome]);
        }
        for kind in SignalError::KINDS {
            m.signal_errors.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// Counts one decision, and a scale event when the replicas changed.
    pub fn decided(&self, reason: Reason, from: i32, to: i32) {
        self.decisions.with_label_values(&[reason.as_str()]).inc();
        if to != from {
            let direction = if to > from { "out" } else { "in" };
            self.scale_events.with_label_values(&[direction]).inc();
        }
    }

    /// Counts one ranking of pong's pods before a scale-in step.
    pub fn ranked(&self, ok: bool) {
        let outcome = if ok { "ranked" } else { "failed" };
        self.scale_in_rankings.with_label_values(&[outcome]).inc();
    }

    /// Counts a failed read.
    pub fn signal_failed(&self, kind: &'static str) {
        self.signal_errors.with_label_values(&[kind]).inc();
    }

    /// Records one read's duration.
    pub fn signal_read(&self, seconds: f64) {
        self.signal_duration.observe(seconds);
    }

    /// Records one round.
    pub fn round(&self, seconds: f64, totals: &RoundTotals) {
        self.round_duration.observe(seconds);
        self.stacks.set(totals.stacks);
        self.backlog.set(totals.backlog);
        self.consumers.set(totals.consumers);
        self.publish_rate.set(totals.publish_rate);
        self.deliver_rate.set(totals.deliver_rate);
        self.desired_replicas.set(totals.desired_replicas);
    }

    /// Decisions counted for `reason` (tests).
    pub fn decisions(&self, reason: Reason) -> u64 {
        self.decisions.with_label_values(&[reason.as_str()]).get()
    }
}
