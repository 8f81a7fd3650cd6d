//! The operator's Prometheus metrics, in a [`Registry`] the process owns and passes around.
//!
//! Labels are bounded: reconcile `result`, error `kind()`, child `kind`, `operation` and `outcome`
//! come from fixed sets. Object names, UIDs and error text never become label values; per-stack
//! state belongs in the stack's status. This module must not read or write the API.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Histogram buckets of `pingpong_operator_reconcile_duration_seconds`, in seconds.
pub const RECONCILE_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Values of the `result` label of `pingpong_operator_reconciliations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Children applied and status reported.
    Success,
    /// The spec cannot be realised; status says why, nothing was applied.
    Invalid,
    /// `spec.paused` is true; status reported, no child written.
    Paused,
    /// An API call failed; retried with backoff.
    Error,
    /// The stack is being deleted; the garbage collector removes its children.
    Skipped,
}

impl ReconcileResult {
    /// Every value, so the series exist (at zero) from the first scrape.
    pub const ALL: [Self; 5] = [
        Self::Success,
        Self::Invalid,
        Self::Paused,
        Self::Error,
        Self::Skipped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Invalid => "invalid",
            Self::Paused => "paused",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }
}

/// What was done to a child object (`operation` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildOperation {
    /// Server-side apply.
    Apply,
    /// Creation of a generated Secret (`create`, an existing one is left alone).
    Create,
    /// Deletion of an object the plan no longer contains.
    Delete,
    /// An apply left out: the desired object and the child are as last applied
    /// (see `reconcile::applied`).
    Skip,
}

impl ChildOperation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Skip => "skip",
        }
    }
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    reconcile_duration: Histogram,
    reconcile_errors: IntCounterVec,
    child_operations: IntCounterVec,
    stacks_managed: IntGauge,
    stacks_ready: IntGauge,
    leader: IntGauge,
    /// The autoscaler's metrics, in the same registry.
    pub autoscale: crate::autoscale::metrics::AutoscaleMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them in a fresh registry (span counters of their own).
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_spans(pingpong_otel::SpanCounters::default())
    }

    /// Creates the metrics with `spans`, the counters the trace exporter feeds
    /// (`pingpong_operator_trace_spans_*`), and registers them in a fresh registry.
    pub fn with_spans(spans: pingpong_otel::SpanCounters) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        spans.register(&registry, "pingpong_operator")?;
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "pingpong_operator_reconciliations_total",
                "Reconciliations of PingPongStack objects, by result.",
            ),
            &["result"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "pingpong_operator_reconcile_duration_seconds",
                "Time spent in one reconciliation of a PingPongStack.",
            )
            .buckets(RECONCILE_DURATION_BUCKETS.to_vec()),
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "pingpong_operator_reconcile_errors_total",
                "Failed reconciliations, by error kind.",
            ),
            &["error"],
        )?;
        let child_operations = IntCounterVec::new(
            Opts::new(
                "pingpong_operator_child_operations_total",
                "Server-side applies and orphan deletions of child objects, by kind and outcome.",
            ),
            &["kind", "operation", "outcome"],
        )?;
        let stacks_managed = IntGauge::new(
            "pingpong_operator_stacks_managed",
            "PingPongStack objects currently watched by this operator.",
        )?;
        let stacks_ready = IntGauge::new(
            "pingpong_operator_stacks_ready",
            "PingPongStack objects whose Ready condition is True.",
        )?;
        let leader = IntGauge::new(
            "pingpong_operator_leader",
            "1 while this replica holds the leader Lease (or runs without leader election).",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(child_operations.clone()))?;
        registry.register(Box::new(stacks_managed.clone()))?;
        registry.register(Box::new(stacks_ready.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        let autoscale = crate::autoscale::metrics::AutoscaleMetrics::register(&registry)?;
        for result in ReconcileResult::ALL {
            reconciliations.with_label_values(&[result.as_str()]);
        }
        Ok(Self {
            registry,
            reconciliations,
            reconcile_duration,
            reconcile_errors,
            child_operations,
            stacks_managed,
            stacks_ready,
            leader,
            autoscale,
        })
    }

    /// The registry, for the `/metrics` endpoint and for tests.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts timing one reconciliation; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self) -> prometheus::HistogramTimer {
        self.reconcile_duration.start_timer()
    }

    /// Counts one finished reconciliation.
    pub fn reconciled(&self, result: ReconcileResult) {
        self.reconciliations
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Counts one failed reconciliation by the error's `kind()`.
    pub fn reconcile_failed(&self, kind: &'static str) {
        self.reconcile_errors.with_label_values(&[kind]).inc();
    }

    /// Counts one apply or delete of a child `kind` (a Kubernetes kind name).
    pub fn child_operation(&self, kind: &'static str, operation: ChildOperation, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.child_operations
            .with_label_values(&[kind, operation.as_str(), outcome])
            .inc();
    }

    /// Sets the number of watched stacks and how many of them are Ready.
    pub fn set_stacks(&self, managed: usize, ready: usize) {
        self.stacks_managed
            .set(i64::try_from(managed).unwrap_or(i64::MAX));
        self.stacks_ready
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    /// Records whether this replica currently leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Renders the registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// Reads a counter value (for tests and the benchmark).
    pub fn reconciliations(&self, result: ReconcileResult) -> u64 {
        self.reconciliations
            .with_label_values(&[result.as_str()])
            .get()
    }

    /// Reads the error counter for `kind` (for tests).
    pub fn reconcile_errors(&self, kind: &str) -> u64 {
        self.reconcile_errors.with_label_values(&[kind]).get()
    }

    /// Reads a child-operation counter (for tests).
    pub fn child_operations(&self, kind: &str, operation: ChildOperation, ok: bool) -> u64 {
        let outcome = if ok { "ok" } else { "error" };
        self.child_operations
            .with_label_values(&[kind, operation.as_str(), outcome])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in list of exported names (`operator/metrics.txt`, also read by the Grafana
    /// dashboard test): renaming a metric breaks dashboards, so a rename must show up in review.
    fn exported() -> Vec<&'static str> {
        include_str!("../metrics.txt")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    }

    #[test]
    fn exported_names_match_the_checked_in_list() {
        let m = Metrics::new().unwrap();
        m.reconcile_failed("ApplyFailed");
        m.child_operation("Deployment", ChildOperation::Apply, true);
        drop(m.reconcile_timer());
        let mut names: Vec<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        names.sort();
        assert_eq!(names, exported());
    }

    #[test]
    fn counters_and_text_format() {
        let m = Metrics::new().unwrap();
        m.reconciled(ReconcileResult::Success);
        m.reconciled(ReconcileResult::Success);
        m.reconcile_failed("ApplyConflict");
        m.set_stacks(3, 2);
        m.set_leader(true);
        assert_eq!(m.reconciliations(ReconcileResult::Success), 2);
        assert_eq!(m.reconciliations(ReconcileResult::Error), 0);
        let text = m.encode().unwrap();
        assert!(text.contains("pingpong_operator_reconciliations_total{result=\"success\"} 2"));
        assert!(text.contains("pingpong_operator_reconciliations_total{result=\"paused\"} 0"));
        assert!(
            text.contains("pingpong_operator_reconcile_errors_total{error=\"ApplyConflict\"} 1")
        );
        assert!(text.contains("pingpong_operator_stacks_managed 3"));
        assert!(text.contains("pingpong_operator_stacks_ready 2"));
        assert!(text.contains("pingpong_operator_leader 1"));
    }
}
