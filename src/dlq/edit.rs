//! Editing a dead letter's body on its way back: `dlq replay --set FIELD=VALUE --unset FIELD`.
//!
//! The edit works on the top-level fields of a JSON object and keeps everything else as it was: the
//! other fields in their order, their values as raw JSON text (numbers keep their digits, strings
//! their escapes). A set field already there keeps its place; a new one goes last; an unset field
//! goes away (every copy of it, should the body repeat a key). VALUE is read as JSON when it parses
//! as JSON (`listedAt=1700000000000`, `contract="urn:li:contract:7"` quoted for the shell, `x=null`)
//! and as a string otherwise (`title=Night Nurse`). Rejected: editing through a `serde_json::Value`
//! (its map sorts the keys: every replayed body would be reordered), and dotted paths into nested
//! objects (a close request is flat; the documented fields are all top-level).
//!
//! Everything here is pure: the edit, what it changed (for `--dry-run`'s before/after), and the
//! field list that goes into `x-edited-fields`. Whether the result may be sent is the worker's own
//! validator's call ([`crate::close_request::validate`]), made by the caller.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// One field change, as the command line gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldEdit {
    /// The field and its new value, as JSON text.
    Set(String, String),
    Unset(String),
}

impl FieldEdit {
    pub(crate) fn field(&self) -> &str {
        match self {
            FieldEdit::Set(field, _) | FieldEdit::Unset(field) => field,
        }
    }
}

/// Reads a `--set FIELD=VALUE`.
pub(crate) fn parse_set(text: &str) -> Result<FieldEdit, String> {
    let (field, value) = text
        .split_once('=')
        .ok_or_else(|| format!("--set takes FIELD=VALUE, got {text:?}"))?;
    let field = parse_field(field)?;
    let json = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(parsed) => parsed.to_string(),
        Err(_) => serde_json::Value::String(value.to_owned()).to_string(),
    };
    Ok(FieldEdit::Set(field, json))
}

/// Reads an `--unset FIELD`.
pub(crate) fn parse_unset(text: &str) -> Result<FieldEdit, String> {
    Ok(FieldEdit::Unset(parse_field(text)?))
}

fn parse_field(text: &str) -> Result<String, String> {
    let field = text.trim();
    if field.is_empty() {
        return Err("a field name cannot be empty".into());
    }
    Ok(field.to_owned())
}

/// The edits of one replay, in the order given; each field at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Edit {
    edits: Vec<FieldEdit>,
}

impl Edit {
    /// The edits, refusing a field named twice (`--set title=a --unset title` says two things).
    pub(crate) fn new(sets: Vec<FieldEdit>, unsets: Vec<FieldEdit>) -> Result<Edit, String> {
        let edits: Vec<FieldEdit> = sets.into_iter().chain(unsets).collect();
        for (index, edit) in edits.iter().enumerate() {
            if edits[..index].iter().any(|e| e.field() == edit.field()) {
                return Err(format!(
                    "field {:?} is edited twice; set or unset each field once",
                    edit.field()
                ));
            }
        }
        Ok(Edit { edits })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The fields set or unset, in order: what `x-edited-fields` lists.
    pub(crate) fn fields(&self) -> Vec<String> {
        self.edits.iter().map(|e| e.field().to_owned()).collect()
    }

    /// Applies the edit to a body; only JSON objects can be edited.
    pub(crate) fn apply(&self, body: &[u8]) -> Result<Edited, String> {
        let mut fields = parse_object(body)?;
        let mut changes = Vec::new();
        for edit in &self.edits {
            let name = edit.field();
            let before = fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone());
            let after = match edit {
                FieldEdit::Set(_, value) => Some(value.clone()),
                FieldEdit::Unset(_) => None,
            };
            set_field(&mut fields, name, after.as_deref());
            if before != after {
                changes.push(Change {
                    field: name.to_owned(),
                    before,
                    after,
                });
            }
        }
        Ok(Edited {
            body: write_object(&fields),
            changes,
        })
    }
}

/// A body after the edit, and what the edit changed in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Edited {
    pub(crate) body: Vec<u8>,
    pub(crate) changes: Vec<Change>,
}

/// One changed field: its JSON text before and after (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) field: String,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

impl fmt::Display for Change {
    /// `title: (absent) -> "Night Nurse"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |value: &Option<String>| value.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.field,
            side(&self.before),
            side(&self.after)
        )
    }
}

/// Replaces the first occurrence in place (dropping repeats), appends when absent, or removes all.
fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    let first = fields.iter().position(|(key, _)| key == name);
    let mut index = 0;
    fields.retain(|(key, _)| {
        let keep = key != name || (value.is_some() && Some(index) == first);
        index += 1;
        keep
    });
    match (value, first) {
        (Some(value), Some(first)) => fields[first].1 = value.to_owned(),
        (Some(value), None) => fields.push((name.to_owned(), value.to_owned())),
        (None, _) => {}
    }
}

/// The top-level fields of a JSON object, in order, each value as its raw JSON text.
fn parse_object(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| {
        "the body is not UTF-8 JSON; only JSON-object bodies can be edited".to_owned()
    })?;
    if !text.trim_start().starts_with('{') {
        return Err("the body is not a JSON object; only JSON-object bodies can be edited".into());
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let fields = deserializer
        .deserialize_map(FieldsVisitor)
        .and_then(|fields| deserializer.end().map(|()| fields))
        .map_err(|error| {
            format!("the body is not valid JSON ({error}); only JSON-object bodies can be edited")
        })?;
    Ok(fields)
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            fields.push((key, value.get().to_owned()));
        }
        Ok(fields)
    }
}

fn write_object(fields: &[(String, String)]) -> Vec<u8> {
    let mut out = String::from("{");
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out.into_bytes()
}

#[cfg(test)]
impl Edit {
    /// The edit of `--set` and `--unset` arguments, as the tests here and in [`super::replay`] write
    /// one.
    pub(crate) fn of(sets: &[&str], unsets: &[&str]) -> Edit {
        let sets = sets.iter().map(|s| parse_set(s).unwrap()).collect();
        let unsets = unsets.iter().map(|s| parse_unset(s).unwrap()).collect();
        Edit::new(sets, unsets).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_json_when_they_parse_as_json_else_strings() {
        for (given, field, json) in [
            ("title=Night Nurse", "title", "\"Night Nurse\""),
            ("listedAt=1700000000000", "listedAt", "1700000000000"),
            ("title=\"123\"", "title", "\"123\""),
            ("x= { \"a\" : [1, true] }", "x", "{\"a\":[1,true]}"),
            ("x=null", "x", "null"),
            ("x=", "x", "\"\""),
            (
                "url=https://a.example/?q=1",
                "url",
                "\"https://a.example/?q=1\"",
            ),
        ] {
            assert_eq!(
                parse_set(given),
                Ok(FieldEdit::Set(field.into(), json.into())),
                "{given:?}"
            );
        }
        assert!(parse_set("title").is_err());
        assert!(parse_set("=x").is_err());
        assert!(parse_unset(" ").is_err());
        let twice = Edit::new(
            vec![parse_set("title=a").unwrap()],
            vec![parse_unset("title").unwrap()],
        );
        assert!(twice.unwrap_err().contains("twice"));
    }

    #[test]
    fn edits_keep_the_other_fields_in_order_and_as_written() {
        let body = br#"{"externalJobPostingId":"J-1", "listedAt":1700000000000,"description":"caf\u00e9","location":"Paris"}"#;
        let edited = Edit::of(&["title=Night Nurse", "location=Lyon"], &["description"])
            .apply(body)
            .unwrap();
        assert_eq!(
            String::from_utf8(edited.body).unwrap(),
            r#"{"externalJobPostingId":"J-1","listedAt":1700000000000,"location":"Lyon","title":"Night Nurse"}"#
        );
        let shown: Vec<String> = edited.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                r#"title: (absent) -> "Night Nurse""#,
                r#"location: "Paris" -> "Lyon""#,
                r#"description: "caf\u00e9" -> (absent)"#,
            ]
        );
        let unchanged = Edit::of(&["location=Paris"], &["missing"])
            .apply(body)
            .unwrap();
        assert!(unchanged.changes.is_empty());
        assert_eq!(Edit::of(&["title=t"], &[]).fields(), ["title"]);
    }

    #[test]
    fn repeated_keys_collapse_and_only_objects_can_be_edited() {
        let edited = Edit::of(&["a=3"], &[])
            .apply(br#"{"a":1,"b":2,"a":9}"#)
            .unwrap();
        assert_eq!(edited.body, br#"{"a":3,"b":2}"#);
        let unset = Edit::of(&[], &["a"])
            .apply(br#"{"a":1,"b":2,"a":9}"#)
            .unwrap();
        assert_eq!(unset.body, br#"{"b":2}"#);
        for bad in [
            &b"[1]"[..],
            b"\"text\"",
            b"not json",
            b"{\"a\":",
            b"{} {}",
            b"\xff",
        ] {
            let error = Edit::of(&["a=1"], &[]).apply(bad).unwrap_err();
            assert!(
                error.contains("only JSON-object bodies can be edited"),
                "{error}"
            );
        }
    }

    proptest! {
        /// Whatever the object, the edited body is JSON, holds exactly the edited value, and keeps
        /// every other field with its value, in order.
        #[test]
        fn an_edit_changes_only_its_field(
            fields in proptest::collection::btree_map("[a-z]{1,4}", any::<i32>(), 0..6),
            target in "[a-z]{1,4}",
            value in any::<i64>(),
            unset in any::<bool>(),
        ) {
            let body = serde_json::to_vec(&fields).unwrap();
            let change = if unset {
                parse_unset(&target).unwrap()
            } else {
                parse_set(&format!("{target}={value}")).unwrap()
            };
            let edited = Edit::new(vec![change], vec![]).unwrap().apply(&body).unwrap();
            let after: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&edited.body).unwrap();
            let others: Vec<(&String, &i32)> = fields.iter().filter(|(k, _)| **k != target).collect();
            let kept: Vec<(&String, i64)> = parse_object(&edited.body).unwrap().iter()
                .filter(|(k, _)| *k != target)
                .map(|(k, v)| (fields.get_key_value(k).unwrap().0, v.parse::<i64>().unwrap()))
                .collect();
            prop_assert_eq!(kept, others.iter().map(|(k, v)| (*k, i64::from(**v))).collect::<Vec<_>>());
            if unset {
                prop_assert!(!after.contains_key(&target));
            } else {
                prop_assert_eq!(after.get(&target).and_then(serde_json::Value::as_i64), Some(value));
            }
        }
    }
}
