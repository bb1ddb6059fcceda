//! The spans job-closer writes, named and attributed per OpenTelemetry's messaging and HTTP
//! semantic conventions: one home, so that a span's name, kind and attributes are decided here
//! and the worker only says when a span starts, what it links to, and how it ended.
//!
//! Spans are `tracing` spans that tracing-opentelemetry turns into OpenTelemetry spans; their
//! level is DEBUG, so that at the default `info` the text logs do not repeat every span's fields
//! in front of each line (the trace and span ids are added to the line instead, see
//! [`crate::logging`]). Attributes are set through [`OpenTelemetrySpanExt`] rather than as
//! `tracing` fields for the same reason. With tracing off every function returns
//! [`Span::none()`] or does nothing: the hot path pays one relaxed atomic load.
//!
//! Nothing here is given a token, a secret, a body or a header value: the attributes are queue
//! names, ids, counts, statuses and LinkedIn's error message, the same as the logs carry.

use super::{is_on, propagation};
use lapin::message::Delivery;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt};
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The name of the LinkedIn close request's span.
pub(crate) const CLOSE_REQUEST: &str = "POST simpleJobPostings";
/// The name of the task lookup's span.
pub(crate) const TASK_LOOKUP: &str = "GET simpleJobPostingTasks";
/// The name of the token request's span.
pub(crate) const TOKEN_REQUEST: &str = "POST accessToken";

/// Longest status description kept: LinkedIn's messages can be long, a trace view shows a line.
const MAX_DESCRIPTION: usize = 256;

/// `process <queue>` (CONSUMER) for one delivery, from its arrival to its settling: the child of
/// the context its headers carry (`traceparent`), or a new root.
pub(crate) fn process(queue: &str, delivery: &Delivery) -> Span {
    if !is_on() {
        return Span::none();
    }
    let span = tracing::debug_span!(
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
    );
    let parent = propagation::extract(delivery.properties.headers().as_ref());
    // Only fails for a disabled span, which then has nothing to parent.
    let _ = span.set_parent(parent);
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute("messaging.destination.name", queue.to_owned());
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.operation.name", "process");
    if let Some(id) = delivery.properties.message_id() {
        span.set_attribute("messaging.message.id", id.to_string());
    }
    span.set_attribute(
        "messaging.rabbitmq.message.delivery_tag",
        i64::try_from(delivery.delivery_tag).unwrap_or(i64::MAX),
    );
    span.set_attribute(
        "messaging.rabbitmq.message.redelivered",
        delivery.redelivered,
    );
    span
}

/// The span the caller runs in; `Span::none()` with tracing off, without looking (finding the
/// current span costs a lookup in the subscriber's registry, on every settle).
pub(crate) fn current() -> Span {
    if is_on() {
        Span::current()
    } else {
        Span::none()
    }
}

/// `span`'s context, to carry onto a message it writes (a pending check, an outcome); `None` with
/// tracing off.
pub(crate) fn context_of(span: &Span) -> Option<opentelemetry::Context> {
    if !is_on() {
        return None;
    }
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

/// `publish <queue>` (PRODUCER): one `job-closer publish` run, the parent of every message it
/// publishes; the child of the context in the environment (`TRACEPARENT`), or a new root.
pub(crate) fn publish(queue: &str) -> Span {
    if !is_on() {
        return Span::none();
    }
    let span = tracing::debug_span!(
        "publish",
        otel.name = %format_args!("publish {queue}"),
        otel.kind = "producer",
    );
    if let Some(parent) = propagation::inherited(|name| std::env::var(name).ok()) {
        let _ = span.set_parent(parent);
    }
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute("messaging.destination.name", queue.to_owned());
    span.set_attribute("messaging.operation.type", "send");
    span.set_attribute("messaging.operation.name", "publish");
    span
}

/// The close request's id, once the body is known to name one.
pub(crate) fn external_id(span: &Span, id: &str) {
    if is_on() {
        span.set_attribute("job.external_id", id.to_owned());
    }
}

/// How the delivery ended that `span` processes: `closed`, `already-closed`, `checking` (on its way
/// to a task check), …: an ok status.
pub(crate) fn ended(span: &Span, outcome: &str) {
    if is_on() {
        span.set_attribute("job_closer.outcome", outcome.to_owned());
    }
}

/// The delivery `span` processes was dead-lettered: an error status naming the reason, and
/// LinkedIn's message (or the validator's) as its description.
pub(crate) fn dead_lettered(span: &Span, reason: &str, status: u16, message: &str) {
    if !is_on() {
        return;
    }
    span.set_attribute("job_closer.outcome", "dead-lettered");
    span.set_attribute("job_closer.dead_letter.reason", reason.to_owned());
    span.set_attribute("error.type", reason.to_owned());
    if status != 0 {
        span.set_attribute("job_closer.dead_letter.status", i64::from(status));
    }
    span.set_status(Status::error(describe(&format!("{reason}: {message}"))));
}

/// A request to LinkedIn (CLIENT): `name` is one of [`CLOSE_REQUEST`], [`TASK_LOOKUP`],
/// [`TOKEN_REQUEST`]; `url` only gives the server's address and port (never recorded whole).
pub(crate) fn client(name: &'static str, method: &'static str, url: &str) -> Span {
    if !is_on() {
        return Span::none();
    }
    let span = tracing::debug_span!("request", otel.name = name, otel.kind = "client");
    span.set_attribute("http.request.method", method);
    if let Ok(url) = url::Url::parse(url) {
        if let Some(host) = url.host_str() {
            span.set_attribute("server.address", host.to_owned());
        }
        if let Some(port) = url.port_or_known_default() {
            span.set_attribute("server.port", i64::from(port));
        }
    }
    span
}

/// A client span's request is the `attempt`th for what it carries (1 for the first).
pub(crate) fn attempt(span: &Span, attempt: u32) {
    if is_on() {
        span.set_attribute("job_closer.attempt", i64::from(attempt));
        if attempt > 1 {
            span.set_attribute("http.request.resend_count", i64::from(attempt - 1));
        }
    }
}

/// A client span carries `messages` close requests (or task checks).
pub(crate) fn batch(span: &Span, messages: usize) {
    if is_on() {
        span.set_attribute(
            "messaging.batch.message_count",
            i64::try_from(messages).unwrap_or(i64::MAX),
        );
    }
}

/// Links `span` to the span `to` (a client request to the process span of every message it
/// carries): batching makes one request serve many traces, and a link is how a trace says so.
pub(crate) fn link(span: &Span, to: &Span) {
    if !is_on() {
        return;
    }
    let context = to.context();
    let target = context.span().span_context().clone();
    if target.is_valid() {
        span.add_link(target);
    }
}

/// LinkedIn answered the request of the current client span with `status`.
pub(crate) fn answered(status: u16) {
    if !is_on() {
        return;
    }
    let span = Span::current();
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 400 {
        span.set_attribute("error.type", status.to_string());
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}

/// The request of the current client span got no answer (`kind`: timed out, could not connect…).
pub(crate) fn no_answer(kind: &str) {
    if !is_on() {
        return;
    }
    let span = Span::current();
    span.set_attribute("error.type", kind.to_owned());
    span.set_status(Status::error(describe(kind)));
}

/// What `span` asked for is to be asked again after `delay` (an event on the request that failed).
pub(crate) fn retry(span: &Span, delay: Duration) {
    if is_on() {
        span.add_event(
            "retry",
            vec![KeyValue::new(
                "job_closer.retry.delay_ms",
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            )],
        );
    }
}

fn describe(text: &str) -> String {
    if text.len() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let mut end = MAX_DESCRIPTION;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_descriptions_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let cut = describe(&long);
        assert!(cut.len() <= MAX_DESCRIPTION + "…".len());
        assert!(cut.ends_with('…'));
        assert_eq!(describe("short"), "short");
    }

    #[test]
    fn with_tracing_off_spans_are_none_and_recording_is_a_no_op() {
        // The global switch is only ever set by `start`, which no unit test calls.
        assert!(!is_on());
        let span = client(CLOSE_REQUEST, "POST", "https://api.linkedin.com/v2/x");
        assert!(span.is_none());
        attempt(&span, 2);
        link(&span, &Span::none());
        retry(&span, Duration::from_secs(1));
        answered(200);
    }
}
