//! The dead-letter format: what a failed close request carries when it lands in the dead-letter queue.
//!
//! The body stays byte for byte and the original properties are kept; the failure is added as headers
//! (`x-error-status`, `x-error-message`, `x-error-reason`, `x-attempts`, `x-original-queue`,
//! `x-dead-lettered-at`). The worker writes this format and `job-closer dlq` reads it back, so both
//! sides live here — and so does what a replay does to it: [`replay_properties`] strips the failure,
//! counts the replay (`x-replay-count`) and names the fields an edited replay changed
//! (`x-edited-fields`).
//!
//! The format is read here too, and only here: [`Recorded::read`] for the failure record (falling
//! back to RabbitMQ's own `x-death` records for messages the broker dead-lettered), [`deaths`] and
//! [`without_deaths_in`] for those records (a pending task check sheds the ones its delay queues
//! added), and [`external_id`] / [`contract`] for what a body names. One reading of "the external id
//! of a body" (a JSON object's `externalJobPostingId`, string or number) serves the worker's logs,
//! `dlq list` and the `--id` filter alike; an earlier second copy also accepted JSON arrays.
//!
//! `x-dead-lettered-at` carries milliseconds (`2026-12-01T14:00:05.123Z`, still RFC 3339): `dlq
//! replay --dry-run` hands the real run an `--until` bound taken from these times, and with whole
//! seconds a dead letter arriving in the same second as the newest one shown would slip in. Older
//! dead letters with whole seconds read the same way.

use crate::amqp::{header_int, header_text};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

pub const STATUS: &str = "x-error-status";
pub const MESSAGE: &str = "x-error-message";
pub const REASON: &str = "x-error-reason";
pub const ATTEMPTS: &str = "x-attempts";
pub const ORIGINAL_QUEUE: &str = "x-original-queue";
pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
pub const TASK_ID: &str = "x-task-id";
/// How many times `dlq replay` sent a message back.
pub const REPLAY_COUNT: &str = "x-replay-count";
/// On a copy sent back by an edited replay: the body fields it set or unset, comma-separated.
pub const EDITED_FIELDS: &str = "x-edited-fields";

/// RabbitMQ's records of each time it dead-lettered a message, newest first.
pub const X_DEATH: &str = "x-death";
/// The summary headers RabbitMQ adds beside `x-death`: the first and the last dead-lettering.
pub const BROKER_DEATH_HEADERS: [&str; 6] = [
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// `x-error-message` is cut to this many bytes (at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a message was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Failed local validation; never sent.
    Invalid,
    /// LinkedIn said no.
    Rejected,
    /// A transient failure outlived the retry budget.
    RetriesExhausted,
    /// LinkedIn accepted the close, then its task failed.
    TaskFailed,
    /// The close task's status could not be learnt before its id expired.
    TaskUnknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::Rejected => "rejected",
            Reason::RetriesExhausted => "retries-exhausted",
            Reason::TaskFailed => "task-failed",
            Reason::TaskUnknown => "task-unknown",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure a dead letter records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub status: u16,
    pub message: String,
    pub attempts: u32,
    pub task_id: Option<String>,
}

/// One constructor per reason, so that each kind of dead letter is made in one place: what status
/// it records and how its attempts count are decided here, not at each caller.
impl Failure {
    /// A message that failed local validation: never sent, recorded as LinkedIn would answer (422).
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::of(Reason::Invalid, 422, message, 0)
    }

    /// LinkedIn refused the close with `status` after `attempts` requests.
    pub(crate) fn rejected(status: u16, message: impl Into<String>, attempts: u32) -> Failure {
        Failure::of(Reason::Rejected, status, message, attempts)
    }

    /// A transient failure (the last one seen: `status`, `message`) outlived the retry budget.
    pub(crate) fn exhausted(status: u16, message: impl Into<String>, attempts: u32) -> Failure {
        Failure::of(Reason::RetriesExhausted, status, message, attempts)
    }

    /// LinkedIn accepted the close, and its task then ended failed (the lookup answered 200);
    /// `checks` counts the lookups made.
    pub(crate) fn task_failed(message: impl Into<String>, checks: u32, task_id: &str) -> Failure {
        Failure::of(Reason::TaskFailed, 200, message, checks).with_task_id(task_id)
    }

    /// The close task's fate could not be learnt; `status` is the last HTTP status seen, `checks`
    /// the lookups made. Add the task id with [`Failure::with_task_id`] where there is a usable one.
    pub(crate) fn task_unknown(status: u16, message: impl Into<String>, checks: u32) -> Failure {
        Failure::of(Reason::TaskUnknown, status, message, checks)
    }

    /// The failure, naming the close task it concerns (`x-task-id`).
    pub(crate) fn with_task_id(mut self, task_id: &str) -> Failure {
        self.task_id = Some(task_id.to_owned());
        self
    }

    fn of(reason: Reason, status: u16, message: impl Into<String>, attempts: u32) -> Failure {
        Failure {
            reason,
            status,
            message: message.into(),
            attempts,
            task_id: None,
        }
    }
}

/// Cuts text to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// RFC 3339 in UTC with exactly three digits of milliseconds: `2026-12-01T14:00:05.120Z`.
const MILLISECONDS_UTC: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// A time as dead letters record it (and `dlq` shows it): UTC, to the millisecond.
pub(crate) fn format_time(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(MILLISECONDS_UTC)
        .unwrap_or_default()
}

/// Now, as [`format_time`] writes it.
pub(crate) fn now_rfc3339() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// The original properties with the failure added as headers.
pub fn properties(
    original: &BasicProperties,
    original_queue: &str,
    failure: &Failure,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    let mut put = |key: &str, value: AMQPValue| {
        headers.insert(ShortString::from(key), value);
    };
    put(STATUS, AMQPValue::LongInt(i32::from(failure.status)));
    put(
        MESSAGE,
        AMQPValue::LongString(truncate_utf8(&failure.message, MAX_MESSAGE_BYTES).into()),
    );
    put(
        REASON,
        AMQPValue::LongString(failure.reason.as_str().into()),
    );
    put(
        ATTEMPTS,
        AMQPValue::LongInt(i32::try_from(failure.attempts).unwrap_or(i32::MAX)),
    );
    put(ORIGINAL_QUEUE, AMQPValue::LongString(original_queue.into()));
    put(
        DEAD_LETTERED_AT,
        AMQPValue::LongString(now_rfc3339().into()),
    );
    if let Some(task_id) = &failure.task_id {
        put(TASK_ID, AMQPValue::LongString(task_id.as_str().into()));
    }
    // Dead letters must survive a broker restart even if the original was published transient.
    original.clone().with_headers(headers).with_delivery_mode(2)
}

/// What a message in the dead-letter queue says about its failure, as far as it says anything:
/// messages published by hand or dead-lettered by RabbitMQ itself (`x-death`) carry less.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) status: Option<i64>,
    pub(crate) message: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) attempts: Option<i64>,
    pub(crate) original_queue: Option<String>,
    /// `x-dead-lettered-at`, or the time of RabbitMQ's newest `x-death` record.
    pub(crate) dead_lettered_at: Option<String>,
    pub(crate) task_id: Option<String>,
    pub(crate) replay_count: Option<i64>,
}

impl Recorded {
    pub(crate) fn read(headers: Option<&FieldTable>) -> Recorded {
        let Some(headers) = headers else {
            return Recorded::default();
        };
        let inner = headers.inner();
        let text = |key: &str| inner.get(key).and_then(header_text);
        let int = |key: &str| inner.get(key).and_then(header_int);
        let mut recorded = Recorded {
            status: int(STATUS),
            message: text(MESSAGE),
            reason: text(REASON),
            attempts: int(ATTEMPTS),
            original_queue: text(ORIGINAL_QUEUE),
            dead_lettered_at: text(DEAD_LETTERED_AT),
            task_id: text(TASK_ID),
            replay_count: int(REPLAY_COUNT),
        };
        // RabbitMQ's own dead letters say less, in `x-death`: its newest record.
        if let Some(death) = deaths(headers).next() {
            if recorded.dead_lettered_at.is_none() {
                recorded.dead_lettered_at = death.time();
            }
            if recorded.reason.is_none() {
                recorded.reason = death.text("reason").map(|r| format!("broker-{r}"));
                recorded.original_queue = death.queue();
                recorded.attempts = death.table.get("count").and_then(header_int);
            }
        }
        recorded
    }
}

/// One record of RabbitMQ's `x-death` header: where, why and when the broker dead-lettered the
/// message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Death<'a> {
    table: &'a BTreeMap<ShortString, AMQPValue>,
}

impl Death<'_> {
    fn of(value: &AMQPValue) -> Option<Death<'_>> {
        match value {
            AMQPValue::FieldTable(table) => Some(Death {
                table: table.inner(),
            }),
            _ => None,
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        self.table.get(key).and_then(header_text)
    }

    /// The queue the message died in.
    pub(crate) fn queue(&self) -> Option<String> {
        self.text("queue")
    }

    /// When, as RFC 3339 (RabbitMQ sends an AMQP timestamp, in seconds).
    pub(crate) fn time(&self) -> Option<String> {
        match self.table.get("time")? {
            AMQPValue::Timestamp(seconds) => {
                OffsetDateTime::from_unix_timestamp(i64::try_from(*seconds).ok()?)
                    .ok()?
                    .format(&Rfc3339)
                    .ok()
            }
            other => header_text(other),
        }
    }
}

/// The `x-death` records of a message, newest first; none when it has no (readable) `x-death`.
pub(crate) fn deaths(headers: &FieldTable) -> impl Iterator<Item = Death<'_>> {
    let records = match headers.inner().get(X_DEATH) {
        Some(AMQPValue::FieldArray(records)) => records.as_slice(),
        _ => &[],
    };
    records.iter().filter_map(Death::of)
}

/// Headers without RabbitMQ's records of dead-lettering in the queues `ours` accepts: their
/// `x-death` entries (the header goes when none is left), and each `x-first-death-*` /
/// `x-last-death-*` group whose queue is one of them. Records of other queues stay: the original
/// may have been dead-lettered upstream before it reached us.
pub(crate) fn without_deaths_in(headers: &FieldTable, ours: impl Fn(&str) -> bool) -> FieldTable {
    let inner = headers.inner();
    let group_is_ours = |name: &str| {
        let group = if name.starts_with("x-first-death-") {
            "x-first-death-queue"
        } else {
            "x-last-death-queue"
        };
        inner
            .get(group)
            .and_then(header_text)
            .is_some_and(|queue| ours(&queue))
    };
    let mut kept = FieldTable::default();
    for (key, value) in inner {
        let name = key.as_str();
        if BROKER_DEATH_HEADERS.contains(&name) && group_is_ours(name) {
            continue;
        }
        if name == X_DEATH {
            if let Some(records) = records_elsewhere(value, &ours) {
                kept.insert(key.clone(), records);
            }
            continue;
        }
        kept.insert(key.clone(), value.clone());
    }
    kept
}

/// The `x-death` array without the records of `ours`; `None` when nothing else is left.
fn records_elsewhere(value: &AMQPValue, ours: &impl Fn(&str) -> bool) -> Option<AMQPValue> {
    let AMQPValue::FieldArray(records) = value else {
        return Some(value.clone());
    };
    let kept: Vec<AMQPValue> = records
        .as_slice()
        .iter()
        .filter(|record| {
            let queue = Death::of(record).and_then(|death| death.queue());
            !queue.is_some_and(|queue| ours(&queue))
        })
        .cloned()
        .collect();
    (!kept.is_empty()).then(|| AMQPValue::FieldArray(FieldArray::from(kept)))
}

/// The top-level fields of a body that name what it is about, read without building the whole
/// body.
#[derive(Deserialize)]
struct Named {
    #[serde(rename = "externalJobPostingId")]
    external_id: Option<Value>,
    contract: Option<Value>,
}

fn named(body: &[u8]) -> Option<Named> {
    // serde would also read a struct from a JSON array (`["J-1"]`): only objects have named fields.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Named>(body).ok()
}

/// `externalJobPostingId` as text, when the body is a JSON object that has one (string or number).
pub(crate) fn external_id(body: &[u8]) -> Option<String> {
    match named(body)?.external_id? {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The body's `contract` (`urn:li:contract:7`), when it is a JSON object that names one.
pub(crate) fn contract(body: &[u8]) -> Option<String> {
    match named(body)?.contract? {
        Value::String(urn) => Some(urn),
        _ => None,
    }
}

/// The properties a replayed message goes back to the close queue with: the original ones, without
/// job-closer's failure record, with `x-replay-count` one higher, and — when the replay edited the
/// body — `x-edited-fields` naming the fields it set or unset.
pub(crate) fn replay_properties(
    original: &BasicProperties,
    edited_fields: &[String],
) -> BasicProperties {
    let headers = original.headers().as_ref();
    let replays = Recorded::read(headers).replay_count.unwrap_or(0);
    let mut kept = headers.map(strip_failure).unwrap_or_default();
    kept.insert(
        REPLAY_COUNT.into(),
        AMQPValue::LongInt(i32::try_from(replays.saturating_add(1)).unwrap_or(i32::MAX)),
    );
    if !edited_fields.is_empty() {
        kept.insert(
            EDITED_FIELDS.into(),
            AMQPValue::LongString(edited_fields.join(",").into()),
        );
    }
    original.clone().with_headers(kept)
}

/// Headers without job-closer's failure record, for sending a message back to the close queue.
pub(crate) fn strip_failure(headers: &FieldTable) -> FieldTable {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        let name = key.as_str();
        let ours = name.starts_with("x-error-")
            || [ATTEMPTS, ORIGINAL_QUEUE, DEAD_LETTERED_AT, TASK_ID].contains(&name);
        if !ours {
            kept.insert(key.clone(), value.clone());
        }
    }
    kept
}

/// A first-attempt 403 for contract 7, as unit tests of the readers need one.
#[cfg(test)]
pub(crate) fn contract_403() -> Failure {
    Failure::rejected(
        403,
        "Caller is not authorized to access the jobs for contract: urn:li:contract:7",
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(fields: &[(&str, AMQPValue)]) -> AMQPValue {
        let mut table = FieldTable::default();
        for (key, value) in fields {
            table.insert((*key).into(), value.clone());
        }
        AMQPValue::FieldTable(table)
    }

    fn died_in(queue: &str) -> AMQPValue {
        death(&[("queue", AMQPValue::LongString(queue.into()))])
    }

    fn x_death(records: Vec<AMQPValue>) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(X_DEATH.into(), AMQPValue::FieldArray(records.into()));
        headers
    }

    fn with(mut headers: FieldTable, key: &str, value: &str) -> FieldTable {
        headers.insert(key.into(), AMQPValue::LongString(value.into()));
        headers
    }

    #[test]
    fn deaths_are_read_newest_first_and_shed_only_for_our_queues() {
        let headers = x_death(vec![died_in("wait.300"), died_in("upstream")]);
        let queues: Vec<Option<String>> = deaths(&headers).map(|d| d.queue()).collect();
        assert_eq!(queues, [Some("wait.300".into()), Some("upstream".into())]);
        assert_eq!(deaths(&FieldTable::default()).count(), 0);
        assert_eq!(
            deaths(&with(FieldTable::default(), X_DEATH, "x")).count(),
            0
        );

        let ours = |queue: &str| queue.starts_with("wait.");
        let headers = with(headers, "x-first-death-queue", "upstream");
        let headers = with(headers, "x-first-death-reason", "rejected");
        let headers = with(headers, "x-last-death-queue", "wait.300");
        let headers = with(headers, "x-last-death-reason", "expired");
        let headers = with(headers, "tenant", "acme");
        let kept = without_deaths_in(&headers, ours);
        let kept = kept.inner();
        assert!(kept.contains_key("tenant") && kept.contains_key("x-first-death-reason"));
        assert!(
            !kept.contains_key("x-last-death-queue") && !kept.contains_key("x-last-death-reason")
        );
        let left: Vec<_> = deaths(&FieldTable::from(kept.clone()))
            .map(|d| d.queue())
            .collect();
        assert_eq!(left, [Some("upstream".into())]);
        let only_ours = x_death(vec![died_in("wait.600")]);
        assert!(without_deaths_in(&only_ours, ours).inner().is_empty());
    }

    #[test]
    fn only_json_objects_name_an_external_id_or_a_contract() {
        assert_eq!(
            external_id(br#" {"externalJobPostingId":"J-1"}"#).as_deref(),
            Some("J-1")
        );
        assert_eq!(
            external_id(br#"{"externalJobPostingId":42}"#).as_deref(),
            Some("42")
        );
        for nameless in [
            &br#"["J-1"]"#[..],
            br#"{"externalJobPostingId":null}"#,
            br#"{"externalJobPostingId":["J-1"]}"#,
            br#"{"title":"t"}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(external_id(nameless), None, "{nameless:?}");
        }
        assert_eq!(
            contract(br#"{"contract":"urn:li:contract:7","externalJobPostingId":1}"#).as_deref(),
            Some("urn:li:contract:7")
        );
        assert_eq!(contract(br#"{"contract":7}"#), None);
        assert_eq!(contract(br#"["urn:li:contract:7"]"#), None);
    }

    #[test]
    fn each_kind_of_dead_letter_has_one_constructor_that_records_it_as_documented() {
        let invalid = Failure::invalid("ERROR :: /title :: field is required");
        assert_eq!(
            (invalid.reason, invalid.status, invalid.attempts),
            (Reason::Invalid, 422, 0)
        );
        let rejected = Failure::rejected(403, "not authorized", 2);
        assert_eq!(
            (rejected.reason, rejected.status, rejected.attempts),
            (Reason::Rejected, 403, 2)
        );
        let exhausted = Failure::exhausted(503, "upstream", 7);
        assert_eq!(
            (exhausted.reason, exhausted.status, exhausted.attempts),
            (Reason::RetriesExhausted, 503, 7)
        );
        for untasked in [invalid, rejected, exhausted] {
            assert_eq!(untasked.task_id, None, "{untasked:?}");
        }
        // docs/dead-letters.md: with task-failed and task-unknown, x-task-id names the task and the status is 200.
        let failed = Failure::task_failed("job not found", 3, "urn:li:simpleJobPostingTask:1");
        assert_eq!(
            (failed.reason, failed.status, failed.attempts),
            (Reason::TaskFailed, 200, 3)
        );
        assert_eq!(
            failed.task_id.as_deref(),
            Some("urn:li:simpleJobPostingTask:1")
        );
        let unknown =
            Failure::task_unknown(200, "expired", 9).with_task_id("urn:li:simpleJobPostingTask:2");
        assert_eq!(
            (
                unknown.reason,
                unknown.status,
                unknown.attempts,
                unknown.message.as_str()
            ),
            (Reason::TaskUnknown, 200, 9, "expired")
        );
        assert_eq!(
            unknown.task_id.as_deref(),
            Some("urn:li:simpleJobPostingTask:2")
        );
        let unusable = Failure::task_unknown(422, "not a task URN", 0);
        assert_eq!(unusable.task_id, None);
    }

    #[test]
    fn headers_round_trip_and_keep_the_original_properties() {
        let mut original_headers = FieldTable::default();
        original_headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_headers(original_headers);
        let failure = Failure::rejected(
            403,
            "Caller is not authorized to access the jobs for contract: urn:li:contract:1",
            2,
        );
        let props = properties(&original, "close", &failure);
        assert_eq!(props.message_id().as_ref().map(|m| m.as_str()), Some("m-1"));
        assert_eq!(props.delivery_mode(), &Some(2));
        let recorded = Recorded::read(props.headers().as_ref());
        assert_eq!(recorded.status, Some(403));
        assert_eq!(recorded.reason.as_deref(), Some("rejected"));
        assert_eq!(recorded.attempts, Some(2));
        assert_eq!(recorded.original_queue.as_deref(), Some("close"));
        let at = recorded.dead_lettered_at.unwrap();
        assert!(OffsetDateTime::parse(&at, &Rfc3339).is_ok(), "{at}");
        assert!(at.ends_with('Z'));
        let stripped = strip_failure(props.headers().as_ref().unwrap());
        assert_eq!(stripped.inner().len(), 1);
        assert!(stripped.inner().contains_key("tenant"));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(3000);
        let cut = truncate_utf8(&message, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(cut.len(), 4096);
        assert_eq!(truncate_utf8("short", 10), "short");
        assert_eq!(truncate_utf8("aé", 2), "a");
    }

    #[test]
    fn broker_dead_letters_are_read_from_x_death() {
        let headers = x_death(vec![death(&[
            ("reason", AMQPValue::LongString("delivery_limit".into())),
            ("queue", AMQPValue::LongString("close".into())),
            ("count", AMQPValue::LongLongInt(3)),
        ])]);
        let recorded = Recorded::read(Some(&headers));
        assert_eq!(recorded.reason.as_deref(), Some("broker-delivery_limit"));
        assert_eq!(recorded.original_queue.as_deref(), Some("close"));
        assert_eq!(recorded.attempts, Some(3));
        assert_eq!(recorded.status, None);
    }

    #[test]
    fn a_replay_keeps_the_requests_trace_context() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = BasicProperties::default().with_headers(crate::amqp::field_table([
            ("traceparent", AMQPValue::LongString(traceparent.into())),
            ("tracestate", AMQPValue::LongString("vendor=1".into())),
        ]));
        let dead = properties(&request, "close", &Failure::invalid("bad"));
        let replayed = replay_properties(&dead, &["title".into()]);
        let headers = replayed.headers().as_ref().unwrap().inner();
        for (key, value) in [("traceparent", traceparent), ("tracestate", "vendor=1")] {
            assert_eq!(
                headers
                    .get(key)
                    .and_then(crate::amqp::header_text)
                    .as_deref(),
                Some(value),
                "{key} of the dead letter goes back with the replay"
            );
        }
    }

    #[test]
    fn replayed_properties_lose_the_failure_and_count_the_replay() {
        let failure = Failure::invalid(
            "ERROR :: /title :: field is required but not found and has no default value",
        )
        .with_task_id("urn:li:simpleJobPostingTask:1");
        let dead = properties(
            &BasicProperties::default().with_message_id("m-1".into()),
            "close",
            &failure,
        );
        let once = replay_properties(&dead, &[]);
        let headers = once.headers().as_ref().unwrap().inner();
        assert!(!headers.keys().any(|k| k.as_str().starts_with("x-error-")));
        for gone in [
            ATTEMPTS,
            ORIGINAL_QUEUE,
            DEAD_LETTERED_AT,
            TASK_ID,
            EDITED_FIELDS,
        ] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
        assert_eq!(
            Recorded::read(once.headers().as_ref()).replay_count,
            Some(1)
        );
        assert_eq!(once.message_id().as_ref().map(|m| m.as_str()), Some("m-1"));
        let edited = replay_properties(&once, &["title".into(), "description".into()]);
        let headers = edited.headers().as_ref().unwrap().inner();
        assert_eq!(
            Recorded::read(edited.headers().as_ref()).replay_count,
            Some(2)
        );
        assert_eq!(
            headers.get(EDITED_FIELDS).and_then(header_text).as_deref(),
            Some("title,description")
        );
        let bare = replay_properties(&BasicProperties::default(), &[]);
        assert_eq!(
            Recorded::read(bare.headers().as_ref()).replay_count,
            Some(1)
        );
    }

    #[test]
    fn dead_letter_times_carry_milliseconds_and_x_death_times_are_read() {
        let now = now_rfc3339();
        let parsed = OffsetDateTime::parse(&now, &Rfc3339).unwrap();
        assert_eq!(parsed.nanosecond() % 1_000_000, 0, "{now}");
        assert!(now.ends_with('Z'), "{now}");
        let at = time::macros::datetime!(2026-12-01 16:00:05.12 +02:00);
        assert_eq!(format_time(at), "2026-12-01T14:00:05.120Z");
        assert_eq!(
            OffsetDateTime::parse(&format_time(at), &Rfc3339).unwrap(),
            at
        );
        let headers = x_death(vec![death(&[(
            "time",
            AMQPValue::Timestamp(1_700_000_000),
        )])]);
        let recorded = Recorded::read(Some(&headers));
        assert_eq!(
            recorded.dead_lettered_at.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
    }
}
