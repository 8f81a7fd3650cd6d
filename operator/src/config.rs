//! The operator's process configuration, read once from the environment at start-up.
//!
//! [`Config::from_lookup`] takes a lookup function so tests need no real environment. It checks
//! every variable and reports *all* problems at once, naming the variable and the expected format.
//! This module must not start anything or talk to the API server.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use crate::crd::GatewayParentRef;
use crate::images::{self, Images};

/// Default address of the `/metrics`, `/healthz` and `/readyz` server.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8080";
/// Log output format (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for clusters.
    Json,
}

impl Images {
    /// Reads only the image variables (for `render`, which needs no cluster settings).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let images = read_images(&|name: &str| std::env::var(name).ok(), &mut problems);
        if problems.is_empty() {
            Ok(images)
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn read_images(
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Images {
    let mut image = |variable: &'static str, default: &str| match lookup(variable)
        .map(|v| v.trim().to_owned())
    {
        None => default.to_owned(),
        Some(v) if v.is_empty() => default.to_owned(),
        Some(v) if v.chars().any(char::is_whitespace) => {
            problems.push(ConfigProblem {
                variable,
                message: format!("{v:?} is not an image reference (no whitespace allowed)"),
            });
            default.to_owned()
        }
        Some(v) => v,
    };
    Images {
        ping: image("PINGPONG_PING_IMAGE", images::PING),
        pong: image("PINGPONG_PONG_IMAGE", images::PONG),
        rabbitmq: image("PINGPONG_RABBITMQ_IMAGE", images::RABBITMQ),
        ..Images::default()
    }
}

/// Secrets a stack may name although they lack the opt-in label
/// [`REFERABLE`](crate::labels::REFERABLE): the list the cluster admin sets in the chart
/// (`PINGPONG_ALLOWED_SECRETS`, comma-separated `namespace/name` entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedSecrets(BTreeSet<(String, String)>);

impl AllowedSecrets {
    /// Parses `namespace/name,namespace/name`; blanks around entries and empty entries are
    /// ignored. The error names the first malformed entry.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    out.insert((ns.to_owned(), name.to_owned()));
                }
                _ => {
                    return Err(format!(
                        "{entry:?} is not a Secret reference; expected namespace/name entries \
                         separated by commas"
                    ));
                }
            }
        }
        Ok(Self(out))
    }

    /// Whether the admin listed the Secret `name` of `namespace`.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0.contains(&(namespace.to_owned(), name.to_owned()))
    }
}

/// Parses the default Gateway of `PINGPONG_DEFAULT_GATEWAY` (`namespace/name`, or `name` for a
/// Gateway in each stack's own namespace) and `PINGPONG_DEFAULT_GATEWAY_SECTION` (a listener).
/// Empty: no default Gateway (stacks that choose no route get an Ingress).
pub fn parse_default_gateway(raw: &str, section: &str) -> Result<Option<GatewayParentRef>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let (namespace, name) = match raw.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, raw),
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !label(name) || namespace.is_some_and(|ns| !label(ns) || ns.len() > 63) {
        return Err(format!(
            "{raw:?} is not a Gateway reference; expected namespace/name (or name for a Gateway \
             in each stack's namespace), lowercase DNS names"
        ));
    }
    let section = section.trim();
    Ok(Some(GatewayParentRef {
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        section_name: (!section.is_empty()).then(|| section.to_owned()),
    }))
}

/// Leader-election identity: which Lease to hold and under which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// Holder identity written into the Lease (`POD_NAME`).
    pub identity: String,
    /// Namespace of the Lease (`POD_NAMESPACE`).
    pub namespace: String,
}

/// Everything the `run` subcommand needs, parsed and checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// Default images for stacks that do not set their own.
    pub images: Images,
    /// Namespace to watch; `None` watches all namespaces (`WATCH_NAMESPACE` empty or unset).
    pub watch_namespace: Option<String>,
    /// Address of the metrics and health server (`METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// Log format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// `Some` when `LEADER_ELECTION` is true (the default); `None` runs without a Lease.
    pub leader_election: Option<LeaderElection>,
    /// Name reported as the Event `reportingInstance` (`POD_NAME`, when set).
    pub instance: Option<String>,
    /// The autoscaler's round interval and broker address.
    pub autoscale: crate::autoscale::runner::Settings,
    /// Secrets stacks may name without the opt-in label (`PINGPONG_ALLOWED_SECRETS`).
    pub allowed_secrets: AllowedSecrets,
    /// The Gateway the HTTPRoute of a stack that chooses no route attaches to
    /// (`PINGPONG_DEFAULT_GATEWAY`, `PINGPONG_DEFAULT_GATEWAY_SECTION`).
    pub default_gateway: Option<GatewayParentRef>,
    /// Traces of each reconcile (`OTEL_*`; off unless an OTLP endpoint is set).
    pub traces: pingpong_otel::TraceConfig,
    /// Exported and dropped spans, registered with the operator's metrics.
    pub spans: pingpong_otel::SpanCounters,
    /// How many stacks may roll to new default images at a time
    /// (`PINGPONG_MAX_CONCURRENT_UPGRADES`, 1 to 1000, default 2).
    pub max_concurrent_upgrades: usize,
}

/// One problem with one environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Every problem found in the environment, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order the variables are read.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid operator configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable name → value function).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned());
        let images = read_images(&lookup, &mut problems);
        let watch_namespace = get("WATCH_NAMESPACE").filter(|v| !v.is_empty());
        let metrics_raw = get("METRICS_ADDR").filter(|v| !v.is_empty());
        let metrics_addr = match metrics_raw
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_ADDR)
            .parse()
        {
            Ok(addr) => addr,
            Err(_) => {
                problems.push(ConfigProblem {
                    variable: "METRICS_ADDR",
                    message: format!(
                        "{:?} is not a socket address; expected HOST:PORT such as {DEFAULT_METRICS_ADDR}",
                        metrics_raw.unwrap_or_default()
                    ),
                });
                SocketAddr::from(([0, 0, 0, 0], 8080))
            }
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.push(ConfigProblem {
                    variable: "LOG_FORMAT",
                    message: format!("{other:?} is not a log format; expected text or json"),
                });
                LogFormat::Text
            }
        };
        let enabled = match get("LEADER_ELECTION").as_deref() {
            None | Some("") | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                problems.push(ConfigProblem {
                    variable: "LEADER_ELECTION",
                    message: format!("{other:?} is not a boolean; expected true or false"),
                });
                false
            }
        };
        let allowed_secrets =
            AllowedSecrets::parse(&get("PINGPONG_ALLOWED_SECRETS").unwrap_or_default())
                .unwrap_or_else(|message| {
                    problems.push(ConfigProblem {
                        variable: "PINGPONG_ALLOWED_SECRETS",
                        message,
                    });
                    AllowedSecrets::default()
                });
        let default_gateway = parse_default_gateway(
            &get("PINGPONG_DEFAULT_GATEWAY").unwrap_or_default(),
            &get("PINGPONG_DEFAULT_GATEWAY_SECTION").unwrap_or_default(),
        )
        .unwrap_or_else(|message| {
            problems.push(ConfigProblem {
                variable: "PINGPONG_DEFAULT_GATEWAY",
                message,
            });
            None
        });
        let pod_name = get("POD_NAME").filter(|v| !v.is_empty());
        let pod_namespace = get("POD_NAMESPACE").filter(|v| !v.is_empty());
        let leader_election = if enabled {
            for (variable, value) in [("POD_NAME", &pod_name), ("POD_NAMESPACE", &pod_namespace)] {
                if value.is_none() {
                    problems.push(ConfigProblem {
                        variable,
                        message: "required when LEADER_ELECTION=true; set it from the downward \
                                  API (fieldRef metadata.name / metadata.namespace) or set \
                                  LEADER_ELECTION=false"
                            .to_owned(),
                    });
                }
            }
            pod_name
                .clone()
                .zip(pod_namespace)
                .map(|(identity, namespace)| LeaderElection {
                    identity,
                    namespace,
                })
        } else {
            None
        };
        let (traces, trace_problems) = pingpong_otel::TraceConfig::parse(&get, "pingpong-operator");
        problems.extend(trace_problems.into_iter().map(|p| ConfigProblem {
            variable: p.variable,
            message: format!("{:?} is not valid; expected {}", p.value, p.expected),
        }));
        let max_concurrent_upgrades =
            match get("PINGPONG_MAX_CONCURRENT_UPGRADES").filter(|v| !v.is_empty()) {
                None => crate::reconcile::upgrade_gate::DEFAULT_MAX_CONCURRENT_UPGRADES,
                Some(raw) => match raw.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => {
                        problems.push(ConfigProblem {
                            variable: "PINGPONG_MAX_CONCURRENT_UPGRADES",
                            message: format!("{raw:?} is not a whole number from 1 to 1000"),
                        });
                        crate::reconcile::upgrade_gate::DEFAULT_MAX_CONCURRENT_UPGRADES
                    }
                },
            };
        let mut autoscale = read_autoscale(&get, &mut problems);
        autoscale.watch_namespace.clone_from(&watch_namespace);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Self {
            images,
            watch_namespace,
            metrics_addr,
            log_format,
            leader_election,
            instance: pod_name,
            autoscale,
            allowed_secrets,
            default_gateway,
            traces,
            spans: pingpong_otel::SpanCounters::default(),
            max_concurrent_upgrades,
        })
    }
}

/// `AUTOSCALE_INTERVAL_SECONDS` (1 to 300, default 5) and `BROKER_MANAGEMENT_URL` (an
/// `http://host:port` for every stack, for an operator outside the cluster; unset: each stack's
/// broker Service).
fn read_autoscale(
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> crate::autoscale::runner::Settings {
    let mut settings = crate::autoscale::runner::Settings::default();
    if let Some(raw) = get("AUTOSCALE_INTERVAL_SECONDS").filter(|v| !v.is_empty()) {
        match raw.parse::<u64>() {
            Ok(seconds) if (1..=300).contains(&seconds) => {
                settings.interval = std::time::Duration::from_secs(seconds);
            }
            _ => problems.push(ConfigProblem {
                variable: "AUTOSCALE_INTERVAL_SECONDS",
                message: format!("{raw:?} is not a whole number of seconds from 1 to 300"),
            }),
        }
    }
    if let Some(raw) = get("BROKER_MANAGEMENT_URL").filter(|v| !v.is_empty()) {
        let valid = raw
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['@', ' ', '?', '#']));
        if valid {
            settings.management_url = Some(raw.trim_end_matches('/').to_owned());
        } else {
            problems.push(ConfigProblem {
                variable: "BROKER_MANAGEMENT_URL",
                // The value is not echoed: it may hold a password.
                message: "is not an http://host:port URL without credentials (the stack's \
                          Secret supplies them)"
                    .to_owned(),
            });
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_without_leader_election() {
        let cfg = parse(&[("LEADER_ELECTION", "false")]).unwrap();
        assert_eq!(cfg.images, Images::default());
        assert_eq!(cfg.watch_namespace, None);
        assert_eq!(cfg.metrics_addr.to_string(), DEFAULT_METRICS_ADDR);
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.leader_election, None);
        assert_eq!(cfg.max_concurrent_upgrades, 2);
    }

    #[test]
    fn max_concurrent_upgrades_is_a_positive_count() {
        let cfg = parse(&[
            ("LEADER_ELECTION", "false"),
            ("PINGPONG_MAX_CONCURRENT_UPGRADES", "5"),
        ])
        .unwrap();
        assert_eq!(cfg.max_concurrent_upgrades, 5);
        for bad in ["0", "-1", "many"] {
            let error = parse(&[
                ("LEADER_ELECTION", "false"),
                ("PINGPONG_MAX_CONCURRENT_UPGRADES", bad),
            ])
            .unwrap_err();
            assert_eq!(
                error.problems[0].variable,
                "PINGPONG_MAX_CONCURRENT_UPGRADES"
            );
        }
    }

    #[test]
    fn the_default_gateway_is_namespace_slash_name_with_an_optional_listener() {
        let cfg = parse(&[("LEADER_ELECTION", "false")]).unwrap();
        assert_eq!(cfg.default_gateway, None);
        let cfg = parse(&[
            ("LEADER_ELECTION", "false"),
            ("PINGPONG_DEFAULT_GATEWAY", " gateway-system/public "),
            ("PINGPONG_DEFAULT_GATEWAY_SECTION", "http"),
        ])
        .unwrap();
        assert_eq!(
            cfg.default_gateway,
            Some(GatewayParentRef {
                name: "public".into(),
                namespace: Some("gateway-system".into()),
                section_name: Some("http".into()),
            })
        );
        let own_namespace = parse_default_gateway("public", "").unwrap().unwrap();
        assert_eq!(own_namespace.namespace, None);
        assert_eq!(own_namespace.section_name, None);
        for bad in ["a/b/c", "/public", "ns/", "Public", "ns/pub lic"] {
            let err = parse(&[
                ("LEADER_ELECTION", "false"),
                ("PINGPONG_DEFAULT_GATEWAY", bad),
            ])
            .unwrap_err();
            assert_eq!(
                err.problems[0].variable, "PINGPONG_DEFAULT_GATEWAY",
                "{bad}"
            );
        }
    }

    #[test]
    fn leader_election_is_on_by_default_and_needs_pod_identity() {
        let err = parse(&[]).unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(vars, ["POD_NAME", "POD_NAMESPACE"]);

        let cfg = parse(&[("POD_NAME", "op-0"), ("POD_NAMESPACE", "pingpong-system")]).unwrap();
        assert_eq!(
            cfg.leader_election,
            Some(LeaderElection {
                identity: "op-0".into(),
                namespace: "pingpong-system".into()
            })
        );
        assert_eq!(cfg.instance.as_deref(), Some("op-0"));
    }

    #[test]
    fn all_values_are_read() {
        let cfg = parse(&[
            ("PINGPONG_PING_IMAGE", "example.com/ping:1"),
            ("PINGPONG_PONG_IMAGE", "example.com/pong:1"),
            ("PINGPONG_RABBITMQ_IMAGE", "rabbitmq:4.1-management"),
            ("WATCH_NAMESPACE", "team-a"),
            ("METRICS_ADDR", "127.0.0.1:9000"),
            ("LOG_FORMAT", "json"),
            ("LEADER_ELECTION", "false"),
        ])
        .unwrap();
        assert_eq!(cfg.images.ping, "example.com/ping:1");
        assert_eq!(cfg.images.pong, "example.com/pong:1");
        assert_eq!(cfg.images.rabbitmq, "rabbitmq:4.1-management");
        assert_eq!(cfg.watch_namespace.as_deref(), Some("team-a"));
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.allowed_secrets, AllowedSecrets::default());
    }

    #[test]
    fn allowed_secrets_are_namespace_slash_name_entries() {
        let cfg = parse(&[
            ("LEADER_ELECTION", "false"),
            ("PINGPONG_ALLOWED_SECRETS", " team-a/db , team-b/cache,"),
        ])
        .unwrap();
        assert!(cfg.allowed_secrets.contains("team-a", "db"));
        assert!(cfg.allowed_secrets.contains("team-b", "cache"));
        assert!(!cfg.allowed_secrets.contains("team-b", "db"));
        for bad in ["db", "team-a/", "/db", "a/b/c"] {
            let err = parse(&[
                ("LEADER_ELECTION", "false"),
                ("PINGPONG_ALLOWED_SECRETS", bad),
            ])
            .unwrap_err();
            assert_eq!(
                err.problems[0].variable, "PINGPONG_ALLOWED_SECRETS",
                "{bad}"
            );
        }
    }

    #[test]
    fn autoscaler_settings() {
        let cfg = parse(&[("LEADER_ELECTION", "false")]).unwrap();
        assert_eq!(cfg.autoscale, crate::autoscale::runner::Settings::default());
        let cfg = parse(&[
            ("LEADER_ELECTION", "false"),
            ("AUTOSCALE_INTERVAL_SECONDS", "2"),
            ("BROKER_MANAGEMENT_URL", "http://127.0.0.1:15672/"),
        ])
        .unwrap();
        assert_eq!(cfg.autoscale.interval, std::time::Duration::from_secs(2));
        assert_eq!(
            cfg.autoscale.management_url.as_deref(),
            Some("http://127.0.0.1:15672")
        );
        let err = parse(&[
            ("LEADER_ELECTION", "false"),
            ("AUTOSCALE_INTERVAL_SECONDS", "0"),
            ("BROKER_MANAGEMENT_URL", "http://user:pw@host:15672"),
        ])
        .unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            ["AUTOSCALE_INTERVAL_SECONDS", "BROKER_MANAGEMENT_URL"]
        );
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(&[
            ("PINGPONG_PING_IMAGE", "bad image"),
            ("METRICS_ADDR", "localhost"),
            ("LOG_FORMAT", "xml"),
            ("LEADER_ELECTION", "maybe"),
        ])
        .unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            [
                "PINGPONG_PING_IMAGE",
                "METRICS_ADDR",
                "LOG_FORMAT",
                "LEADER_ELECTION"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("METRICS_ADDR: \"localhost\" is not a socket address"));
        assert!(text.contains("expected text or json"));
    }
}
