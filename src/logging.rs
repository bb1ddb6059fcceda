//! Logging setup: `LOG_FORMAT=text|json` on stderr, levels from `RUST_LOG` (default `info`), and
//! caps on the few dependencies whose most verbose levels would print a secret.
//!
//! The caps exist because "no secret at any level" has to hold for `RUST_LOG=trace` too: at trace
//! level lapin dumps every AMQP frame it writes, and the `Connection.StartOk` frame carries the SASL
//! response, i.e. the broker password; amq-protocol-tcp logs the whole AMQP URI. The caps sit beside
//! `RUST_LOG` rather than inside it, so no `RUST_LOG` value can lift them.
//!
//! With tracing on (`src/telemetry`), the OpenTelemetry layer sits under the log layer, and
//! every line written inside a traced span ends with that span's ids — `trace_id=… span_id=…` in
//! text, `"trace_id"` and `"span_id"` fields in JSON — so that a log search and a trace view meet.
//! The ids come from the OpenTelemetry context the layer makes current while a span is entered; the
//! line is formatted as usual and the ids spliced in ([`WithTraceIds`]). Rejected: recording the ids
//! as fields of each span (the JSON format nests span fields under `span`, where log shippers do not
//! look for them, and text would show them only for spans the log filter enables).
//!
//! [`Every`] keeps a warning about a condition that repeats with every message (a `reply_to` queue
//! that does not exist) to one line per interval, saying how many it stood for: a storm of
//! identical lines hides everything else in the log and costs a write per message.

use opentelemetry::trace::TraceContextExt;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written: text for people, JSON for log shippers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Dependencies whose logs are capped, and the most verbose level each may log at.
pub(crate) const SECRET_SAFE_CAPS: &[(&str, LevelFilter)] = &[
    // Trace logs every frame, the StartOk frame with the password among them.
    ("lapin", LevelFilter::DEBUG),
    // Trace logs the AMQP URI, password included.
    ("amq_protocol_tcp", LevelFilter::DEBUG),
    ("amq_protocol_uri", LevelFilter::DEBUG),
    ("amq_protocol", LevelFilter::DEBUG),
];

/// The targets filter that enforces [`SECRET_SAFE_CAPS`]; everything else passes.
pub(crate) fn secret_safe_caps() -> Targets {
    SECRET_SAFE_CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, (target, level)| targets.with_target(*target, *level),
    )
}

/// `RUST_LOG` when it is set and valid, `default` otherwise.
pub(crate) fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber, with `default` directives when `RUST_LOG` is unset, over the
/// tracing layer when there is one. Colours only when stderr is a terminal, so that log files and
/// log shippers get plain `key=value` text.
pub fn init(format: LogFormat, default: &str, tracing: Option<TracingLayer>) {
    let filter = env_filter(default).and(secret_safe_caps());
    let ansi = std::io::stderr().is_terminal();
    let traced = tracing.is_some();
    let registry = tracing_subscriber::registry().with(tracing);
    match format {
        LogFormat::Text => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .event_format(WithTraceIds {
                    inner: tracing_subscriber::fmt::format::Format::default().with_ansi(ansi),
                    format,
                    tracing: traced,
                });
            registry
                .with(tracing_subscriber::Layer::with_filter(layer, filter))
                .init();
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true);
            let events = WithTraceIds {
                inner: tracing_subscriber::fmt::format::Format::default()
                    .json()
                    .flatten_event(true),
                format,
                tracing: traced,
            };
            registry
                .with(tracing_subscriber::Layer::with_filter(
                    layer.event_format(events),
                    filter,
                ))
                .init();
        }
    }
}

/// The tracing layer (`src/telemetry`) the log subscriber stacks on: typed here, so that
/// telemetry depends on logging and not the other way round.
pub type TracingLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// A log line's format with the current span's trace and span ids added, when a traced span is
/// entered; otherwise the line as `inner` writes it.
struct WithTraceIds<F> {
    inner: F,
    format: LogFormat,
    /// Tracing is on: otherwise no span has ids, and no line looks for them.
    tracing: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if !self.tracing {
            return self.inner.format_event(ctx, writer, event);
        }
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let (trace_id, span_id) = (ids.trace_id(), ids.span_id());
        let with_ids = match self.format {
            LogFormat::Text => {
                let body = line.trim_end_matches('\n');
                format!("{body} trace_id={trace_id} span_id={span_id}\n")
            }
            LogFormat::Json => match line.strip_prefix('{') {
                Some(rest) => {
                    format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}")
                }
                None => line,
            },
        };
        writer.write_str(&with_ids)
    }
}

/// A gate for a repeating log line: open at most once per interval.
pub(crate) struct Every {
    interval: Duration,
    /// When the gate last opened, and how many times it stayed shut since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Every {
    pub(crate) fn new(interval: Duration) -> Every {
        Every {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// One more occurrence: `Some(held back)` when it is to be logged — with how many occurrences
    /// since the last line went unlogged — `None` when a line was logged less than an interval ago.
    pub(crate) fn due(&self, now: Instant) -> Option<u64> {
        // A panic while holding the lock leaves two plain numbers behind: still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::Filter;

    #[test]
    fn lapin_frames_are_never_traced_whatever_rust_log_says() {
        let caps = secret_safe_caps();
        assert!(!caps.would_enable("lapin::io_loop", &Level::TRACE));
        assert!(caps.would_enable("lapin::io_loop", &Level::DEBUG));
        assert!(!caps.would_enable("amq_protocol_tcp", &Level::TRACE));
        assert!(caps.would_enable("job_closer::worker", &Level::TRACE));
        assert!(caps.would_enable("reqwest::connect", &Level::TRACE));
        // `Filter` is implemented too: the caps compose with the RUST_LOG filter.
        fn is_filter<F: Filter<tracing_subscriber::Registry>>(_: &F) {}
        is_filter(&caps);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeating_line_is_logged_once_per_interval_with_what_it_held_back() {
        let every = Every::new(Duration::from_secs(60));
        assert_eq!(every.due(Instant::now()), Some(0), "the first is logged");
        for _ in 0..5 {
            assert_eq!(every.due(Instant::now()), None);
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(every.due(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            every.due(Instant::now()),
            Some(6),
            "and then the six held back"
        );
        assert_eq!(every.due(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(every.due(Instant::now()), Some(1));
    }
}
