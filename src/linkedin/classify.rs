//! What an answer from LinkedIn means for the elements that were sent: pure data in, verdict out.
//!
//! LinkedIn answers a batch at two levels: the HTTP status of the request, and inside a 200 one entry per
//! element, in request order, each with its own status. The request level is not only about the
//! request: LinkedIn reports many single-job faults (an invalid apply URL, a re-close, a bad enum, eight
//! locations) as the status of the whole request. So a request-level verdict says *whose* fault it is —
//! one job's ([`Outcome::ElementFault`]), the contract's ([`Outcome::BatchFault`]) or the
//! integration's ([`Outcome::IntegrationFault`]) — and the worker (`worker::decide`) turns that
//! into what happens to each element. Treating every request-level 4xx as everyone's fault (the first
//! design) dead-lettered 99 good closes with another job's message. Nothing here sleeps, sends or acks.
//!
//! LinkedIn's spec types entry statuses as strings while every sample shows numbers: both are read.

use serde::{Deserialize, Deserializer};
use std::time::{Duration, SystemTime};

/// Why a request or an element failed, as it goes into a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// The verdict for one element of a 2xx answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ElementOutcome {
    /// LinkedIn took the close (202): the task id says where to check it.
    Accepted { task_id: Option<String> },
    /// 409: the job is already closed (or does not exist) — a re-close, not a failure.
    AlreadyClosed(Failure),
    /// LinkedIn said no for this element: dead-letter it as `rejected`.
    Rejected(Failure),
    /// Transient for this element alone (5xx, 408, 429 inside the answer).
    Retry(Failure),
    /// The element came back 401: the token, not the element, is at fault.
    Unauthorized(Failure),
}

impl ElementOutcome {
    /// What a request-level fault of one job means when that job is known: 409 is a re-close,
    /// anything else a rejection.
    pub(crate) fn of_fault(failure: Failure) -> ElementOutcome {
        if failure.status == 409 {
            ElementOutcome::AlreadyClosed(failure)
        } else {
            ElementOutcome::Rejected(failure)
        }
    }
}

/// The verdict for a whole request, whatever was asked: `A` is the answer for every element (a
/// close's entries; a task lookup's statuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome<A> {
    /// Every element has its own verdict.
    Answered(A),
    /// 401: get a new token and resend; never the message's fault.
    RefreshToken(Failure),
    /// 429: slow the whole worker down; never the message's fault.
    Throttled {
        retry_after: Option<Duration>,
        failure: Failure,
    },
    /// 408, 5xx (504 included), a broken or unmatched answer, a timeout: try again with backoff.
    Retry {
        retry_after: Option<Duration>,
        failure: Failure,
    },
    /// 400, 409, 422: LinkedIn's documented single-job faults, reported for the whole request. The
    /// message may name the job (`externalPartnerId ...`); otherwise the culprit must be isolated.
    ElementFault(Failure),
    /// 402 (job slots, budget), 403 for a contract, and other 4xx: every element of the request —
    /// which never mixes contracts — shares the verdict.
    BatchFault(Failure),
    /// 403 "Not enough permissions to access" / "Unpermitted fields present in REQUEST_BODY", 404,
    /// 426, or a 400 naming `LinkedIn-Version`: the integration is broken, not any message.
    IntegrationFault(Failure),
}

/// The verdict for a `batch_create`: entries in request order.
pub(crate) type RequestOutcome = Outcome<Vec<ElementOutcome>>;

/// An HTTP answer as far as classification cares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    /// The raw `Retry-After` header, if any.
    pub(crate) retry_after: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

#[derive(Deserialize)]
struct BatchBody {
    elements: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default, deserialize_with = "lenient_status")]
    status: Option<u16>,
    id: Option<String>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    error_description: Option<String>,
    #[serde(default, deserialize_with = "lenient_status")]
    status: Option<u16>,
}

/// A status as a number or a numeric string (`202` or `"202"`); anything else is no status, which
/// makes the entry unmatched rather than the answer unreadable.
fn lenient_status<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Classifies the answer to a `batch_create` of `sent` elements, received at `now`.
pub(crate) fn classify(answer: Answer<'_>, sent: usize, now: SystemTime) -> RequestOutcome {
    let status = answer.status;
    let failure = || failure_from_body(status, answer.body);
    match status {
        200..=299 => classify_entries(answer.body, sent),
        401 => RequestOutcome::RefreshToken(failure()),
        429 => RequestOutcome::Throttled {
            retry_after: answer.retry_after.and_then(|v| parse_retry_after(v, now)),
            failure: failure(),
        },
        408 | 500..=599 => RequestOutcome::Retry {
            retry_after: answer.retry_after.and_then(|v| parse_retry_after(v, now)),
            failure: failure(),
        },
        400..=499 => {
            let failure = failure();
            if is_integration_fault(&failure) {
                RequestOutcome::IntegrationFault(failure)
            } else if matches!(status, 400 | 409 | 422) {
                RequestOutcome::ElementFault(failure)
            } else {
                RequestOutcome::BatchFault(failure)
            }
        }
        // 1xx and 3xx are no answer to a POST we can act on; the message is not at fault.
        _ => RequestOutcome::Retry {
            retry_after: None,
            failure: failure(),
        },
    }
}

/// Whether a request-level 4xx says the integration (headers, URL, permissions, version) is wrong,
/// so that every request would get it, whatever it carries.
pub(crate) fn is_integration_fault(failure: &Failure) -> bool {
    let message = failure.message.as_str();
    match failure.status {
        403 => {
            message.contains("Not enough permissions to access")
                || message.contains("Unpermitted fields present in REQUEST_BODY")
        }
        404 | 426 => true,
        400 => message.to_ascii_lowercase().contains("linkedin-version"),
        _ => false,
    }
}

/// The position of the element a request-level message names, if it names one of `ids`: LinkedIn's
/// 400 says `... for job with externalPartnerId {externalJobPostingId}, taskUrn ...`. When several
/// ids match (one a prefix of another), the longest wins; a bare substring never counts.
pub(crate) fn named_element(message: &str, ids: &[&str]) -> Option<usize> {
    const LABELS: [&str; 4] = [
        "externalPartnerId ",
        "externalPartnerId: ",
        "externalJobPostingId ",
        "externalJobPostingId: ",
    ];
    let mut best: Option<(usize, usize)> = None;
    for (index, id) in ids.iter().enumerate() {
        if id.is_empty() {
            continue;
        }
        let named = LABELS.iter().any(|label| {
            let needle = format!("{label}{id}");
            message.match_indices(&needle).any(|(at, _)| {
                message[at + needle.len()..]
                    .chars()
                    .next()
                    .is_none_or(|next| {
                        next == ',' || next == ';' || next == ')' || next.is_whitespace()
                    })
            })
        });
        if named && best.is_none_or(|(_, len)| id.len() > len) {
            best = Some((index, id.len()));
        }
    }
    best.map(|(index, _)| index)
}

fn classify_entries(body: &[u8], sent: usize) -> RequestOutcome {
    let unmatched = |why: String| RequestOutcome::Retry {
        retry_after: None,
        failure: Failure::new(200, format!("unusable answer from LinkedIn: {why}")),
    };
    let parsed: BatchBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return unmatched(format!("body does not parse ({e})")),
    };
    if parsed.elements.len() != sent {
        return unmatched(format!(
            "{} entries for {sent} elements sent",
            parsed.elements.len()
        ));
    }
    let mut outcomes = Vec::with_capacity(sent);
    for (index, entry) in parsed.elements.into_iter().enumerate() {
        let Some(status) = entry.status.or_else(|| entry.error.as_ref()?.status) else {
            return unmatched(format!("entry {index} has no status"));
        };
        outcomes.push(classify_entry(status, entry));
    }
    RequestOutcome::Answered(outcomes)
}

fn classify_entry(status: u16, entry: Entry) -> ElementOutcome {
    let failure = || {
        let message = entry
            .error
            .as_ref()
            .and_then(|e| e.message.clone().or_else(|| e.error_description.clone()))
            .unwrap_or_else(|| format!("element answered with status {status}"));
        Failure::new(status, message)
    };
    match status {
        200..=299 => ElementOutcome::Accepted { task_id: entry.id },
        401 => ElementOutcome::Unauthorized(failure()),
        409 => ElementOutcome::AlreadyClosed(failure()),
        408 | 429 | 500..=599 => ElementOutcome::Retry(failure()),
        _ => ElementOutcome::Rejected(failure()),
    }
}

/// LinkedIn's error bodies carry `message`; OAuth errors carry `error_description`; anything else is
/// quoted as it came, so an operator sees what LinkedIn (or a proxy in front of it) said.
pub(crate) fn failure_from_body(status: u16, body: &[u8]) -> Failure {
    if let Ok(error) = serde_json::from_slice::<ErrorBody>(body)
        && let Some(message) = error.message.or(error.error_description)
    {
        return Failure::new(status, message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        Failure::new(status, format!("HTTP {status} with an empty body"))
    } else {
        Failure::new(status, text.to_owned())
    }
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> RequestOutcome {
        classify(
            Answer {
                status,
                retry_after: None,
                body: body.as_bytes(),
            },
            2,
            SystemTime::now(),
        )
    }

    #[test]
    fn per_element_answers_keep_request_order() {
        let body = r#"{"elements":[
            {"id":"urn:li:simpleJobPostingTask:1","location":"/x","status":202},
            {"error":{"message":"ERROR :: /title :: field is required but not found and has no default value\n","status":422},"status":422}
        ]}"#;
        assert_eq!(
            answer(200, body),
            RequestOutcome::Answered(vec![
                ElementOutcome::Accepted {
                    task_id: Some("urn:li:simpleJobPostingTask:1".into())
                },
                ElementOutcome::Rejected(Failure::new(
                    422,
                    "ERROR :: /title :: field is required but not found and has no default value\n"
                )),
            ])
        );
    }

    #[test]
    fn element_level_transient_and_auth_statuses() {
        let body = r#"{"elements":[{"status":503,"error":{"message":"busy"}},{"status":401}]}"#;
        assert_eq!(
            answer(200, body),
            RequestOutcome::Answered(vec![
                ElementOutcome::Retry(Failure::new(503, "busy")),
                ElementOutcome::Unauthorized(Failure::new(401, "element answered with status 401")),
            ])
        );
    }

    #[test]
    fn an_answer_that_cannot_be_matched_is_transient_not_a_guess() {
        for body in [
            r#"{"elements":[{"status":202}]}"#,
            "not json",
            r#"{"elements":[{"status":202},{"id":"x"}]}"#,
            "",
        ] {
            assert!(
                matches!(answer(200, body), RequestOutcome::Retry { failure, .. } if failure.status == 200),
                "{body}"
            );
        }
    }

    #[test]
    fn http_level_statuses() {
        let expired = r#"{"message":"The token used in the request has expired","serviceErrorCode":65602,"status":401}"#;
        assert_eq!(
            answer(401, expired),
            RequestOutcome::RefreshToken(Failure::new(
                401,
                "The token used in the request has expired"
            ))
        );
        for status in [400, 409, 422] {
            assert!(
                matches!(answer(status, "{}"), RequestOutcome::ElementFault(f) if f.status == status)
            );
        }
        for status in [402, 403, 405] {
            assert!(
                matches!(answer(status, "{}"), RequestOutcome::BatchFault(f) if f.status == status)
            );
        }
        for status in [404, 426] {
            assert!(matches!(
                answer(status, "{}"),
                RequestOutcome::IntegrationFault(_)
            ));
        }
        for status in [408, 500, 502, 503, 504] {
            assert!(matches!(answer(status, ""), RequestOutcome::Retry { .. }));
        }
        assert!(matches!(
            answer(429, ""),
            RequestOutcome::Throttled {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(answer(302, ""), RequestOutcome::Retry { .. }));
    }

    #[test]
    fn contract_403_keeps_linkedins_message() {
        let body = r#"{"message":"Caller is not authorized to access the jobs for contract: urn:li:contract:9","status":403}"#;
        assert_eq!(
            answer(403, body),
            RequestOutcome::BatchFault(Failure::new(
                403,
                "Caller is not authorized to access the jobs for contract: urn:li:contract:9"
            ))
        );
    }

    #[test]
    fn whose_fault_a_request_level_answer_is_follows_linkedins_table() {
        let body = |status: u16, message: &str| {
            serde_json::json!({"message": message, "status": status}).to_string()
        };
        type Whose = fn(Failure) -> RequestOutcome;
        let (element, batch, integration): (Whose, Whose, Whose) = (
            RequestOutcome::ElementFault,
            RequestOutcome::BatchFault,
            RequestOutcome::IntegrationFault,
        );
        let table = [
            (
                400,
                "Invalid company apply url for job with externalPartnerId J-1, taskUrn urn:li:simpleJobPostingTask:1",
                element,
            ),
            (
                400,
                "Either context or company or companyPageUrl or companyName must be provided",
                element,
            ),
            (
                409,
                "Cannot close job which is already closed or does not exist",
                element,
            ),
            (
                422,
                "ERROR :: /employmentStatus :: PART is not an enum symbol",
                element,
            ),
            (
                422,
                "ERROR :: /experienceLevel :: enum type is not backed by a String",
                element,
            ),
            (
                422,
                "The job contains more than seven locations. Please ensure maximum seven locations per job",
                element,
            ),
            (
                402,
                "Insufficient job slots for contract = urn:li:contract:1 for purchase flow",
                batch,
            ),
            (
                402,
                "Insufficient lifetime budget for contract: urn:li:contract:1",
                batch,
            ),
            (
                403,
                "Caller is not authorized to access the jobs for contract: urn:li:contract:1",
                batch,
            ),
            (
                403,
                "Caller is not authorized to access the fp4p contract",
                batch,
            ),
            (
                403,
                "Not enough permissions to access: POST /simpleJobPostings",
                integration,
            ),
            (
                403,
                "Unpermitted fields present in REQUEST_BODY: Data Processing Exception while processing fields [/elements]",
                integration,
            ),
            (
                404,
                "Resource simpleJobPostings does not exist",
                integration,
            ),
            (
                400,
                "The LinkedIn-Version header is malformed: 2025-04",
                integration,
            ),
            (
                426,
                "The requested version 202001 (LinkedIn-Version) is no longer supported",
                integration,
            ),
        ];
        for (status, message, whose) in table {
            assert_eq!(
                answer(status, &body(status, message)),
                whose(Failure::new(status, message)),
                "{message}"
            );
        }
        assert!(matches!(
            answer(504, &body(504, "Gateway Timeout")),
            RequestOutcome::Retry { failure, .. } if failure.status == 504
        ));
        assert!(matches!(
            answer(500, &body(500, "Internal Server Error")),
            RequestOutcome::Retry { .. }
        ));
    }

    #[test]
    fn entry_statuses_may_be_numeric_strings() {
        let body = r#"{"elements":[
            {"id":"urn:li:simpleJobPostingTask:1","status":"202"},
            {"error":{"message":"ERROR :: /title :: field is required but not found and has no default value","status":"422"},"status":"422"},
            {"error":{"message":"Cannot close job which is already closed or does not exist","status":"409"}},
            {"error":{"message":"The workplaceTypes field cannot have more than one value provided. Provided values [On-site, Remote]","status":400},"status":400}
        ]}"#;
        let four = classify(
            Answer {
                status: 200,
                retry_after: None,
                body: body.as_bytes(),
            },
            4,
            SystemTime::now(),
        );
        match four {
            RequestOutcome::Answered(verdicts) => {
                assert!(matches!(verdicts[0], ElementOutcome::Accepted { .. }));
                assert!(matches!(&verdicts[1], ElementOutcome::Rejected(f) if f.status == 422));
                assert!(
                    matches!(&verdicts[2], ElementOutcome::AlreadyClosed(f) if f.status == 409)
                );
                assert!(matches!(&verdicts[3], ElementOutcome::Rejected(f) if f.status == 400));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(
                200,
                r#"{"elements":[{"status":"accepted"},{"status":202}]}"#
            ),
            RequestOutcome::Retry { .. }
        ));
    }

    #[test]
    fn a_message_names_an_element_only_by_its_label_and_whole_id() {
        let message = "Invalid company apply url for job with externalPartnerId JOB-12, taskUrn urn:li:simpleJobPostingTask:9";
        assert_eq!(
            named_element(message, &["JOB-1", "JOB-12", "JOB-123"]),
            Some(1)
        );
        assert_eq!(named_element(message, &["JOB-1", "JOB-123"]), None);
        assert_eq!(named_element(message, &["taskUrn"]), None);
        assert_eq!(named_element("externalPartnerId A", &["A"]), Some(0));
        assert_eq!(
            named_element(
                "Cannot close job which is already closed or does not exist",
                &["job"]
            ),
            None
        );
        assert_eq!(
            named_element("externalPartnerId A, B", &["A", "A, B"]),
            Some(1)
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        let throttled = classify(
            Answer {
                status: 429,
                retry_after: Some("3"),
                body: b"",
            },
            1,
            now,
        );
        assert!(matches!(
            throttled,
            RequestOutcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn bodies_that_are_not_linkedin_errors_are_quoted() {
        assert_eq!(
            failure_from_body(502, b"<html>Bad gateway</html>"),
            Failure::new(502, "<html>Bad gateway</html>")
        );
        assert_eq!(
            failure_from_body(500, b""),
            Failure::new(500, "HTTP 500 with an empty body")
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: whatever LinkedIn (or a proxy) answers, classification never panics and never
    //! invents verdicts for elements that were not answered.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_answers_never_panic(
            status in 0u16..1000,
            body in prop::collection::vec(any::<u8>(), 0..256),
            retry_after in proptest::option::of(".{0,40}"),
            sent in 0usize..200,
        ) {
            let outcome = classify(
                Answer { status, retry_after: retry_after.as_deref(), body: &body },
                sent,
                SystemTime::now(),
            );
            if let RequestOutcome::Answered(verdicts) = outcome {
                prop_assert_eq!(verdicts.len(), sent);
            }
        }

        #[test]
        fn entry_lists_map_one_to_one_or_not_at_all(
            statuses in prop::collection::vec(proptest::option::of(0u16..700), 0..120),
            sent in 0usize..120,
        ) {
            let entries: Vec<serde_json::Value> = statuses
                .iter()
                .map(|s| match s {
                    Some(s) => serde_json::json!({"status": s, "id": "urn:li:simpleJobPostingTask:x"}),
                    None => serde_json::json!({"id": "x"}),
                })
                .collect();
            let body = serde_json::json!({"elements": entries}).to_string();
            let outcome = classify(
                Answer { status: 200, retry_after: None, body: body.as_bytes() },
                sent,
                SystemTime::now(),
            );
            match outcome {
                RequestOutcome::Answered(verdicts) => {
                    prop_assert_eq!(verdicts.len(), sent);
                    prop_assert_eq!(statuses.len(), sent);
                    prop_assert!(statuses.iter().all(Option::is_some));
                }
                RequestOutcome::Retry { .. } => {
                    prop_assert!(statuses.len() != sent || statuses.iter().any(Option::is_none));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
