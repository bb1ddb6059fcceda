//! What one dead letter says, read once: its failure record, its `externalJobPostingId`, when it died
//! and its failure group; and the JSON record that `list --json` and `export` print (whose exact part,
//! read back by `import`, is [`super::archive`]'s; its header and property views,
//! [`super::amqp_json`]'s).
//!
//! Nothing here assumes job-closer wrote the message: a body that is not JSON is shown as text, a
//! message without `x-error-*` headers falls back to RabbitMQ's `x-death`, and one with neither still
//! gets a group, a row and a record.

use super::amqp_json::{plain_headers, properties_json};
use super::archive::exact_json;
use super::group::GroupKey;
use super::scan::DeadLetter;
use crate::dead_letter::{self, Recorded};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::Value;

/// A dead letter with everything the commands look at worked out once.
#[derive(Debug)]
pub(crate) struct Described {
    pub(crate) recorded: Recorded,
    /// The body as JSON, when it is JSON.
    pub(crate) body_json: Option<Value>,
    pub(crate) external_id: Option<String>,
    /// The body's `contract` URN, when it names one.
    pub(crate) contract: Option<String>,
    /// `x-dead-lettered-at`, or the time in RabbitMQ's `x-death` record.
    pub(crate) dead_lettered_at: Option<String>,
    pub(crate) group: GroupKey,
    pub(crate) group_id: String,
}

pub(crate) fn describe(letter: &DeadLetter) -> Described {
    describe_parts(&letter.body, &letter.properties)
}

/// [`describe`] for a body and its properties held elsewhere than in a walk (a record read back).
pub(crate) fn describe_parts(body: &[u8], properties: &BasicProperties) -> Described {
    let headers = properties.headers().as_ref();
    let recorded = Recorded::read(headers);
    let body_json: Option<Value> = serde_json::from_slice(body).ok();
    let external_id = dead_letter::external_id(body);
    let contract = dead_letter::contract(body);
    let dead_lettered_at = recorded.dead_lettered_at.clone();
    let group = GroupKey::of(&recorded);
    let group_id = group.id();
    Described {
        recorded,
        body_json,
        external_id,
        contract,
        dead_lettered_at,
        group,
        group_id,
    }
}

/// The record `list --json` and `export` print, fields in this order: position, body, every header,
/// the properties, the failure group, and the exact copy `import` restores from.
#[derive(Serialize)]
struct JsonRecord {
    position: u64,
    body: Value,
    headers: Value,
    properties: Value,
    group: String,
    amqp: Value,
}

/// One line of JSON (fields in the order above).
pub(crate) fn json_record(letter: &DeadLetter, described: &Described) -> String {
    let body = match &described.body_json {
        Some(json) => json.clone(),
        None => Value::String(String::from_utf8_lossy(&letter.body).into_owned()),
    };
    let headers = letter.properties.headers().as_ref();
    let record = JsonRecord {
        position: letter.position,
        body,
        headers: plain_headers(headers),
        properties: properties_json(&letter.properties),
        group: described.group_id.clone(),
        amqp: exact_json(&letter.body, headers),
    };
    // Serialising plain values into a string cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::external_id;
    use crate::dlq::filter::Filter;
    use lapin::types::{AMQPValue, FieldTable};
    use serde_json::json;

    fn letter(body: &[u8], properties: BasicProperties) -> DeadLetter {
        DeadLetter::at(3, body, properties)
    }

    fn rejected_403() -> BasicProperties {
        let failure = dead_letter::contract_403();
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_delivery_mode(2);
        dead_letter::properties(&original, "close", &failure)
    }

    #[test]
    fn job_closer_dead_letters_are_described_and_filtered() {
        let dead = letter(
            br#"{"externalJobPostingId":"J-1","title":"t"}"#,
            rejected_403(),
        );
        let described = describe(&dead);
        assert_eq!(described.external_id.as_deref(), Some("J-1"));
        assert_eq!(described.recorded.status, Some(403));
        assert!(described.dead_lettered_at.is_some());
        let matching = Filter {
            status: Some(403),
            reason: Some("Rejected".into()),
            external_id: Some("J-1".into()),
            group: Some(described.group_id.clone()),
            ..Filter::default()
        };
        assert!(matching.matches(dead.candidate()));
        assert!(Filter::default().matches(dead.candidate()));
        for miss in [
            Filter {
                status: Some(422),
                ..Filter::default()
            },
            Filter {
                reason: Some("invalid".into()),
                ..Filter::default()
            },
            Filter {
                external_id: Some("J-2".into()),
                ..Filter::default()
            },
            Filter {
                group: Some("00000000".into()),
                ..Filter::default()
            },
        ] {
            assert!(!miss.matches(dead.candidate()), "{miss:?}");
        }
    }

    #[test]
    fn records_carry_body_headers_and_properties() {
        let dead = letter(br#"{"externalJobPostingId":"J-1"}"#, rejected_403());
        let record: Value = serde_json::from_str(&json_record(&dead, &describe(&dead))).unwrap();
        assert_eq!(record["position"], 3);
        assert_eq!(record["body"]["externalJobPostingId"], "J-1");
        assert_eq!(record["headers"]["x-error-status"], 403);
        assert_eq!(record["headers"]["x-error-reason"], "rejected");
        assert_eq!(record["properties"]["message_id"], "m-1");
        assert_eq!(record["properties"]["delivery_mode"], 2);
        assert_eq!(
            external_id(br#"{"externalJobPostingId":42}"#).as_deref(),
            Some("42")
        );
        assert_eq!(external_id(b"[1]"), None);
        let text = letter(b"not json \xff", BasicProperties::default());
        let record: Value = serde_json::from_str(&json_record(&text, &describe(&text))).unwrap();
        assert_eq!(record["body"], "not json \u{fffd}");
        assert_eq!(record["headers"], json!({}));
    }

    #[test]
    fn broker_dead_letters_use_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        death.insert("queue".into(), AMQPValue::LongString("close".into()));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let dead = letter(b"{}", BasicProperties::default().with_headers(headers));
        let described = describe(&dead);
        assert_eq!(
            described.dead_lettered_at.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert!(
            Filter {
                reason: Some("broker-rejected".into()),
                ..Filter::default()
            }
            .matches(dead.candidate())
        );
        let record: Value = serde_json::from_str(&json_record(&dead, &described)).unwrap();
        assert_eq!(record["headers"]["x-death"][0]["queue"], "close");
    }
}
