//! What a close request is, and whether one is fit to send.
//!
//! A queue message is one job element as LinkedIn's close page shows it. This module checks the raw
//! bytes against the rules LinkedIn documents — required fields, the two documented types whose
//! violation poisons a whole request, the operation — without building a JSON tree per message, and
//! keeps the raw bytes so the request body can be spliced together rather than re-serialised.
//! Failures are worded the way LinkedIn words its own 422s, so a dead letter reads the same whether
//! LinkedIn or job-closer refused the element.
//!
//! It also catches the per-job faults LinkedIn documents but reports as the status of the *whole*
//! request (API-NOTES, "Errors LinkedIn reports for one job at the level of the whole request"): a
//! `companyApplyUrl` that is not an absolute http(s) URL (LinkedIn's 400), more than seven
//! `alternateLocations`, and `employmentStatus` / `experienceLevel` / `workplaceTypes` values outside
//! LinkedIn's lists (its 422s, and the element-level "more than one value" 400 of `workplaceTypes`).
//! Sent, any of these would cost the neighbours in its batch a split and a resend. Rules LinkedIn
//! does not document for CLOSE — the description's 100-character minimum, a company field — are
//! deliberately *not* enforced: the close page's own sample breaks the first, and the worker isolates
//! whatever LinkedIn refuses for one job anyway.
//!
//! A `"jobPostingOperationType": null` is replaced in place by `"CLOSE"` rather than left beside a
//! spliced member: JSON with a key twice is read differently by different parsers. Rejected:
//! re-serialising the element through a `serde_json::Value`, which would reorder and reformat what
//! the producer sent and cost a tree per message.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// LinkedIn's limit on `externalJobPostingId` (its OpenAPI spec; a newer page says 75, which we do not
/// enforce since the close page's own sample is within both).
pub const MAX_EXTERNAL_ID_CHARS: usize = 200;

/// A job element is a few levels deep; anything past this is garbage or an attack, and is refused
/// before a parser walks it.
pub const MAX_DEPTH: usize = 64;

/// LinkedIn's limit on `alternateLocations` ("maximum seven locations per job").
pub const MAX_ALTERNATE_LOCATIONS: usize = 7;

/// `employmentStatus` values LinkedIn accepts (API-NOTES).
pub const EMPLOYMENT_STATUSES: [&str; 7] = [
    "FULL_TIME",
    "PART_TIME",
    "CONTRACT",
    "INTERNSHIP",
    "TEMPORARY",
    "VOLUNTEER",
    "OTHER",
];

/// `experienceLevel` values LinkedIn accepts (API-NOTES).
pub const EXPERIENCE_LEVELS: [&str; 7] = [
    "ENTRY_LEVEL",
    "MID_SENIOR_LEVEL",
    "DIRECTOR",
    "EXECUTIVE",
    "INTERNSHIP",
    "ASSOCIATE",
    "NOT_APPLICABLE",
];

/// `workplaceTypes` values LinkedIn accepts; an element may hold at most one.
pub const WORKPLACE_TYPES: [&str; 3] = ["On-site", "Hybrid", "Remote"];

/// A close request that passed validation, with what batching needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseRequest {
    pub external_id: String,
    /// The raw `contract` value (JSON text) when present: requests never mix contracts.
    pub(crate) contract: Option<String>,
    /// The element as it goes into `elements`: the original bytes, with `"jobPostingOperationType":"CLOSE"`
    /// spliced in when the message left it out.
    pub(crate) element: Bytes,
}

/// Why a message cannot be sent. `Display` is the message that goes into `x-error-message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("ERROR :: / :: body is not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("ERROR :: / :: nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("ERROR :: / :: body must be a JSON object (one job element), found {0}")]
    NotAnObject(&'static str),
    #[error("ERROR :: /{0} :: field is required but not found and has no default value")]
    Missing(&'static str),
    #[error("ERROR :: /externalJobPostingId :: {0} is not a non-empty string")]
    ExternalIdNotString(String),
    #[error("ERROR :: /externalJobPostingId :: longer than {MAX_EXTERNAL_ID_CHARS} characters")]
    ExternalIdTooLong,
    #[error("ERROR :: /listedAt :: {0} cannot be coerced to Long")]
    ListedAtNotInteger(String),
    #[error("ERROR :: /jobPostingOperationType :: {0} is not CLOSE; job-closer only sends closes")]
    NotClose(String),
    /// LinkedIn answers this with a 400 for the whole request.
    #[error("ERROR :: /companyApplyUrl :: {0} is not an absolute http(s) URL")]
    ApplyUrlNotAbsolute(String),
    /// LinkedIn answers this with a 422 for the whole request.
    #[error(
        "ERROR :: /alternateLocations :: The job contains more than seven locations ({0}). Please ensure maximum seven locations per job"
    )]
    TooManyLocations(usize),
    /// LinkedIn answers this with a 422 for the whole request. `value` is the JSON text.
    #[error("ERROR :: /{field} :: {value} is not an enum symbol")]
    NotAnEnumSymbol { field: &'static str, value: String },
    /// LinkedIn answers this with a 422 for the whole request.
    #[error("ERROR :: /{0} :: enum type is not backed by a String")]
    EnumNotString(&'static str),
    /// LinkedIn answers this with a 400 for that element inside an HTTP 200. The values as JSON text.
    #[error(
        "ERROR :: /workplaceTypes :: The workplaceTypes field cannot have more than one value provided. Provided values {0}"
    )]
    MoreThanOneWorkplaceType(String),
}

/// The fields validation looks at; every other field is skipped by serde without being stored,
/// which still checks its syntax and nesting depth (serde_json stops at 128 levels).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "companyApplyUrl", borrow)]
    company_apply_url: Option<&'a RawValue>,
    #[serde(rename = "externalJobPostingId", borrow)]
    external_id: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    title: Option<&'a RawValue>,
    #[serde(rename = "listedAt", borrow)]
    listed_at: Option<&'a RawValue>,
    #[serde(borrow)]
    location: Option<&'a RawValue>,
    #[serde(rename = "listingType", borrow)]
    listing_type: Option<&'a RawValue>,
    #[serde(borrow)]
    contract: Option<&'a RawValue>,
    /// `Some("null")` for an explicit null, unlike the other fields: a null here is replaced.
    #[serde(
        rename = "jobPostingOperationType",
        borrow,
        default,
        deserialize_with = "raw_including_null"
    )]
    operation: Option<&'a RawValue>,
    #[serde(rename = "alternateLocations", borrow)]
    alternate_locations: Option<&'a RawValue>,
    #[serde(rename = "employmentStatus", borrow)]
    employment_status: Option<&'a RawValue>,
    #[serde(rename = "experienceLevel", borrow)]
    experience_level: Option<&'a RawValue>,
    #[serde(rename = "workplaceTypes", borrow)]
    workplace_types: Option<&'a RawValue>,
}

/// A member's raw value, `null` included (serde turns a null into `None` for an `Option`).
fn raw_including_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Rest.li has no nulls: a field given as `null` is a field not given.
fn present(value: Option<&RawValue>) -> Option<&RawValue> {
    value.filter(|raw| raw.get() != "null")
}

fn json_kind(first_byte: u8) -> &'static str {
    match first_byte {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// Checks one message body and prepares its element.
pub fn validate(body: &[u8]) -> Result<CloseRequest, Invalid> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Invalid::NotJson(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    if exceeds_depth(body, MAX_DEPTH) {
        return Err(Invalid::TooDeep);
    }
    let trimmed = text.trim_start();
    match trimmed.as_bytes().first() {
        None => return Err(Invalid::NotJson("body is empty".into())),
        Some(b'{') => {}
        Some(&other) => {
            // Say what it is only when it is JSON at all, so garbage is not called "a number".
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| Invalid::NotJson(e.to_string()))?;
            return Err(Invalid::NotAnObject(json_kind(other)));
        }
    }
    let fields: Fields = serde_json::from_str(text).map_err(|e| Invalid::NotJson(e.to_string()))?;

    // In LinkedIn's order, so the first missing field named is the one LinkedIn would name.
    let require = |name: &'static str, value| present(value).ok_or(Invalid::Missing(name));
    let apply_url = require("companyApplyUrl", fields.company_apply_url)?;
    let raw_id = require("externalJobPostingId", fields.external_id)?;
    require("description", fields.description)?;
    require("title", fields.title)?;
    let raw_listed_at = require("listedAt", fields.listed_at)?;
    require("location", fields.location)?;

    let external_id = match json_string(raw_id) {
        Some(id) if !id.trim().is_empty() => id,
        _ => return Err(Invalid::ExternalIdNotString(raw_id.get().into())),
    };
    if external_id.chars().count() > MAX_EXTERNAL_ID_CHARS {
        return Err(Invalid::ExternalIdTooLong);
    }

    if serde_json::from_str::<i64>(raw_listed_at.get()).is_err() {
        return Err(Invalid::ListedAtNotInteger(raw_listed_at.get().into()));
    }

    let is_premium = present(fields.listing_type).is_some_and(|t| t.get() == "\"PREMIUM\"");
    let contract = present(fields.contract).map(|c| c.get().to_owned());
    if is_premium && contract.is_none() {
        return Err(Invalid::Missing("contract"));
    }

    if let Some(op) = fields
        .operation
        .filter(|op| op.get() != "null" && op.get() != "\"CLOSE\"")
    {
        return Err(Invalid::NotClose(op.get().into()));
    }

    check_apply_url(apply_url)?;
    check_alternate_locations(present(fields.alternate_locations))?;
    check_enum(
        "employmentStatus",
        present(fields.employment_status),
        &EMPLOYMENT_STATUSES,
    )?;
    check_enum(
        "experienceLevel",
        present(fields.experience_level),
        &EXPERIENCE_LEVELS,
    )?;
    check_workplace_types(present(fields.workplace_types))?;

    let element = match fields.operation {
        None => splice_close(text),
        Some(op) if op.get() == "null" => replace_null_operation(text, op),
        Some(_) => Bytes::copy_from_slice(body),
    };
    Ok(CloseRequest {
        external_id,
        contract,
        element,
    })
}

/// Whether `text` is what LinkedIn takes as a `companyApplyUrl` ("must be a valid URL and cannot
/// be blank"): an absolute `http` or `https` URL with a host. Shared with the sandbox, which must
/// refuse exactly what the worker refuses to send.
pub(crate) fn is_absolute_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// LinkedIn refuses anything but an absolute http(s) URL in `companyApplyUrl`, for the whole
/// request.
fn check_apply_url(raw: &RawValue) -> Result<(), Invalid> {
    if json_string(raw).is_some_and(|text| is_absolute_http_url(&text)) {
        Ok(())
    } else {
        Err(Invalid::ApplyUrlNotAbsolute(raw.get().into()))
    }
}

/// The members of a raw JSON array, or `None` when it is not one (then LinkedIn judges the type).
fn array_members(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

fn check_alternate_locations(raw: Option<&RawValue>) -> Result<(), Invalid> {
    let count = raw
        .and_then(array_members)
        .map_or(0, |members| members.len());
    if count > MAX_ALTERNATE_LOCATIONS {
        return Err(Invalid::TooManyLocations(count));
    }
    Ok(())
}

/// One enum symbol: a JSON string among `symbols`.
fn check_enum_symbol(field: &'static str, raw: &RawValue, symbols: &[&str]) -> Result<(), Invalid> {
    match json_string(raw) {
        Some(symbol) if symbols.contains(&symbol.as_str()) => Ok(()),
        Some(_) => Err(Invalid::NotAnEnumSymbol {
            field,
            value: raw.get().into(),
        }),
        None => Err(Invalid::EnumNotString(field)),
    }
}

fn check_enum(
    field: &'static str,
    raw: Option<&RawValue>,
    symbols: &[&str],
) -> Result<(), Invalid> {
    raw.map_or(Ok(()), |raw| check_enum_symbol(field, raw, symbols))
}

/// `workplaceTypes` is an array of at most one of [`WORKPLACE_TYPES`]. Not an array: LinkedIn's to
/// judge (a type error it reports for the element alone).
fn check_workplace_types(raw: Option<&RawValue>) -> Result<(), Invalid> {
    let Some(members) = raw.and_then(array_members) else {
        return Ok(());
    };
    if members.len() > 1 {
        let values: Vec<&str> = members.iter().map(|member| member.get()).collect();
        return Err(Invalid::MoreThanOneWorkplaceType(format!(
            "[{}]",
            values.join(", ")
        )));
    }
    members
        .iter()
        .try_for_each(|member| check_enum_symbol("workplaceTypes", member, &WORKPLACE_TYPES))
}

/// The text of a raw JSON value if it is a string. Most ids have no escapes, and then the text is
/// the bytes between the quotes as they are, with no second parse.
fn json_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str(text).ok()
    } else {
        Some(inner.to_owned())
    }
}

/// Whether arrays and objects nest deeper than `max`, counting only brackets outside strings. serde
/// skips unknown fields without a depth limit, so the limit is enforced here, in one pass.
fn exceeds_depth(body: &[u8], max: usize) -> bool {
    // A close request has a bracket or two: when there are no more opening brackets in the whole
    // body than the limit, nothing can nest deeper, and this count is far cheaper than the scan.
    // `[` and `{` differ only in bit 0x20, and no other byte ORed with it gives `{`: one comparison
    // per byte, which the compiler turns into vector code.
    let opening = body.iter().filter(|&&b| b | 0x20 == b'{').count();
    if opening <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Replaces the `null` of `"jobPostingOperationType": null` by `"CLOSE"`, every other byte as it
/// came. `null_value` is the member's value as serde borrowed it from `object_text`.
fn replace_null_operation(object_text: &str, null_value: &RawValue) -> Bytes {
    // The raw value borrows from `object_text`, so its address is an offset into it.
    let start = (null_value.get().as_ptr() as usize).saturating_sub(object_text.as_ptr() as usize);
    let end = start + null_value.get().len();
    match (object_text.get(..start), object_text.get(end..)) {
        (Some(before), Some(after)) => {
            let mut out = String::with_capacity(object_text.len() + 3);
            out.push_str(before);
            out.push_str("\"CLOSE\"");
            out.push_str(after);
            Bytes::from(out)
        }
        // Unreachable: serde borrowed the value from this very text.
        _ => splice_close(object_text),
    }
}

/// Inserts the operation as the object's first member, leaving every other byte as it came.
fn splice_close(object_text: &str) -> Bytes {
    const OPERATION: &str = "\"jobPostingOperationType\":\"CLOSE\"";
    let open = object_text.find('{').expect("validated as an object");
    let rest = &object_text[open + 1..];
    let has_members = !rest.trim_start().starts_with('}');
    let mut out = String::with_capacity(object_text.len() + OPERATION.len() + 1);
    out.push('{');
    out.push_str(OPERATION);
    if has_members {
        out.push(',');
    }
    out.push_str(rest);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A description of LinkedIn's minimum length, so nothing here passes only by leniency.
    const DESCRIPTION: &str = "We are hiring an engineer to build and run distributed systems. This position has been filled, thank you.";

    fn job() -> Value {
        json!({
            "companyApplyUrl": "https://example.com/apply/1",
            "externalJobPostingId": "JOB-1",
            "description": DESCRIPTION,
            "title": "Engineer",
            "listedAt": 1700000000000u64,
            "location": "San Francisco, California",
        })
    }

    fn check(v: &Value) -> Result<CloseRequest, Invalid> {
        validate(v.to_string().as_bytes())
    }

    #[test]
    fn a_complete_job_is_valid_and_gets_close_spliced_in() {
        let req = check(&job()).unwrap();
        assert_eq!(req.external_id, "JOB-1");
        assert_eq!(req.contract, None);
        let element: Value = serde_json::from_slice(&req.element).unwrap();
        assert_eq!(element["jobPostingOperationType"], "CLOSE");
        let mut expected = job();
        expected["jobPostingOperationType"] = json!("CLOSE");
        assert_eq!(element, expected);
    }

    #[test]
    fn an_explicit_close_keeps_the_bytes_unchanged() {
        let body = br#" {"jobPostingOperationType":"CLOSE","companyApplyUrl":"https://example.com/a","externalJobPostingId":"x","description":"d","title":"t","listedAt":1,"location":"l"} "#;
        let req = validate(body).unwrap();
        assert_eq!(&req.element[..], &body[..]);
    }

    #[test]
    fn every_required_field_is_named_when_missing() {
        for field in [
            "companyApplyUrl",
            "externalJobPostingId",
            "description",
            "title",
            "listedAt",
            "location",
        ] {
            let mut v = job();
            v.as_object_mut().unwrap().remove(field);
            let err = check(&v).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "ERROR :: /{field} :: field is required but not found and has no default value"
                )
            );
            v[field] = Value::Null;
            assert_eq!(check(&v).unwrap_err(), Invalid::Missing(field));
        }
    }

    #[test]
    fn premium_needs_a_contract() {
        let mut v = job();
        v["listingType"] = json!("PREMIUM");
        assert_eq!(check(&v).unwrap_err(), Invalid::Missing("contract"));
        v["contract"] = json!("urn:li:contract:7");
        assert_eq!(
            check(&v).unwrap().contract.as_deref(),
            Some("\"urn:li:contract:7\"")
        );
    }

    #[test]
    fn external_id_must_be_a_non_empty_string() {
        for bad in [
            json!(123),
            json!(""),
            json!("  "),
            json!(["a"]),
            json!({"a": 1}),
        ] {
            let mut v = job();
            v["externalJobPostingId"] = bad;
            assert!(
                matches!(check(&v), Err(Invalid::ExternalIdNotString(_))),
                "{v}"
            );
        }
        let mut v = job();
        v["externalJobPostingId"] = json!("x".repeat(MAX_EXTERNAL_ID_CHARS + 1));
        assert_eq!(check(&v).unwrap_err(), Invalid::ExternalIdTooLong);
    }

    #[test]
    fn external_ids_with_escapes_are_decoded() {
        let mut v = job();
        v["externalJobPostingId"] = json!("JOB-\"7\"/é");
        assert_eq!(check(&v).unwrap().external_id, "JOB-\"7\"/é");
        let body = br#"{"companyApplyUrl":"https://example.com/a","externalJobPostingId":"JOB-\u0031","description":"d","title":"t","listedAt":1,"location":"l"}"#;
        assert_eq!(validate(body).unwrap().external_id, "JOB-1");
        let body = br#"{"companyApplyUrl":"https://example.com/a","externalJobPostingId":"\u0020","description":"d","title":"t","listedAt":1,"location":"l"}"#;
        assert!(matches!(
            validate(body),
            Err(Invalid::ExternalIdNotString(_))
        ));
    }

    #[test]
    fn listed_at_must_be_an_integer() {
        for bad in [json!("1700000000000"), json!(1.5), json!(true)] {
            let mut v = job();
            v["listedAt"] = bad.clone();
            assert_eq!(
                check(&v).unwrap_err().to_string(),
                format!("ERROR :: /listedAt :: {bad} cannot be coerced to Long")
            );
        }
        let mut v = job();
        v["listedAt"] = json!(-5);
        assert!(check(&v).is_ok());
    }

    #[test]
    fn only_close_is_accepted_as_operation() {
        for op in ["CREATE", "UPDATE", "RENEW", "UPDATED"] {
            let mut v = job();
            v["jobPostingOperationType"] = json!(op);
            assert_eq!(
                check(&v).unwrap_err(),
                Invalid::NotClose(format!("\"{op}\""))
            );
        }
    }

    #[test]
    fn types_linkedin_reports_per_element_are_left_to_linkedin() {
        let mut v = job();
        v["title"] = json!(42);
        v["industries"] = json!("not-an-array");
        assert!(check(&v).is_ok());
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        assert!(matches!(validate(b""), Err(Invalid::NotJson(_))));
        assert!(matches!(validate(b"\xff\xfe{}"), Err(Invalid::NotJson(m)) if m.contains("UTF-8")));
        assert!(matches!(validate(b"{\"a\":"), Err(Invalid::NotJson(_))));
        assert_eq!(
            validate(b"[1,2]").unwrap_err(),
            Invalid::NotAnObject("an array")
        );
        assert_eq!(
            validate(b"\"x\"").unwrap_err(),
            Invalid::NotAnObject("a string")
        );
        assert_eq!(
            validate(b"12").unwrap_err(),
            Invalid::NotAnObject("a number")
        );
        assert!(matches!(validate(b"garbage"), Err(Invalid::NotJson(_))));
        let mut v = job().to_string();
        v.push_str(" trailing");
        assert!(matches!(validate(v.as_bytes()), Err(Invalid::NotJson(_))));
    }

    #[test]
    fn absurd_nesting_is_refused_without_overflowing_the_stack() {
        let depth = 100_000;
        let mut body = String::from("{\"deep\":");
        body.push_str(&"[".repeat(depth));
        body.push_str(&"]".repeat(depth));
        body.push('}');
        assert_eq!(validate(body.as_bytes()).unwrap_err(), Invalid::TooDeep);
        let mut v = job();
        let mut nested = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            nested = json!([nested]);
        }
        v["industries"] = nested;
        assert!(check(&v).is_ok(), "exactly the limit is fine");
        // Many brackets side by side are no nesting either.
        let mut v = job();
        v["industries"] = json!((0..200).map(|i| json!([i])).collect::<Vec<_>>());
        assert!(check(&v).is_ok());
        // Brackets inside strings are text, not nesting.
        let mut v = job();
        v["description"] = json!("[".repeat(10 * MAX_DEPTH));
        assert!(check(&v).is_ok());
    }

    #[test]
    fn apply_url_must_be_an_absolute_http_url() {
        for good in [
            "https://jobs.example.com/apply/1",
            "http://jobs.example.com",
            "https://jobs.example.com:8443/a?b=c#d",
        ] {
            let mut v = job();
            v["companyApplyUrl"] = json!(good);
            assert!(check(&v).is_ok(), "{good}");
        }
        for bad in [
            json!("u"),
            json!(""),
            json!("/apply/1"),
            json!("jobs.example.com/apply"),
            json!("ftp://jobs.example.com/a"),
            json!("mailto:jobs@example.com"),
            json!("https://"),
            json!(42),
            json!(["https://jobs.example.com"]),
        ] {
            let mut v = job();
            v["companyApplyUrl"] = bad.clone();
            assert_eq!(
                check(&v).unwrap_err().to_string(),
                format!("ERROR :: /companyApplyUrl :: {bad} is not an absolute http(s) URL")
            );
        }
    }

    #[test]
    fn at_most_seven_alternate_locations() {
        let mut v = job();
        v["alternateLocations"] = json!(vec!["Berlin"; MAX_ALTERNATE_LOCATIONS]);
        assert!(check(&v).is_ok());
        v["alternateLocations"] = json!(vec!["Berlin"; MAX_ALTERNATE_LOCATIONS + 1]);
        assert_eq!(
            check(&v).unwrap_err().to_string(),
            "ERROR :: /alternateLocations :: The job contains more than seven locations (8). Please ensure maximum seven locations per job"
        );
        v["alternateLocations"] = json!("not an array: LinkedIn judges the type");
        assert!(check(&v).is_ok());
    }

    #[test]
    fn enums_must_be_strings_from_linkedins_lists() {
        for (field, symbols) in [
            ("employmentStatus", &EMPLOYMENT_STATUSES),
            ("experienceLevel", &EXPERIENCE_LEVELS),
        ] {
            for symbol in symbols {
                let mut v = job();
                v[field] = json!(symbol);
                assert!(check(&v).is_ok(), "{field} {symbol}");
            }
            let mut v = job();
            v[field] = json!("full_time");
            assert_eq!(
                check(&v).unwrap_err().to_string(),
                format!("ERROR :: /{field} :: \"full_time\" is not an enum symbol")
            );
            for not_a_string in [json!(1), json!(["FULL_TIME"]), json!(true)] {
                v[field] = not_a_string;
                assert_eq!(
                    check(&v).unwrap_err().to_string(),
                    format!("ERROR :: /{field} :: enum type is not backed by a String")
                );
            }
            v[field] = Value::Null;
            assert!(check(&v).is_ok(), "null is absent");
        }
    }

    #[test]
    fn workplace_types_hold_at_most_one_known_value() {
        for symbol in WORKPLACE_TYPES {
            let mut v = job();
            v["workplaceTypes"] = json!([symbol]);
            assert!(check(&v).is_ok(), "{symbol}");
        }
        let mut v = job();
        v["workplaceTypes"] = json!([]);
        assert!(check(&v).is_ok());
        v["workplaceTypes"] = json!(["Remote", "Hybrid"]);
        assert_eq!(
            check(&v).unwrap_err().to_string(),
            "ERROR :: /workplaceTypes :: The workplaceTypes field cannot have more than one value provided. Provided values [\"Remote\", \"Hybrid\"]"
        );
        v["workplaceTypes"] = json!(["Office"]);
        assert_eq!(
            check(&v).unwrap_err().to_string(),
            "ERROR :: /workplaceTypes :: \"Office\" is not an enum symbol"
        );
        v["workplaceTypes"] = json!([7]);
        assert_eq!(
            check(&v).unwrap_err(),
            Invalid::EnumNotString("workplaceTypes")
        );
    }

    #[test]
    fn undocumented_close_rules_are_left_to_linkedin() {
        let mut v = job();
        v["description"] = json!("Filled.");
        v["title"] = json!("t".repeat(500));
        assert!(check(&v).is_ok(), "no length rules, no company field");
    }

    #[test]
    fn a_null_operation_is_replaced_not_duplicated() {
        let body = br#"{"companyApplyUrl":"https://example.com/a","jobPostingOperationType" :  null ,"externalJobPostingId":"x","description":"d","title":"t","listedAt":1,"location":"l"}"#;
        let req = validate(body).unwrap();
        assert_eq!(
            std::str::from_utf8(&req.element).unwrap(),
            r#"{"companyApplyUrl":"https://example.com/a","jobPostingOperationType" :  "CLOSE" ,"externalJobPostingId":"x","description":"d","title":"t","listedAt":1,"location":"l"}"#
        );
        assert_eq!(
            std::str::from_utf8(&req.element)
                .unwrap()
                .matches("jobPostingOperationType")
                .count(),
            1
        );
    }

    #[test]
    fn splicing_handles_whitespace_and_empty_objects() {
        assert_eq!(
            &splice_close(" { } ")[..],
            b"{\"jobPostingOperationType\":\"CLOSE\" } "
        );
        assert_eq!(
            &splice_close("{\"a\":1}")[..],
            b"{\"jobPostingOperationType\":\"CLOSE\",\"a\":1}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the validator never panics, whatever arrives, and what it accepts is sendable.
    use super::*;
    use proptest::prelude::*;

    /// Refuses a JSON object holding the operation twice (serde's derive rejects duplicate fields).
    #[derive(Deserialize)]
    struct OnlyOperation {
        #[serde(rename = "jobPostingOperationType")]
        operation: String,
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("externalJobPostingId".to_string()),
                        Just("listedAt".to_string()),
                        Just("title".to_string()),
                        Just("contract".to_string()),
                        Just("listingType".to_string()),
                        Just("jobPostingOperationType".to_string()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate(&body);
        }

        #[test]
        fn arbitrary_json_never_panics_and_accepted_elements_are_valid_json(value in json_value()) {
            let body = value.to_string();
            if let Ok(request) = validate(body.as_bytes()) {
                let element: serde_json::Value = serde_json::from_slice(&request.element).unwrap();
                prop_assert_eq!(&element["jobPostingOperationType"], "CLOSE");
                let only: OnlyOperation = serde_json::from_slice(&request.element).unwrap();
                prop_assert_eq!(only.operation, "CLOSE");
                prop_assert_eq!(element["externalJobPostingId"].as_str(), Some(request.external_id.as_str()));
            }
        }

        #[test]
        fn a_null_operation_anywhere_becomes_the_only_close(
            position in 0usize..7,
            space_before in "[ \t\n]{0,3}",
            space_after in "[ \t\n]{0,3}",
        ) {
            let mut members = vec![
                r#""companyApplyUrl":"https://jobs.example.com/1""#.to_owned(),
                r#""externalJobPostingId":"id-1""#.to_owned(),
                r#""description":"d""#.to_owned(),
                r#""title":"t""#.to_owned(),
                r#""listedAt":1"#.to_owned(),
                r#""location":"l""#.to_owned(),
            ];
            members.insert(
                position.min(members.len()),
                format!(r#""jobPostingOperationType":{space_before}null{space_after}"#),
            );
            let body = format!("{{{}}}", members.join(","));
            let request = validate(body.as_bytes()).unwrap();
            let element = std::str::from_utf8(&request.element).unwrap();
            prop_assert_eq!(element, body.replacen("null", "\"CLOSE\"", 1));
            prop_assert_eq!(element.matches("jobPostingOperationType").count(), 1);
            let parsed: OnlyOperation = serde_json::from_str(element).unwrap();
            prop_assert_eq!(parsed.operation, "CLOSE");
        }

        #[test]
        fn a_valid_job_with_extra_fields_stays_valid(
            extra in prop::collection::btree_map(
                "[a-z]{3,10}".prop_filter("not a checked field", |k| {
                    !["title", "description", "location", "contract"].contains(&k.as_str())
                }),
                json_value(),
                0..6,
            )
        ) {
            let mut job = serde_json::json!({
                "companyApplyUrl": "https://jobs.example.com/1", "externalJobPostingId": "id-1",
                "description": "d",
                "title": "t", "listedAt": 1, "location": "l",
            });
            for (key, value) in extra {
                job[key] = value;
            }
            prop_assert!(validate(job.to_string().as_bytes()).is_ok());
        }
    }
}
