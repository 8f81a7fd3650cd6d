//! The running broker's own view before a RabbitMQ version change: which stable feature flags
//! are not enabled (`GET /api/feature-flags`, what `rabbitmqctl list_feature_flags` shows) and
//! which deprecated features are in use (`GET /api/deprecated-features/used`, RabbitMQ 3.13 and
//! newer; an older broker has no such path, answers 404 or 406, and has none to report).
//!
//! RabbitMQ refuses to start a node of the next series while a feature flag that series requires
//! is disabled (`required feature flag not enabled`), and a later series removes deprecated
//! features, so both must be clear before each step ([`BrokerView::refusal`]). Parsing and the
//! verdict are pure; [`read`] does the two requests. `pingpong-operator rabbitmq-upgrade-check`
//! runs them with the step rule of [`crate::reconcile::validate::rabbitmq_upgrade`]; the
//! reconcile asks a ready broker pod the same before it applies an image of another series
//! ([`ask_running`]).

use std::net::IpAddr;

use kube::Client;
use serde::Deserialize;

use super::runner::{broker_pods, list_broker_pods, management_url};
use super::verdict::BrokerPod;
use crate::autoscale::signal::{Credentials, ManagementClient, SignalError, read_credentials};
use crate::reconcile::names::ChildNames;
use crate::reconcile::validate::rabbitmq_upgrade::{Series, Step, step};

/// The feature flag list.
pub const FEATURE_FLAGS_PATH: &str = "/api/feature-flags";
/// The deprecated features some client or queue uses now.
pub const DEPRECATED_USED_PATH: &str = "/api/deprecated-features/used";

/// One entry of `GET /api/feature-flags` (other fields are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct FeatureFlag {
    /// The flag's name (`quorum_queue`).
    pub name: String,
    /// `enabled`, `disabled`, `state_changing` or `unavailable`.
    pub state: String,
    /// `required`, `stable` or `experimental`.
    pub stability: String,
}

/// One entry of `GET /api/deprecated-features/used` (other fields are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
struct DeprecatedFeature {
    name: String,
}

/// What the broker reports that matters before a version change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerView {
    /// Stable (or required) feature flags that are not enabled, sorted.
    pub disabled_feature_flags: Vec<String>,
    /// Deprecated features in use, sorted.
    pub deprecated_features_in_use: Vec<String>,
    /// How many feature flags the broker listed.
    pub feature_flags: usize,
}

impl BrokerView {
    /// Why the version change must wait, naming what to fix; `None` when nothing blocks it.
    pub fn refusal(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.disabled_feature_flags.is_empty() {
            parts.push(format!(
                "feature flags not enabled: {} (enable them first: rabbitmqctl \
                 enable_feature_flag all)",
                self.disabled_feature_flags.join(", ")
            ));
        }
        if !self.deprecated_features_in_use.is_empty() {
            parts.push(format!(
                "deprecated features in use: {} (a later RabbitMQ removes them: stop using them \
                 first; rabbitmq-diagnostics list_deprecated_features_used names them)",
                self.deprecated_features_in_use.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Parses `GET /api/feature-flags`.
pub fn parse_feature_flags(body: &[u8]) -> Result<Vec<FeatureFlag>, SignalError> {
    serde_json::from_slice(body).map_err(|e| SignalError::Parse(e.to_string()))
}

/// The names of the flags that must be enabled before an upgrade and are not (pure): every
/// `stable` or `required` flag whose state is not `enabled`; experimental ones are left alone.
pub fn disabled_stable(flags: &[FeatureFlag]) -> Vec<String> {
    let mut names: Vec<String> = flags
        .iter()
        .filter(|f| f.stability != "experimental" && f.state != "enabled")
        .map(|f| f.name.clone())
        .collect();
    names.sort();
    names
}

/// Parses `GET /api/deprecated-features/used` into the features' names, sorted.
pub fn parse_deprecated_used(body: &[u8]) -> Result<Vec<String>, SignalError> {
    let features: Vec<DeprecatedFeature> =
        serde_json::from_slice(body).map_err(|e| SignalError::Parse(e.to_string()))?;
    let mut names: Vec<String> = features.into_iter().map(|f| f.name).collect();
    names.sort();
    Ok(names)
}

/// Reads the broker's view from the management API at `base_url` (e.g.
/// `http://10.0.0.5:15672`), two requests of at most 3 s each.
pub async fn read(
    client: &ManagementClient,
    base_url: &str,
    credentials: &Credentials,
) -> Result<BrokerView, SignalError> {
    let base = base_url.trim_end_matches('/');
    let flags = client
        .get_ok(format!("{base}{FEATURE_FLAGS_PATH}"), credentials)
        .await?;
    let flags = parse_feature_flags(&flags)?;
    let deprecated = match client
        .get_ok(format!("{base}{DEPRECATED_USED_PATH}"), credentials)
        .await
    {
        Ok(body) => parse_deprecated_used(&body)?,
        // Before RabbitMQ 3.13 there are no deprecated features to report and no such path:
        // the management API answers an unknown path with 404, or with 406 to a JSON request
        // (its web UI's catch-all route; seen on 3.10.8).
        Err(SignalError::Status(404 | 406)) => Vec::new(),
        Err(error) => return Err(error),
    };
    Ok(BrokerView {
        disabled_feature_flags: disabled_stable(&flags),
        deprecated_features_in_use: deprecated,
        feature_flags: flags.len(),
    })
}

/// Where the reconcile reads a running broker's view before a change of series.
#[derive(Clone)]
pub enum BrokerViews {
    /// The management API of a ready broker pod, at the pod's IP, with the stack's
    /// credentials (what the operator does).
    Pods(Box<ManagementClient>),
    /// This answer for every broker, without a request (the reconcile's tests on the in-memory
    /// API, whose pods have no broker behind them).
    Fixed(Result<BrokerView, String>),
}

impl Default for BrokerViews {
    fn default() -> Self {
        Self::Pods(Box::default())
    }
}

/// A running broker's view, and the pod that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The broker pod asked (empty for [`BrokerViews::Fixed`]).
    pub pod: String,
    /// What it reported.
    pub view: BrokerView,
}

/// The first ready broker pod with an address among `pods` ([`super::runner::broker_pods`])
/// and its management API (pure).
pub fn first_ready(pods: &[(BrokerPod, Option<IpAddr>)]) -> Option<(String, String)> {
    pods.iter().find_map(|(pod, ip)| match (pod.ready, ip) {
        (true, Some(ip)) => Some((pod.name.clone(), management_url(*ip))),
        _ => None,
    })
}

/// Asks the running broker of the stack `stack` in `namespace` (its children named `names`)
/// for its view: one pod list, a Secret read and two requests of at most 3 s each. The error
/// says what could not be read, for the stack's condition.
pub async fn ask_running(
    views: &BrokerViews,
    client: &Client,
    namespace: &str,
    stack: &str,
    names: &ChildNames,
) -> Result<Asked, String> {
    let management = match views {
        BrokerViews::Fixed(answer) => {
            return answer.clone().map(|view| Asked {
                pod: String::new(),
                view,
            });
        }
        BrokerViews::Pods(management) => management,
    };
    let listed = list_broker_pods(client, namespace, stack, names)
        .await
        .map_err(|e| format!("listing the broker pods: {}", crate::error::chain(&e)))?;
    let pods = broker_pods(&listed, &names.rabbitmq_headless, namespace);
    let (pod, url) =
        first_ready(&pods).ok_or_else(|| "no broker pod is ready to answer".to_owned())?;
    let credentials = read_credentials(client, namespace, &names.credentials_secret)
        .await
        .map_err(|e| {
            format!(
                "reading the broker's credentials: {}",
                crate::error::chain(&e)
            )
        })?;
    let view = read(management, &url, &credentials)
        .await
        .map_err(|e| format!("asking {pod} ({url}): {}", crate::error::chain(&e)))?;
    Ok(Asked { pod, view })
}

/// `pingpong-operator rabbitmq-upgrade-check`: reads the view of the broker at
/// `management_url` and judges moving it from `from` to `to` ([`verdict`]).
pub async fn check(
    management_url: &str,
    from: &str,
    to: &str,
    credentials: &Credentials,
) -> Result<CheckReport, SignalError> {
    let view = read(&ManagementClient::default(), management_url, credentials).await?;
    Ok(verdict(from, to, &view))
}

/// What `pingpong-operator rabbitmq-upgrade-check` concludes, printed as one JSON object.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The image the broker runs.
    pub from: String,
    /// The image to move to.
    pub to: String,
    /// The version step ([`step_name`]).
    pub step: &'static str,
    /// Stable feature flags not enabled.
    pub disabled_feature_flags: Vec<String>,
    /// Deprecated features in use.
    pub deprecated_features_in_use: Vec<String>,
    /// Whether RabbitMQ can take the change now.
    pub ok: bool,
    /// Why not, naming what to do; empty when `ok`.
    pub message: String,
}

/// The name of a step in reports.
pub fn step_name(step: &Step) -> &'static str {
    match step {
        Step::SameSeries => "SameSeries",
        Step::Supported => "Supported",
        Step::Downgrade => "Downgrade",
        Step::Skips { .. } => "Skips",
    }
}

/// The verdict on moving a broker that runs `from` (whose view is `view`) to `to` (pure): the
/// step must be one RabbitMQ supports and, for a change of series, the view must show nothing
/// blocking.
pub fn verdict(from: &str, to: &str, view: &BrokerView) -> CheckReport {
    let (step, mut problems) = match (Series::of_image(from), Series::of_image(to)) {
        (Some(a), Some(b)) => {
            let step = step(a, b);
            let problem = match &step {
                Step::SameSeries | Step::Supported => None,
                Step::Downgrade => Some(format!(
                    "{a} → {b} is a downgrade, which RabbitMQ does not support"
                )),
                Step::Skips { first } => Some(format!(
                    "{a} → {b} skips {first}: RabbitMQ upgrades one series at a time; move to {first} first"
                )),
            };
            (step_name(&step), problem.into_iter().collect::<Vec<_>>())
        }
        _ => (
            "Unknown",
            vec![format!(
                "the RabbitMQ series of {from} or {to} cannot be read from its tag"
            )],
        ),
    };
    if step != "SameSeries" {
        problems.extend(view.refusal());
    }
    CheckReport {
        from: from.to_owned(),
        to: to.to_owned(),
        step,
        disabled_feature_flags: view.disabled_feature_flags.clone(),
        deprecated_features_in_use: view.deprecated_features_in_use.clone(),
        ok: problems.is_empty(),
        message: problems.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ready_pod_with_an_address_answers() {
        let pod = |name: &str, ready: bool, ip: Option<&str>| {
            let pod = BrokerPod {
                name: name.to_owned(),
                node: format!("rabbit@{name}"),
                ready,
            };
            (pod, ip.map(|ip| ip.parse::<IpAddr>().unwrap()))
        };
        let pods = vec![
            pod("b-0", false, Some("10.0.0.4")),
            pod("b-1", true, None),
            pod("b-2", true, Some("fd00::7")),
            pod("b-3", true, Some("10.0.0.9")),
        ];
        assert_eq!(
            first_ready(&pods),
            Some(("b-2".to_owned(), "http://[fd00::7]:15672".to_owned()))
        );
        assert_eq!(
            first_ready(&pods[3..]),
            Some(("b-3".to_owned(), "http://10.0.0.9:15672".to_owned()))
        );
        assert_eq!(first_ready(&pods[..2]), None);
    }

    /// The shape RabbitMQ 3.10 to 4.x answer (fields abridged).
    const FLAGS: &str = r#"[
        {"name":"quorum_queue","desc":"Support queues of type `quorum`","doc_url":"",
         "stability":"stable","provided_by":"rabbit","state":"enabled"},
        {"name":"stream_queue","desc":"","doc_url":"","stability":"stable",
         "provided_by":"rabbit","state":"disabled"},
        {"name":"classic_mirrored_queue_version","desc":"","doc_url":"","stability":"required",
         "provided_by":"rabbit","state":"disabled"},
        {"name":"khepri_db","desc":"","doc_url":"","stability":"experimental",
         "provided_by":"rabbit","state":"disabled"},
        {"name":"drop_unroutable_metric","desc":"","doc_url":"","stability":"stable",
         "provided_by":"rabbitmq_management_agent","state":"unavailable"}
    ]"#;

    #[test]
    fn disabled_stable_and_required_flags_are_named_experimental_ones_are_not() {
        let flags = parse_feature_flags(FLAGS.as_bytes()).unwrap();
        assert_eq!(flags.len(), 5);
        assert_eq!(
            disabled_stable(&flags),
            [
                "classic_mirrored_queue_version",
                "drop_unroutable_metric",
                "stream_queue"
            ]
        );
    }

    #[test]
    fn deprecated_features_in_use_are_named() {
        let body = r#"[{"name":"transient_nonexcl_queues","desc":"","deprecation_phase":
            "permitted_by_default","provided_by":"rabbit","doc_url":""},
            {"name":"global_qos","deprecation_phase":"permitted_by_default"}]"#;
        assert_eq!(
            parse_deprecated_used(body.as_bytes()).unwrap(),
            ["global_qos", "transient_nonexcl_queues"]
        );
        assert_eq!(parse_deprecated_used(b"[]").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [&b"{}"[..], b"[{\"name\":1}]", b"not json"] {
            assert!(parse_feature_flags(body).is_err());
            assert!(parse_deprecated_used(body).is_err());
        }
    }

    #[test]
    fn the_verdict_takes_the_step_and_the_view() {
        let clear = BrokerView::default();
        let flags = BrokerView {
            disabled_feature_flags: vec!["stream_queue".into()],
            ..BrokerView::default()
        };
        for (from, to, view, step, ok, says) in [
            (
                "rabbitmq:4.1",
                "rabbitmq:4.2",
                &clear,
                "Supported",
                true,
                "",
            ),
            (
                "rabbitmq:4.1",
                "rabbitmq:4.2",
                &flags,
                "Supported",
                false,
                "stream_queue",
            ),
            (
                "rabbitmq:4.2.0",
                "rabbitmq:4.2.1",
                &flags,
                "SameSeries",
                true,
                "",
            ),
            (
                "rabbitmq:4.0",
                "rabbitmq:4.2",
                &clear,
                "Skips",
                false,
                "skips 4.1",
            ),
            (
                "rabbitmq:4.2",
                "rabbitmq:4.1",
                &clear,
                "Downgrade",
                false,
                "downgrade",
            ),
            (
                "rabbitmq:4.2",
                "rabbitmq:latest",
                &clear,
                "Unknown",
                false,
                "cannot be read",
            ),
        ] {
            let report = verdict(from, to, view);
            assert_eq!(
                (report.step, report.ok),
                (step, ok),
                "{from} → {to}: {report:?}"
            );
            assert!(report.message.contains(says), "{says:?} not in {report:?}");
            assert_eq!(report.message.is_empty(), ok);
        }
    }

    #[test]
    fn the_refusal_names_what_to_fix() {
        assert_eq!(BrokerView::default().refusal(), None);
        let view = BrokerView {
            disabled_feature_flags: vec!["stream_queue".into()],
            deprecated_features_in_use: vec!["global_qos".into()],
            feature_flags: 10,
        };
        let refusal = view.refusal().unwrap();
        for part in [
            "feature flags not enabled: stream_queue",
            "rabbitmqctl enable_feature_flag all",
            "deprecated features in use: global_qos",
        ] {
            assert!(refusal.contains(part), "{part:?} not in {refusal}");
        }
    }
}
