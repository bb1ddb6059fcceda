//! The outcome message: how a close request ended, told to the system that published it. Three ends
//! — `closed`, `already-closed`, `dead-lettered` — each told once it is final: to the request's
//! `reply_to` queue (default exchange, `correlation_id` = the request's correlation id, else its
//! message id) and to `OUTCOME_EXCHANGE`, a durable topic exchange whose routing key is the outcome.
//!
//! This module owns the format as [`crate::dead_letter`] owns the dead letter's: the kinds
//! ([`Kind`]), the body ([`Outcome`], written by the worker and read back by `publish --wait`), the
//! properties (persistent JSON, `type: job-closer.outcome.v1`, header `x-outcome`), the stable
//! message id ([`message_id`]) and the JSON Schema ([`SCHEMA`], `schema/outcome.schema.json`). It
//! also publishes them, entered through one door, [`Outcomes::publish`]: the worker's settler calls
//! it on the session's confirm channel once what the request became is the broker's (after a dead
//! letter's confirm) and before the ack, so a crash between the two repeats an outcome and never
//! loses one.
//!
//! The message id is a UUID (version 5) of the request's `message_id` — or of its body when it has
//! none —, the outcome, and the request's `x-replay-count`: the same request reaching the same
//! outcome again (redelivered after a crash, verified a second time) gets the same id, so a consumer
//! drops the repeat; a replay from the dead-letter queue is a new attempt and gets new ids. Rejected:
//! a random id per publish (a repeat could not be told from a new outcome), the body alone (two
//! requests with their own message ids but equal bodies would share outcomes), and ids remembered by
//! the worker (lost in the crash they are meant to survive).
//!
//! `reply_to` is published `mandatory`: when the queue does not exist the broker returns the outcome,
//! which is counted and warned about at most once a minute — never retried, never a reason to keep
//! or dead-letter the close, which is done. The exchange is published without `mandatory`: a topic
//! exchange's subscribers bind what they want (`dead-lettered` only, say), so an outcome nobody bound
//! is routine, not a fault. With neither an exchange nor a `reply_to`, nothing is published at all.

use crate::amqp::confirm::{confirmed, publish_mandatory, publish_to_exchange};
use crate::amqp::{self, AmqpError, field_table, header_int, long_string};
use crate::dead_letter::{self, Failure, MAX_MESSAGE_BYTES, truncate_utf8};
use crate::logging::Every;
use crate::telemetry::{propagation, spans};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

/// The JSON Schema (2020-12) of the body, `schema/outcome.schema.json`, built in so that `job-closer
/// schema --outcome` prints the very file that is published and tested.
pub const SCHEMA: &str = include_str!("../schema/outcome.schema.json");
/// The `type` property of every outcome message.
pub const TYPE: &str = "job-closer.outcome.v1";
/// The header naming the outcome (as the routing key does on the exchange).
pub const HEADER: &str = "x-outcome";
pub const CONTENT_TYPE: &str = "application/json";
/// The `app_id` property of every outcome message.
pub const APP_ID: &str = "job-closer";
/// The setting that names the exchange, for errors.
pub(crate) const EXCHANGE_SETTING: &str = "OUTCOME_EXCHANGE";
/// The warning about a `reply_to` queue that does not exist is repeated at most this often.
const WARN_UNROUTABLE_EVERY: Duration = Duration::from_secs(60);
/// The namespace of outcome message ids (UUID version 5); never to change, or repeats of an outcome
/// published before and after the change would carry different ids.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0b_4c0e_9d1f_4e57_a3c2_1b7f_90d4_e815);

/// How a close request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// LinkedIn took the close (with task checks on: and its task succeeded).
    Closed,
    /// LinkedIn answered that the job is already closed or does not exist.
    AlreadyClosed,
    /// Dead-lettered; the dead letter was confirmed first.
    DeadLettered,
}

impl Kind {
    /// Every outcome, in the order docs/outcomes.md lists them.
    pub const ALL: [Kind; 3] = [Kind::Closed, Kind::AlreadyClosed, Kind::DeadLettered];

    /// As the body, the `x-outcome` header and the routing key spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Closed => "closed",
            Kind::AlreadyClosed => "already-closed",
            Kind::DeadLettered => "dead-lettered",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of an outcome message (`schema/outcome.schema.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The request's `externalJobPostingId`; `null` for an invalid body that names none.
    pub external_job_posting_id: Option<String>,
    pub outcome: Kind,
    /// With `closed`: whether the close task was seen to succeed (task checks on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// With a verified `closed`: the job's URN, when LinkedIn gave one (`urn:li:jobPosting:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_posting: Option<String>,
    /// The close task LinkedIn accepted (`urn:li:simpleJobPostingTask:…`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// With `dead-lettered`: the dead letter's `x-error-reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `dead-lettered`: `x-error-status`; with `already-closed`: LinkedIn's status (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// With `dead-lettered`: `x-error-message`; with `already-closed`: LinkedIn's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Requests to simpleJobPostings made for it (0 when never sent); for `dead-lettered`, the dead
    /// letter's `x-attempts`.
    pub attempts: u32,
    /// The request's `message_id`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_message_id: Option<String>,
    /// The close queue the request came from.
    pub close_queue: String,
    /// When the outcome was published: RFC 3339 UTC, to the millisecond.
    pub at: String,
}

/// How a close request ended, as the worker knows it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ended<'a> {
    /// LinkedIn took the close: `verified` once its task succeeded (with the job's URN where LinkedIn
    /// gave one); not verified with `TASK_CHECK=off`, or when LinkedIn gave no task id.
    Closed {
        verified: bool,
        task_id: Option<&'a str>,
        job_posting: Option<&'a str>,
    },
    /// LinkedIn said the job is already closed or does not exist (its 409; or this worker's memory
    /// of a close it accepted within the hour, said the same way).
    AlreadyClosed { status: u16, message: &'a str },
    /// Its dead letter was confirmed, recording this failure.
    DeadLettered(&'a Failure),
}

impl Ended<'_> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Ended::Closed { .. } => Kind::Closed,
            Ended::AlreadyClosed { .. } => Kind::AlreadyClosed,
            Ended::DeadLettered(_) => Kind::DeadLettered,
        }
    }
}

/// The close request an outcome is about.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// The request's body, byte for byte (a pending check carries it too).
    pub(crate) body: &'a [u8],
    /// The request's own properties (for a pending check: the original's, see
    /// `tasks::pending::original_properties`).
    pub(crate) properties: &'a BasicProperties,
    pub(crate) external_id: Option<&'a str>,
    /// Requests to simpleJobPostings made for it.
    pub(crate) attempts: u32,
}

impl Outcome {
    /// The body for `request` having `ended` so, published `at`.
    pub(crate) fn of(
        request: &Request<'_>,
        ended: &Ended<'_>,
        close_queue: &str,
        at: String,
    ) -> Outcome {
        let mut outcome = Outcome {
            external_job_posting_id: request.external_id.map(str::to_owned),
            outcome: ended.kind(),
            verified: None,
            job_posting: None,
            task_id: None,
            reason: None,
            status: None,
            message: None,
            attempts: request.attempts,
            request_message_id: non_empty(request.properties.message_id()).map(str::to_owned),
            close_queue: close_queue.to_owned(),
            at,
        };
        let message = |text: &str| Some(truncate_utf8(text, MAX_MESSAGE_BYTES).to_owned());
        match *ended {
            Ended::Closed {
                verified,
                task_id,
                job_posting,
            } => {
                outcome.verified = Some(verified);
                outcome.task_id = task_id.map(str::to_owned);
                outcome.job_posting = job_posting.map(str::to_owned);
            }
            Ended::AlreadyClosed {
                status,
                message: said,
            } => {
                outcome.status = Some(status);
                outcome.message = message(said);
            }
            Ended::DeadLettered(failure) => {
                outcome.reason = Some(failure.reason.as_str().to_owned());
                outcome.status = Some(failure.status);
                outcome.message = message(&failure.message);
                outcome.task_id = failure.task_id.clone();
                outcome.attempts = failure.attempts;
            }
        }
        outcome
    }
}

fn non_empty(value: &Option<ShortString>) -> Option<&str> {
    value
        .as_ref()
        .map(ShortString::as_str)
        .filter(|text| !text.is_empty())
}

/// The queue a request asks its outcome to be sent to: its `reply_to`, when it names one.
pub fn reply_to(request: &BasicProperties) -> Option<&str> {
    non_empty(request.reply_to())
}

/// What an outcome's `correlation_id` is: the request's correlation id, else its message id.
pub fn correlation_id(request: &BasicProperties) -> Option<&str> {
    non_empty(request.correlation_id()).or_else(|| non_empty(request.message_id()))
}

/// The outcome message's id: the same every time the same request (same `message_id` — or, without
/// one, the same body — and the same `x-replay-count`) reaches the same outcome.
pub fn message_id(request: &BasicProperties, body: &[u8], kind: Kind) -> String {
    let replays = request
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(dead_letter::REPLAY_COUNT))
        .and_then(header_int)
        .unwrap_or(0);
    let mut name = Vec::with_capacity(64 + body.len());
    for part in [kind.as_str().as_bytes(), replays.to_string().as_bytes()] {
        name.extend_from_slice(part);
        name.push(0);
    }
    match non_empty(request.message_id()) {
        Some(id) => {
            name.extend_from_slice(b"message_id\0");
            name.extend_from_slice(id.as_bytes());
        }
        None => {
            name.extend_from_slice(b"body\0");
            name.extend_from_slice(body);
        }
    }
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, &name).to_string()
}

/// The properties of an outcome message about `request`: persistent JSON of [`TYPE`], the
/// `x-outcome` header, its message id, and the request's correlation (see [`correlation_id`]).
pub(crate) fn properties(
    request: &BasicProperties,
    kind: Kind,
    message_id: &str,
    at: SystemTime,
) -> BasicProperties {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_type(TYPE.into())
        .with_message_id(message_id.into())
        .with_app_id(APP_ID.into())
        .with_timestamp(seconds)
        .with_headers(field_table([(HEADER, long_string(kind.as_str()))]));
    match correlation_id(request) {
        Some(correlation) => properties.with_correlation_id(correlation.into()),
        None => properties,
    }
}

/// Declares the outcome exchange as `run` uses it: durable, topic.
pub(crate) async fn declare_exchange(connection: &Connection, name: &str) -> Result<(), AmqpError> {
    amqp::declare_exchange(connection, name, ExchangeKind::Topic, EXCHANGE_SETTING).await
}

/// An outcome that could not be published: the caller gives the request back, to end again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutcomeError {
    #[error(transparent)]
    Broker(#[from] AmqpError),
    #[error("cannot encode the outcome: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What publishing one outcome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) kind: Kind,
    /// The request's `reply_to` queue does not exist: the broker returned the outcome.
    pub(crate) unroutable: bool,
}

/// Where a worker's outcomes go: the exchange (if any) and each request's `reply_to`.
pub(crate) struct Outcomes {
    exchange: Option<ShortString>,
    close_queue: String,
    unroutable: Every,
}

impl Outcomes {
    /// Outcomes of requests from `close_queue`, also published to `exchange` when there is one.
    pub(crate) fn new(exchange: Option<&str>, close_queue: &str) -> Result<Outcomes, AmqpError> {
        Ok(Outcomes {
            exchange: exchange.map(amqp::queue_name).transpose()?,
            close_queue: close_queue.to_owned(),
            unroutable: Every::new(WARN_UNROUTABLE_EVERY),
        })
    }

    /// The exchange every outcome is published to, when there is one.
    pub(crate) fn exchange(&self) -> Option<&str> {
        self.exchange.as_ref().map(ShortString::as_str)
    }

    /// Whether a request with these properties gets an outcome at all: only then does ending it
    /// cost a publish.
    pub(crate) fn wanted(&self, request: &BasicProperties) -> bool {
        self.exchange.is_some() || reply_to(request).is_some()
    }

    /// Publishes the outcome of `request` to the exchange and its `reply_to`, both before either
    /// confirm is awaited; returns once the broker confirmed both (`None`: no outcome was wanted).
    /// A `reply_to` queue that does not exist is not an error: it is counted by the caller
    /// ([`Sent::unroutable`]) and warned about here at most once a minute.
    pub(crate) async fn publish(
        &self,
        channel: &Channel,
        request: Request<'_>,
        ended: Ended<'_>,
    ) -> Result<Option<Sent>, OutcomeError> {
        if !self.wanted(request.properties) {
            return Ok(None);
        }
        let reply_to = reply_to(request.properties).map(ShortString::from);
        let kind = ended.kind();
        let now = SystemTime::now();
        let at = dead_letter::format_time(now.into());
        let body = serde_json::to_vec(&Outcome::of(&request, &ended, &self.close_queue, at))?;
        let id = message_id(request.properties, request.body, kind);
        // The span settling the request (the worker's) is the outcome's parent.
        let context = spans::context_of(&spans::current());
        let properties = propagation::onto(
            properties(request.properties, kind, &id, now),
            context.as_ref(),
        );
        let to_exchange = match &self.exchange {
            Some(exchange) => {
                let routing_key = ShortString::from(kind.as_str());
                let confirm = publish_to_exchange(
                    channel,
                    exchange.clone(),
                    routing_key,
                    &body,
                    properties.clone(),
                )
                .await
                .map_err(AmqpError::from)?;
                Some((exchange.as_str(), confirm))
            }
            None => None,
        };
        let to_reply_to = match &reply_to {
            Some(queue) => {
                let confirm = publish_mandatory(channel, queue.clone(), &body, properties)
                    .await
                    .map_err(AmqpError::from)?;
                Some((queue.as_str(), confirm))
            }
            None => None,
        };
        if let Some((exchange, confirm)) = to_exchange {
            confirmed(exchange, confirm).await?;
        }
        let mut unroutable = false;
        if let Some((queue, confirm)) = to_reply_to {
            match confirmed(queue, confirm).await {
                Ok(()) => {}
                Err(AmqpError::Unroutable {
                    reply_code,
                    reply_text,
                    ..
                }) => {
                    unroutable = true;
                    self.warn_unroutable(queue, &request, reply_code, &reply_text);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Some(Sent { kind, unroutable }))
    }

    fn warn_unroutable(
        &self,
        queue: &str,
        request: &Request<'_>,
        reply_code: u16,
        reply_text: &str,
    ) {
        if let Some(held_back) = self.unroutable.due(Instant::now()) {
            warn!(
                reply_to = queue,
                externalJobPostingId = request.external_id.unwrap_or("-"),
                reply_code,
                reply_text,
                unroutable_since_last_warning = held_back,
                "A close request's reply_to queue does not exist: its outcome came back unroutable and was dropped; the close itself is settled. Warned at most once a minute; job_closer_outcome_unroutable_total counts each one."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field_table;
    use lapin::types::AMQPValue;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const BODY: &[u8] = br#"{"externalJobPostingId":"JOB-1","title":"Engineer"}"#;

    fn request_properties() -> BasicProperties {
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_reply_to("replies".into())
    }

    fn request<'a>(properties: &'a BasicProperties) -> Request<'a> {
        Request {
            body: BODY,
            properties,
            external_id: Some("JOB-1"),
            attempts: 2,
        }
    }

    fn body_of(ended: Ended<'_>, properties: &BasicProperties) -> Value {
        let outcome = Outcome::of(
            &request(properties),
            &ended,
            "linkedin.jobs.close",
            "2026-12-01T14:00:05.120Z".into(),
        );
        serde_json::to_value(outcome).unwrap()
    }

    fn schema() -> jsonschema::Validator {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        jsonschema::draft202012::new(&schema).unwrap()
    }

    #[test]
    fn the_message_id_is_stable_per_request_and_outcome() {
        let properties = request_properties();
        let closed = message_id(&properties, BODY, Kind::Closed);
        assert_eq!(
            closed,
            message_id(&properties, BODY, Kind::Closed),
            "a repeat"
        );
        assert!(Uuid::parse_str(&closed).is_ok(), "{closed}");
        assert_eq!(
            Uuid::parse_str(&closed).unwrap().get_version_num(),
            5,
            "derived, not random"
        );
        // The message id decides, not the body or the other properties.
        let other_body = message_id(&properties, b"{}", Kind::Closed);
        assert_eq!(closed, other_body);
        let no_reply = message_id(
            &BasicProperties::default().with_message_id("m-1".into()),
            BODY,
            Kind::Closed,
        );
        assert_eq!(closed, no_reply);
        // Another outcome, another request, another replay: another id.
        assert_ne!(closed, message_id(&properties, BODY, Kind::DeadLettered));
        assert_ne!(closed, message_id(&properties, BODY, Kind::AlreadyClosed));
        let other = BasicProperties::default().with_message_id("m-2".into());
        assert_ne!(closed, message_id(&other, BODY, Kind::Closed));
        let replayed = properties.clone().with_headers(field_table([(
            dead_letter::REPLAY_COUNT,
            AMQPValue::LongInt(1),
        )]));
        let once = message_id(&replayed, BODY, Kind::Closed);
        assert_ne!(closed, once, "a replay is a new attempt");
        assert_eq!(once, message_id(&replayed, BODY, Kind::Closed));
        // Without a message id, the body decides.
        let bare = BasicProperties::default();
        let by_body = message_id(&bare, BODY, Kind::Closed);
        assert_eq!(by_body, message_id(&bare, BODY, Kind::Closed));
        assert_ne!(by_body, message_id(&bare, b"{}", Kind::Closed));
        assert_ne!(by_body, closed);
        let empty_id = BasicProperties::default().with_message_id("".into());
        assert_eq!(by_body, message_id(&empty_id, BODY, Kind::Closed));
    }

    #[test]
    fn each_outcome_has_its_fields() {
        let properties = request_properties();
        let verified = body_of(
            Ended::Closed {
                verified: true,
                task_id: Some("urn:li:simpleJobPostingTask:1"),
                job_posting: Some("urn:li:jobPosting:123"),
            },
            &properties,
        );
        assert_eq!(
            verified,
            json!({
                "externalJobPostingId": "JOB-1",
                "outcome": "closed",
                "verified": true,
                "jobPosting": "urn:li:jobPosting:123",
                "taskId": "urn:li:simpleJobPostingTask:1",
                "attempts": 2,
                "requestMessageId": "m-1",
                "closeQueue": "linkedin.jobs.close",
                "at": "2026-12-01T14:00:05.120Z",
            })
        );
        let unverified = body_of(
            Ended::Closed {
                verified: false,
                task_id: None,
                job_posting: None,
            },
            &BasicProperties::default(),
        );
        assert_eq!(unverified["verified"], false);
        for absent in [
            "jobPosting",
            "taskId",
            "reason",
            "status",
            "message",
            "requestMessageId",
        ] {
            assert!(unverified.get(absent).is_none(), "{absent} in {unverified}");
        }
        let already = body_of(
            Ended::AlreadyClosed {
                status: 409,
                message: "Cannot close job which is already closed or does not exist",
            },
            &properties,
        );
        assert_eq!(already["outcome"], "already-closed");
        assert_eq!(already["status"], 409);
        assert!(already.get("verified").is_none() && already.get("reason").is_none());
        let failure = Failure::task_failed(
            "Job JOB-1 was dropped: true",
            3,
            "urn:li:simpleJobPostingTask:9",
        );
        let dead = body_of(Ended::DeadLettered(&failure), &properties);
        assert_eq!(dead["outcome"], "dead-lettered");
        assert_eq!(dead["reason"], "task-failed");
        assert_eq!(dead["status"], 200);
        assert_eq!(dead["message"], "Job JOB-1 was dropped: true");
        assert_eq!(dead["taskId"], "urn:li:simpleJobPostingTask:9");
        assert_eq!(dead["attempts"], 3, "the dead letter's x-attempts");
        // As long as the dead letter's header, and no longer.
        let long = Failure::rejected(422, "é".repeat(3000), 1);
        let cut = body_of(Ended::DeadLettered(&long), &properties);
        assert_eq!(cut["message"].as_str().unwrap().len(), MAX_MESSAGE_BYTES);
        // An invalid body that names no id says so with null.
        let nameless = Outcome::of(
            &Request {
                external_id: None,
                ..request(&properties)
            },
            &Ended::DeadLettered(&Failure::invalid("not JSON")),
            "q",
            "2026-12-01T14:00:05.120Z".into(),
        );
        let nameless = serde_json::to_value(nameless).unwrap();
        assert_eq!(nameless["externalJobPostingId"], Value::Null);
        for body in [verified, unverified, already, dead, cut, nameless] {
            assert!(schema().is_valid(&body), "the schema refuses {body}");
            let read: Outcome = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(serde_json::to_value(read).unwrap(), body, "round trip");
        }
    }

    #[test]
    fn the_properties_say_what_the_message_is_and_whose_it_is() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let request = request_properties();
        let properties = properties(&request, Kind::AlreadyClosed, "id-1", at);
        let text = |value: &Option<ShortString>| value.as_ref().map(|v| v.to_string());
        assert_eq!(
            text(properties.content_type()).as_deref(),
            Some(CONTENT_TYPE)
        );
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(text(properties.kind()).as_deref(), Some(TYPE));
        assert_eq!(text(properties.message_id()).as_deref(), Some("id-1"));
        assert_eq!(text(properties.correlation_id()).as_deref(), Some("m-1"));
        assert_eq!(properties.timestamp(), &Some(1_700_000_000));
        assert_eq!(properties.reply_to(), &None, "an outcome asks for no reply");
        let header = properties.headers().as_ref().unwrap().inner().get(HEADER);
        assert_eq!(
            header.and_then(crate::amqp::header_text).as_deref(),
            Some("already-closed")
        );
        let correlated = request.clone().with_correlation_id("c-7".into());
        let properties = super::properties(&correlated, Kind::Closed, "id-2", at);
        assert_eq!(text(properties.correlation_id()).as_deref(), Some("c-7"));
        let anonymous = super::properties(&BasicProperties::default(), Kind::Closed, "id-3", at);
        assert_eq!(anonymous.correlation_id(), &None);
    }

    #[test]
    fn only_a_named_reply_to_or_an_exchange_asks_for_an_outcome() {
        let none = Outcomes::new(None, "close").unwrap();
        assert!(none.wanted(&request_properties()));
        assert!(!none.wanted(&BasicProperties::default()));
        assert!(!none.wanted(&BasicProperties::default().with_reply_to("".into())));
        let exchange = Outcomes::new(Some("outcomes"), "close").unwrap();
        assert!(exchange.wanted(&BasicProperties::default()));
        assert_eq!(reply_to(&request_properties()), Some("replies"));
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~é\"\\\\]{0,40}"
    }

    fn reason() -> impl Strategy<Value = Failure> {
        (0..5u8, 100..600u16, text(), 0..20u32).prop_map(|(which, status, message, attempts)| {
            match which {
                0 => Failure::invalid(message),
                1 => Failure::rejected(status, message, attempts),
                2 => Failure::exhausted(status, message, attempts),
                3 => Failure::task_failed(message, attempts, "urn:li:simpleJobPostingTask:1"),
                _ => Failure::task_unknown(status, message, attempts),
            }
        })
    }

    proptest! {
        #[test]
        fn every_body_the_worker_writes_is_valid_against_the_published_schema(
            which in 0..3u8,
            verified in any::<bool>(),
            job_posting in proptest::option::of("urn:li:jobPosting:[0-9]{1,12}"),
            task_id in proptest::option::of("urn:li:simpleJobPostingTask:[a-f0-9-]{1,36}"),
            failure in reason(),
            said in text(),
            external_id in proptest::option::of(text()),
            message_id in proptest::option::of(text()),
            attempts in 0..50u32,
        ) {
            let mut properties = BasicProperties::default();
            if let Some(id) = &message_id {
                properties = properties.with_message_id(id.as_str().into());
            }
            let ended = match which {
                0 => Ended::Closed {
                    verified,
                    task_id: task_id.as_deref(),
                    job_posting: job_posting.as_deref().filter(|_| verified),
                },
                1 => Ended::AlreadyClosed { status: 409, message: &said },
                _ => Ended::DeadLettered(&failure),
            };
            let request = Request {
                body: BODY,
                properties: &properties,
                external_id: external_id.as_deref(),
                attempts,
            };
            let outcome = Outcome::of(&request, &ended, "close", dead_letter::now_rfc3339());
            let body = serde_json::to_value(&outcome).unwrap();
            prop_assert!(schema().is_valid(&body), "{}", body);
            prop_assert_eq!(serde_json::from_value::<Outcome>(body).unwrap(), outcome);
        }
    }
}
