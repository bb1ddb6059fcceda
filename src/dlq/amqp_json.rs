//! The AMQP side of a dead letter — its header table and its properties — as a record writes it in
//! JSON, and read back: one home for every conversion between lapin's types and a record's JSON.
//!
//! Headers are written in two views, because no one view serves both readers. The *plain* view (a
//! record's `headers`) is for people and `jq`: strings as strings, numbers as numbers, tables and
//! arrays nested; it loses what the broker holds (each value's AMQP type, bytes that are not UTF-8).
//! The *typed* view (`amqp.headers`, see [`super::archive`]) keeps every value with its type,
//! `{"i32":403}`, so that `import` restores it exactly. Both views walk a table the one way
//! (`table_json` out, `table_from` back in) and differ only in how they write and read a single
//! value, so the archive format and the `list --json` output cannot drift apart in how they treat a
//! table. The properties need one view (each is a string or a small number and loses nothing), and
//! one table of the string properties serves both directions, so a property written is a property
//! read back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value, json};

/// Writes one header value in one of the two views.
type WriteValue = fn(&AMQPValue) -> Value;
/// Reads one header value back from one of the two views.
type ReadValue = fn(&Value) -> Result<AMQPValue, String>;

/// The header table as a record's `headers`: plain JSON values; no table is `{}`.
pub(crate) fn plain_headers(headers: Option<&FieldTable>) -> Value {
    table_json(headers, plain)
}

/// The header table as a record's `amqp.headers`: each value with its AMQP type; no table is `{}`.
pub(crate) fn typed_headers(headers: Option<&FieldTable>) -> Value {
    table_json(headers, typed)
}

/// Reads a record's `headers` back (a record without `amqp`), the types inferred.
pub(crate) fn read_plain_headers(value: &Value) -> Result<FieldTable, String> {
    table_from(value, inferred)
}

/// Reads a record's `amqp.headers` back, exactly.
pub(crate) fn read_typed_headers(value: &Value) -> Result<FieldTable, String> {
    table_from(value, untyped)
}

/// The one walk over a header table, writing each value with `write`.
fn table_json(table: Option<&FieldTable>, write: WriteValue) -> Value {
    let entries = table.into_iter().flat_map(|table| table.inner().iter());
    Value::Object(
        entries
            .map(|(key, value)| (key.to_string(), write(value)))
            .collect(),
    )
}

/// The one walk back into a header table, reading each value with `read`.
fn table_from(value: &Value, read: ReadValue) -> Result<FieldTable, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("headers must be an object, got {value}"))?;
    let mut table = FieldTable::default();
    for (key, value) in object {
        let name = ShortString::try_new(key.as_str())
            .map_err(|_| format!("header name {key:?} is too long"))?;
        let value = read(value).map_err(|why| format!("header {key:?}: {why}"))?;
        table.insert(name, value);
    }
    Ok(table)
}

fn array_from(items: &[Value], read: ReadValue) -> Result<FieldArray, String> {
    Ok(FieldArray::from(
        items.iter().map(read).collect::<Result<Vec<_>, _>>()?,
    ))
}

/// A header value in the plain view: strings as strings (lossy for bytes that are not UTF-8),
/// numbers as numbers, tables and arrays nested.
fn plain(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(plain).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(table) => table_json(Some(table), plain),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A plain JSON header value read back, with the type inferred: whole numbers as 32-bit when they
/// fit, else 64-bit; text as long strings.
fn inferred(value: &Value) -> Result<AMQPValue, String> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(whole), _) => match i32::try_from(whole) {
                Ok(small) => AMQPValue::LongInt(small),
                Err(_) => AMQPValue::LongLongInt(whole),
            },
            (None, Some(float)) => AMQPValue::Double(float),
            _ => return Err(format!("{n} does not fit an AMQP number")),
        },
        Value::String(text) => AMQPValue::LongString(text.as_str().into()),
        Value::Array(items) => AMQPValue::FieldArray(array_from(items, inferred)?),
        Value::Object(_) => AMQPValue::FieldTable(table_from(value, inferred)?),
    })
}

/// One header value with its AMQP type: `{"i32":403}`.
fn typed(value: &AMQPValue) -> Value {
    let (tag, inner) = match value {
        AMQPValue::Boolean(v) => ("bool", json!(v)),
        AMQPValue::ShortShortInt(v) => ("i8", json!(v)),
        AMQPValue::ShortShortUInt(v) => ("u8", json!(v)),
        AMQPValue::ShortInt(v) => ("i16", json!(v)),
        AMQPValue::ShortUInt(v) => ("u16", json!(v)),
        AMQPValue::LongInt(v) => ("i32", json!(v)),
        AMQPValue::LongUInt(v) => ("u32", json!(v)),
        AMQPValue::LongLongInt(v) => ("i64", json!(v)),
        AMQPValue::Float(v) => ("f32", json!(v)),
        AMQPValue::Double(v) => ("f64", json!(v)),
        AMQPValue::DecimalValue(d) => ("decimal", json!({"scale": d.scale, "value": d.value})),
        AMQPValue::ShortString(s) => ("shortstr", json!(s.as_str())),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => ("longstr", json!(text)),
            Err(_) => ("longstr_base64", json!(BASE64.encode(s.as_bytes()))),
        },
        AMQPValue::FieldArray(items) => (
            "array",
            Value::Array(items.as_slice().iter().map(typed).collect()),
        ),
        AMQPValue::Timestamp(t) => ("timestamp", json!(t)),
        AMQPValue::FieldTable(table) => ("table", table_json(Some(table), typed)),
        AMQPValue::ByteArray(bytes) => ("bytes_base64", json!(BASE64.encode(bytes.as_slice()))),
        AMQPValue::Void => ("void", Value::Null),
    };
    json!({ tag: inner })
}

/// Reads a typed header value back.
fn untyped(value: &Value) -> Result<AMQPValue, String> {
    let Some((tag, inner)) = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return Err(format!(
            "a typed header value is {{\"TYPE\": value}}, got {value}"
        ));
    };
    let bad = || format!("{inner} is not a valid {tag}");
    let int = |min: i64, max: i64| {
        inner
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(bad)
    };
    let text = || inner.as_str().ok_or_else(bad);
    let base64 = || BASE64.decode(text()?).map_err(|_| bad());
    Ok(match tag.as_str() {
        "bool" => AMQPValue::Boolean(inner.as_bool().ok_or_else(bad)?),
        "i8" => AMQPValue::ShortShortInt(int(i8::MIN.into(), i8::MAX.into())? as i8),
        "u8" => AMQPValue::ShortShortUInt(int(0, u8::MAX.into())? as u8),
        "i16" => AMQPValue::ShortInt(int(i16::MIN.into(), i16::MAX.into())? as i16),
        "u16" => AMQPValue::ShortUInt(int(0, u16::MAX.into())? as u16),
        "i32" => AMQPValue::LongInt(int(i32::MIN.into(), i32::MAX.into())? as i32),
        "u32" => AMQPValue::LongUInt(int(0, u32::MAX.into())? as u32),
        "i64" => AMQPValue::LongLongInt(inner.as_i64().ok_or_else(bad)?),
        "f32" => AMQPValue::Float(inner.as_f64().ok_or_else(bad)? as f32),
        "f64" => AMQPValue::Double(inner.as_f64().ok_or_else(bad)?),
        "decimal" => {
            let part = |name: &str| inner.get(name).and_then(Value::as_u64).ok_or_else(bad);
            AMQPValue::DecimalValue(DecimalValue {
                scale: u8::try_from(part("scale")?).map_err(|_| bad())?,
                value: u32::try_from(part("value")?).map_err(|_| bad())?,
            })
        }
        "shortstr" => AMQPValue::ShortString(ShortString::try_new(text()?).map_err(|_| bad())?),
        "longstr" => AMQPValue::LongString(text()?.into()),
        "longstr_base64" => AMQPValue::LongString(LongString::from(base64()?)),
        "array" => AMQPValue::FieldArray(array_from(inner.as_array().ok_or_else(bad)?, untyped)?),
        "timestamp" => AMQPValue::Timestamp(inner.as_u64().ok_or_else(bad)?),
        "table" => AMQPValue::FieldTable(table_from(inner, untyped)?),
        "bytes_base64" => AMQPValue::ByteArray(base64()?.into()),
        "void" => AMQPValue::Void,
        other => return Err(format!("unknown header type {other:?}")),
    })
}

/// A property that is a short string: its AMQP name, how to read it, how to set it.
type TextProperty = (
    &'static str,
    fn(&BasicProperties) -> &Option<ShortString>,
    fn(BasicProperties, ShortString) -> BasicProperties,
);

/// The string properties, in the order a record writes them. One line per property, as a table
/// reads best (rustfmt would spread each over five).
#[rustfmt::skip]
const TEXT_PROPERTIES: [TextProperty; 10] = [
    ("content_type", |p| p.content_type(), |p, v| p.with_content_type(v)),
    ("content_encoding", |p| p.content_encoding(), |p, v| p.with_content_encoding(v)),
    ("correlation_id", |p| p.correlation_id(), |p, v| p.with_correlation_id(v)),
    ("reply_to", |p| p.reply_to(), |p, v| p.with_reply_to(v)),
    ("expiration", |p| p.expiration(), |p, v| p.with_expiration(v)),
    ("message_id", |p| p.message_id(), |p, v| p.with_message_id(v)),
    ("type", |p| p.kind(), |p, v| p.with_type(v)),
    ("user_id", |p| p.user_id(), |p, v| p.with_user_id(v)),
    ("app_id", |p| p.app_id(), |p, v| p.with_app_id(v)),
    ("cluster_id", |p| p.cluster_id(), |p, v| p.with_cluster_id(v)),
];

/// The properties that are set, by their AMQP names.
pub(crate) fn properties_json(properties: &BasicProperties) -> Value {
    let mut object = Map::new();
    for (name, get, _) in TEXT_PROPERTIES {
        if let Some(value) = get(properties) {
            object.insert(name.to_owned(), Value::String(value.to_string()));
        }
    }
    if let Some(mode) = properties.delivery_mode() {
        object.insert("delivery_mode".into(), json!(mode));
    }
    if let Some(priority) = properties.priority() {
        object.insert("priority".into(), json!(priority));
    }
    if let Some(timestamp) = properties.timestamp() {
        object.insert("timestamp".into(), json!(timestamp));
    }
    Value::Object(object)
}

/// The properties of [`properties_json`], read back.
pub(crate) fn read_properties(value: &Value) -> Result<BasicProperties, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("properties must be an object, got {value}"))?;
    let mut properties = BasicProperties::default();
    for (name, value) in object {
        let text = || -> Result<ShortString, String> {
            let text = value
                .as_str()
                .ok_or_else(|| format!("property {name} must be a string, got {value}"))?;
            ShortString::try_new(text).map_err(|_| format!("property {name} is too long"))
        };
        let small = || -> Result<u8, String> {
            value
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("property {name} must be 0-255, got {value}"))
        };
        let text_property = TEXT_PROPERTIES
            .iter()
            .find(|(text_name, ..)| text_name == name);
        properties = match (name.as_str(), text_property) {
            (_, Some((_, _, set))) => set(properties, text()?),
            ("delivery_mode", None) => properties.with_delivery_mode(small()?),
            ("priority", None) => properties.with_priority(small()?),
            ("timestamp", None) => properties.with_timestamp(value.as_u64().ok_or_else(|| {
                format!("property timestamp must be a whole number, got {value}")
            })?),
            (other, None) => return Err(format!("unknown property {other:?}")),
        };
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_written_is_read_back() {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(5)
            .with_timestamp(1_700_000_000);
        for (name, _, set) in TEXT_PROPERTIES {
            properties = set(properties, format!("{name}-value").as_str().into());
        }
        let json = properties_json(&properties);
        assert_eq!(
            json.as_object().map(Map::len),
            Some(TEXT_PROPERTIES.len() + 3)
        );
        assert_eq!(json["type"], "type-value");
        assert_eq!(read_properties(&json), Ok(properties));
    }
}
