//! The tests' own OTLP/HTTP trace receiver: `POST /v1/traces` with an `ExportTraceServiceRequest`
//! in protobuf, decoded with the `opentelemetry-proto` types (not the exporter's own code), kept
//! as plain [`ReceivedSpan`]s — plus every raw request body and header, so that a test can look
//! for a secret in exactly what left the worker.
//!
//! [`OtlpReceiver::refusing`] answers every export with a 503, for the "collector down" cases
//! that need a listener (a closed port is the other kind of down). [`OtlpReceiver::counting`] only
//! counts requests and bytes, for the benchmark: a collector runs elsewhere, and decoding here
//! would take CPU from the worker being measured on the same machine.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One exported span, its ids in lower-case hex as in a `traceparent`.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// Each event's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// Each link's trace and span id.
    pub links: Vec<(String, String)>,
    /// OTLP's `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    /// The resource's `service.name`.
    pub service_name: String,
}

pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;
pub const STATUS_ERROR: i32 = 2;

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Every request's headers and body, as they arrived.
    raw: Vec<(HeaderMap, Bytes)>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Received>>,
    refuse: bool,
    /// Count only: keep nothing, decode nothing.
    count_only: bool,
    /// Requests and body bytes, in count-only mode.
    counted: Arc<Mutex<(usize, usize)>>,
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// A receiver that takes every export.
    pub async fn start() -> OtlpReceiver {
        OtlpReceiver::listen(false, false).await
    }

    /// A receiver that answers every export with 503 (and still records what it was sent).
    pub async fn refusing() -> OtlpReceiver {
        OtlpReceiver::listen(true, false).await
    }

    /// A receiver that takes every export and only counts requests and bytes ([`Self::counted`]).
    pub async fn counting() -> OtlpReceiver {
        OtlpReceiver::listen(false, true).await
    }

    async fn listen(refuse: bool, count_only: bool) -> OtlpReceiver {
        let shared = Shared {
            received: Arc::default(),
            refuse,
            count_only,
            counted: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            addr,
            shared,
            server,
        }
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` (the worker adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received.lock().unwrap().spans.clone()
    }

    /// Export requests and body bytes a counting receiver took since the last call.
    pub fn counted(&self) -> (usize, usize) {
        std::mem::take(&mut *self.shared.counted.lock().unwrap())
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> usize {
        self.shared.received.lock().unwrap().raw.len()
    }

    /// Every header name and value and every body byte that arrived, as (lossy) text.
    pub fn everything_received(&self) -> String {
        let received = self.shared.received.lock().unwrap();
        let mut text = String::new();
        for (headers, body) in &received.raw {
            for (name, value) in headers {
                text.push_str(&format!(
                    "{name}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            text.push_str(&String::from_utf8_lossy(body));
            text.push('\n');
        }
        text
    }

    /// The headers of the first export request.
    pub fn first_headers(&self) -> Option<HeaderMap> {
        let received = self.shared.received.lock().unwrap();
        received.raw.first().map(|(headers, _)| headers.clone())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if shared.count_only {
        let mut counted = shared.counted.lock().unwrap();
        counted.0 += 1;
        counted.1 += body.len();
        return StatusCode::OK;
    }
    let decoded = ExportTraceServiceRequest::decode(body.clone());
    let mut received = shared.received.lock().unwrap();
    received.raw.push((headers, body));
    if shared.refuse {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(request) = decoded else {
        return StatusCode::BAD_REQUEST;
    };
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(kv.value.as_ref()))
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.spans.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|event| (event.name.clone(), attributes(&event.attributes)))
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                    status_code: span.status.as_ref().map_or(0, |status| status.code),
                    status_message: span
                        .status
                        .as_ref()
                        .map(|status| status.message.clone())
                        .unwrap_or_default(),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
