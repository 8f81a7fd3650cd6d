//! Trace context on the services' two wires: HTTP request headers and AMQP
//! message headers (W3C `traceparent`/`tracestate`, as the OpenTelemetry
//! messaging conventions ask of a producer), plus the trace settings read
//! with the rest of the configuration.
//!
//! Everything here is a no-op on a disabled span, which every trace span is
//! while traces are off; see [`pingpong_otel`] for the exporter.

use axum::http::HeaderMap;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
pub use pingpong_otel::propagate::{TRACEPARENT, TRACESTATE};
pub use pingpong_otel::{SpanCounters, TARGET, TraceConfig, TraceGuard};

use crate::config::Env;

/// The trace settings of a service and the counters its exporter feeds.
#[derive(Debug, Clone)]
pub struct Traces {
    /// `OTEL_*` settings.
    pub config: TraceConfig,
    /// Exported and dropped spans, registered by the service's `run`.
    pub counters: SpanCounters,
}

impl Traces {
    /// Reads the `OTEL_*` variables; `service_name` is the default
    /// `OTEL_SERVICE_NAME`.
    pub fn from_env(env: &mut Env<'_>, service_name: &str) -> Self {
        let (config, problems) = TraceConfig::parse(&|key| env.raw(key), service_name);
        for problem in problems {
            env.problem(problem.variable, Some(problem.value), problem.expected);
        }
        Self {
            config,
            counters: SpanCounters::default(),
        }
    }

    /// Traces off (tests).
    pub fn off(service_name: &str) -> Self {
        Self {
            config: TraceConfig::off(service_name),
            counters: SpanCounters::default(),
        }
    }
}

/// Makes `span` continue the context of an incoming HTTP request.
pub fn continue_http(span: &tracing::Span, headers: &HeaderMap) {
    pingpong_otel::propagate::continue_from(span, &|key| {
        headers
            .get(key)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
}

/// The AMQP headers carrying `span`'s context; `None` when the span is not
/// traced (then the message gets no headers at all).
pub fn amqp_headers(span: &tracing::Span) -> Option<FieldTable> {
    let mut headers: Option<FieldTable> = None;
    pingpong_otel::propagate::inject(span, &mut |key, value| {
        headers.get_or_insert_with(FieldTable::default).insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    });
    headers
}

/// The value of a text header of an AMQP message.
fn amqp_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes())
            .ok()
            .map(str::to_owned),
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// The remote context of a delivery's headers, if it carries a valid one.
pub fn amqp_context(headers: Option<&FieldTable>) -> Option<pingpong_otel::opentelemetry::Context> {
    let headers = headers?;
    pingpong_otel::propagate::extract(&|key| amqp_text(headers, key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_delivery_header_gives_the_remote_context() {
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(PARENT)),
        );
        let cx = amqp_context(Some(&headers)).unwrap();
        let span = pingpong_otel::propagate::remote_span_context(&cx);
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn no_or_foreign_headers_give_no_context() {
        assert!(amqp_context(None).is_none());
        let mut headers = FieldTable::default();
        headers.insert(TRACEPARENT.into(), AMQPValue::LongLongInt(7));
        assert!(amqp_context(Some(&headers)).is_none());
    }

    #[test]
    fn an_untraced_span_adds_no_headers() {
        assert!(amqp_headers(&tracing::Span::none()).is_none());
    }
}
