//! The sandbox's decision on one `batch_create` request, as a pure function: from the request's
//! elements and what LinkedIn knows at that moment (a [`Situation`]) to a [`Verdict`] — refused as
//! a whole, or one entry per element. Nothing here touches the clock, the lock or the network, so
//! every row of LinkedIn's error tables (API-NOTES) is a unit test away; `postings.rs` only parses,
//! asks [`judge`], records the outcome and renders it.
//!
//! Whole-request refusals are checked in a fixed order, since a request can hold several faults and
//! LinkedIn names one: too many elements (400), a wrongly typed `externalJobPostingId` or scripted
//! poison (500), a contract not granted (403), a duplicate id (400), an apply URL that is not an
//! absolute http(s) URL (400, naming the job), in strict mode a job without any company field (400),
//! an enum outside LinkedIn's lists or not a string (422), more than seven `alternateLocations`
//! (422), and a CLOSE of a job already closed or absent (409, when re-closes are answered for the
//! request). Then each element: the schema's 422s, in strict mode the spec's lengths (422), more than
//! one `workplaceTypes` value (400), and a re-close (409, when answered per element).
//!
//! Rejected: deciding inside the handler while holding the state's lock, as the sandbox used to —
//! the rules could then only be tested through HTTP, and the order of checks was implicit.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::api_gate::LinkedInError;
use super::config::SandboxConfig;
use crate::close_request::{
    EMPLOYMENT_STATUSES, EXPERIENCE_LEVELS, MAX_ALTERNATE_LOCATIONS, WORKPLACE_TYPES,
    is_absolute_http_url,
};

/// One element of a batch_create request: a JSON object, whatever fields it holds.
pub(crate) type Element = Map<String, Value>;

/// LinkedIn's limit on elements in one batch_create request.
pub(crate) const MAX_ELEMENTS_PER_REQUEST: usize = 100;

/// LinkedIn's answer to a CLOSE of a job that is closed already, or that it does not know.
pub const ALREADY_CLOSED_MESSAGE: &str =
    "Cannot close job which is already closed or does not exist";

/// LinkedIn's answer to a job without any of the fields naming its company (strict mode).
pub(crate) const COMPANY_MISSING_MESSAGE: &str =
    "Either context or company or companyPageUrl or companyName must be provided";

/// LinkedIn's answer to more than seven `alternateLocations`.
pub(crate) const TOO_MANY_LOCATIONS_MESSAGE: &str =
    "The job contains more than seven locations. Please ensure maximum seven locations per job";

/// The spec's description length, enforced in strict mode only (undocumented on CLOSE).
pub(crate) const DESCRIPTION_CHARS: std::ops::RangeInclusive<usize> = 100..=25_000;
/// The spec's longest title, enforced in strict mode only.
pub(crate) const MAX_TITLE_CHARS: usize = 200;

/// Fields every element must carry (LinkedIn's OpenAPI spec), in the order they are checked.
const REQUIRED_FIELDS: [&str; 7] = [
    "companyApplyUrl",
    "externalJobPostingId",
    "jobPostingOperationType",
    "description",
    "title",
    "listedAt",
    "location",
];

/// Fields that must be JSON strings when present (`externalJobPostingId` is checked for the
/// whole request, since LinkedIn answers a wrong type there with a 500).
const STRING_FIELDS: [&str; 5] = [
    "title",
    "description",
    "location",
    "companyApplyUrl",
    "contract",
];

/// Any of these names the job's company (LinkedIn's "context or company or companyPageUrl or
/// companyName"; the context is `integrationContext`).
const COMPANY_FIELDS: [&str; 4] = [
    "integrationContext",
    "company",
    "companyPageUrl",
    "companyName",
];

/// The enums whose bad values LinkedIn answers with a 422 for the whole request.
const REQUEST_LEVEL_ENUMS: [(&str, &[&str]); 2] = [
    ("employmentStatus", &EMPLOYMENT_STATUSES),
    ("experienceLevel", &EXPERIENCE_LEVELS),
];

/// How the sandbox answers a CLOSE of a job it has closed already (or one marked absent).
///
/// JSON: `"Request"` or `"Element"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecloseAnswer {
    /// The whole request is answered HTTP 409 (what LinkedIn's error table shows).
    #[default]
    Request,
    /// HTTP 200, with that element's entry `{"error":{"message":..,"status":409},"status":409}`.
    Element,
}

/// The operation of an element that was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Renew,
    Close,
}

impl Operation {
    fn parse(symbol: &str) -> Option<Operation> {
        match symbol {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "RENEW" => Some(Operation::Renew),
            "CLOSE" => Some(Operation::Close),
            _ => None,
        }
    }
}

/// What LinkedIn knows when a request arrives.
pub(crate) struct Situation<'a> {
    pub(crate) config: &'a SandboxConfig,
    pub(crate) poison_prefix: Option<&'a str>,
    pub(crate) reclose_answer: RecloseAnswer,
    /// Jobs the sandbox has closed.
    pub(crate) closed: &'a HashSet<String>,
    /// Jobs marked as not existing.
    pub(crate) absent: &'a HashSet<String>,
    /// Whether the sandbox ever accepted a posting of this job (any operation).
    pub(crate) ever_accepted: &'a dyn Fn(&str) -> bool,
    /// The share of jobs never accepted here that LinkedIn already closed or expired
    /// ([`expired_on_linkedin`] with the configuration's seed).
    pub(crate) already_closed_rate: f64,
    /// The task URN a request-level apply-URL refusal quotes (LinkedIn names one).
    pub(crate) refused_task_urn: &'a str,
}

impl Situation<'_> {
    fn refuses_close(&self, external_id: &str) -> bool {
        self.closed.contains(external_id)
            || self.absent.contains(external_id)
            || (expired_on_linkedin(
                self.config.seed.unwrap_or_default(),
                self.already_closed_rate,
                external_id,
            ) && !(self.ever_accepted)(external_id))
    }
}

/// Whether, with `seed`, the job `external_id` is one of the share `rate` that LinkedIn already
/// closed or that expired on its own (as postings do after their run): the same answer for the same
/// seed, rate and id, in any process. A stable hash of the seed and the id (FNV-1a, then a 64-bit
/// finalizer so that ids differing in their last character spread) against the rate.
pub(crate) fn expired_on_linkedin(seed: u64, rate: f64, external_id: &str) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(external_id.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    // The top 53 bits as a uniform number in [0, 1).
    ((hash >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// The answer for one element of a request that was not refused as a whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry<'e> {
    Accepted {
        external_id: &'e str,
        operation: Operation,
    },
    Failed {
        status: u16,
        message: String,
        /// The job, when this is a refused re-close.
        refused_close: Option<&'e str>,
    },
}

/// What the sandbox answers to one request.
#[derive(Debug)]
pub(crate) enum Verdict<'e> {
    /// The whole request is refused; `refused_closes` are the re-closes it held (for the stats).
    Refused {
        error: LinkedInError,
        refused_closes: Vec<&'e str>,
    },
    Answered(Vec<Entry<'e>>),
}

/// Decides the answer to a request whose body parsed into `elements`.
pub(crate) fn judge<'e>(elements: &'e [Element], situation: &Situation) -> Verdict<'e> {
    match refuse_whole_request(elements, situation) {
        Some((error, refused_closes)) => Verdict::Refused {
            error,
            refused_closes,
        },
        None => Verdict::Answered(
            elements
                .iter()
                .map(|element| judge_element(element, situation))
                .collect(),
        ),
    }
}

fn external_id(element: &Element) -> Option<&str> {
    element.get("externalJobPostingId").and_then(Value::as_str)
}

fn is_close(element: &Element) -> bool {
    element
        .get("jobPostingOperationType")
        .and_then(Value::as_str)
        == Some("CLOSE")
}

/// The re-closes among `elements`: CLOSEs of jobs closed already or absent.
fn reclose_ids<'e>(elements: &'e [Element], situation: &Situation) -> Vec<&'e str> {
    elements
        .iter()
        .filter(|element| is_close(element))
        .filter_map(external_id)
        .filter(|id| situation.refuses_close(id))
        .collect()
}

type Refusal<'e> = (LinkedInError, Vec<&'e str>);

/// A whole-request check that refuses with an error alone: the error it gives `elements`, if any.
type RequestCheck = fn(&[Element], &Situation) -> Option<LinkedInError>;

/// The whole-request checks in the order LinkedIn applies them (see the module doc), but for the
/// re-close check, which comes last: a request with several faults is refused for the first.
const REQUEST_CHECKS: [RequestCheck; 8] = [
    too_many_elements,
    poisoned,
    forbidden_contract,
    duplicate_external_id,
    bad_apply_url,
    company_missing,
    bad_enum,
    too_many_locations,
];

/// The first whole-request refusal that applies.
fn refuse_whole_request<'e>(elements: &'e [Element], situation: &Situation) -> Option<Refusal<'e>> {
    match REQUEST_CHECKS
        .iter()
        .find_map(|check| check(elements, situation))
    {
        Some(error) => Some((error, Vec::new())),
        None => reclose_refused_for_the_request(elements, situation),
    }
}

fn too_many_elements(elements: &[Element], _: &Situation) -> Option<LinkedInError> {
    (elements.len() > MAX_ELEMENTS_PER_REQUEST).then(|| {
        LinkedInError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Too many elements: {}. A batch_create request may hold at most {MAX_ELEMENTS_PER_REQUEST} elements.",
                elements.len()
            ),
        )
    })
}

/// Documented: a wrongly typed externalJobPostingId (e.g. a number) poisons the whole request with
/// a 500 rather than a per-element 422. Scripted poison looks the same.
fn poisoned(elements: &[Element], situation: &Situation) -> Option<LinkedInError> {
    let is_poison = |id: &Value| {
        !id.is_string()
            || situation
                .poison_prefix
                .is_some_and(|prefix| id.as_str().is_some_and(|id| id.starts_with(prefix)))
    };
    elements
        .iter()
        .filter_map(|element| element.get("externalJobPostingId"))
        .any(is_poison)
        .then(|| LinkedInError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"))
}

fn forbidden_contract(elements: &[Element], situation: &Situation) -> Option<LinkedInError> {
    let contract = elements
        .iter()
        .filter_map(|element| element.get("contract").and_then(Value::as_str))
        .find(|contract| !situation.config.allows_contract(contract))?;
    Some(LinkedInError::new(
        StatusCode::FORBIDDEN,
        format!("Caller is not authorized to access the jobs for contract: {contract}"),
    ))
}

fn duplicate_external_id(elements: &[Element], _: &Situation) -> Option<LinkedInError> {
    let mut seen_ids = HashSet::new();
    let id = elements
        .iter()
        .filter_map(external_id)
        .find(|id| !seen_ids.insert(*id))?;
    Some(LinkedInError::new(
        StatusCode::BAD_REQUEST,
        format!("Duplicate externalJobPostingId in one request: {id}"),
    ))
}

/// A URL that is a string but not an absolute http(s) URL; a non-string one is a type error
/// LinkedIn reports for the element alone (a 422).
fn bad_apply_url(elements: &[Element], situation: &Situation) -> Option<LinkedInError> {
    let is_bad = |element: &&Element| {
        element
            .get("companyApplyUrl")
            .and_then(Value::as_str)
            .is_some_and(|url| !is_absolute_http_url(url))
    };
    let element = elements.iter().find(is_bad)?;
    let message = format!(
        "Invalid company apply url for job with externalPartnerId {}, taskUrn {}",
        external_id(element).unwrap_or_default(),
        situation.refused_task_urn
    );
    Some(LinkedInError::new(StatusCode::BAD_REQUEST, message))
}

/// Strict mode only: a job without any field naming its company.
fn company_missing(elements: &[Element], situation: &Situation) -> Option<LinkedInError> {
    let names_company = |element: &Element| {
        COMPANY_FIELDS
            .iter()
            .any(|field| element.contains_key(*field))
    };
    (situation.config.strict && !elements.iter().all(names_company))
        .then(|| LinkedInError::new(StatusCode::BAD_REQUEST, COMPANY_MISSING_MESSAGE))
}

fn bad_enum(elements: &[Element], _: &Situation) -> Option<LinkedInError> {
    let message = elements.iter().find_map(enum_fault)?;
    Some(LinkedInError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        message,
    ))
}

fn too_many_locations(elements: &[Element], _: &Situation) -> Option<LinkedInError> {
    let location_count = |element: &Element| {
        element
            .get("alternateLocations")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    elements
        .iter()
        .any(|element| location_count(element) > MAX_ALTERNATE_LOCATIONS)
        .then(|| LinkedInError::new(StatusCode::UNPROCESSABLE_ENTITY, TOO_MANY_LOCATIONS_MESSAGE))
}

/// Re-closes, when they are answered for the whole request; the refusal names them for the stats.
fn reclose_refused_for_the_request<'e>(
    elements: &'e [Element],
    situation: &Situation,
) -> Option<Refusal<'e>> {
    if situation.reclose_answer != RecloseAnswer::Request {
        return None;
    }
    let refused_closes = reclose_ids(elements, situation);
    if refused_closes.is_empty() {
        return None;
    }
    Some((
        LinkedInError::new(StatusCode::CONFLICT, ALREADY_CLOSED_MESSAGE),
        refused_closes,
    ))
}

/// The 422 message of an enum outside LinkedIn's lists, or of one that is not a string.
fn enum_fault(element: &Element) -> Option<String> {
    let single = REQUEST_LEVEL_ENUMS
        .iter()
        .filter_map(|(field, symbols)| Some((*field, *symbols, element.get(*field)?)));
    let workplace = element
        .get("workplaceTypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|value| ("workplaceTypes", &WORKPLACE_TYPES[..], value));
    single
        .chain(workplace)
        .find_map(|(field, symbols, value)| match value {
            Value::Null => None,
            Value::String(symbol) if symbols.contains(&symbol.as_str()) => None,
            Value::String(_) => Some(format!(
                "ERROR :: /{field} :: {value} is not an enum symbol"
            )),
            _ => Some(format!(
                "ERROR :: /{field} :: enum type is not backed by a String"
            )),
        })
}

/// The entry for one element of a request that was not refused as a whole.
fn judge_element<'e>(element: &'e Element, situation: &Situation) -> Entry<'e> {
    let failed = |status: u16, message: String| Entry::Failed {
        status,
        message,
        refused_close: None,
    };
    let operation = match schema_fault(element) {
        Ok(operation) => operation,
        Err(message) => return failed(422, message),
    };
    if situation.config.strict
        && let Some(message) = length_fault(element)
    {
        return failed(422, message);
    }
    if let Some(values) = element.get("workplaceTypes").and_then(Value::as_array)
        && values.len() > 1
    {
        let provided: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        return failed(
            400,
            format!(
                "The workplaceTypes field cannot have more than one value provided. Provided values [{}]",
                provided.join(", ")
            ),
        );
    }
    // Present and a string: the whole-request check refused anything else.
    let external_id = external_id(element).unwrap_or_default();
    if operation == Operation::Close && situation.refuses_close(external_id) {
        return Entry::Failed {
            status: 409,
            message: ALREADY_CLOSED_MESSAGE.to_owned(),
            refused_close: Some(external_id),
        };
    }
    Entry::Accepted {
        external_id,
        operation,
    }
}

/// Checks one element like LinkedIn's schema validation; `Err` is the 422 message.
fn schema_fault(element: &Element) -> Result<Operation, String> {
    let is_premium = element.get("listingType").and_then(Value::as_str) == Some("PREMIUM");
    let premium_fields = is_premium.then_some("contract");
    if let Some(missing) = REQUIRED_FIELDS
        .into_iter()
        .chain(premium_fields)
        .find(|field| !element.contains_key(*field))
    {
        return Err(format!(
            "ERROR :: /{missing} :: field is required but not found and has no default value\n"
        ));
    }

    let listed_at = &element["listedAt"];
    if !(listed_at.is_i64() || listed_at.is_u64()) {
        return Err(format!(
            "ERROR :: /listedAt :: {listed_at} cannot be coerced to Long\n"
        ));
    }

    for field in STRING_FIELDS {
        if let Some(value) = element.get(field)
            && !value.is_string()
        {
            return Err(format!(
                "ERROR :: /{field} :: {value} cannot be coerced to String\n"
            ));
        }
    }

    let operation = &element["jobPostingOperationType"];
    operation
        .as_str()
        .and_then(Operation::parse)
        .ok_or_else(|| {
            format!("ERROR :: /jobPostingOperationType :: {operation} is not an enum symbol\n")
        })
}

/// The spec's lengths (strict mode): description 100–25,000 characters, title at most 200.
fn length_fault(element: &Element) -> Option<String> {
    let chars = |field: &str| {
        element
            .get(field)
            .and_then(Value::as_str)
            .map(|text| text.chars().count())
    };
    if let Some(length) = chars("description")
        && !DESCRIPTION_CHARS.contains(&length)
    {
        return Some(format!(
            "ERROR :: /description :: length of {length} characters is out of range {}...{}\n",
            DESCRIPTION_CHARS.start(),
            DESCRIPTION_CHARS.end()
        ));
    }
    if let Some(length) = chars("title")
        && length > MAX_TITLE_CHARS
    {
        return Some(format!(
            "ERROR :: /title :: length of {length} characters is out of range 1...{MAX_TITLE_CHARS}\n"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    //! One test per row of LinkedIn's error tables (API-NOTES) the sandbox decides itself.
    use super::*;
    use crate::sandbox::test_support::close_element;
    use serde_json::json;

    const TASK_URN: &str = "urn:li:simpleJobPostingTask:00000000-0000-0000-0000-000000000001";

    struct World {
        config: SandboxConfig,
        reclose_answer: RecloseAnswer,
        closed: HashSet<String>,
        absent: HashSet<String>,
        accepted: HashSet<String>,
        already_closed_rate: f64,
    }

    impl World {
        fn new() -> World {
            World {
                config: SandboxConfig::default(),
                reclose_answer: RecloseAnswer::Request,
                closed: HashSet::new(),
                absent: HashSet::new(),
                accepted: HashSet::new(),
                already_closed_rate: 0.0,
            }
        }

        fn strict() -> World {
            World {
                config: SandboxConfig {
                    strict: true,
                    ..SandboxConfig::default()
                },
                ..World::new()
            }
        }

        fn judge<'e>(&self, elements: &'e [Element]) -> Verdict<'e> {
            let ever_accepted = |id: &str| self.accepted.contains(id);
            judge(
                elements,
                &Situation {
                    config: &self.config,
                    poison_prefix: None,
                    reclose_answer: self.reclose_answer,
                    closed: &self.closed,
                    absent: &self.absent,
                    ever_accepted: &ever_accepted,
                    already_closed_rate: self.already_closed_rate,
                    refused_task_urn: TASK_URN,
                },
            )
        }

        /// The whole-request refusal `elements` get: status and message.
        fn refusal(&self, elements: &[Element]) -> (u16, String) {
            match self.judge(elements) {
                Verdict::Refused { error, .. } => {
                    (error.status().as_u16(), error.message().to_owned())
                }
                Verdict::Answered(entries) => panic!("not refused: {entries:?}"),
            }
        }

        fn entries<'e>(&self, elements: &'e [Element]) -> Vec<Entry<'e>> {
            match self.judge(elements) {
                Verdict::Answered(entries) => entries,
                Verdict::Refused { error, .. } => panic!("refused: {error:?}"),
            }
        }
    }

    fn element(id: &str, change: impl FnOnce(&mut Value)) -> Element {
        let mut element = close_element(id);
        change(&mut element);
        match element {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    fn good(id: &str) -> Element {
        element(id, |_| {})
    }

    fn failed(status: u16, message: &str) -> Entry<'static> {
        Entry::Failed {
            status,
            message: message.to_owned(),
            refused_close: None,
        }
    }

    fn accepted(external_id: &str) -> Entry<'_> {
        Entry::Accepted {
            external_id,
            operation: Operation::Close,
        }
    }

    #[test]
    fn a_conformant_batch_is_accepted_element_by_element() {
        let elements = [good("A"), good("B")];
        assert_eq!(
            World::strict().entries(&elements),
            [accepted("A"), accepted("B")]
        );
    }

    #[test]
    fn a_reclose_is_a_request_level_409_by_default() {
        let mut world = World::new();
        world.closed.insert("B".to_owned());
        let elements = [good("A"), good("B")];
        assert_eq!(
            world.refusal(&elements),
            (409, ALREADY_CLOSED_MESSAGE.to_owned())
        );
        let Verdict::Refused { refused_closes, .. } = world.judge(&elements) else {
            unreachable!()
        };
        assert_eq!(refused_closes, ["B"]);
    }

    #[test]
    fn a_job_marked_absent_gets_the_same_409() {
        let mut world = World::new();
        world.absent.insert("A".to_owned());
        assert_eq!(
            world.refusal(&[good("A")]),
            (409, ALREADY_CLOSED_MESSAGE.to_owned())
        );
        // Only a CLOSE is refused: creating the job is fine.
        let create = element("A", |e| e["jobPostingOperationType"] = json!("CREATE"));
        assert!(matches!(
            world.entries(std::slice::from_ref(&create))[..],
            [Entry::Accepted {
                operation: Operation::Create,
                ..
            }]
        ));
    }

    #[test]
    fn a_seeded_share_of_jobs_never_accepted_is_already_closed() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("job-{i}")).collect();
        let expired = |seed, rate| {
            ids.iter()
                .filter(|id| expired_on_linkedin(seed, rate, id))
                .count()
        };
        assert_eq!(expired(7, 0.0), 0);
        assert_eq!(expired(7, 1.0), ids.len());
        let share = expired(7, 0.1) as f64 / ids.len() as f64;
        assert!((0.09..0.11).contains(&share), "{share}");
        // Deterministic per id for a seed, different for another seed; the same jobs at a higher
        // rate still included.
        assert_eq!(expired(7, 0.1), expired(7, 0.1));
        let both = ids
            .iter()
            .filter(|id| expired_on_linkedin(7, 0.1, id) && expired_on_linkedin(8, 0.1, id))
            .count();
        assert!(both < expired(7, 0.1) / 3, "{both}");
        assert!(
            ids.iter()
                .filter(|id| expired_on_linkedin(7, 0.1, id))
                .all(|id| expired_on_linkedin(7, 0.3, id))
        );

        let mut world = World::new();
        world.already_closed_rate = 0.1;
        world.config.seed = Some(7);
        let gone = ids
            .iter()
            .find(|id| expired_on_linkedin(7, 0.1, id))
            .unwrap();
        let open = ids
            .iter()
            .find(|id| !expired_on_linkedin(7, 0.1, id))
            .unwrap();
        let elements = [good(open), good(gone)];
        assert_eq!(
            world.refusal(&elements),
            (409, ALREADY_CLOSED_MESSAGE.to_owned())
        );
        assert_eq!(world.entries(&[good(open)]), [accepted(open)]);
        // A job the sandbox accepted (created here) is LinkedIn's own: closing it works.
        world.accepted.insert(gone.clone());
        assert_eq!(world.entries(&[good(gone)]), [accepted(gone)]);
        world.accepted.clear();
        world.reclose_answer = RecloseAnswer::Element;
        assert_eq!(
            world.entries(&elements),
            [
                accepted(open),
                Entry::Failed {
                    status: 409,
                    message: ALREADY_CLOSED_MESSAGE.to_owned(),
                    refused_close: Some(gone),
                }
            ]
        );
    }

    #[test]
    fn a_reclose_answered_per_element_leaves_the_others_accepted() {
        let mut world = World::new();
        world.reclose_answer = RecloseAnswer::Element;
        world.closed.insert("B".to_owned());
        let elements = [good("A"), good("B")];
        assert_eq!(
            world.entries(&elements),
            [
                accepted("A"),
                Entry::Failed {
                    status: 409,
                    message: ALREADY_CLOSED_MESSAGE.to_owned(),
                    refused_close: Some("B"),
                }
            ]
        );
    }

    #[test]
    fn a_bad_apply_url_is_a_request_level_400_naming_the_job() {
        for bad in ["u", "/apply/1", "ftp://jobs.example.com/a", "https://", ""] {
            let elements = [
                good("A"),
                element("B", |e| e["companyApplyUrl"] = json!(bad)),
            ];
            assert_eq!(
                World::new().refusal(&elements),
                (
                    400,
                    format!(
                        "Invalid company apply url for job with externalPartnerId B, taskUrn {TASK_URN}"
                    )
                ),
                "{bad}"
            );
        }
        // Not a string: a type error, that element's 422.
        let elements = [element("A", |e| e["companyApplyUrl"] = json!(7))];
        assert_eq!(
            World::new().entries(&elements),
            [failed(
                422,
                "ERROR :: /companyApplyUrl :: 7 cannot be coerced to String\n"
            )]
        );
    }

    #[test]
    fn enums_outside_linkedins_lists_are_request_level_422s() {
        for field in ["employmentStatus", "experienceLevel"] {
            let elements = [good("A"), element("B", |e| e[field] = json!("SOMETIMES"))];
            assert_eq!(
                World::new().refusal(&elements),
                (
                    422,
                    format!("ERROR :: /{field} :: \"SOMETIMES\" is not an enum symbol")
                )
            );
            let elements = [element("B", |e| e[field] = json!(3))];
            assert_eq!(
                World::new().refusal(&elements),
                (
                    422,
                    format!("ERROR :: /{field} :: enum type is not backed by a String")
                )
            );
        }
        let elements = [element("A", |e| e["workplaceTypes"] = json!(["Office"]))];
        assert_eq!(
            World::new().refusal(&elements),
            (
                422,
                "ERROR :: /workplaceTypes :: \"Office\" is not an enum symbol".to_owned()
            )
        );
        let listed = [element("A", |e| {
            e["employmentStatus"] = json!("FULL_TIME");
            e["experienceLevel"] = json!("MID_SENIOR_LEVEL");
            e["workplaceTypes"] = json!(["On-site"]);
        })];
        assert_eq!(World::new().entries(&listed), [accepted("A")]);
    }

    #[test]
    fn eight_locations_are_a_request_level_422() {
        let seven = [element("A", |e| {
            e["alternateLocations"] = json!(vec!["Berlin"; 7]);
        })];
        assert_eq!(World::new().entries(&seven), [accepted("A")]);
        let eight = [
            good("A"),
            element("B", |e| e["alternateLocations"] = json!(vec!["Berlin"; 8])),
        ];
        assert_eq!(
            World::new().refusal(&eight),
            (422, TOO_MANY_LOCATIONS_MESSAGE.to_owned())
        );
    }

    #[test]
    fn two_workplace_types_are_that_elements_400_inside_a_200() {
        let elements = [
            good("A"),
            element("B", |e| e["workplaceTypes"] = json!(["Remote", "Hybrid"])),
        ];
        assert_eq!(
            World::new().entries(&elements),
            [
                accepted("A"),
                failed(
                    400,
                    "The workplaceTypes field cannot have more than one value provided. Provided values [Remote, Hybrid]"
                )
            ]
        );
    }

    #[test]
    fn strict_mode_enforces_the_specs_lengths_per_element() {
        let short = element("A", |e| e["description"] = json!("Filled."));
        let long_title = element("B", |e| e["title"] = json!("t".repeat(MAX_TITLE_CHARS + 1)));
        let longest = element("C", |e| {
            e["description"] = json!("d".repeat(*DESCRIPTION_CHARS.end()));
            e["title"] = json!("t".repeat(MAX_TITLE_CHARS));
        });
        let elements = [short, long_title, longest];
        assert_eq!(
            World::strict().entries(&elements),
            [
                failed(
                    422,
                    "ERROR :: /description :: length of 7 characters is out of range 100...25000\n"
                ),
                failed(
                    422,
                    "ERROR :: /title :: length of 201 characters is out of range 1...200\n"
                ),
                accepted("C"),
            ]
        );
        let lenient = World::new().entries(&elements);
        assert!(
            lenient
                .iter()
                .all(|entry| matches!(entry, Entry::Accepted { .. }))
        );
    }

    #[test]
    fn strict_mode_wants_a_company_for_the_whole_request() {
        let without_company = element("B", |e| {
            e.as_object_mut().unwrap().remove("integrationContext");
        });
        let elements = [good("A"), without_company];
        assert_eq!(
            World::strict().refusal(&elements),
            (400, COMPANY_MISSING_MESSAGE.to_owned())
        );
        assert_eq!(World::new().entries(&elements).len(), 2);
        let named = element("B", |e| {
            e.as_object_mut().unwrap().remove("integrationContext");
            e["companyName"] = json!("Acme");
        });
        assert_eq!(World::strict().entries(&[named]), [accepted("B")]);
    }

    #[test]
    fn schema_faults_stay_per_element_422s() {
        let elements = [
            element("A", |e| {
                e.as_object_mut().unwrap().remove("title");
            }),
            element("B", |e| e["listedAt"] = json!("0123456789")),
            element("C", |e| e["jobPostingOperationType"] = json!("UPDATED")),
            good("D"),
        ];
        assert_eq!(
            World::new().entries(&elements),
            [
                failed(
                    422,
                    "ERROR :: /title :: field is required but not found and has no default value\n"
                ),
                failed(
                    422,
                    "ERROR :: /listedAt :: \"0123456789\" cannot be coerced to Long\n"
                ),
                failed(
                    422,
                    "ERROR :: /jobPostingOperationType :: \"UPDATED\" is not an enum symbol\n"
                ),
                accepted("D"),
            ]
        );
    }

    #[test]
    fn whole_request_refusals_come_in_the_documented_order() {
        let mut world = World::new();
        world.closed.insert("E".to_owned());
        let elements = [
            good("E"),
            element("D", |e| e["alternateLocations"] = json!(vec!["x"; 8])),
            element("C", |e| e["employmentStatus"] = json!("NOPE")),
            element("B", |e| e["companyApplyUrl"] = json!("nope")),
            element("A", |e| e["contract"] = json!("urn:li:contract:9")),
        ];
        let mut expected = vec![409, 422, 422, 400];
        world.config.allowed_contracts = Some(vec!["urn:li:contract:1".to_owned()]);
        assert_eq!(world.refusal(&elements).0, 403);
        for end in (1..elements.len()).rev() {
            assert_eq!(
                world.refusal(&elements[..end]).0,
                expected.pop().unwrap(),
                "first {end}"
            );
        }
        let numeric_id = element("F", |e| e["externalJobPostingId"] = json!(7));
        assert_eq!(
            world.refusal(&[elements[4].clone(), numeric_id]),
            (500, "Internal Server Error".to_owned())
        );
    }
}
