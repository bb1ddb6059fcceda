//! Traces: OpenTelemetry spans exported over OTLP/HTTP when the standard `OTEL_*` settings ask for
//! it, W3C trace context carried through every message job-closer reads or writes, so that a close
//! joins the trace its producer started — into a batch, the LinkedIn request and its retries, the
//! task check an hour later, the dead letter or the outcome.
//!
//! One door: [`start`] reads the settings ([`settings`]) and, when tracing is on, builds the
//! exporter, the span queue ([`export`]) and the `tracing` layer that turns the crate's spans into
//! OpenTelemetry spans; the returned [`Tracing`] hands that layer to the logging setup and flushes
//! on [`Tracing::shutdown`]. Everything else goes through [`spans`] (what spans there are) and
//! [`propagation`] (the two headers on AMQP messages). Off — the default — nothing is built: no
//! exporter, no task, no connection, and every span function returns `Span::none()` after one
//! atomic load ([`is_on`]), so the close path costs nothing measurable.
//!
//! Only the crate's own spans are exported (the layer's filter takes spans whose target starts with
//! `job_closer`, and no events): the HTTP client the exporter uses would otherwise trace its own
//! exports, and log lines would be copied into spans as events — each retry is an explicit event
//! instead ([`spans::retry`]).
//!
//! Rejected: setting the SDK's global tracer provider and propagator. Nothing here reads them — the
//! propagator is used directly and the layer holds its tracer — and a global would make tests and
//! the tools that never trace (`dlq`, `schema`) depend on what a previous call installed.

pub(crate) mod export;
pub(crate) mod propagation;
pub(crate) mod settings;
pub(crate) mod spans;

use crate::logging::TracingLayer;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use settings::{Export, Root, Setting};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

pub(crate) use settings::SettingsError;

/// Set once by [`start`] when tracing is on; read before every span is made.
static ON: AtomicBool = AtomicBool::new(false);

/// Spans dropped because the queue was full or their export failed, for the metrics registry.
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// How long shutting down waits for the last spans to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are being made (tracing on).
pub(crate) fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The count behind `job_closer_trace_spans_dropped_total`.
pub(crate) fn dropped_spans() -> Counter {
    DROPPED.clone()
}

/// Tracing for one process: its layer until logging takes it, then the exporter to flush at exit.
pub struct Tracing {
    layer: Option<TracingLayer>,
    running: Option<(SdkTracerProvider, tokio::task::JoinHandle<()>)>,
}

/// Why tracing could not start: a bad setting (exit 2) or an exporter that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

impl TelemetryError {
    /// A bad setting is the operator's to fix (2, like any bad setting); an exporter that cannot be
    /// built is a runtime failure (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            TelemetryError::Settings(_) => 2,
            TelemetryError::Exporter(_) => 1,
        }
    }
}

/// Reads the `OTEL_*` environment and, when it asks for traces, starts exporting (on the current
/// tokio runtime). Off, it returns a [`Tracing`] with nothing in it.
pub fn start() -> Result<Tracing, TelemetryError> {
    let export = match settings::read(|name| std::env::var(name).ok())? {
        Setting::Off(_) => {
            return Ok(Tracing {
                layer: None,
                running: None,
            });
        }
        Setting::On(export) => export,
    };
    let resource = resource(&export);
    let mut exporter = exporter(&export)?;
    exporter.set_resource(&resource);
    let (processor, task) = export::QueueProcessor::start(exporter, dropped_spans());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(export.sampler))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("job-closer");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_level(false)
        .with_filter(filter_fn(|metadata| {
            metadata.is_span() && metadata.target().starts_with("job_closer")
        }));
    ON.store(true, Ordering::Relaxed);
    Ok(Tracing {
        layer: Some(Box::new(layer)),
        running: Some((provider, task)),
    })
}

impl Tracing {
    /// The layer that makes OpenTelemetry spans of the crate's spans; `None` with tracing off (or
    /// once taken).
    pub fn take_layer(&mut self) -> Option<TracingLayer> {
        self.layer.take()
    }

    /// Sends what spans are still queued (waiting at most a few seconds for the collector), then
    /// stops exporting. A no-op with tracing off.
    pub async fn shutdown(self) {
        let Some((provider, task)) = self.running else {
            return;
        };
        ON.store(false, Ordering::Relaxed);
        // Closes the span queue; the exporting task sends the rest and ends.
        let _ = provider.shutdown();
        if tokio::time::timeout(FLUSH_TIMEOUT, task).await.is_err() {
            tracing::warn!(
                timeout_ms = FLUSH_TIMEOUT.as_millis() as u64,
                "The last spans could not be exported in time; they are dropped."
            );
        }
    }
}

/// `check`'s line: whether tracing is on and where it exports (without credentials or headers),
/// or why the settings are unusable.
pub(crate) fn describe() -> Result<String, SettingsError> {
    Ok(match settings::read(|name| std::env::var(name).ok())? {
        Setting::Off(why) => format!("off: {why}"),
        Setting::On(export) => {
            let headers = match export.headers.len() {
                0 => String::new(),
                n => format!(", {n} header(s) (values not shown)"),
            };
            format!(
                "on: OTLP http/protobuf to {}{headers}; service {:?}, sampler {}",
                settings::redacted(&export.endpoint),
                export.service_name,
                export.sampler.describe()
            )
        }
    })
}

fn resource(export: &Export) -> Resource {
    Resource::builder_empty()
        .with_service_name(export.service_name.clone())
        .with_attributes(
            export
                .resource
                .iter()
                .map(|(key, value)| opentelemetry::KeyValue::new(key.clone(), value.clone())),
        )
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

fn exporter(export: &Export) -> Result<impl SpanExporter + 'static, TelemetryError> {
    // The crate's proxy rules (never a proxy for loopback) and no redirects, as for LinkedIn.
    let client = crate::http_proxy::ProxyRules::from_env()
        .apply(reqwest::Client::builder())
        .timeout(export::EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("job-closer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
    let headers: HashMap<String, String> = export.headers.iter().cloned().collect();
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(export.endpoint.as_str())
        .with_headers(headers)
        .with_timeout(export::EXPORT_TIMEOUT)
        .build()
        .map_err(|error| TelemetryError::Exporter(error.to_string()))
}

fn sampler(setting: settings::Sampler) -> Sampler {
    let root = |root: Root| match root {
        Root::AlwaysOn => Sampler::AlwaysOn,
        Root::AlwaysOff => Sampler::AlwaysOff,
        Root::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match setting {
        settings::Sampler::AlwaysOn => Sampler::AlwaysOn,
        settings::Sampler::AlwaysOff => Sampler::AlwaysOff,
        settings::Sampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        settings::Sampler::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}
