//! What an answer from LinkedIn means for the elements that were sent: pure data in, action out.
//!
//! LinkedIn answers a batch at two levels: the HTTP status of the request, and inside a 200 one entry per
//! element, in request order, each with its own status. Both levels map onto the same few actions —
//! accepted, refresh the token and resend, wait out a throttle, retry with backoff, or reject — and
//! nothing here sleeps, sends or acks: the worker and the retry policy do that with the verdict.

use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// Why a request or an element failed, as it goes into a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
}

impl Failure {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// The verdict for one element of a 2xx answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElementOutcome {
    /// LinkedIn took the close (202): the task id says where to check it.
    Accepted { task_id: Option<String> },
    /// LinkedIn said no for this element: dead-letter it as `rejected`.
    Rejected(Failure),
    /// Transient for this element alone (5xx, 408, 429 inside the answer).
    Retry(Failure),
    /// The element came back 401: the token, not the element, is at fault.
    Unauthorized(Failure),
}

/// The verdict for a whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Every element has its own verdict, in request order.
    Answered(Vec<ElementOutcome>),
    /// 401: get a new token and resend; never the message's fault.
    RefreshToken(Failure),
    /// 429: slow the whole worker down; never the message's fault.
    Throttled {
        retry_after: Option<Duration>,
        failure: Failure,
    },
    /// 408, 5xx, a broken or unmatched answer, a timeout: try again with backoff.
    Retry {
        retry_after: Option<Duration>,
        failure: Failure,
    },
    /// Any other 4xx: LinkedIn refused the request, for all its elements.
    Reject(Failure),
}

/// An HTTP answer as far as classification cares.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Deserialize)]
struct BatchBody {
    elements: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    status: Option<u16>,
    id: Option<String>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    error_description: Option<String>,
    status: Option<u16>,
}

/// Classifies the answer to a `batch_create` of `sent` elements, received at `now`.
pub fn classify(answer: Answer<'_>, sent: usize, now: SystemTime) -> RequestOutcome {
    let status = answer.status;
    match status {
        200..=299 => classify_entries(answer.body, sent),
        401 => RequestOutcome::RefreshToken(failure_from_body(status, answer.body)),
        429 => RequestOutcome::Throttled {
            retry_after: answer.retry_after.and_then(|v| parse_retry_after(v, now)),
            failure: failure_from_body(status, answer.body),
        },
        408 | 500..=599 => RequestOutcome::Retry {
            retry_after: answer.retry_after.and_then(|v| parse_retry_after(v, now)),
            failure: failure_from_body(status, answer.body),
        },
        400..=499 => RequestOutcome::Reject(failure_from_body(status, answer.body)),
        // 1xx and 3xx are no answer to a POST we can act on; the message is not at fault.
        _ => RequestOutcome::Retry {
            retry_after: None,
            failure: failure_from_body(status, answer.body),
        },
    }
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
        408 | 429 | 500..=599 => ElementOutcome::Retry(failure()),
        _ => ElementOutcome::Rejected(failure()),
    }
}

/// LinkedIn's error bodies carry `message`; OAuth errors carry `error_description`; anything else is
/// quoted as it came, so an operator sees what LinkedIn (or a proxy in front of it) said.
pub fn failure_from_body(status: u16, body: &[u8]) -> Failure {
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
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
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
        for status in [400, 402, 403, 404, 409, 422] {
            assert!(
                matches!(answer(status, "{}"), RequestOutcome::Reject(f) if f.status == status)
            );
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
            RequestOutcome::Reject(Failure::new(
                403,
                "Caller is not authorized to access the jobs for contract: urn:li:contract:9"
            ))
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
