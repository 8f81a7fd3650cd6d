//! `pingpong-operator autoscale`: the same signal and decision outside Kubernetes, for pong
//! replicas run as host processes (and the autoscaling proof test that drives them).
//!
//! Every interval it reads one queue from a management API, decides with [`decide::decide`] and
//! prints the decision as one JSON line on stdout; whoever reads the lines starts or stops pong
//! processes. A scale-in step counts as finished once the queue has no more consumers than the
//! replicas decided (the stopped process cancelled its consumer). Credentials come from
//! `BROKER_USERNAME` and `BROKER_PASSWORD`, never from the command line.

use std::io::Write as _;
use std::time::{Duration, Instant};

use super::decide::{self, Current, Memory, Policy, Reason};
use super::signal::{Credentials, ManagementClient, SignalError, Target};

/// What `autoscale` needs.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// Where and what to read.
    pub target: Target,
    /// The policy.
    pub policy: Policy,
    /// Time between decisions.
    pub interval: Duration,
    /// Replicas running at start.
    pub initial: i32,
}

/// Why `autoscale` stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A credentials variable is missing.
    #[error(
        "{0} is not set: the management API user and password come from BROKER_USERNAME and BROKER_PASSWORD"
    )]
    MissingCredentials(&'static str),
    /// An argument is out of range.
    #[error(
        "invalid arguments: need 0 <= min-replicas <= max-replicas <= 100, max-replicas >= 1, target-backlog-per-replica >= 1, scale-down-delay-seconds >= 0, max-drain-seconds >= 1, interval-ms >= 10, an http:// management URL and a queue"
    )]
    InvalidArguments,
    /// stdout is gone (the reader exited).
    #[error("cannot write the decision to stdout")]
    Stdout(#[source] std::io::Error),
}

/// The settings of the `autoscale` command line, checked as the CRD checks the same fields.
pub fn settings(args: &crate::cli::AutoscaleArgs) -> Result<LocalSettings, LocalError> {
    let spec = crate::crd::PongAutoscaling {
        min_replicas: args.min_replicas,
        max_replicas: args.max_replicas,
        target_backlog_per_replica: args.target_backlog_per_replica,
        scale_down_delay_seconds: args.scale_down_delay_seconds,
        max_drain_seconds: args.max_drain_seconds,
        engine: crate::crd::AutoscalingEngine::Operator,
    };
    let valid = (0..=100).contains(&spec.min_replicas)
        && (1..=100).contains(&spec.max_replicas)
        && spec.min_replicas <= spec.max_replicas
        && spec.target_backlog_per_replica >= 1
        && spec.scale_down_delay_seconds >= 0
        && spec.max_drain_seconds >= 1
        && args.interval_ms >= 10
        && (1..=32).contains(&args.partitions);
    if !valid {
        return Err(LocalError::InvalidArguments);
    }
    if !args.management_url.starts_with("http://") || args.queue.is_empty() {
        return Err(LocalError::InvalidArguments);
    }
    Ok(LocalSettings {
        target: Target {
            base_url: args.management_url.trim_end_matches('/').to_owned(),
            queue: args.queue.clone(),
            partitions: args.partitions,
        },
        policy: super::policy(&spec),
        interval: Duration::from_millis(args.interval_ms),
        initial: args.initial_replicas.clamp(0, spec.max_replicas),
    })
}

/// Reads the credentials from `lookup` (the environment).
pub fn credentials(lookup: impl Fn(&str) -> Option<String>) -> Result<Credentials, LocalError> {
    let get = |name: &'static str| {
        lookup(name)
            .filter(|v| !v.is_empty())
            .ok_or(LocalError::MissingCredentials(name))
    };
    Ok(Credentials {
        username: get("BROKER_USERNAME")?,
        password: get("BROKER_PASSWORD")?,
    })
}

/// One decision as printed.
fn line(
    elapsed: Duration,
    from: i32,
    decision: &decide::Decision,
    signal: Option<&decide::Signal>,
    error: Option<&SignalError>,
) -> serde_json::Value {
    let signal = signal.copied().unwrap_or_default();
    serde_json::json!({
        "t": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "from": from,
        "replicas": decision.replicas,
        "reason": decision.reason.as_str(),
        "demand": decision.demand.total,
        "backlog": signal.backlog(),
        "ready": signal.ready,
        "unacked": signal.unacked,
        "consumers": signal.consumers,
        "publish_rate": signal.publish_rate,
        "deliver_rate": signal.deliver_rate,
        "error": error.map(SignalError::kind),
    })
}

/// Decides every `interval` until `stop` resolves, printing each decision.
pub async fn run(
    settings: LocalSettings,
    credentials: Credentials,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), LocalError> {
    let client = ManagementClient::default();
    let started = Instant::now();
    let mut replicas = settings.initial;
    let mut memory = Memory::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = ticker.tick() => {}
        }
        let now = started.elapsed();
        let (decision, signal, error) = match client.queue(&settings.target, &credentials).await {
            Ok(signal) => {
                let current = Current {
                    replicas,
                    settled: i64::from(signal.consumers) <= i64::from(replicas),
                };
                let d = decide::decide(&settings.policy, &signal, current, memory, now);
                (d, Some(signal), None)
            }
            Err(error) => {
                let d = decide::Decision {
                    replicas,
                    demand: decide::demand(&settings.policy, &decide::Signal::default()),
                    reason: Reason::SignalUnavailable,
                    memory,
                };
                (d, None, Some(error))
            }
        };
        let text = line(now, replicas, &decision, signal.as_ref(), error.as_ref()).to_string();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(LocalError::Stdout)?;
        replicas = decision.replicas;
        memory = decision.memory;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_environment_only() {
        let missing = credentials(|_| None).unwrap_err();
        assert!(missing.to_string().contains("BROKER_USERNAME"));
        let c = credentials(|name| Some(format!("{name}-value"))).unwrap();
        assert_eq!(c.username, "BROKER_USERNAME-value");
    }

    #[test]
    fn a_line_carries_the_decision_and_its_numbers() {
        let policy = Policy {
            min: 0,
            max: 4,
            target: 10,
            scale_down_delay: Duration::from_secs(1),
            max_drain: Duration::from_secs(60),
        };
        let signal = decide::Signal {
            ready: 25,
            ..decide::Signal::default()
        };
        let current = Current {
            replicas: 0,
            settled: true,
        };
        let d = decide::decide(&policy, &signal, current, Memory::default(), Duration::ZERO);
        let value = line(Duration::from_millis(1500), 0, &d, Some(&signal), None);
        assert_eq!(value["replicas"], 3);
        assert_eq!(value["reason"], "WokenByMessage");
        assert_eq!(value["backlog"], 25);
        assert_eq!(value["t"], 1.5);
        assert!(value["error"].is_null());
    }
}
