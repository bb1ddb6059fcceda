//! The pending-check message: the original close request, body byte for byte and properties kept,
//! plus what verifying it needs as headers — the task id (`x-task-id`), the external id, when
//! LinkedIn accepted the close and how many status checks were made. The broker holds these messages
//! and nothing else does, so a worker can die at any moment without losing a verification.
//!
//! Going back from a pending check to the original request (for a dead letter, or the next wait)
//! strips this bookkeeping and the broker's own `x-death` records of the delay queues again.

use super::queues::Schedule;
use crate::amqp::{header_int, header_text};
use crate::dead_letter;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The task id LinkedIn gave the close (shared with the dead-letter format).
pub const TASK_ID: &str = dead_letter::TASK_ID;
/// The close request's `externalJobPostingId`, so logs need not parse the body.
pub const EXTERNAL_ID: &str = "x-task-external-id";
/// When LinkedIn accepted the close, in milliseconds since the Unix epoch.
pub const ACCEPTED_AT: &str = "x-task-accepted-at";
/// Status checks made so far.
pub const CHECKS: &str = "x-task-checks";
/// The original's `expiration` property, parked here: a pending check must not expire anywhere
/// but in its delay queue.
pub const ORIGINAL_EXPIRATION: &str = "x-task-original-expiration";

/// LinkedIn keeps task ids for 24 hours (one page says 30 days; the shorter one is the safe side).
pub const TASK_ID_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A message in the verification queue that cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedCheck {
    #[error("the pending check has no {TASK_ID} header, so its task cannot be looked up")]
    MissingTaskId,
}

/// What a pending check says about its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCheck {
    pub task_id: String,
    pub external_id: String,
    pub accepted_at_ms: i64,
    pub checks: u32,
}

pub fn epoch_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PendingCheck {
    /// The check for a close LinkedIn accepted at `now`, before any status check.
    pub fn accepted(task_id: &str, external_id: &str, now: SystemTime) -> PendingCheck {
        PendingCheck {
            task_id: task_id.to_owned(),
            external_id: external_id.to_owned(),
            accepted_at_ms: epoch_millis(now),
            checks: 0,
        }
    }

    /// Reads a pending check's headers. A check without an acceptance time (published by hand) is
    /// taken as accepted `now`, so it still expires one day on.
    pub fn read(
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
        })
    }

    /// The same check, one status check later.
    pub fn checked(&self) -> PendingCheck {
        PendingCheck {
            checks: self.checks.saturating_add(1),
            ..self.clone()
        }
    }

    /// How long ago LinkedIn accepted the close.
    pub fn age(&self, now: SystemTime) -> Duration {
        let elapsed = epoch_millis(now).saturating_sub(self.accepted_at_ms);
        Duration::from_millis(u64::try_from(elapsed).unwrap_or(0))
    }

    /// Whether the task id has outlived LinkedIn's memory of it.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.age(now) >= TASK_ID_LIFETIME
    }

    /// The properties of the pending-check message: the original's, with this check's headers,
    /// persistent, and without an `expiration` (parked in a header instead).
    pub fn properties(&self, original: &BasicProperties) -> BasicProperties {
        let mut headers = original.headers().clone().unwrap_or_default();
        let mut put = |key: &str, value: AMQPValue| {
            headers.insert(ShortString::from(key), value);
        };
        put(TASK_ID, AMQPValue::LongString(self.task_id.as_str().into()));
        put(
            EXTERNAL_ID,
            AMQPValue::LongString(self.external_id.as_str().into()),
        );
        put(ACCEPTED_AT, AMQPValue::LongLongInt(self.accepted_at_ms));
        put(
            CHECKS,
            AMQPValue::LongInt(i32::try_from(self.checks).unwrap_or(i32::MAX)),
        );
        if let Some(expiration) = original.expiration() {
            put(
                ORIGINAL_EXPIRATION,
                AMQPValue::LongString(expiration.as_str().into()),
            );
        }
        without_expiration(original)
            .with_headers(headers)
            .with_delivery_mode(2)
    }
}

/// The original request's properties from a pending check's: the bookkeeping headers removed, the
/// broker's `x-death` records of the delay queues removed (records from before the close queue stay,
/// see [`dead_letter::without_deaths_in`]), and a parked `expiration` restored.
pub fn original_properties(check: &BasicProperties, schedule: &Schedule) -> BasicProperties {
    let Some(headers) = check.headers() else {
        return check.clone();
    };
    let mut own = FieldTable::default();
    let mut expiration = None;
    for (key, value) in headers.inner() {
        match key.as_str() {
            ORIGINAL_EXPIRATION => expiration = header_text(value),
            TASK_ID | EXTERNAL_ID | ACCEPTED_AT | CHECKS => {}
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

/// A copy of `original` without `expiration`: the properties type can set a field but not clear it.
fn without_expiration(original: &BasicProperties) -> BasicProperties {
    let mut copy = BasicProperties::default();
    if let Some(v) = original.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        copy = copy.with_content_encoding(v.clone());
    }
    if let Some(v) = original.headers() {
        copy = copy.with_headers(v.clone());
    }
    if let Some(v) = original.delivery_mode() {
        copy = copy.with_delivery_mode(*v);
    }
    if let Some(v) = original.priority() {
        copy = copy.with_priority(*v);
    }
    if let Some(v) = original.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = original.reply_to() {
        copy = copy.with_reply_to(v.clone());
    }
    if let Some(v) = original.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        copy = copy.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = original.user_id() {
        copy = copy.with_user_id(v.clone());
    }
    if let Some(v) = original.app_id() {
        copy = copy.with_app_id(v.clone());
    }
    if let Some(v) = original.cluster_id() {
        copy = copy.with_cluster_id(v.clone());
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule::new("close", Duration::from_millis(300))
    }

    fn original() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_expiration("60000".into())
            .with_priority(3)
            .with_headers(headers)
    }

    fn death(queue: &str) -> AMQPValue {
        let mut table = FieldTable::default();
        table.insert("queue".into(), AMQPValue::LongString(queue.into()));
        table.insert("reason".into(), AMQPValue::LongString("expired".into()));
        table.insert("count".into(), AMQPValue::LongLongInt(1));
        AMQPValue::FieldTable(table)
    }

    #[test]
    fn a_check_round_trips_through_its_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = PendingCheck::accepted("urn:li:simpleJobPostingTask:1", "job-1", now);
        let properties = check.checked().properties(&original());
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
    }

    #[test]
    fn task_ids_expire_a_day_after_acceptance() {
        let accepted = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = PendingCheck::accepted("t", "j", accepted);
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
        let mut headers = FieldTable::default();
        headers.insert(TASK_ID.into(), AMQPValue::LongString("t".into()));
        let read = PendingCheck::read(Some(&headers), now).unwrap();
        assert_eq!(read.accepted_at_ms, 1_000_000);
        assert_eq!(read.checks, 0);
        assert_eq!(read.external_id, "-");
    }

    #[test]
    fn the_original_comes_back_without_bookkeeping_or_our_x_death() {
        let check = PendingCheck::accepted("t", "j", SystemTime::now());
        let mut headers = check.properties(&original()).headers().clone().unwrap();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![death("close.tasks.wait.600"), death("upstream")].into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("upstream".into()),
        );
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("rejected".into()),
        );
        headers.insert(
            "x-last-death-queue".into(),
            AMQPValue::LongString("close.tasks.wait.600".into()),
        );
        headers.insert(
            "x-last-death-reason".into(),
            AMQPValue::LongString("expired".into()),
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
        let check = PendingCheck::accepted("t", "j", SystemTime::now());
        let mut headers = check
            .properties(&BasicProperties::default())
            .headers()
            .clone()
            .unwrap();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![death("close.tasks.wait.300")].into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("close.tasks.wait.300".into()),
        );
        headers.insert(
            "x-first-death-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        let back = original_properties(
            &BasicProperties::default().with_headers(headers),
            &schedule(),
        );
        assert!(back.headers().as_ref().unwrap().inner().is_empty());
        assert_eq!(back.expiration(), &None);
    }
}
