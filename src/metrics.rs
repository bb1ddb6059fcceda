//! What the worker counts, and the small HTTP listener that shows it: `/metrics` in Prometheus text
//! format, `/healthz` (alive and not wedged) and `/readyz` (connected to the broker and consuming).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeadLetterLabels {
    pub(crate) reason: String,
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub(crate) queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskLabels {
    pub(crate) status: String,
}

/// The `outcome` label values of `job_closer_requests_total`.
pub(crate) const REQUEST_OUTCOMES: &[&str] = &[
    "answered",
    "unauthorized",
    "throttled",
    "transient",
    "rejected",
    "blocked",
];

/// A heartbeat older than this means the worker's loops have stopped turning.
const WEDGED_AFTER: Duration = Duration::from_secs(120);

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) consumed: Counter,
    pub(crate) closed: Counter,
    pub(crate) dead_lettered: Family<DeadLetterLabels, Counter>,
    pub(crate) retried: Counter,
    pub(crate) requests: Family<OutcomeLabels, Counter>,
    pub(crate) token_requests: Counter,
    pub(crate) batch_size: Histogram,
    pub(crate) request_seconds: Histogram,
    pub(crate) in_flight: Gauge,
    pub(crate) queue_messages: Family<QueueLabels, Gauge>,
    pub(crate) tasks: Family<TaskLabels, Counter>,
    pub(crate) reconnects: Counter,
    /// Closes LinkedIn (or this worker's memory of it) says were already closed.
    pub(crate) already_closed: Counter,
    /// Elements sent to simpleJobPostings, every attempt counted.
    pub(crate) elements_sent: Counter,
    /// 1 while an integration fault holds the worker.
    pub(crate) linkedin_blocked: Gauge,
    /// Until when sending is paused by a throttle or the daily quota (Unix seconds; 0 when not).
    pub(crate) throttled_until: Gauge,
    /// Elements a fresh request holds now (BATCH_SIZE, or less while culprits are common).
    pub(crate) batch_target_size: Gauge,
    /// Requests sent to find culprits LinkedIn did not name (pieces of refused groups).
    pub(crate) isolation_requests: Counter,
    ready: AtomicBool,
    heartbeat_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("job_closer");
        let consumed = Counter::default();
        let closed = Counter::default();
        let dead_lettered = Family::<DeadLetterLabels, Counter>::default();
        let retried = Counter::default();
        let requests = Family::<OutcomeLabels, Counter>::default();
        let token_requests = Counter::default();
        let batch_size = Histogram::new([1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 100.0]);
        let request_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 14),
        );
        let in_flight = Gauge::default();
        let queue_messages = Family::<QueueLabels, Gauge>::default();
        let tasks = Family::<TaskLabels, Counter>::default();
        let reconnects = Counter::default();
        let already_closed = Counter::default();
        let elements_sent = Counter::default();
        let linkedin_blocked = Gauge::default();
        let throttled_until = Gauge::default();
        let batch_target_size = Gauge::default();
        let isolation_requests = Counter::default();
        registry.register(
            "batch_target_size",
            "Elements a fresh request holds now: BATCH_SIZE, less while jobs LinkedIn refuses without naming them are common",
            batch_target_size.clone(),
        );
        registry.register(
            "isolation_requests",
            "Requests sent to find the jobs LinkedIn refused a request for without naming them",
            isolation_requests.clone(),
        );
        registry.register(
            "elements_already_closed",
            "Close requests settled as already closed (LinkedIn's 409, or accepted here within the hour)",
            already_closed.clone(),
        );
        registry.register(
            "elements_sent",
            "Elements sent to simpleJobPostings, counting every attempt",
            elements_sent.clone(),
        );
        registry.register(
            "linkedin_blocked",
            "1 while an integration fault (403 permissions, 404, LinkedIn-Version refused) holds the worker",
            linkedin_blocked.clone(),
        );
        registry.register(
            "throttled_until_seconds",
            "Until when sending is paused by LinkedIn's throttle or RATE_LIMIT_PER_DAY (Unix time; 0 when not)",
            throttled_until.clone(),
        );
        registry.register(
            "messages_consumed",
            "Deliveries taken from the close queue",
            consumed.clone(),
        );
        registry.register(
            "elements_closed",
            "Close requests LinkedIn accepted",
            closed.clone(),
        );
        registry.register(
            "elements_dead_lettered",
            "Close requests dead-lettered, by reason and status",
            dead_lettered.clone(),
        );
        registry.register(
            "elements_retried",
            "Elements scheduled for another attempt",
            retried.clone(),
        );
        registry.register(
            "requests",
            "Requests to simpleJobPostings, by outcome",
            requests.clone(),
        );
        registry.register(
            "token_requests",
            "Requests to the OAuth token endpoint",
            token_requests.clone(),
        );
        registry.register("batch_size", "Elements per request", batch_size.clone());
        registry.register(
            "request_duration_seconds",
            "Latency of requests to LinkedIn",
            request_seconds.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests to LinkedIn under way",
            in_flight.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages ready in a queue, as the worker last saw it",
            queue_messages.clone(),
        );
        registry.register(
            "tasks_verified",
            "Close tasks whose final status was learnt, by status (SUCCEEDED, PROCESSED, FAILED, UNKNOWN)",
            tasks.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Reconnections to RabbitMQ",
            reconnects.clone(),
        );
        // A labelled family with no series prints nothing, not even its `# TYPE` line; scrapers
        // and dashboards want every family present from the start, so the known label values
        // start at zero.
        for outcome in REQUEST_OUTCOMES {
            requests
                .get_or_create(&OutcomeLabels {
                    outcome: (*outcome).to_owned(),
                })
                .get();
        }
        // Every final task status a verification can end in, so that `status="PROCESSED"` sits
        // beside `status="SUCCEEDED"` from the start.
        for status in ["SUCCEEDED", "PROCESSED", "FAILED", "UNKNOWN"] {
            tasks
                .get_or_create(&TaskLabels {
                    status: status.to_owned(),
                })
                .get();
        }
        // Invalid messages are always dead-lettered with 422; other statuses come from LinkedIn.
        dead_lettered
            .get_or_create(&DeadLetterLabels {
                reason: crate::dead_letter::Reason::Invalid.as_str().to_owned(),
                status: "422".to_owned(),
            })
            .get();
        Metrics {
            registry,
            consumed,
            closed,
            dead_lettered,
            retried,
            requests,
            token_requests,
            batch_size,
            request_seconds,
            in_flight,
            queue_messages,
            tasks,
            reconnects,
            already_closed,
            elements_sent,
            linkedin_blocked,
            throttled_until,
            batch_target_size,
            isolation_requests,
            ready: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(now_ms()),
        }
    }

    pub(crate) fn dead_letter(&self, reason: &str, status: u16) {
        self.dead_lettered
            .get_or_create(&DeadLetterLabels {
                reason: reason.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    pub(crate) fn request(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A close task's final status was learnt (SUCCEEDED, FAILED, or UNKNOWN once its id expired).
    pub(crate) fn task(&self, status: &str) {
        self.tasks
            .get_or_create(&TaskLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    pub(crate) fn queue_depth(&self, queue: &str, messages: u32) {
        self.queue_messages
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .set(i64::from(messages));
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Called by the worker's loops as they turn.
    pub(crate) fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn is_alive(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed))
            < WEDGED_AFTER.as_millis() as u64
    }

    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Serves the three endpoints until `shutdown`.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(bound)
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_alive() {
        (StatusCode::OK, "alive\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "wedged\n")
    }
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.linkedin_blocked.get() > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "holding: LinkedIn refuses the integration (see the logs)\n",
        )
    } else if metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not consuming\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_families_are_listed_before_anything_happened() {
        let text = Metrics::new().encode();
        for series in [
            "# TYPE job_closer_requests counter",
            r#"job_closer_requests_total{outcome="answered"} 0"#,
            r#"job_closer_requests_total{outcome="throttled"} 0"#,
            "# TYPE job_closer_elements_dead_lettered counter",
            r#"job_closer_elements_dead_lettered_total{reason="invalid",status="422"} 0"#,
            "job_closer_elements_already_closed_total 0",
            "job_closer_elements_sent_total 0",
            "job_closer_linkedin_blocked 0",
            "job_closer_throttled_until_seconds 0",
            "job_closer_isolation_requests_total 0",
            r#"job_closer_tasks_verified_total{status="PROCESSED"} 0"#,
            r#"job_closer_tasks_verified_total{status="SUCCEEDED"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn exposition_has_type_lines_for_every_family() {
        let metrics = Metrics::new();
        metrics.consumed.inc();
        metrics.dead_letter("rejected", 403);
        metrics.request("accepted");
        metrics.queue_depth("close", 5);
        let text = metrics.encode();
        for name in [
            "job_closer_messages_consumed",
            "job_closer_elements_closed",
            "job_closer_elements_dead_lettered",
            "job_closer_requests",
            "job_closer_token_requests",
            "job_closer_batch_size",
            "job_closer_request_duration_seconds",
            "job_closer_requests_in_flight",
            "job_closer_queue_messages",
            "job_closer_elements_already_closed",
            "job_closer_elements_sent",
            "job_closer_linkedin_blocked",
            "job_closer_throttled_until_seconds",
            "job_closer_batch_target_size",
            "job_closer_isolation_requests",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing in\n{text}"
            );
        }
        assert!(text.contains(
            r#"job_closer_elements_dead_lettered_total{reason="rejected",status="403"} 1"#
        ));
    }
}
