//! The trace settings, read from the standard `OTEL_*` variables through a
//! lookup function (the process environment in production, a map in tests).
//!
//! Traces are off unless an OTLP endpoint is set. Every bad variable is
//! reported (as a [`Problem`]) together with the others; parsing goes on with
//! the default so one start-up names all of them. This module does no I/O.

use std::fmt;
use std::time::Duration;

/// Disables the SDK entirely when `true`.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// `otlp` (the default) or `none`.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// Base URL of the OTLP/HTTP receiver; traces go to `<base>/v1/traces`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Full URL for traces; wins over [`OTEL_EXPORTER_OTLP_ENDPOINT`].
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Only `http/protobuf` is supported.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Export request timeout in milliseconds.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// The sampler name (see [`Sampler`]).
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The ratio of the ratio samplers, 0 to 1.
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// The `service.name` resource attribute.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Extra resource attributes, `key1=value1,key2=value2` (values percent-encoded as in W3C
/// Baggage); `service.name` here is used only when [`OTEL_SERVICE_NAME`] is unset.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Spans held for export at most; more are dropped and counted.
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// Milliseconds between two exports.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// Spans sent in one export request at most.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// Default [`OTEL_BSP_MAX_QUEUE_SIZE`].
pub const DEFAULT_QUEUE_SIZE: usize = 2048;
/// Default [`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`].
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Default [`OTEL_BSP_SCHEDULE_DELAY`].
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// Default [`OTEL_EXPORTER_OTLP_TIMEOUT`].
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted [`OTEL_BSP_MAX_QUEUE_SIZE`] (bounds the memory spans may hold).
pub const MAX_QUEUE_SIZE: usize = 65_536;

/// One bad variable: its name, the rejected value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable.
    pub variable: &'static str,
    /// The rejected value.
    pub value: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// Which spans are recorded (the `OTEL_TRACES_SAMPLER` values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with its ratio.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the OpenTelemetry default).
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: follow the caller's decision, sample that
    /// ratio of new traces.
    ParentBasedTraceIdRatio(f64),
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlwaysOn => f.write_str("always_on"),
            Self::AlwaysOff => f.write_str("always_off"),
            Self::TraceIdRatio(ratio) => write!(f, "traceidratio({ratio})"),
            Self::ParentBasedAlwaysOn => f.write_str("parentbased_always_on"),
            Self::ParentBasedAlwaysOff => f.write_str("parentbased_always_off"),
            Self::ParentBasedTraceIdRatio(ratio) => write!(f, "parentbased_traceidratio({ratio})"),
        }
    }
}

/// Where and how spans are exported, when traces are on.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The full OTLP/HTTP traces URL (`http://host:port/v1/traces`).
    pub traces_url: String,
    /// Timeout of one export request.
    pub timeout: Duration,
    /// Spans held for export at most.
    pub queue_size: usize,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// Time between two exports.
    pub schedule_delay: Duration,
}

/// The trace settings of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// `None`: traces are off (no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`).
    pub export: Option<Export>,
    /// The sampler.
    pub sampler: Sampler,
    /// `service.name`.
    pub service_name: String,
    /// The other resource attributes, in the order given (without `service.name`).
    pub resource_attributes: Vec<(String, String)>,
}

/// The attribute key [`OTEL_SERVICE_NAME`] sets.
const SERVICE_NAME_KEY: &str = "service.name";

impl TraceConfig {
    /// Traces off, for tests and tools.
    pub fn off(service_name: &str) -> Self {
        Self {
            export: None,
            sampler: Sampler::ParentBasedAlwaysOn,
            service_name: service_name.to_owned(),
            resource_attributes: Vec::new(),
        }
    }

    /// Reads the `OTEL_*` variables through `lookup`; `service_name` is the
    /// default of [`OTEL_SERVICE_NAME`]. Empty values count as unset.
    pub fn parse(
        lookup: &dyn Fn(&str) -> Option<String>,
        service_name: &str,
    ) -> (Self, Vec<Problem>) {
        let mut reader = Reader {
            lookup,
            problems: Vec::new(),
        };
        let mut resource_attributes = reader.resource_attributes();
        let named_in_attributes = resource_attributes
            .iter()
            .position(|(key, _)| key == SERVICE_NAME_KEY)
            .map(|index| resource_attributes.remove(index).1);
        let config = Self {
            sampler: reader.sampler(),
            service_name: reader
                .raw(OTEL_SERVICE_NAME)
                .or(named_in_attributes)
                .unwrap_or_else(|| service_name.to_owned()),
            resource_attributes,
            export: reader.export(),
        };
        (config, reader.problems)
    }

    /// A one-line summary for the start-up log (no secrets are read here).
    pub fn summary(&self) -> String {
        match &self.export {
            None => "off".to_owned(),
            Some(export) => format!(
                "otlp={} sampler={} service={}",
                export.traces_url, self.sampler, self.service_name
            ),
        }
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn raw(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn problem(&mut self, variable: &'static str, value: String, expected: &'static str) {
        self.problems.push(Problem {
            variable,
            value,
            expected,
        });
    }

    fn ratio(&mut self) -> f64 {
        let expected = "a number from 0 to 1";
        match self.raw(OTEL_TRACES_SAMPLER_ARG) {
            None => 1.0,
            Some(value) => match value.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                _ => {
                    self.problem(OTEL_TRACES_SAMPLER_ARG, value, expected);
                    1.0
                }
            },
        }
    }

    fn sampler(&mut self) -> Sampler {
        let Some(value) = self.raw(OTEL_TRACES_SAMPLER) else {
            return Sampler::ParentBasedAlwaysOn;
        };
        match value.as_str() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(self.ratio()),
            "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
            "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(self.ratio()),
            _ => {
                self.problem(
                    OTEL_TRACES_SAMPLER,
                    value,
                    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
                );
                Sampler::ParentBasedAlwaysOn
            }
        }
    }

    /// `OTEL_RESOURCE_ATTRIBUTES`: each bad entry is a problem and is left out; a repeated key
    /// keeps its last value.
    fn resource_attributes(&mut self) -> Vec<(String, String)> {
        let Some(value) = self.raw(OTEL_RESOURCE_ATTRIBUTES) else {
            return Vec::new();
        };
        let mut attributes: Vec<(String, String)> = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(key, value)| {
                let key = key.trim();
                let valid_key =
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_graphic() && c != '%');
                Some((key.to_owned(), percent_decode(value.trim())?)).filter(|_| valid_key)
            });
            match parsed {
                Some((key, value)) => {
                    attributes.retain(|(seen, _)| *seen != key);
                    attributes.push((key, value));
                }
                None => self.problem(
                    OTEL_RESOURCE_ATTRIBUTES,
                    entry.to_owned(),
                    "comma-separated key=value pairs, values percent-encoded UTF-8",
                ),
            }
        }
        attributes
    }

    fn millis(&mut self, variable: &'static str, default: Duration) -> Duration {
        let expected = "a whole number of milliseconds from 1 to 600000";
        match self.raw(variable) {
            None => default,
            Some(value) => match value.parse::<u64>() {
                Ok(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
                _ => {
                    self.problem(variable, value, expected);
                    default
                }
            },
        }
    }

    fn count(&mut self, variable: &'static str, default: usize) -> usize {
        let expected = "a whole number from 1 to 65536";
        match self.raw(variable) {
            None => default,
            Some(value) => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_QUEUE_SIZE).contains(&n) => n,
                _ => {
                    self.problem(variable, value, expected);
                    default
                }
            },
        }
    }

    fn export(&mut self) -> Option<Export> {
        let disabled = match self.raw(OTEL_SDK_DISABLED) {
            None => false,
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    self.problem(OTEL_SDK_DISABLED, value, "true or false");
                    false
                }
            },
        };
        let exporter_on = match self.raw(OTEL_TRACES_EXPORTER) {
            None => true,
            Some(value) => match value.as_str() {
                "otlp" => true,
                "none" => false,
                _ => {
                    self.problem(OTEL_TRACES_EXPORTER, value, "otlp or none");
                    true
                }
            },
        };
        if let Some(value) = self.raw(OTEL_EXPORTER_OTLP_PROTOCOL)
            && value != "http/protobuf"
        {
            self.problem(
                OTEL_EXPORTER_OTLP_PROTOCOL,
                value,
                "http/protobuf (the only protocol built in)",
            );
        }
        let timeout = self.millis(OTEL_EXPORTER_OTLP_TIMEOUT, DEFAULT_EXPORT_TIMEOUT);
        let schedule_delay = self.millis(OTEL_BSP_SCHEDULE_DELAY, DEFAULT_SCHEDULE_DELAY);
        let queue_size = self.count(OTEL_BSP_MAX_QUEUE_SIZE, DEFAULT_QUEUE_SIZE);
        let batch_size = self
            .count(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_BATCH_SIZE)
            .min(queue_size);
        let traces_url = match self.raw(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
            Some(url) => self.url(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, url, false),
            None => self
                .raw(OTEL_EXPORTER_OTLP_ENDPOINT)
                .and_then(|url| self.url(OTEL_EXPORTER_OTLP_ENDPOINT, url, true)),
        }?;
        (!disabled && exporter_on).then_some(Export {
            traces_url,
            timeout,
            queue_size,
            batch_size,
            schedule_delay,
        })
    }

    /// Checks an `http://` URL; `base`: append `/v1/traces` (the OTLP
    /// rule for the signal-less variable).
    fn url(&mut self, variable: &'static str, value: String, base: bool) -> Option<String> {
        let expected = "an http:// URL such as http://127.0.0.1:4318 (no https: export to a collector on the node or in the pod network)";
        match value.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Some(if base {
                format!("{}/v1/traces", value.trim_end_matches('/'))
            } else {
                value
            }),
            _ => {
                self.problem(variable, value, expected);
                None
            }
        }
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail.get(2..)?;
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> (TraceConfig, Vec<Problem>) {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceConfig::parse(&|key| map.get(key).cloned(), "ping")
    }

    #[test]
    fn off_without_an_endpoint() {
        let (config, problems) = parse(&[(OTEL_TRACES_SAMPLER, "always_on")]);
        assert!(problems.is_empty());
        assert_eq!(config.export, None);
        assert_eq!(config.service_name, "ping");
        assert_eq!(config.summary(), "off");
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path() {
        let (config, problems) = parse(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:4318/"),
            (OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
            (OTEL_TRACES_SAMPLER_ARG, "0.25"),
            (OTEL_SERVICE_NAME, "ping-a"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let export = config.export.unwrap();
        assert_eq!(export.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(export.queue_size, DEFAULT_QUEUE_SIZE);
        assert_eq!(config.sampler, Sampler::ParentBasedTraceIdRatio(0.25));
        assert_eq!(config.service_name, "ping-a");
    }

    #[test]
    fn the_traces_endpoint_wins_and_is_taken_as_is() {
        let (config, _) = parse(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://a:4318"),
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://b:4318/custom"),
        ]);
        assert_eq!(config.export.unwrap().traces_url, "http://b:4318/custom");
    }

    #[test]
    fn disabled_or_exporter_none_turns_traces_off() {
        for off in [(OTEL_SDK_DISABLED, "true"), (OTEL_TRACES_EXPORTER, "none")] {
            let (config, problems) = parse(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://a:4318"), off]);
            assert!(problems.is_empty());
            assert_eq!(config.export, None, "{off:?}");
        }
    }

    #[test]
    fn every_bad_variable_is_reported() {
        let (_, problems) = parse(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "https://a:4318"),
            (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
            (OTEL_TRACES_SAMPLER, "traceidratio"),
            (OTEL_TRACES_SAMPLER_ARG, "1.5"),
            (OTEL_BSP_MAX_QUEUE_SIZE, "0"),
            (OTEL_BSP_SCHEDULE_DELAY, "soon"),
            (OTEL_SDK_DISABLED, "maybe"),
        ]);
        let named: Vec<&str> = problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            named,
            [
                OTEL_TRACES_SAMPLER_ARG,
                OTEL_SDK_DISABLED,
                OTEL_EXPORTER_OTLP_PROTOCOL,
                OTEL_BSP_SCHEDULE_DELAY,
                OTEL_BSP_MAX_QUEUE_SIZE,
                OTEL_EXPORTER_OTLP_ENDPOINT,
            ]
        );
    }

    #[test]
    fn resource_attributes_are_decoded_and_service_name_keeps_its_precedence() {
        let (config, problems) = parse(&[(
            OTEL_RESOURCE_ATTRIBUTES,
            "k8s.namespace.name=shop, service.name=from-attrs,deployment.environment=a%2Cb%20c,k8s.namespace.name=shop-2",
        )]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.service_name, "from-attrs");
        assert_eq!(
            config.resource_attributes,
            [
                ("deployment.environment".to_owned(), "a,b c".to_owned()),
                ("k8s.namespace.name".to_owned(), "shop-2".to_owned()),
            ]
        );
        let (config, _) = parse(&[
            (OTEL_RESOURCE_ATTRIBUTES, "service.name=from-attrs"),
            (OTEL_SERVICE_NAME, "from-name"),
        ]);
        assert_eq!(config.service_name, "from-name");
        assert!(config.resource_attributes.is_empty());
    }

    #[test]
    fn bad_resource_attributes_are_named_and_left_out() {
        let (config, problems) = parse(&[(
            OTEL_RESOURCE_ATTRIBUTES,
            "ok=1,novalue,=empty-key,bad=%zz,short=%4,bad key=x",
        )]);
        let rejected: Vec<&str> = problems.iter().map(|p| p.value.as_str()).collect();
        assert_eq!(
            rejected,
            ["novalue", "=empty-key", "bad=%zz", "short=%4", "bad key=x"]
        );
        assert_eq!(
            config.resource_attributes,
            [("ok".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn an_unknown_sampler_is_a_problem() {
        let (config, problems) = parse(&[(OTEL_TRACES_SAMPLER, "sometimes")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(config.sampler, Sampler::ParentBasedAlwaysOn);
    }
}
