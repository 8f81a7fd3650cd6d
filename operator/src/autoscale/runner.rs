//! The autoscaler loop: one round every interval over the stacks the controller's cache holds,
//! never inside a reconcile.
//!
//! A round reads every autoscaled stack's queue concurrently (at most [`CONCURRENCY`] requests at
//! once, each with a deadline), lists the HorizontalPodAutoscalers once, decides each stack
//! ([`decide`]) and writes `status.autoscaling` only when the decision changed (the write
//! triggers the reconcile that applies the replicas). Cost per round: one management API request
//! per stack, one HPA list, a Secret read per stack only on the first round or after the broker
//! refused the credentials, and a status write and an Event per change.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::decide::{self, Current, Decision, Memory, Reason, Signal};
use super::deletion_cost;
use super::metrics::{AutoscaleMetrics, RoundTotals};
use super::signal::{Credentials, ManagementClient, SignalError, Target};
use super::{FIELD_MANAGER, applied_replicas, policy};
use crate::crd::{AutoscalingStatus, PingPongStack};
use crate::reconcile::events::{self, Notice};
use crate::reconcile::migrate::{WorkloadKind, pod_selector};
use crate::reconcile::names::ChildNames;
use crate::reconcile::report::apply_status_fields;

/// Queues read at once in a round.
pub const CONCURRENCY: usize = 32;
/// Default time between rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Event action of autoscaling Events.
const ACTION: &str = "Autoscale";

/// How the autoscaler reaches the brokers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Time between rounds (`AUTOSCALE_INTERVAL_SECONDS`).
    pub interval: Duration,
    /// Namespace the operator watches (`None`: all), where HorizontalPodAutoscalers are listed.
    pub watch_namespace: Option<String>,
    /// One management API base URL for every stack (`BROKER_MANAGEMENT_URL`), for an operator
    /// running outside the cluster; `None`: each stack's broker Service.
    pub management_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            watch_namespace: None,
            management_url: None,
        }
    }
}

/// What the autoscaler remembers of one stack between rounds.
#[derive(Clone, Debug, Default)]
struct StackState {
    memory: Memory,
    /// The Secret name and what it held.
    credentials: Option<(String, Credentials)>,
    /// The replicas last decided.
    decided: Option<i32>,
    /// The HPAs last reported as conflicting.
    conflicts: BTreeSet<String>,
}

/// One stack's round.
struct Outcome {
    key: String,
    state: StackState,
    signal: Option<Signal>,
    replicas: i32,
}

/// The autoscaler task.
pub struct Autoscaler {
    client: Client,
    recorder: Recorder,
    metrics: AutoscaleMetrics,
    management: ManagementClient,
    settings: Settings,
    started: Instant,
    states: HashMap<String, StackState>,
}

fn key(stack: &PingPongStack) -> String {
    format!(
        "{}/{}",
        stack.namespace().unwrap_or_default(),
        stack.name_any()
    )
}

/// Whether the autoscaler decides this stack's replicas now (not while KEDA does).
pub fn autoscaled(stack: &PingPongStack) -> bool {
    stack
        .spec
        .pong
        .autoscaling
        .as_ref()
        .is_some_and(|a| a.engine.is_operator())
        && !stack.spec.paused
        && stack.metadata.deletion_timestamp.is_none()
}

impl Autoscaler {
    /// An autoscaler that writes with `client` and counts into `metrics`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: AutoscaleMetrics,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            management: ManagementClient::default(),
            settings,
            started: Instant::now(),
            states: HashMap::new(),
        }
    }

    /// Runs rounds over `stacks` until `stop`.
    pub async fn run(
        mut self,
        stacks: Store<DeserializeGuard<PingPongStack>>,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let all = stacks.state();
            let decoded = all.iter().filter_map(|guard| guard.0.as_ref().ok());
            let current: Vec<Arc<PingPongStack>> = decoded
                .clone()
                .filter(|stack| autoscaled(stack))
                .map(|stack| Arc::new(stack.clone()))
                .collect();
            for stack in decoded.filter(|stack| stale_under_keda(stack)) {
                self.clear(stack).await;
            }
            self.round(current).await;
        }
    }

    /// One round over `stacks` (every one autoscaled).
    pub async fn round(&mut self, stacks: Vec<Arc<PingPongStack>>) {
        let started = Instant::now();
        let now = self.started.elapsed();
        // No autoscaled stack, no request at all.
        let hpas = if stacks.is_empty() {
            HashMap::new()
        } else {
            self.hpa_targets().await
        };
        let mut states = std::mem::take(&mut self.states);
        let jobs: Vec<_> = stacks
            .into_iter()
            .map(|stack| {
                let state = states.remove(&key(&stack)).unwrap_or_default();
                let conflicts = hpas
                    .get(&(
                        stack.namespace().unwrap_or_default(),
                        ChildNames::new(&stack.name_any(), None).pong,
                    ))
                    .cloned()
                    .unwrap_or_default();
                (stack, state, conflicts)
            })
            .collect();
        let this = &*self;
        let outcomes: Vec<Outcome> = futures::stream::iter(jobs)
            .map(|(stack, state, conflicts)| this.step(stack, state, conflicts, now))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut totals = RoundTotals::default();
        for outcome in outcomes {
            totals.stacks += 1;
            totals.desired_replicas += i64::from(outcome.replicas);
            if let Some(signal) = outcome.signal {
                totals.backlog += i64::try_from(signal.backlog()).unwrap_or(i64::MAX);
                totals.consumers += i64::from(signal.consumers);
                totals.publish_rate += signal.publish_rate;
                totals.deliver_rate += signal.deliver_rate;
            }
            self.states.insert(outcome.key, outcome.state);
        }
        // Stacks gone or no longer autoscaled are forgotten with `states`.
        self.metrics.round(started.elapsed().as_secs_f64(), &totals);
    }

    /// `(namespace, Deployment)` → names of the HPAs that target it. An HPA list that fails
    /// (no RBAC, no API) finds none, and says so in the log.
    async fn hpa_targets(&self) -> HashMap<(String, String), BTreeSet<String>> {
        let api: Api<HorizontalPodAutoscaler> = match &self.settings.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(error) => {
                tracing::debug!(%error, "cannot list HorizontalPodAutoscalers; assuming none");
                return HashMap::new();
            }
        };
        let mut targets: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for hpa in list {
            let Some(spec) = &hpa.spec else { continue };
            let target = &spec.scale_target_ref;
            if target.kind == "Deployment" {
                targets
                    .entry((hpa.namespace().unwrap_or_default(), target.name.clone()))
                    .or_default()
                    .insert(hpa.name_any());
            }
        }
        targets
    }

    async fn credentials(
        &self,
        namespace: &str,
        secret_name: &str,
    ) -> Result<Credentials, SignalError> {
        super::signal::read_credentials(&self.client, namespace, secret_name).await
    }

    /// Where `stack`'s queue is read.
    fn target(&self, stack: &PingPongStack) -> Target {
        let queue = &stack.spec.rabbitmq.queue;
        let target = match &self.settings.management_url {
            Some(base_url) => Target {
                base_url: base_url.clone(),
                queue: queue.clone(),
                partitions: 1,
            },
            None => Target::in_cluster(
                &ChildNames::new(&stack.name_any(), None).rabbitmq,
                &stack.namespace().unwrap_or_default(),
                queue,
            ),
        };
        // The reconcile refuses an invalid count before anything is applied; the schema bounds
        // it too. One partition is the answer the reconcile's refusal leaves in place.
        let partitions =
            crate::reconcile::validate::partitions(stack.spec.rabbitmq.partitions).unwrap_or(1);
        target.with_partitions(partitions)
    }

    /// Before a scale-in step: sets each pong pod's deletion cost to the messages it holds (one
    /// pod list, one channel list, one annotation apply per pod), so the ReplicaSet removes the
    /// least busy. Returns what the status message says about it; on a failure the log says why
    /// and the ReplicaSet chooses on its own.
    async fn rank_for_scale_in(&self, stack: &PingPongStack, state: &StackState) -> String {
        let namespace = stack.namespace().unwrap_or_default();
        let deployment = ChildNames::new(&stack.name_any(), None).pong;
        let ranked = async {
            // pong's pods as its Deployment selects them (an earlier release's selector until
            // the stack migrates).
            let selector = pod_selector(
                &self.client,
                &namespace,
                WorkloadKind::Deployment,
                &deployment,
            )
            .await
            .map_err(|e| format!("cannot read pong's Deployment: {}", crate::error::chain(&e)))?
            .ok_or("pong's Deployment does not exist".to_owned())?;
            let credentials = state
                .credentials
                .as_ref()
                .map(|(_, c)| c)
                .ok_or("no credentials read yet".to_owned())?;
            let pods = deletion_cost::pong_pods(&self.client, &namespace, &selector)
                .await
                .map_err(|e| format!("cannot list pong's pods: {}", crate::error::chain(&e)))?;
            let channels = self
                .management
                .channels(&self.target(stack), credentials)
                .await
                .map_err(|e| format!("cannot list the broker's channels ({})", e.kind()))?;
            let costs = deletion_cost::deletion_costs(&pods, &channels);
            deletion_cost::annotate(&self.client, &namespace, &costs)
                .await
                .map_err(|e| format!("cannot annotate pong's pods: {}", crate::error::chain(&e)))?;
            Ok::<_, String>(costs)
        };
        let ranked = ranked.await;
        self.metrics.ranked(ranked.is_ok());
        match ranked {
            Ok(costs) => match deletion_cost::least_busy(&costs) {
                Some((pod, held)) => {
                    tracing::info!(stack = %stack.name_any(), namespace = %namespace, pod, held, pods = costs.len(), "pod deletion costs set before scale-in");
                    format!("least busy pod {pod} ({held} unacknowledged) goes first")
                }
                None => "no pong pod to rank".to_owned(),
            },
            Err(why) => {
                tracing::warn!(stack = %stack.name_any(), namespace = %namespace, error = %why, "pod deletion costs not set; the ReplicaSet chooses the pod");
                format!("pod not chosen by load: {why}")
            }
        }
    }

    async fn read_signal(
        &self,
        stack: &PingPongStack,
        state: &mut StackState,
    ) -> Result<Signal, SignalError> {
        let namespace = stack.namespace().unwrap_or_default();
        let names = ChildNames::new(
            &stack.name_any(),
            stack.spec.rabbitmq.credentials_secret.as_deref(),
        );
        let cached = state
            .credentials
            .as_ref()
            .filter(|(name, _)| *name == names.credentials_secret)
            .map(|(_, c)| c.clone());
        let credentials = match cached {
            Some(c) => c,
            None => {
                let c = self
                    .credentials(&namespace, &names.credentials_secret)
                    .await?;
                state.credentials = Some((names.credentials_secret.clone(), c.clone()));
                c
            }
        };
        let target = self.target(stack);
        let started = Instant::now();
        let result = self.management.queue(&target, &credentials).await;
        self.metrics.signal_read(started.elapsed().as_secs_f64());
        if let Err(SignalError::Unauthorized(_)) = &result {
            // Rotated: read the Secret again next round.
            state.credentials = None;
        }
        result
    }

    async fn step(
        &self,
        stack: Arc<PingPongStack>,
        mut state: StackState,
        conflicts: BTreeSet<String>,
        now: Duration,
    ) -> Outcome {
        let key = key(&stack);
        let Some(spec) = &stack.spec.pong.autoscaling else {
            return Outcome {
                key,
                state,
                signal: None,
                replicas: 0,
            };
        };
        let policy = policy(spec);
        let current = state.decided.map_or_else(
            || applied_replicas(&stack),
            |d| d.clamp(policy.min, policy.max),
        );
        let read = self.read_signal(&stack, &mut state).await;
        let status = stack.status.as_ref();
        let running = status.and_then(|s| s.pong).map(|p| p.replicas);
        let (decision, message, signal) = match read {
            Ok(signal) => {
                let settled =
                    running == Some(current) && i64::from(signal.consumers) <= i64::from(current);
                let decision = decide::decide(
                    &policy,
                    &signal,
                    Current {
                        replicas: current,
                        settled,
                    },
                    state.memory,
                    now,
                );
                let message = decision.message(current, &signal);
                (decision, message, Some(signal))
            }
            Err(error) => {
                self.metrics.signal_failed(error.kind());
                let message = format!(
                    "{current} replicas kept: cannot read queue {:?} ({}): {}",
                    stack.spec.rabbitmq.queue,
                    error.kind(),
                    crate::error::chain(&error)
                );
                let decision = Decision {
                    replicas: current,
                    demand: decide::demand(&policy, &Signal::default()),
                    reason: Reason::SignalUnavailable,
                    memory: state.memory,
                };
                (decision, message, None)
            }
        };
        // Scale-in to a pod or more: the least busy pod goes first (to zero, every pod goes).
        let message = if signal.is_some() && (1..current).contains(&decision.replicas) {
            let ranked = self.rank_for_scale_in(&stack, &state).await;
            format!("{message}; {ranked}")
        } else {
            message
        };
        self.metrics
            .decided(decision.reason, current, decision.replicas);
        state.memory = decision.memory;
        state.decided = Some(decision.replicas);
        let message = match conflicts.iter().next() {
            None => message,
            Some(_) => format!(
                "{message}. Refused: HorizontalPodAutoscaler {} also targets the pong Deployment; the operator keeps owning its replicas while spec.pong.autoscaling is set: delete the HPA or remove spec.pong.autoscaling",
                conflicts.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let mut notices = Vec::new();
        if decision.replicas != current {
            notices.push(Notice {
                warning: false,
                reason: decision.reason.as_str().to_owned(),
                action: ACTION,
                note: message.clone(),
            });
        }
        if !conflicts.is_empty() && conflicts != state.conflicts {
            notices.push(Notice {
                warning: true,
                reason: "ConflictingAutoscaler".to_owned(),
                action: ACTION,
                note: message.clone(),
            });
        }
        state.conflicts = conflicts;
        let previous = status.and_then(|s| s.autoscaling.clone());
        let next = next_status(
            previous.as_ref(),
            current,
            &decision,
            signal.as_ref(),
            message,
        );
        if changed(previous.as_ref(), &next)
            && let Err(error) = self.write(&stack, &next).await
        {
            tracing::warn!(
                stack = %stack.name_any(),
                namespace = stack.namespace().as_deref().unwrap_or(""),
                error = %crate::error::chain(&error),
                "cannot write status.autoscaling; deciding again next round"
            );
            // Not decided after all: the next round starts from what the status says.
            state.decided = None;
            notices.clear();
        }
        if !notices.is_empty() {
            events::publish(&self.recorder, &stack.object_ref(&()), notices).await;
        }
        Outcome {
            key,
            state,
            signal,
            replicas: decision.replicas,
        }
    }

    /// Removes `status.autoscaling` (an apply of this field manager without it) from a stack
    /// KEDA now scales: its last decision must not be applied when the stack comes back to the
    /// operator's loop, which then starts from the replicas that run.
    async fn clear(&self, stack: &PingPongStack) {
        let cleared =
            apply_status_fields(&self.client, stack, FIELD_MANAGER, serde_json::json!({}));
        if let Err(error) = cleared.await {
            tracing::warn!(
                stack = %stack.name_any(),
                namespace = stack.namespace().as_deref().unwrap_or(""),
                error = %crate::error::chain(&error),
                "cannot clear status.autoscaling of a stack KEDA scales; trying again next round"
            );
        }
    }

    async fn write(
        &self,
        stack: &PingPongStack,
        status: &AutoscalingStatus,
    ) -> Result<(), kube::Error> {
        let fields = serde_json::json!({ "autoscaling": status });
        apply_status_fields(&self.client, stack, FIELD_MANAGER, fields).await
    }
}

/// Whether `stack` is scaled by KEDA but still shows the operator loop's last decision.
pub fn stale_under_keda(stack: &PingPongStack) -> bool {
    stack
        .spec
        .pong
        .autoscaling
        .as_ref()
        .is_some_and(|a| !a.engine.is_operator())
        && stack
            .status
            .as_ref()
            .is_some_and(|s| s.autoscaling.is_some())
        && !stack.spec.paused
        && stack.metadata.deletion_timestamp.is_none()
}

/// The status of a decision; `lastScaleTime` moves only when the desired replicas change.
fn next_status(
    previous: Option<&AutoscalingStatus>,
    current: i32,
    decision: &Decision,
    signal: Option<&Signal>,
    message: String,
) -> AutoscalingStatus {
    let scaled = previous.is_none_or(|p| p.desired_replicas != decision.replicas);
    let last_scale_time = if scaled && decision.replicas != current {
        Some(Time(Timestamp::now()))
    } else {
        previous.and_then(|p| p.last_scale_time.clone())
    };
    AutoscalingStatus {
        current_replicas: current,
        desired_replicas: decision.replicas,
        backlog: signal
            .map(|s| i64::try_from(s.backlog()).unwrap_or(i64::MAX))
            .or(previous.map(|p| p.backlog))
            .unwrap_or(0),
        consumers: signal
            .map(|s| i64::from(s.consumers))
            .or(previous.map(|p| p.consumers))
            .unwrap_or(0),
        reason: decision.reason.as_str().to_owned(),
        message,
        last_scale_time,
    }
}

/// Whether a status is worth a write: the decision, its reason or the replicas changed (the
/// backlog alone does not: every write triggers a reconcile).
fn changed(previous: Option<&AutoscalingStatus>, next: &AutoscalingStatus) -> bool {
    previous.is_none_or(|p| {
        p.desired_replicas != next.desired_replicas
            || p.current_replicas != next.current_replicas
            || p.reason != next.reason
            || p.message.contains("Refused") != next.message.contains("Refused")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(replicas: i32, reason: Reason) -> Decision {
        Decision {
            replicas,
            demand: decide::demand(
                &policy(&crate::crd::PongAutoscaling {
                    min_replicas: 1,
                    max_replicas: 3,
                    target_backlog_per_replica: 10,
                    scale_down_delay_seconds: 0,
                    max_drain_seconds: 60,
                    engine: crate::crd::AutoscalingEngine::Operator,
                }),
                &Signal::default(),
            ),
            reason,
            memory: Memory::default(),
        }
    }

    #[test]
    fn scale_time_moves_only_with_the_replicas() {
        let signal = Signal {
            ready: 30,
            ..Signal::default()
        };
        let first = next_status(
            None,
            1,
            &decision(3, Reason::ScaledOut),
            Some(&signal),
            "m".into(),
        );
        assert!(first.last_scale_time.is_some());
        assert_eq!((first.backlog, first.desired_replicas), (30, 3));
        let steady = next_status(
            Some(&first),
            3,
            &decision(3, Reason::Steady),
            None,
            "m".into(),
        );
        assert_eq!(steady.last_scale_time, first.last_scale_time);
        assert_eq!(
            steady.backlog, 30,
            "an unreadable signal keeps the last backlog"
        );
    }

    #[test]
    fn only_decision_changes_are_written() {
        let a = next_status(
            None,
            1,
            &decision(1, Reason::Steady),
            None,
            "backlog 1".into(),
        );
        let b = AutoscalingStatus {
            backlog: 5,
            message: "backlog 5".into(),
            ..a.clone()
        };
        assert!(!changed(Some(&a), &b));
        let c = AutoscalingStatus {
            reason: "WaitingForDelay".into(),
            ..a.clone()
        };
        assert!(changed(Some(&a), &c));
        assert!(changed(None, &a));
    }

    #[test]
    fn paused_and_deleted_stacks_are_not_autoscaled() {
        let mut stack = PingPongStack::new("demo", Default::default());
        assert!(!autoscaled(&stack));
        stack.spec.pong.autoscaling = Some(crate::crd::PongAutoscaling {
            min_replicas: 1,
            max_replicas: 1,
            target_backlog_per_replica: 1,
            scale_down_delay_seconds: 0,
            max_drain_seconds: 60,
            engine: crate::crd::AutoscalingEngine::Operator,
        });
        assert!(autoscaled(&stack));
        stack.spec.paused = true;
        assert!(!autoscaled(&stack));
        stack.spec.paused = false;
        if let Some(a) = stack.spec.pong.autoscaling.as_mut() {
            a.engine = crate::crd::AutoscalingEngine::Keda;
        }
        assert!(!autoscaled(&stack), "KEDA decides, not the operator");
        assert!(!stale_under_keda(&stack));
        stack.status = Some(crate::crd::PingPongStackStatus {
            autoscaling: Some(AutoscalingStatus::default()),
            ..crate::crd::PingPongStackStatus::default()
        });
        assert!(stale_under_keda(&stack), "the loop's decision is cleared");
    }
}
