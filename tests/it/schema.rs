//! The published message contract against the worker: `schema/close-request.schema.json` must give
//! the verdict the worker's validator gives (`job_closer::close_request::validate`), both ways — a
//! body the schema accepts is one the worker accepts, and a body the schema refuses is one the worker
//! dead-letters as `invalid` — over hand-written cases (`schema/examples/` and below) and generated
//! ones, for every rule the schema can express. The rules it cannot express are listed in the
//! schema's own description, and each is shown here to be exactly what differs
//! (`what_json_schema_cannot_express_is_documented_and_is_all_that_differs`), so that the list stays
//! true.
//!
//! The schema side is the `jsonschema` crate, written independently of job-closer; CI also checks
//! the file with Python's `check-jsonschema` (`.ci/run`). `job-closer schema` must print the file
//! byte for byte. The AsyncAPI document (`schema/asyncapi.yaml`) is checked against the worker's
//! headers and queues.
//!
//! The outcome message's schema (`schema/outcome.schema.json`, printed by `job-closer schema
//! --outcome`) is held to the worker's outcomes and reasons and to its example files here; that
//! every body the worker writes is valid against it is a property test beside the code
//! (`src/outcome.rs`) and is checked again on every outcome of `tests/it/outcomes.rs`.

use crate::common;

use job_closer::close_request;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

const SCHEMA_FILE: &str = "schema/close-request.schema.json";

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn schema_json() -> Value {
    serde_json::from_str(&repo_file(SCHEMA_FILE)).expect("the schema is not JSON")
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::new(&schema_json()).expect("the schema does not compile")
    })
}

fn schema_accepts(body: &Value) -> bool {
    validator().is_valid(body)
}

fn worker_accepts(body: &Value) -> bool {
    close_request::validate(body.to_string().as_bytes()).is_ok()
}

/// Both verdicts, with what the worker said, for failure messages.
fn verdicts(body: &Value) -> (bool, Result<(), String>) {
    let worker = close_request::validate(body.to_string().as_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string());
    (schema_accepts(body), worker)
}

/// For proptest: a failure is returned, not panicked, so that shrinking stays quiet.
fn same_verdict(body: &Value) -> Result<(), TestCaseError> {
    let (schema, worker) = verdicts(body);
    let schema_errors: Vec<String> = validator()
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    prop_assert_eq!(
        schema,
        worker.is_ok(),
        "the schema says {} (errors: {:?}), the worker says {:?}, for {}",
        if schema { "valid" } else { "invalid" },
        schema_errors,
        worker,
        body
    );
    Ok(())
}

fn job() -> Value {
    json!({
        "companyApplyUrl": "https://jobs.example.com/apply/1",
        "externalJobPostingId": "JOB-1",
        "description": "Filled.",
        "title": "Engineer",
        "listedAt": 1_700_000_000_000u64,
        "location": "San Francisco, California",
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().unwrap().remove(field);
    body
}

// ---------------------------------------------------------------------------
// The file itself

#[test]
fn the_schema_is_a_valid_2020_12_schema() {
    let schema = schema_json();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{SCHEMA_FILE} is not a valid JSON Schema 2020-12: {error}");
    }
    // Its own example is a valid close request, for both.
    for example in schema["examples"].as_array().expect("examples") {
        assert!(
            schema_accepts(example) && worker_accepts(example),
            "{example}"
        );
    }
}

#[test]
fn the_schema_lists_the_workers_symbols_and_limits() {
    let schema = schema_json();
    let property = |name: &str| schema["properties"][name].clone();
    let symbols = |name: &str| -> Vec<String> {
        let list = property(name)["enum"].clone();
        let list = if list.is_array() {
            list
        } else {
            property(name)["items"]["enum"].clone()
        };
        list.as_array()
            .unwrap_or_else(|| panic!("{name} has no enum"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        symbols("employmentStatus"),
        close_request::EMPLOYMENT_STATUSES
    );
    assert_eq!(symbols("experienceLevel"), close_request::EXPERIENCE_LEVELS);
    assert_eq!(symbols("workplaceTypes"), close_request::WORKPLACE_TYPES);
    assert_eq!(
        property("alternateLocations")["maxItems"],
        close_request::MAX_ALTERNATE_LOCATIONS
    );
    assert_eq!(
        property("externalJobPostingId")["maxLength"],
        close_request::MAX_EXTERNAL_ID_CHARS
    );
}

#[test]
fn job_closer_schema_prints_the_file_byte_for_byte() {
    let output = common::cli(&["schema"]).run_blocking();
    assert_eq!(output.code, Some(0));
    assert_eq!(
        output.stdout,
        repo_file(SCHEMA_FILE),
        "`job-closer schema` must print {SCHEMA_FILE} as it is"
    );
}

// ---------------------------------------------------------------------------
// Hand-written cases

/// `schema/examples/valid/*.json` and `schema/examples/invalid/*.json`: what producers can copy, and
/// what CI's independent validator checks too.
#[test]
fn the_example_files_get_the_verdict_their_directory_names_from_both() {
    let mut seen = 0;
    for (dir, valid) in [("valid", true), ("invalid", false)] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schema/examples/{dir}"));
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let body: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let (schema, worker) = verdicts(&body);
            assert_eq!(schema, valid, "schema on {}", file.display());
            assert_eq!(
                worker.is_ok(),
                valid,
                "worker on {}: {worker:?}",
                file.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} example files");
}

#[test]
fn hand_written_cases_for_every_rule_get_the_same_verdict() {
    let mut cases: Vec<(&str, Value, bool)> = vec![("complete", job(), true)];
    // Required fields, absent or null.
    for field in [
        "companyApplyUrl",
        "externalJobPostingId",
        "description",
        "title",
        "listedAt",
        "location",
    ] {
        cases.push(("required field absent", without(job(), field), false));
        cases.push((
            "required field null",
            with(job(), field, Value::Null),
            false,
        ));
    }
    // Types the worker leaves to LinkedIn.
    for field in ["description", "title", "location"] {
        for value in [
            json!(42),
            json!(["a"]),
            json!({"a": 1}),
            json!(true),
            json!(""),
        ] {
            cases.push(("LinkedIn judges the type", with(job(), field, value), true));
        }
    }
    let id = |v: Value| with(job(), "externalJobPostingId", v);
    cases.extend([
        ("id number", id(json!(7)), false),
        ("id empty", id(json!("")), false),
        ("id spaces", id(json!("   ")), false),
        ("id tab and newline", id(json!("\t\n")), false),
        ("id no-break space", id(json!("\u{a0}")), false),
        ("id ideographic space", id(json!("\u{3000}")), false),
        ("id next line", id(json!("\u{85}")), false),
        ("id with inner space", id(json!("JOB 1")), true),
        ("id padded", id(json!(" JOB-1 ")), true),
        ("id 200 chars", id(json!("x".repeat(200))), true),
        ("id 201 chars", id(json!("x".repeat(201))), false),
        ("id 200 two-byte chars", id(json!("é".repeat(200))), true),
        ("id 201 two-byte chars", id(json!("é".repeat(201))), false),
        ("id 200 astral chars", id(json!("😀".repeat(200))), true),
        ("id array", id(json!(["JOB-1"])), false),
        ("id bool", id(json!(true)), false),
    ]);
    let listed = |v: Value| with(job(), "listedAt", v);
    cases.extend([
        ("listedAt zero", listed(json!(0)), true),
        ("listedAt negative", listed(json!(-5)), true),
        ("listedAt i64 max", listed(json!(i64::MAX)), true),
        ("listedAt i64 min", listed(json!(i64::MIN)), true),
        (
            "listedAt above i64",
            listed(json!(i64::MAX as u64 + 1)),
            false,
        ),
        ("listedAt u64 max", listed(json!(u64::MAX)), false),
        ("listedAt string", listed(json!("1700000000000")), false),
        ("listedAt fraction", listed(json!(1.5)), false),
        ("listedAt bool", listed(json!(true)), false),
        ("listedAt array", listed(json!([1])), false),
    ]);
    let premium = with(job(), "listingType", json!("PREMIUM"));
    cases.extend([
        ("premium without contract", premium.clone(), false),
        (
            "premium with null contract",
            with(premium.clone(), "contract", Value::Null),
            false,
        ),
        (
            "premium with contract",
            with(premium.clone(), "contract", json!("urn:li:contract:7")),
            true,
        ),
        (
            "premium with a numeric contract (LinkedIn judges)",
            with(premium, "contract", json!(7)),
            true,
        ),
        (
            "basic without contract",
            with(job(), "listingType", json!("BASIC")),
            true,
        ),
        (
            "lower-case premium is not PREMIUM",
            with(job(), "listingType", json!("premium")),
            true,
        ),
        (
            "null listing type",
            with(job(), "listingType", Value::Null),
            true,
        ),
        (
            "contract without premium",
            with(job(), "contract", json!("urn:li:contract:7")),
            true,
        ),
    ]);
    let op = |v: Value| with(job(), "jobPostingOperationType", v);
    cases.extend([
        ("CLOSE", op(json!("CLOSE")), true),
        ("null operation", op(Value::Null), true),
        ("CREATE", op(json!("CREATE")), false),
        ("UPDATE", op(json!("UPDATE")), false),
        ("RENEW", op(json!("RENEW")), false),
        ("close", op(json!("close")), false),
        ("operation number", op(json!(1)), false),
    ]);
    let url = |v: Value| with(job(), "companyApplyUrl", v);
    cases.extend([
        ("http URL", url(json!("http://jobs.example.com")), true),
        (
            "upper-case scheme",
            url(json!("HTTPS://JOBS.EXAMPLE.COM/A")),
            true,
        ),
        (
            "URL with port, query, fragment",
            url(json!("https://jobs.example.com:8443/a/b?x=1&y=2#apply")),
            true,
        ),
        (
            "URL with user",
            url(json!("https://me@jobs.example.com/")),
            true,
        ),
        ("IPv4 URL", url(json!("http://10.0.0.1/apply")), true),
        ("URL without path", url(json!("https://a")), true),
        ("ftp URL", url(json!("ftp://jobs.example.com/1")), false),
        ("mailto", url(json!("mailto:jobs@example.com")), false),
        ("no scheme", url(json!("jobs.example.com/apply/1")), false),
        ("relative path", url(json!("/apply/1")), false),
        ("empty URL", url(json!("")), false),
        ("scheme only", url(json!("https://")), false),
        (
            "missing colon",
            url(json!("https//jobs.example.com")),
            false,
        ),
        ("URL number", url(json!(42)), false),
        ("URL array", url(json!(["https://a.example"])), false),
    ]);
    let locations = |n: usize| {
        with(
            job(),
            "alternateLocations",
            json!((0..n).map(|i| format!("City {i}")).collect::<Vec<_>>()),
        )
    };
    cases.extend([
        ("no alternate locations", locations(0), true),
        ("seven alternate locations", locations(7), true),
        ("eight alternate locations", locations(8), false),
        (
            "alternate locations not an array (LinkedIn judges)",
            with(job(), "alternateLocations", json!("Paris")),
            true,
        ),
        (
            "null alternate locations",
            with(job(), "alternateLocations", Value::Null),
            true,
        ),
    ]);
    for (field, good, bad) in [
        ("employmentStatus", "FULL_TIME", "PERMANENT"),
        ("experienceLevel", "MID_SENIOR_LEVEL", "SENIOR"),
    ] {
        cases.extend([
            ("enum symbol", with(job(), field, json!(good)), true),
            ("unknown enum symbol", with(job(), field, json!(bad)), false),
            (
                "lower-case enum symbol",
                with(job(), field, json!(good.to_lowercase())),
                false,
            ),
            ("enum not a string", with(job(), field, json!(3)), false),
            ("enum as array", with(job(), field, json!([good])), false),
            ("null enum", with(job(), field, Value::Null), true),
        ]);
    }
    let workplace = |v: Value| with(job(), "workplaceTypes", v);
    cases.extend([
        ("one workplace type", workplace(json!(["Remote"])), true),
        ("no workplace type", workplace(json!([])), true),
        ("On-site", workplace(json!(["On-site"])), true),
        (
            "two workplace types",
            workplace(json!(["Remote", "Hybrid"])),
            false,
        ),
        (
            "unknown workplace type",
            workplace(json!(["Onsite"])),
            false,
        ),
        ("workplace type number", workplace(json!([1])), false),
        (
            "workplace type null member",
            workplace(json!([null])),
            false,
        ),
        (
            "workplace types not an array (LinkedIn judges)",
            workplace(json!("Remote")),
            true,
        ),
        ("null workplace types", workplace(Value::Null), true),
    ]);
    cases.extend([
        ("array body", json!([job()]), false),
        ("string body", json!("JOB-1"), false),
        ("number body", json!(1), false),
        ("null body", Value::Null, false),
        ("empty object", json!({}), false),
    ]);

    for (what, body, expected) in cases {
        let (schema, worker) = verdicts(&body);
        assert_eq!(schema, expected, "{what}: schema verdict on {body}");
        assert_eq!(
            worker.is_ok(),
            expected,
            "{what}: worker verdict {worker:?} on {body}"
        );
    }
}

/// The rules JSON Schema cannot express: each differs exactly as the schema's description says,
/// and nothing else does (the other tests). Should one of them stop differing, the description is
/// wrong and this test says so.
#[test]
fn what_json_schema_cannot_express_is_documented_and_is_all_that_differs() {
    let description = schema_json()["description"].as_str().unwrap().to_owned();
    let raw = |text: &str| -> (bool, bool) {
        let value: Value = serde_json::from_str(text).unwrap();
        (
            schema_accepts(&value),
            close_request::validate(text.as_bytes()).is_ok(),
        )
    };
    let base = r#""companyApplyUrl":"https://a.example/1","externalJobPostingId":"J","description":"d","title":"t","location":"l""#;

    // (1) Nesting deeper than 64 levels.
    assert!(description.contains("nested deeper than 64 levels"));
    let depth = close_request::MAX_DEPTH;
    let deep = format!(
        r#"{{{base},"listedAt":1,"industries":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert_eq!(
        raw(&deep),
        (true, false),
        "65 levels: schema yes, worker no"
    );
    let at_limit = format!(
        r#"{{{base},"listedAt":1,"industries":{}1{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    );
    assert_eq!(raw(&at_limit), (true, true));

    // (2) A named member twice.
    assert!(description.contains("member name given twice"));
    assert_eq!(
        raw(&format!(r#"{{{base},"listedAt":1,"title":"again"}}"#)),
        (true, false)
    );

    // (3) listedAt with a fraction or an exponent.
    assert!(description.contains("fraction or an exponent"));
    assert_eq!(raw(&format!(r#"{{{base},"listedAt":1.0}}"#)), (true, false));
    assert_eq!(
        raw(&format!(r#"{{{base},"listedAt":1e12}}"#)),
        (true, false)
    );

    // (4) Escaped spellings of PREMIUM and CLOSE.
    assert!(description.contains("written with escapes"));
    assert_eq!(
        raw(&format!(
            r#"{{{base},"listedAt":1,"jobPostingOperationType":"CL\u004fSE"}}"#
        )),
        (true, false)
    );
    assert_eq!(
        raw(&format!(
            r#"{{{base},"listedAt":1,"listingType":"PREM\u0049UM"}}"#
        )),
        (false, true),
        "the schema reads PREMIUM and wants a contract; the worker does not"
    );

    // (5) The URL pattern approximates the WHATWG URL standard.
    assert!(description.contains("WHATWG URL"));
    let url = |u: &str| {
        let body = with(job(), "companyApplyUrl", json!(u));
        (schema_accepts(&body), worker_accepts(&body))
    };
    assert_eq!(url("https:jobs.example.com"), (false, true));
    assert_eq!(url(" https://jobs.example.com"), (false, true));
    assert_eq!(url("https://:8080/"), (true, false));
}

// ---------------------------------------------------------------------------
// Generated cases

/// A field's value: absent (None), or one of the values the rules distinguish.
fn field(choices: Vec<BoxedStrategy<Value>>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        8 => proptest::strategy::Union::new(choices).prop_map(Some),
    ]
}

fn other_types() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(json!([])),
        Just(json!({"a": 1})),
        Just(json!(1.5)),
    ]
    .boxed()
}

fn strings(regex: &str) -> BoxedStrategy<Value> {
    proptest::string::string_regex(regex)
        .unwrap()
        .prop_map(Value::from)
        .boxed()
}

fn symbols(list: &'static [&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(list).prop_map(Value::from).boxed()
}

fn apply_url() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        // A host that starts with a letter: an all-digit one ("08") is an IPv4 number to the WHATWG
        // parser, whose rules the schema's pattern only approximates, as its description says.
        strings(
            "[hH][tT][tT][pP][sS]?://[a-z][a-z0-9]{0,9}(\\.[a-z]{2,6}){0,2}(:[0-9]{1,4})?(/[A-Za-z0-9._~-]{0,8}){0,3}(\\?[a-z]=[0-9]{1,3})?(#[a-z]{0,5})?",
        ),
        strings("(ftp|mailto|file|ws)://[a-z]{1,8}\\.[a-z]{2,4}/[a-z]{0,5}"),
        strings("[a-z]{1,8}\\.[a-z]{2,4}(/[a-z0-9]{0,6})?"),
        strings("/[a-z]{0,8}"),
        strings("https?//[a-z]{1,8}\\.com"),
        Just(json!("")).boxed(),
        Just(json!("https://")).boxed(),
        other_types(),
    ])
}

fn external_id() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        strings("[A-Za-z0-9_-]{1,40}"),
        strings("[A-Za-z0-9 ]{0,3}"),
        strings("[ \t\n\u{a0}\u{3000}\u{2028}\u{85}]{0,4}"),
        strings("[ \u{a0}]{0,2}[a-zé😀]{1,3}[ \t]{0,2}"),
        strings("x{195,205}"),
        strings("é{195,205}"),
        other_types(),
    ])
}

fn loose_text() -> impl Strategy<Value = Option<Value>> {
    field(vec![strings("[A-Za-z ,.]{0,20}"), other_types()])
}

fn listed_at() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        any::<i64>().prop_map(Value::from).boxed(),
        (i64::MAX as u64 + 1..=u64::MAX)
            .prop_map(Value::from)
            .boxed(),
        strings("[0-9]{1,13}"),
        // Fractions only: 1.0 is what JSON Schema cannot tell from 1 (the documented exclusion).
        (-1.0e6f64..1.0e6)
            .prop_filter("has a fraction", |f| f.fract() != 0.0)
            .prop_map(Value::from)
            .boxed(),
        any::<bool>().prop_map(Value::from).boxed(),
    ])
}

fn listing_type() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        symbols(&["PREMIUM", "BASIC", "premium", "JOB_SLOT"]),
        other_types(),
    ])
}

fn contract() -> impl Strategy<Value = Option<Value>> {
    field(vec![strings("urn:li:contract:[0-9]{1,6}"), other_types()])
}

fn operation() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        symbols(&["CLOSE", "CREATE", "UPDATE", "RENEW", "close", "UPDATED"]),
        other_types(),
    ])
}

fn alternate_locations() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        prop::collection::vec(strings("[A-Z][a-z]{2,8}"), 0..11)
            .prop_map(Value::from)
            .boxed(),
        other_types(),
    ])
}

const EMPLOYMENT: &[&str] = &[
    "FULL_TIME",
    "PART_TIME",
    "CONTRACT",
    "INTERNSHIP",
    "TEMPORARY",
    "VOLUNTEER",
    "OTHER",
    "PERMANENT",
    "full_time",
    "",
];
const EXPERIENCE: &[&str] = &[
    "ENTRY_LEVEL",
    "MID_SENIOR_LEVEL",
    "DIRECTOR",
    "EXECUTIVE",
    "INTERNSHIP",
    "ASSOCIATE",
    "NOT_APPLICABLE",
    "SENIOR",
    "Director",
];

fn enum_field(list: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
    field(vec![
        symbols(list),
        prop::collection::vec(symbols(list), 0..2)
            .prop_map(Value::from)
            .boxed(),
        other_types(),
    ])
}

fn workplace_types() -> impl Strategy<Value = Option<Value>> {
    let member = prop_oneof![
        6 => symbols(&["On-site", "Hybrid", "Remote", "Onsite", "remote"]),
        1 => Just(Value::Null).boxed(),
        1 => other_types(),
    ];
    field(vec![
        prop::collection::vec(member, 0..4)
            .prop_map(Value::from)
            .boxed(),
        symbols(&["Remote", "On-site"]),
        other_types(),
    ])
}

/// Fields the worker does not look at: any shallow JSON, never a checked name.
fn extras() -> impl Strategy<Value = Vec<(String, Value)>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::vec(("x[a-z]{2,8}", value), 0..4)
}

fn checked_fields() -> BTreeSet<&'static str> {
    BTreeSet::from([
        "companyApplyUrl",
        "externalJobPostingId",
        "description",
        "title",
        "location",
        "listedAt",
        "listingType",
        "contract",
        "jobPostingOperationType",
        "alternateLocations",
        "employmentStatus",
        "experienceLevel",
        "workplaceTypes",
    ])
}

type Fields = Vec<(&'static str, Option<Value>)>;

fn close_request_fields() -> impl Strategy<Value = Fields> {
    (
        (
            apply_url(),
            external_id(),
            loose_text(),
            loose_text(),
            loose_text(),
            listed_at(),
            listing_type(),
        ),
        (
            contract(),
            operation(),
            alternate_locations(),
            enum_field(EMPLOYMENT),
            enum_field(EXPERIENCE),
            workplace_types(),
        ),
    )
        .prop_map(|((a, b, c, d, e, f, g), (h, i, j, k, l, m))| {
            vec![
                ("companyApplyUrl", a),
                ("externalJobPostingId", b),
                ("description", c),
                ("title", d),
                ("location", e),
                ("listedAt", f),
                ("listingType", g),
                ("contract", h),
                ("jobPostingOperationType", i),
                ("alternateLocations", j),
                ("employmentStatus", k),
                ("experienceLevel", l),
                ("workplaceTypes", m),
            ]
        })
}

fn build(fields: Fields, extras: Vec<(String, Value)>) -> Value {
    let mut object = Map::new();
    for (name, value) in fields {
        if let Some(value) = value {
            object.insert(name.to_owned(), value);
        }
    }
    for (name, value) in extras {
        object.insert(name, value);
    }
    Value::Object(object)
}

/// A valid request with `field` replaced: most generated bodies above fail on several rules at once,
/// so these make sure each rule is also met alone.
fn one_field_varied() -> impl Strategy<Value = Value> {
    close_request_fields().prop_flat_map(|fields| {
        (0..fields.len()).prop_map(move |index| {
            let mut body = job();
            let (name, value) = fields[index].clone();
            match value {
                Some(value) => body[name] = value,
                None => {
                    body.as_object_mut().unwrap().remove(name);
                }
            }
            body
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_requests_get_the_same_verdict(
        fields in close_request_fields(),
        extras in extras(),
    ) {
        prop_assume!(extras.iter().all(|(k, _)| !checked_fields().contains(k.as_str())));
        same_verdict(&build(fields, extras))?;
    }

    #[test]
    fn a_valid_request_with_one_field_varied_gets_the_same_verdict(body in one_field_varied()) {
        same_verdict(&body)?;
    }

    #[test]
    fn a_premium_request_with_its_contract_varied_gets_the_same_verdict(
        contract in contract(),
        operation in operation(),
    ) {
        let mut body = with(job(), "listingType", json!("PREMIUM"));
        for (name, value) in [("contract", contract), ("jobPostingOperationType", operation)] {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        same_verdict(&body)?;
    }
}

// ---------------------------------------------------------------------------
// The outcome schema

const OUTCOME_SCHEMA_FILE: &str = "schema/outcome.schema.json";

fn outcome_schema() -> Value {
    serde_json::from_str(&repo_file(OUTCOME_SCHEMA_FILE)).expect("the outcome schema is not JSON")
}

fn worker_reasons() -> BTreeSet<String> {
    use job_closer::dead_letter::Reason;
    [
        Reason::Invalid,
        Reason::Rejected,
        Reason::RetriesExhausted,
        Reason::TaskFailed,
        Reason::TaskUnknown,
    ]
    .iter()
    .map(|r| r.as_str().to_owned())
    .collect()
}

fn worker_outcomes() -> BTreeSet<String> {
    job_closer::outcome::Kind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

fn texts_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_outcome_schema_is_valid_2020_12_and_names_the_workers_outcomes_and_reasons() {
    let schema = outcome_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{OUTCOME_SCHEMA_FILE} is not a valid JSON Schema 2020-12: {error}");
    }
    assert_eq!(
        job_closer::outcome::SCHEMA,
        repo_file(OUTCOME_SCHEMA_FILE),
        "the built-in schema is the file"
    );
    assert_eq!(
        texts_of(&schema["properties"]["outcome"]["enum"]),
        worker_outcomes()
    );
    assert_eq!(
        texts_of(&schema["properties"]["reason"]["enum"]),
        worker_reasons()
    );
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for example in schema["examples"].as_array().expect("examples") {
        assert!(validator.is_valid(example), "{example}");
        serde_json::from_value::<job_closer::outcome::Outcome>(example.clone())
            .unwrap_or_else(|e| panic!("the worker cannot read its own example ({e}): {example}"));
    }
}

#[test]
fn job_closer_schema_outcome_prints_the_file_byte_for_byte() {
    let output = common::cli(&["schema", "--outcome"]).run_blocking();
    assert_eq!(output.code, Some(0));
    assert_eq!(
        output.stdout,
        repo_file(OUTCOME_SCHEMA_FILE),
        "`job-closer schema --outcome` must print {OUTCOME_SCHEMA_FILE} as it is"
    );
}

/// `schema/examples/outcome/{valid,invalid}/*.json`: what consumers can copy, and what CI's
/// independent validator checks too.
#[test]
fn the_outcome_example_files_get_the_verdict_their_directory_names() {
    let validator = jsonschema::draft202012::new(&outcome_schema()).unwrap();
    let mut seen = BTreeSet::new();
    for (dir, valid) in [("valid", true), ("invalid", false)] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schema/examples/outcome/{dir}"));
        for file in std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()) {
            let text = std::fs::read_to_string(&file).unwrap();
            let body: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(validator.is_valid(&body), valid, "{}", file.display());
            if valid {
                let read: job_closer::outcome::Outcome = serde_json::from_value(body.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                seen.insert(read.outcome.as_str().to_owned());
            }
        }
    }
    assert_eq!(seen, worker_outcomes(), "a valid example of every outcome");
}

// ---------------------------------------------------------------------------
// The AsyncAPI document

fn asyncapi() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&repo_file("schema/asyncapi.yaml")).expect("asyncapi.yaml is not YAML")
}

fn yaml_at<'a>(value: &'a serde_yaml_ng::Value, path: &[&str]) -> &'a serde_yaml_ng::Value {
    path.iter().fold(value, |v, key| {
        v.get(*key)
            .unwrap_or_else(|| panic!("asyncapi.yaml has no {}", path.join(".")))
    })
}

#[test]
fn the_asyncapi_document_describes_the_worker_queues_headers_and_payload() {
    use job_closer::dead_letter;
    let doc = asyncapi();
    assert_eq!(
        yaml_at(&doc, &["asyncapi"]).as_str(),
        Some("3.0.0"),
        "AsyncAPI 3.0"
    );
    assert_eq!(
        yaml_at(&doc, &["info", "version"]).as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The queues, with the worker's default names.
    let close_queue = yaml_at(&doc, &["channels", "closeRequests", "address"]);
    let dead_queue = yaml_at(&doc, &["channels", "deadLetters", "address"]);
    let help = common::run_help();
    for queue in [close_queue, dead_queue] {
        let name = queue.as_str().unwrap();
        assert!(
            help.contains(&format!("[default: {name}]")),
            "{name} is not a default queue name of `run`"
        );
    }

    // The close request payload is the schema file, by reference.
    let payload = yaml_at(&doc, &["components", "messages", "closeRequest", "payload"]);
    assert_eq!(
        yaml_at(payload, &["schema", "$ref"]).as_str(),
        Some("./close-request.schema.json"),
        "the payload must reference the one schema file"
    );

    // Every header the worker writes on a dead letter is described, and nothing else.
    let described: BTreeSet<String> = yaml_at(
        &doc,
        &[
            "components",
            "messages",
            "deadLetter",
            "headers",
            "properties",
        ],
    )
    .as_mapping()
    .expect("dead-letter header properties")
    .keys()
    .filter_map(|k| k.as_str().map(str::to_owned))
    .collect();
    let written: BTreeSet<String> = [
        dead_letter::STATUS,
        dead_letter::MESSAGE,
        dead_letter::REASON,
        dead_letter::ATTEMPTS,
        dead_letter::ORIGINAL_QUEUE,
        dead_letter::DEAD_LETTERED_AT,
        dead_letter::TASK_ID,
        dead_letter::REPLAY_COUNT,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let broker_headers: BTreeSet<String> = ["x-death", "x-delivery-count"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let unknown: Vec<_> = described
        .difference(&written)
        .filter(|h| !broker_headers.contains(*h))
        .collect();
    let missing: Vec<_> = written.difference(&described).collect();
    assert!(
        unknown.is_empty() && missing.is_empty(),
        "asyncapi.yaml's dead-letter headers differ from the worker's: not written {unknown:?}, not described {missing:?}"
    );
    // The reasons are the worker's.
    let reasons: BTreeSet<String> = yaml_at(
        &doc,
        &[
            "components",
            "messages",
            "deadLetter",
            "headers",
            "properties",
            dead_letter::REASON,
            "enum",
        ],
    )
    .as_sequence()
    .expect("x-error-reason enum")
    .iter()
    .filter_map(|v| v.as_str().map(str::to_owned))
    .collect();
    let worker_reasons: BTreeSet<String> = [
        dead_letter::Reason::Invalid,
        dead_letter::Reason::Rejected,
        dead_letter::Reason::RetriesExhausted,
        dead_letter::Reason::TaskFailed,
        dead_letter::Reason::TaskUnknown,
    ]
    .iter()
    .map(|r| r.as_str().to_owned())
    .collect();
    assert_eq!(reasons, worker_reasons);

    // The outcome message: its payload is the outcome schema file, its header the outcome, and the
    // exchange a durable topic exchange; a close request's reply is one.
    let outcome = yaml_at(&doc, &["components", "messages", "outcome"]);
    assert_eq!(
        yaml_at(outcome, &["payload", "schema", "$ref"]).as_str(),
        Some("./outcome.schema.json")
    );
    let header = yaml_at(
        outcome,
        &["headers", "properties", job_closer::outcome::HEADER],
    );
    let kinds: BTreeSet<String> = yaml_at(header, &["enum"])
        .as_sequence()
        .expect("x-outcome enum")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(kinds, worker_outcomes());
    assert_eq!(
        yaml_at(outcome, &["bindings", "amqp", "messageType"]).as_str(),
        Some(job_closer::outcome::TYPE)
    );
    let exchange = yaml_at(
        &doc,
        &["channels", "outcomes", "bindings", "amqp", "exchange"],
    );
    assert_eq!(yaml_at(exchange, &["type"]).as_str(), Some("topic"));
    assert_eq!(yaml_at(exchange, &["durable"]).as_bool(), Some(true));
    assert_eq!(
        yaml_at(
            &doc,
            &[
                "operations",
                "publishCloseRequest",
                "reply",
                "channel",
                "$ref"
            ]
        )
        .as_str(),
        Some("#/channels/replies")
    );
}
