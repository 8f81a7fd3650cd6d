//! W3C trace context (`traceparent`, `tracestate`) in and out of carriers.
//!
//! The carriers are plain lookup and insert functions, so this crate knows
//! neither HTTP header maps nor AMQP field tables. Every function here does
//! nothing (and allocates nothing) when the span is disabled, which is the
//! case whenever traces are off.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C `traceparent` header / AMQP header name.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header / AMQP header name.
pub const TRACESTATE: &str = "tracestate";

struct Pairs {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Extractor for Pairs {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

struct Insert<'a>(&'a mut dyn FnMut(&'static str, String));

impl Injector for Insert<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => (self.0)(TRACEPARENT, value),
            TRACESTATE => (self.0)(TRACESTATE, value),
            _ => {}
        }
    }
}

/// The remote context carried by `lookup` (`traceparent`, `tracestate`);
/// `None` when absent or malformed.
pub fn extract(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Context> {
    let pairs = Pairs {
        traceparent: lookup(TRACEPARENT),
        tracestate: lookup(TRACESTATE),
    };
    pairs.traceparent.as_ref()?;
    let cx = TraceContextPropagator::new().extract(&pairs);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` continue the remote context in `lookup`, when the span is
/// recorded and the carrier holds a valid context.
pub fn continue_from(span: &tracing::Span, lookup: &dyn Fn(&str) -> Option<String>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = extract(lookup) {
        let _ = span.set_parent(cx);
    }
}

/// Calls `insert` with the `traceparent` (and `tracestate`) of `span`;
/// nothing when the span is disabled or not exported.
pub fn inject(span: &tracing::Span, insert: &mut dyn FnMut(&'static str, String)) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut Insert(insert));
}

/// The span context of a remote carrier, for a link.
pub fn remote_span_context(cx: &Context) -> SpanContext {
    cx.span().span_context().clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extracts_a_valid_traceparent() {
        let cx = extract(&|key| (key == TRACEPARENT).then(|| PARENT.to_owned())).unwrap();
        let span = remote_span_context(&cx);
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span.is_sampled());
        assert!(span.is_remote());
    }

    #[test]
    fn ignores_absent_or_malformed_context() {
        assert!(extract(&|_| None).is_none());
        assert!(extract(&|key| (key == TRACEPARENT).then(|| "00-zz-01".to_owned())).is_none());
    }

    #[test]
    fn a_disabled_span_injects_nothing() {
        let mut inserted = Vec::new();
        inject(&tracing::Span::none(), &mut |key, value| {
            inserted.push((key, value))
        });
        assert!(inserted.is_empty());
    }
}
