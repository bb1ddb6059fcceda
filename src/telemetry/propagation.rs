//! W3C Trace Context over AMQP headers: reading a message's `traceparent`/`tracestate` into a
//! parent context, and writing a span's context onto a message — the same two headers the
//! OpenTelemetry instrumentations of RabbitMQ clients (Java, .NET, amqplib) use, so that traces
//! cross the broker in both directions.
//!
//! Pure over a lapin [`FieldTable`]: the parsing and formatting are the SDK's
//! [`TraceContextPropagator`]'s (the specification's rules for versions, flags and malformed
//! values are not ours to re-implement); this module only adapts the header table to it. A header
//! may arrive as a long or a short string, depending on the client that wrote it.

#[cfg(test)]
use crate::amqp::header_text;
use crate::amqp::long_string;
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The W3C header carrying the trace id, the parent span id and the sampled flag.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendors' trace state, passed on as received.
pub const TRACESTATE: &str = "tracestate";

struct Reading<'a>(&'a FieldTable);

impl Extractor for Reading<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // `header_text` copies; the propagator wants a borrow, so read the string in place.
        match self.0.inner().get(key)? {
            lapin::types::AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
            lapin::types::AMQPValue::ShortString(text) => Some(text.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

struct Writing<'a>(&'a mut FieldTable);

impl Injector for Writing<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(ShortString::from(key), long_string(&value));
    }
}

/// The remote parent a message's headers name, or an empty context (a new root) when they name
/// none or a malformed one.
pub(crate) fn extract(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&Reading(headers)),
        None => Context::new(),
    }
}

/// Writes `context`'s span onto `headers` as `traceparent` (and `tracestate` when it has one),
/// replacing what was there; a context without a valid span (tracing off) writes nothing.
pub(crate) fn inject(context: &Context, headers: &mut FieldTable) {
    if !context.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(context, &mut Writing(headers));
}

/// The context a process was started in: `TRACEPARENT`/`TRACESTATE` in its environment (the
/// OpenTelemetry convention for carrying context into a command), read through `lookup`; `None`
/// when they name none.
pub(crate) fn inherited(lookup: impl Fn(&str) -> Option<String>) -> Option<Context> {
    let carrier: std::collections::HashMap<String, String> =
        [(TRACEPARENT, "TRACEPARENT"), (TRACESTATE, "TRACESTATE")]
            .into_iter()
            .filter_map(|(header, variable)| {
                Some((header.to_owned(), lookup(variable)?.trim().to_owned()))
            })
            .collect();
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// `properties` with `context` written onto their headers ([`inject`]); unchanged without one.
pub(crate) fn onto(properties: BasicProperties, context: Option<&Context>) -> BasicProperties {
    let Some(context) = context else {
        return properties;
    };
    let mut headers = properties.headers().clone().unwrap_or_default();
    inject(context, &mut headers);
    properties.with_headers(headers)
}

/// `traceparent` as text, when `headers` has one.
#[cfg(test)]
pub(crate) fn traceparent(headers: Option<&FieldTable>) -> Option<String> {
    headers?.inner().get(TRACEPARENT).and_then(header_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    #[test]
    fn a_traceparent_in_either_string_type_becomes_the_remote_parent() {
        for value in [
            AMQPValue::LongString(PARENT.into()),
            AMQPValue::ShortString(PARENT.into()),
        ] {
            let headers = table(&[
                (TRACEPARENT, value),
                (TRACESTATE, long_string("vendor=abc")),
            ]);
            let context = extract(Some(&headers));
            let span = context.span();
            let parent = span.span_context();
            assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
            assert_eq!(
                parent.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
            assert_eq!(parent.trace_state().header(), "vendor=abc");
        }
    }

    #[test]
    fn no_header_a_malformed_one_or_another_type_starts_a_new_root() {
        for headers in [
            None,
            Some(table(&[])),
            Some(table(&[(TRACEPARENT, long_string("00-not-a-trace-01"))])),
            Some(table(&[(TRACEPARENT, AMQPValue::LongInt(7))])),
            Some(table(&[(
                TRACEPARENT,
                long_string("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            )])),
        ] {
            let context = extract(headers.as_ref());
            assert!(
                !context.span().span_context().is_valid(),
                "{headers:?} must not name a parent"
            );
        }
    }

    #[test]
    fn a_span_context_is_written_as_both_headers_replacing_the_old_ones() {
        let span = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "xyz")]).unwrap(),
        );
        let context = Context::new().with_remote_span_context(span);
        let mut headers = table(&[
            (TRACEPARENT, long_string(PARENT)),
            ("x-other", long_string("kept")),
        ]);
        inject(&context, &mut headers);
        assert_eq!(
            traceparent(Some(&headers)).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(
            headers
                .inner()
                .get(TRACESTATE)
                .and_then(header_text)
                .as_deref(),
            Some("vendor=xyz")
        );
        assert_eq!(
            headers
                .inner()
                .get("x-other")
                .and_then(header_text)
                .as_deref(),
            Some("kept")
        );
        // And read back, it is the same context.
        let read = extract(Some(&headers));
        assert_eq!(
            read.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );
    }

    #[test]
    fn a_command_continues_the_context_of_its_environment() {
        let env = |name: &str| match name {
            "TRACEPARENT" => Some(format!(" {PARENT} ")),
            "TRACESTATE" => Some("vendor=abc".to_owned()),
            _ => None,
        };
        let context = inherited(env).expect("a valid TRACEPARENT is continued");
        let span = context.span();
        assert_eq!(
            span.span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
        assert_eq!(span.span_context().trace_state().header(), "vendor=abc");
        assert!(inherited(|_| None).is_none());
        assert!(inherited(|name| (name == "TRACEPARENT").then(|| "garbage".to_owned())).is_none());
    }

    #[test]
    fn an_empty_context_writes_nothing() {
        let mut headers = table(&[(TRACEPARENT, long_string(PARENT))]);
        inject(&Context::new(), &mut headers);
        assert_eq!(traceparent(Some(&headers)).as_deref(), Some(PARENT));
        let mut empty = FieldTable::default();
        inject(&Context::new(), &mut empty);
        assert!(empty.inner().is_empty());
    }
}
