//! The pending-check message: the original close request, body byte for byte and properties kept,
//! plus what verifying it needs as headers — the task id (`x-task-id`), the external id, when
//! LinkedIn accepted the close, how many status checks were made, and how many requests sending it
//! took (for its outcome message). The broker holds these messages
//! and nothing else does, so a worker can die at any moment without losing a verification.
//!
//! Going back from a pending check to the original request (for a dead letter, or the next wait)
//! strips this bookkeeping and the broker's own `x-death` records of the delay queues again.

use super::queues::Schedule;
use crate::amqp::{header_int, header_text, insert_entries, long_string};
use crate::dead_letter;
use crate::telemetry::propagation::{self, TRACEPARENT, TRACESTATE};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::Context;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The task id LinkedIn gave the close (shared with the dead-letter format).
pub const TASK_ID: &str = dead_letter::TASK_ID;
/// The close request's `externalJobPostingId`, so logs need not parse the body.
pub const EXTERNAL_ID: &str = "x-task-external-id";
/// When LinkedIn accepted the close, in milliseconds since the Unix epoch.
pub const ACCEPTED_AT: &str = "x-task-accepted-at";
/// Status checks made so far.
pub const CHECKS: &str = "x-task-checks";
/// Requests to simpleJobPostings the close took before LinkedIn accepted it (the `attempts` of its
/// outcome); 0 for a duplicate that waits on another delivery's task. Read as 1 when absent.
pub const SEND_ATTEMPTS: &str = "x-task-send-attempts";
/// The original's `expiration` property, parked here: a pending check must not expire anywhere
/// but in its delay queue.
pub const ORIGINAL_EXPIRATION: &str = "x-task-original-expiration";

/// The original request's `traceparent`, parked here (empty when it had none) while the pending
/// check carries the trace context of the worker's span that scheduled it: the check made later
/// joins the request's trace as that span's child, and a dead letter made from the check still
/// carries the request's own headers.
pub const ORIGINAL_TRACEPARENT: &str = "x-task-original-traceparent";
/// The original request's `tracestate`, parked beside [`ORIGINAL_TRACEPARENT`].
pub const ORIGINAL_TRACESTATE: &str = "x-task-original-tracestate";

/// LinkedIn keeps task ids for 24 hours (one page says 30 days; the shorter one is the safe side).
pub const TASK_ID_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A message in the verification queue that cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MalformedCheck {
    #[error("the pending check has no {TASK_ID} header, so its task cannot be looked up")]
    MissingTaskId,
}

/// What a pending check says about its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingCheck {
    pub(crate) task_id: String,
    pub(crate) external_id: String,
    pub(crate) accepted_at_ms: i64,
    pub(crate) checks: u32,
    pub(crate) send_attempts: u32,
}

pub(crate) fn epoch_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PendingCheck {
    /// The check for a close LinkedIn accepted at `now` after `send_attempts` requests, before any
    /// status check.
    pub(crate) fn accepted(
        task_id: &str,
        external_id: &str,
        now: SystemTime,
        send_attempts: u32,
    ) -> PendingCheck {
        PendingCheck {
            task_id: task_id.to_owned(),
            external_id: external_id.to_owned(),
            accepted_at_ms: epoch_millis(now),
            checks: 0,
            send_attempts,
        }
    }

    /// Reads a pending check's headers. A check without an acceptance time (published by hand) is
    /// taken as accepted `now`, so it still expires one day on.
    pub(crate) fn read(
        headers: Option<&FieldTable>,
        now: SystemTime,
    ) -> Result<PendingCheck, MalformedCheck> {
        let inner = headers.map(FieldTable::inner);
        let text = |key: &str| inner.and_then(|h| h.get(key)).and_then(header_text);
        let int = |key: &str| inner.and_then(|h| h.get(key)).and_then(header_int);
        let task_id = text(TASK_ID)
            .filter(|id| !id.trim().is_empty())
            .ok_or(MalformedCheck::MissingTaskId)?;
        Ok(PendingCheck {
            task_id,
            external_id: text(EXTERNAL_ID).unwrap_or_else(|| "-".to_owned()),
            accepted_at_ms: int(ACCEPTED_AT).unwrap_or_else(|| epoch_millis(now)),
            checks: int(CHECKS).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            send_attempts: int(SEND_ATTEMPTS)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
        })
    }

    /// The same check, one status check later.
    pub(crate) fn checked(&self) -> PendingCheck {
        PendingCheck {
            checks: self.checks.saturating_add(1),
            ..self.clone()
        }
    }

    /// How long ago LinkedIn accepted the close.
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        let elapsed = epoch_millis(now).saturating_sub(self.accepted_at_ms);
        Duration::from_millis(u64::try_from(elapsed).unwrap_or(0))
    }

    /// Whether the task id has outlived LinkedIn's memory of it.
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.age(now) >= TASK_ID_LIFETIME
    }

    /// The properties of the pending-check message: the original's, with this check's headers,
    /// persistent, and without an `expiration` (parked in a header instead).
    pub(crate) fn properties(&self, original: &BasicProperties) -> BasicProperties {
        let mut headers = original.headers().clone().unwrap_or_default();
        insert_entries(
            &mut headers,
            [
                (TASK_ID, long_string(&self.task_id)),
                (EXTERNAL_ID, long_string(&self.external_id)),
                (ACCEPTED_AT, AMQPValue::LongLongInt(self.accepted_at_ms)),
                (
                    CHECKS,
                    AMQPValue::LongInt(i32::try_from(self.checks).unwrap_or(i32::MAX)),
                ),
                (
                    SEND_ATTEMPTS,
                    AMQPValue::LongInt(i32::try_from(self.send_attempts).unwrap_or(i32::MAX)),
                ),
            ],
        );
        if let Some(expiration) = original.expiration() {
            insert_entries(
                &mut headers,
                [(ORIGINAL_EXPIRATION, long_string(expiration.as_str()))],
            );
        }
        without_expiration(original)
            .with_headers(headers)
            .with_delivery_mode(2)
    }
}

/// `properties` (a pending check's) carrying `parent`'s trace context — the span that schedules the
/// check — with the request's own `traceparent`/`tracestate` parked in [`ORIGINAL_TRACEPARENT`] and
/// [`ORIGINAL_TRACESTATE`], for [`original_properties`] to restore. Without a parent (tracing off)
/// the properties are returned as they are.
pub(crate) fn traced(properties: BasicProperties, parent: Option<&Context>) -> BasicProperties {
    let Some(parent) = parent else {
        return properties;
    };
    let mut headers = FieldTable::default();
    let (mut traceparent, mut tracestate) = (String::new(), String::new());
    for (key, value) in properties.headers().iter().flat_map(|h| h.inner()) {
        match key.as_str() {
            TRACEPARENT => traceparent = header_text(value).unwrap_or_default(),
            TRACESTATE => tracestate = header_text(value).unwrap_or_default(),
            _ => {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    insert_entries(
        &mut headers,
        [
            (ORIGINAL_TRACEPARENT, long_string(&traceparent)),
            (ORIGINAL_TRACESTATE, long_string(&tracestate)),
        ],
    );
    propagation::inject(parent, &mut headers);
    properties.with_headers(headers)
}

/// The original request's properties from a pending check's: the bookkeeping headers removed, the
/// broker's `x-death` records of the delay queues removed (records from before the close queue stay,
/// see [`dead_letter::without_deaths_in`]), and a parked `expiration` and trace context restored (a
/// check without a parked trace context — written with tracing off — carries the request's own).
pub(crate) fn original_properties(check: &BasicProperties, schedule: &Schedule) -> BasicProperties {
    let Some(headers) = check.headers() else {
        return check.clone();
    };
    let mut own = FieldTable::default();
    let mut expiration = None;
    let parked = headers.inner().contains_key(ORIGINAL_TRACEPARENT);
    for (key, value) in headers.inner() {
        match key.as_str() {
            ORIGINAL_EXPIRATION => expiration = header_text(value),
            TASK_ID | EXTERNAL_ID | ACCEPTED_AT | CHECKS | SEND_ATTEMPTS => {}
            TRACEPARENT | TRACESTATE if parked => {}
            ORIGINAL_TRACEPARENT | ORIGINAL_TRACESTATE => {
                let restored = if key.as_str() == ORIGINAL_TRACEPARENT {
                    TRACEPARENT
                } else {
                    TRACESTATE
                };
                if let Some(text) = header_text(value).filter(|text| !text.is_empty()) {
                    own.insert(restored.into(), long_string(&text));
                }
            }
            _ => {
                own.insert(key.clone(), value.clone());
            }
        }
    }
    let kept = dead_letter::without_deaths_in(&own, |queue| schedule.is_wait_queue(queue));
    let properties = match expiration {
        Some(expiration) => check.clone().with_expiration(expiration.into()),
        None => check.clone(),
    };
    properties.with_headers(kept)
}

/// A copy of `original` without `expiration`: the properties type can set a field but not clear it,
/// so every other field is carried over, one line each.
fn without_expiration(original: &BasicProperties) -> BasicProperties {
    Carried(BasicProperties::default())
        .keep(original.content_type(), BasicProperties::with_content_type)
        .keep(
            original.content_encoding(),
            BasicProperties::with_content_encoding,
        )
        .keep(original.headers(), BasicProperties::with_headers)
        .keep(
            original.delivery_mode(),
            BasicProperties::with_delivery_mode,
        )
        .keep(original.priority(), BasicProperties::with_priority)
        .keep(
            original.correlation_id(),
            BasicProperties::with_correlation_id,
        )
        .keep(original.reply_to(), BasicProperties::with_reply_to)
        .keep(original.message_id(), BasicProperties::with_message_id)
        .keep(original.timestamp(), BasicProperties::with_timestamp)
        .keep(original.kind(), BasicProperties::with_type)
        .keep(original.user_id(), BasicProperties::with_user_id)
        .keep(original.app_id(), BasicProperties::with_app_id)
        .keep(original.cluster_id(), BasicProperties::with_cluster_id)
        .0
}

/// Properties being copied field by field.
struct Carried(BasicProperties);

impl Carried {
    /// Sets the field `with` sets to `value`, when the original has one.
    fn keep<T: Clone>(
        self,
        value: &Option<T>,
        with: fn(BasicProperties, T) -> BasicProperties,
    ) -> Carried {
        match value {
            Some(value) => Carried(with(self.0, value.clone())),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field_table;

    fn schedule() -> Schedule {
        Schedule::new("close", Duration::from_millis(300))
    }

    fn original() -> BasicProperties {
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_expiration("60000".into())
            .with_priority(3)
            .with_headers(field_table([("tenant", long_string("acme"))]))
    }

    fn death(queue: &str) -> AMQPValue {
        AMQPValue::FieldTable(field_table([
            ("queue", long_string(queue)),
            ("reason", long_string("expired")),
            ("count", AMQPValue::LongLongInt(1)),
        ]))
    }

    fn worker_span() -> Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ))
    }

    fn text_of(properties: &BasicProperties, key: &str) -> Option<String> {
        properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(key))
            .and_then(header_text)
    }

    #[test]
    fn a_check_carries_the_worker_span_and_gives_the_request_its_own_context_back() {
        const REQUEST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = original().with_headers(field_table([
            ("tenant", long_string("acme")),
            (TRACEPARENT, long_string(REQUEST)),
            (TRACESTATE, long_string("vendor=1")),
        ]));
        let check =
            PendingCheck::accepted("urn:li:simpleJobPostingTask:1", "e-1", SystemTime::now(), 1);
        let parked = traced(check.properties(&request), Some(&worker_span()));
        assert_eq!(
            text_of(&parked, TRACEPARENT).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"),
            "the check's parent is the worker's span, in the request's trace"
        );
        assert_eq!(
            text_of(&parked, ORIGINAL_TRACEPARENT).as_deref(),
            Some(REQUEST)
        );
        let back = original_properties(&parked, &schedule());
        assert_eq!(text_of(&back, TRACEPARENT).as_deref(), Some(REQUEST));
        assert_eq!(text_of(&back, TRACESTATE).as_deref(), Some("vendor=1"));
        assert_eq!(text_of(&back, ORIGINAL_TRACEPARENT), None);
        assert_eq!(text_of(&back, "tenant").as_deref(), Some("acme"));
        // Re-checked: parked again from the restored original, the same way.
        let again = traced(check.checked().properties(&back), Some(&worker_span()));
        assert_eq!(
            original_properties(&again, &schedule()).headers(),
            back.headers()
        );
    }

    #[test]
    fn a_request_without_trace_context_gets_none_back_and_tracing_off_changes_nothing() {
        let check =
            PendingCheck::accepted("urn:li:simpleJobPostingTask:1", "e-1", SystemTime::now(), 1);
        let parked = traced(check.properties(&original()), Some(&worker_span()));
        assert!(text_of(&parked, TRACEPARENT).is_some());
        let back = original_properties(&parked, &schedule());
        assert_eq!(text_of(&back, TRACEPARENT), None);
        assert_eq!(text_of(&back, TRACESTATE), None);
        assert_eq!(back.headers(), original().headers());
        let untouched = check.properties(&original());
        assert_eq!(traced(untouched.clone(), None), untouched);
    }

    /// An `x-death` header: the broker's records of the queues the message died in, newest first.
    fn x_death(queues: &[&str]) -> AMQPValue {
        let records: Vec<AMQPValue> = queues.iter().map(|queue| death(queue)).collect();
        AMQPValue::FieldArray(records.into())
    }

    #[test]
    fn a_check_round_trips_through_its_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = PendingCheck::accepted("urn:li:simpleJobPostingTask:1", "job-1", now, 3);
        let original = original()
            .with_reply_to("replies".into())
            .with_correlation_id("c-1".into());
        let properties = check.checked().properties(&original);
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.expiration(),
            &None,
            "only the delay queue expires it"
        );
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some("m-1")
        );
        assert_eq!(properties.priority(), &Some(3));
        let read = PendingCheck::read(properties.headers().as_ref(), now).unwrap();
        assert_eq!(read.task_id, "urn:li:simpleJobPostingTask:1");
        assert_eq!(read.external_id, "job-1");
        assert_eq!(read.accepted_at_ms, 1_700_000_000_000);
        assert_eq!(read.checks, 1);
        assert_eq!(read.send_attempts, 3);
        // What an outcome is addressed and correlated by survives into the check and back out.
        let back = original_properties(&properties, &schedule());
        for properties in [&properties, &back] {
            assert_eq!(
                properties.reply_to().as_ref().map(|q| q.as_str()),
                Some("replies")
            );
            assert_eq!(
                properties.correlation_id().as_ref().map(|c| c.as_str()),
                Some("c-1")
            );
            assert_eq!(
                properties.message_id().as_ref().map(|m| m.as_str()),
                Some("m-1")
            );
        }
    }

    #[test]
    fn task_ids_expire_a_day_after_acceptance() {
        let accepted = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = PendingCheck::accepted("t", "j", accepted, 1);
        assert!(!check.is_expired(accepted + TASK_ID_LIFETIME - Duration::from_millis(1)));
        assert!(check.is_expired(accepted + TASK_ID_LIFETIME));
        assert_eq!(check.age(accepted - Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn checks_without_a_task_id_are_malformed_and_missing_fields_have_defaults() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            PendingCheck::read(None, now),
            Err(MalformedCheck::MissingTaskId)
        );
        let headers = field_table([(TASK_ID, long_string("t"))]);
        let read = PendingCheck::read(Some(&headers), now).unwrap();
        assert_eq!(read.accepted_at_ms, 1_000_000);
        assert_eq!(read.checks, 0);
        assert_eq!(read.external_id, "-");
        assert_eq!(
            read.send_attempts, 1,
            "LinkedIn accepted it, so it was sent at least once"
        );
    }

    #[test]
    fn the_original_comes_back_without_bookkeeping_or_our_x_death() {
        let check = PendingCheck::accepted("t", "j", SystemTime::now(), 1);
        let mut headers = check.properties(&original()).headers().clone().unwrap();
        insert_entries(
            &mut headers,
            [
                ("x-death", x_death(&["close.tasks.wait.600", "upstream"])),
                ("x-first-death-queue", long_string("upstream")),
                ("x-first-death-reason", long_string("rejected")),
                ("x-last-death-queue", long_string("close.tasks.wait.600")),
                ("x-last-death-reason", long_string("expired")),
            ],
        );
        let properties = check.properties(&original()).with_headers(headers);
        let back = original_properties(&properties, &schedule());
        assert_eq!(
            back.expiration().as_ref().map(|e| e.as_str()),
            Some("60000")
        );
        let inner = back.headers().as_ref().unwrap().inner();
        let names: Vec<&str> = inner.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "tenant",
                "x-death",
                "x-first-death-queue",
                "x-first-death-reason"
            ]
        );
        match inner.get("x-death") {
            Some(AMQPValue::FieldArray(deaths)) => {
                assert_eq!(deaths.as_slice(), [death("upstream")])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_our_x_death_leaves_no_x_death() {
        let check = PendingCheck::accepted("t", "j", SystemTime::now(), 1);
        let mut headers = check
            .properties(&BasicProperties::default())
            .headers()
            .clone()
            .unwrap();
        insert_entries(
            &mut headers,
            [
                ("x-death", x_death(&["close.tasks.wait.300"])),
                ("x-first-death-queue", long_string("close.tasks.wait.300")),
                ("x-first-death-exchange", long_string("")),
            ],
        );
        let back = original_properties(
            &BasicProperties::default().with_headers(headers),
            &schedule(),
        );
        assert!(back.headers().as_ref().unwrap().inner().is_empty());
        assert_eq!(back.expiration(), &None);
    }
}
