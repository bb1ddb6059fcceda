//! What the worker counts, and the small HTTP listener that shows it: `/metrics` in Prometheus text
//! format, `/healthz` (alive and not wedged) and `/readyz` (connected to the broker and consuming).
//!
//! `/readyz` answers 503 with one line per cause, in words an operator acts on; the causes are
//! listed in one place, [`Metrics::not_ready_because`], so that a new one is one more line there.

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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// What holds the worker off LinkedIn (`job_closer_linkedin_blocked` 1), for `/readyz`'s words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkedInHold {
    /// LinkedIn refuses the integration itself (403 permissions, 404, a refused `LinkedIn-Version`).
    Integration,
    /// The token endpoint refuses the client credentials (400/401).
    Credentials,
}

impl LinkedInHold {
    fn code(hold: Option<LinkedInHold>) -> u8 {
        match hold {
            None => 0,
            Some(LinkedInHold::Integration) => 1,
            Some(LinkedInHold::Credentials) => 2,
        }
    }

    fn of(code: u8) -> Option<LinkedInHold> {
        match code {
            1 => Some(LinkedInHold::Integration),
            2 => Some(LinkedInHold::Credentials),
            _ => None,
        }
    }

    /// `/readyz`'s line for it.
    fn cause(self) -> &'static str {
        match self {
            LinkedInHold::Integration => "holding: LinkedIn refuses the integration (see the logs)",
            LinkedInHold::Credentials => {
                "holding: LinkedIn's token endpoint refuses the client credentials; check LINKEDIN_CLIENT_ID and LINKEDIN_CLIENT_SECRET / LINKEDIN_CLIENT_SECRET_FILE (see the logs)"
            }
        }
    }
}

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
    /// Token requests the endpoint refused (the client credentials).
    pub(crate) token_refusals: Counter,
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
    /// What holds the worker off LinkedIn ([`LinkedInHold::code`]); 0 when nothing does.
    linkedin_hold: AtomicU8,
    /// 1 while the broker blocks the worker's publishing (a memory or disk alarm).
    broker_blocked: Gauge,
    /// The broker's reason, while it blocks.
    broker_blocked_reason: Mutex<Option<String>>,
    /// Outcome messages published, by outcome.
    pub(crate) outcomes: Family<OutcomeLabels, Counter>,
    /// Outcomes a request's `reply_to` queue did not take (it does not exist).
    pub(crate) outcome_unroutable: Counter,
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
        let token_refusals = Counter::default();
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
        let broker_blocked = Gauge::default();
        registry.register(
            "broker_blocked",
            "1 while RabbitMQ blocks the worker's publishing (connection.blocked: a memory or disk alarm)",
            broker_blocked.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let outcome_unroutable = Counter::default();
        registry.register(
            "outcomes",
            "Outcome messages published (to OUTCOME_EXCHANGE and/or the request's reply_to), by outcome",
            outcomes.clone(),
        );
        registry.register(
            "outcome_unroutable",
            "Outcomes whose reply_to queue did not exist (returned unroutable, dropped)",
            outcome_unroutable.clone(),
        );
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
        // The tracing exporter's count (0 with tracing off): spans lost to a full queue or a failed
        // export, never a close.
        registry.register(
            "trace_spans_dropped",
            "Trace spans dropped because the export queue was full or the OTLP endpoint did not take them",
            crate::telemetry::dropped_spans(),
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
            "1 while an integration fault (403 permissions, 404, LinkedIn-Version refused) or refused client credentials hold the worker",
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
        registry.register(
            "token_refusals",
            "Token requests the OAuth token endpoint refused (400/401): the client credentials need a look",
            token_refusals.clone(),
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
        for kind in crate::outcome::Kind::ALL {
            outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: kind.as_str().to_owned(),
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
            token_refusals,
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
            linkedin_hold: AtomicU8::new(0),
            broker_blocked,
            broker_blocked_reason: Mutex::new(None),
            outcomes,
            outcome_unroutable,
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

    /// An outcome message was published (and confirmed).
    pub(crate) fn outcome(&self, kind: crate::outcome::Kind) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: kind.as_str().to_owned(),
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

    /// What holds the worker off LinkedIn now, if anything: `job_closer_linkedin_blocked` and
    /// `/readyz` follow.
    pub(crate) fn set_linkedin_hold(&self, hold: Option<LinkedInHold>) {
        self.linkedin_hold
            .store(LinkedInHold::code(hold), Ordering::SeqCst);
        self.linkedin_blocked.set(i64::from(hold.is_some()));
    }

    /// Why the worker is not ready, one line per cause in `/readyz`'s words; empty when it is. The
    /// one place the readiness causes are listed.
    pub(crate) fn not_ready_because(&self) -> Vec<String> {
        let mut causes = Vec::new();
        if let Some(hold) = LinkedInHold::of(self.linkedin_hold.load(Ordering::SeqCst)) {
            causes.push(hold.cause().to_owned());
        }
        if let Some(reason) = self.broker_blocked_reason() {
            causes.push(format!(
                "broker blocked: RabbitMQ blocks publishing ({reason}: a memory or disk alarm); dead letters and task checks wait until it clears"
            ));
        }
        // A cause above already says why nothing is consumed.
        if causes.is_empty() && !self.ready.load(Ordering::SeqCst) {
            causes.push("not consuming".to_owned());
        }
        causes
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The broker blocks the worker's publishing for `reason`, or (`None`) no longer does.
    pub(crate) fn set_broker_blocked(&self, reason: Option<&str>) {
        self.broker_blocked.set(i64::from(reason.is_some()));
        *self
            .broker_blocked_reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason.map(str::to_owned);
    }

    /// The broker's reason while it blocks the worker's publishing.
    fn broker_blocked_reason(&self) -> Option<String> {
        self.broker_blocked_reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
    readiness(&metrics)
}

/// `/readyz`'s answer: 200 "ready", or 503 with every cause on a line of its own.
fn readiness(metrics: &Metrics) -> (StatusCode, String) {
    let causes = metrics.not_ready_because();
    if causes.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut text = causes.join("\n");
    text.push('\n');
    (StatusCode::SERVICE_UNAVAILABLE, text)
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
            "job_closer_broker_blocked 0",
            "job_closer_throttled_until_seconds 0",
            "job_closer_isolation_requests_total 0",
            "job_closer_trace_spans_dropped_total 0",
            r#"job_closer_tasks_verified_total{status="PROCESSED"} 0"#,
            r#"job_closer_tasks_verified_total{status="SUCCEEDED"} 0"#,
            r#"job_closer_outcomes_total{outcome="closed"} 0"#,
            r#"job_closer_outcomes_total{outcome="already-closed"} 0"#,
            r#"job_closer_outcomes_total{outcome="dead-lettered"} 0"#,
            "job_closer_outcome_unroutable_total 0",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn readyz_names_each_cause() {
        let metrics = Metrics::new();
        assert_eq!(
            readiness(&metrics),
            (StatusCode::SERVICE_UNAVAILABLE, "not consuming\n".into())
        );
        metrics.set_ready(true);
        assert_eq!(readiness(&metrics), (StatusCode::OK, "ready\n".into()));
        metrics.set_linkedin_hold(Some(LinkedInHold::Credentials));
        metrics.set_ready(false);
        let (status, text) = readiness(&metrics);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.contains("client credentials") && text.contains("LINKEDIN_CLIENT_SECRET_FILE"),
            "{text}"
        );
        assert!(!text.contains("not consuming"), "{text}");
        assert_eq!(metrics.linkedin_blocked.get(), 1);
        metrics.set_linkedin_hold(Some(LinkedInHold::Integration));
        assert!(readiness(&metrics).1.contains("refuses the integration"));
        metrics.set_linkedin_hold(None);
        assert_eq!(metrics.linkedin_blocked.get(), 0);
        assert_eq!(readiness(&metrics).1, "not consuming\n");
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
            "job_closer_token_refusals",
            "job_closer_batch_size",
            "job_closer_request_duration_seconds",
            "job_closer_requests_in_flight",
            "job_closer_queue_messages",
            "job_closer_elements_already_closed",
            "job_closer_elements_sent",
            "job_closer_linkedin_blocked",
            "job_closer_broker_blocked",
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

    #[test]
    fn the_broker_blocked_gauge_and_readiness_follow_the_reports() {
        let metrics = Metrics::new();
        metrics.set_ready(true);
        metrics.set_broker_blocked(Some("low on disk"));
        assert!(metrics.encode().contains("job_closer_broker_blocked 1"));
        let (status, body) = readiness(&metrics);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("broker blocked: "), "{body}");
        assert!(body.contains("low on disk"), "{body}");
        metrics.set_broker_blocked(None);
        assert!(metrics.encode().contains("job_closer_broker_blocked 0"));
        assert_eq!(readiness(&metrics).0, StatusCode::OK);
    }
}
