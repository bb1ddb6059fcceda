//! The exact copy of a dead letter in its record, and reading records back: what makes `export` an
//! archive that `import` restores byte for byte.
//!
//! A record's `body`, `headers` and `properties` are for reading (and `jq`): the body as JSON when it
//! is JSON, header values as plain JSON. That view loses what the broker holds — key order and
//! spacing of the body, bytes that are not UTF-8, whether `x-error-status` was a 32-bit integer or a
//! string, that `x-death` times are AMQP timestamps. So each record also carries `amqp`: the body's
//! exact bytes (as text when UTF-8, else base64) and every header with its AMQP type, as
//! `{"i32":403}`, `{"longstr":"..."}`, `{"timestamp":1700000000}`, `{"table":{...}}`. The properties
//! view loses nothing and is read back as it is. How each header view and the properties are written
//! and read is [`super::amqp_json`]'s; this file puts a record together and takes it apart.
//!
//! Rejected: serde's own encoding of lapin's `AMQPValue` (a string becomes an array of byte numbers,
//! four times the size, and the format would change with lapin's); a second, binary file (an archive
//! an operator cannot read or grep). Records without `amqp` (written by hand, or by job-closer before
//! it had one) are still read: the body from `body` as written in the file, the header types
//! inferred (whole numbers as 32-bit when they fit, else 64-bit; text as long strings).

use super::amqp_json::{read_plain_headers, read_properties, read_typed_headers, typed_headers};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The `amqp` part of a record: the exact body and the typed headers.
pub(crate) fn exact_json(body: &[u8], headers: Option<&FieldTable>) -> Value {
    let mut exact = Map::new();
    match std::str::from_utf8(body) {
        Ok(text) => exact.insert("body".into(), json!(text)),
        Err(_) => exact.insert("body_base64".into(), json!(BASE64.encode(body))),
    };
    exact.insert("headers".into(), typed_headers(headers));
    Value::Object(exact)
}

/// A dead letter read back from a record: what `import` publishes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Restored {
    pub(crate) body: Vec<u8>,
    pub(crate) properties: BasicProperties,
}

/// The parts of a record `import` reads; `position` and `group` are derived, and ignored.
#[derive(Deserialize)]
struct RecordIn<'a> {
    #[serde(borrow)]
    body: Option<&'a RawValue>,
    headers: Option<Value>,
    properties: Option<Value>,
    amqp: Option<ExactIn>,
}

#[derive(Deserialize)]
struct ExactIn {
    body: Option<String>,
    body_base64: Option<String>,
    headers: Option<Value>,
}

/// Reads one line of `export`: the body, properties and headers as they were.
pub(crate) fn restore(line: &str) -> Result<Restored, String> {
    if !line.trim_start().starts_with('{') {
        return Err("not a record: a record is a JSON object, as `dlq export` writes".into());
    }
    let record: RecordIn =
        serde_json::from_str(line).map_err(|error| format!("not a JSON record: {error}"))?;
    let exact = record.amqp.as_ref();
    let body = match (
        exact.and_then(|e| e.body.as_ref()),
        exact.and_then(|e| e.body_base64.as_ref()),
    ) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|error| format!("amqp.body_base64 is not base64: {error}"))?,
        (None, None) => body_as_written(record.body)?,
    };
    let headers = match (exact.and_then(|e| e.headers.as_ref()), &record.headers) {
        (Some(typed), _) => Some(read_typed_headers(typed)?),
        (None, Some(plain)) => Some(read_plain_headers(plain)?),
        (None, None) => None,
    };
    let mut properties = match &record.properties {
        Some(value) => read_properties(value)?,
        None => BasicProperties::default(),
    };
    if let Some(headers) = headers.filter(|h| !h.inner().is_empty()) {
        properties = properties.with_headers(headers);
    }
    Ok(Restored { body, properties })
}

/// A record without `amqp`: a string body is the text; any other JSON is the body as written.
fn body_as_written(body: Option<&RawValue>) -> Result<Vec<u8>, String> {
    let raw = body.ok_or("the record has no body")?;
    if raw.get().starts_with('"') {
        let text: String = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        Ok(text.into_bytes())
    } else {
        Ok(raw.get().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, DecimalValue, LongString};

    fn every_type() -> FieldTable {
        let mut nested = FieldTable::default();
        nested.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        nested.insert("queue".into(), AMQPValue::LongString("close".into()));
        let mut table = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-8),
            AMQPValue::ShortShortUInt(8),
            AMQPValue::ShortInt(-16),
            AMQPValue::ShortUInt(16),
            AMQPValue::LongInt(403),
            AMQPValue::LongUInt(32),
            AMQPValue::LongLongInt(-1 << 40),
            AMQPValue::Float(1.5),
            AMQPValue::Double(2.25),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314,
            }),
            AMQPValue::ShortString("short".into()),
            AMQPValue::LongString("ERROR :: /title :: é".into()),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe, b'a'])),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(nested)].into()),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::ByteArray(vec![0u8, 1, 255].into()),
            AMQPValue::Void,
        ];
        for (index, value) in values.into_iter().enumerate() {
            table.insert(format!("h{index:02}").as_str().into(), value);
        }
        table
    }

    fn line(body: &[u8], properties: &BasicProperties) -> String {
        let record = json!({
            "position": 1,
            "body": "ignored when amqp is there",
            "headers": {},
            "properties": super::super::amqp_json::properties_json(properties),
            "group": "00000000",
            "amqp": exact_json(body, properties.headers().as_ref()),
        });
        record.to_string()
    }

    #[test]
    fn records_restore_body_properties_and_typed_headers_exactly() {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_type("close".into())
            .with_app_id("ats".into())
            .with_delivery_mode(2)
            .with_priority(5)
            .with_timestamp(1_700_000_000)
            .with_headers(every_type());
        for body in [
            br#"{"title": "t",   "externalJobPostingId":"J-1"}"#.to_vec(),
            b"not json \xff\x00".to_vec(),
            Vec::new(),
        ] {
            let restored = restore(&line(&body, &properties)).unwrap();
            assert_eq!(restored.body, body);
            assert_eq!(restored.properties, properties);
        }
        let bare = restore(&line(b"x", &BasicProperties::default())).unwrap();
        assert_eq!(bare.properties, BasicProperties::default());
    }

    #[test]
    fn records_without_the_exact_part_are_read_as_written() {
        let restored = restore(
            r#"{"body":{"z":1,"a":[1, 2]},"headers":{"x-error-status":403,"big":8589934592,"x-error-message":"m","x-death":[{"count":1}]},"properties":{"delivery_mode":2}}"#,
        )
        .unwrap();
        assert_eq!(restored.body, br#"{"z":1,"a":[1, 2]}"#);
        let headers = restored.properties.headers().clone().unwrap();
        let inner = headers.inner();
        assert_eq!(inner.get("x-error-status"), Some(&AMQPValue::LongInt(403)));
        assert_eq!(
            inner.get("big"),
            Some(&AMQPValue::LongLongInt(8_589_934_592))
        );
        assert_eq!(
            inner.get("x-error-message"),
            Some(&AMQPValue::LongString("m".into()))
        );
        assert!(matches!(
            inner.get("x-death"),
            Some(AMQPValue::FieldArray(_))
        ));
        assert_eq!(restored.properties.delivery_mode(), &Some(2));
        let text = restore(r#"{"body":"plain \"text\""}"#).unwrap();
        assert_eq!(text.body, br#"plain "text""#);
        assert_eq!(text.properties, BasicProperties::default());
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        for (bad, says) in [
            ("", "not a record"),
            ("[1]", "not a record"),
            ("{\"body\":", "not a JSON record"),
            ("{\"headers\":{}}", "no body"),
            (r#"{"body":"b","headers":[1]}"#, "headers must be an object"),
            (
                r#"{"body":"b","properties":{"delivery_mode":"2"}}"#,
                "delivery_mode",
            ),
            (
                r#"{"body":"b","properties":{"colour":"red"}}"#,
                "unknown property",
            ),
            (
                r#"{"amqp":{"body":"b","headers":{"h":{"i8":300}}}}"#,
                "not a valid i8",
            ),
            (
                r#"{"amqp":{"body":"b","headers":{"h":{"weird":1}}}}"#,
                "unknown header type",
            ),
            (r#"{"amqp":{"body":"b","headers":{"h":5}}}"#, "typed header"),
            (r#"{"amqp":{"body_base64":"***"}}"#, "base64"),
        ] {
            let error = restore(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
