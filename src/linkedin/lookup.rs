//! Asking LinkedIn how close tasks ended: `GET {api}/v2/simpleJobPostingTasks?ids=URN&ids=URN` (or
//! `/rest/...` with `LinkedIn-Version`), many task ids per request with the query string kept under
//! 4 KB, and what the answer means for each id.
//!
//! Like [`super::classify`], nothing here waits or retries: an answer becomes a verdict and the
//! worker's task verifier acts on it (through the same `decide` as closes). Only a task's own
//! status can end its story; anything wrong with the request (401, 429, 5xx, 4xx, timeouts,
//! unreadable bodies) is trouble to wait out — except LinkedIn's 400 "Batch key parameter value is
//! invalid", which refuses the whole lookup for one id that is not a task URN: that is one
//! element's fault, isolated by splitting the lookup.
//!
//! `PROCESSED` is final (API-NOTES, "More on task status"): without `errorMessage` the job was
//! processed successfully, with one it failed LinkedIn's payload validation. Treating it as not yet
//! known (the first design) re-checked such closes for a day and then called them `task-unknown`.

use super::LinkedInClient;
use super::classify::{Failure, Outcome, failure_from_body, parse_retry_after};
use super::token::AccessToken;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::SystemTime;

/// LinkedIn wants the query string under 4 KB; this leaves room for whatever a proxy adds.
pub(crate) const MAX_QUERY_BYTES: usize = 4000;
/// Ids per lookup, whatever their length: keeps answers and retries small.
pub(crate) const MAX_IDS_PER_QUERY: usize = 100;

/// A task lookup's query string being filled: one URL-encoded `ids=` parameter per distinct id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskQuery {
    query: String,
    ids: Vec<String>,
}

fn ids_parameter(task_id: &str) -> String {
    // URNs carry ':' (and could carry anything): encode every id as a form value.
    let encoded: String = url::form_urlencoded::byte_serialize(task_id.as_bytes()).collect();
    format!("ids={encoded}")
}

impl TaskQuery {
    /// Whether a query holding only `task_id` would be short enough.
    pub(crate) fn fits_alone(task_id: &str) -> bool {
        ids_parameter(task_id).len() <= MAX_QUERY_BYTES
    }

    /// Adds `task_id` unless the query would grow too long; an id already in it is asked once.
    pub(crate) fn try_add(&mut self, task_id: &str) -> bool {
        if self.ids.iter().any(|id| id == task_id) {
            return true;
        }
        if self.ids.len() >= MAX_IDS_PER_QUERY {
            return false;
        }
        let parameter = ids_parameter(task_id);
        let separator = usize::from(!self.query.is_empty());
        if self.query.len() + separator + parameter.len() > MAX_QUERY_BYTES {
            return false;
        }
        if separator == 1 {
            self.query.push('&');
        }
        self.query.push_str(&parameter);
        self.ids.push(task_id.to_owned());
        true
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.query
    }

    pub(crate) fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// The prefix every task id LinkedIn hands out carries; anything else cannot be looked up.
pub(crate) const TASK_URN_PREFIX: &str = "urn:li:simpleJobPostingTask:";

/// LinkedIn's answer to a lookup holding an id that is not a task URN.
pub(crate) const BAD_BATCH_KEY: &str = "Batch key parameter value is invalid";

/// What LinkedIn says about one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    /// The close happened: `SUCCEEDED`, or `PROCESSED` without an `errorMessage` (`status` says
    /// which).
    Succeeded {
        job_posting: Option<String>,
        status: &'static str,
    },
    /// The close did not happen: `FAILED`, or `PROCESSED` with an `errorMessage`.
    Failed { message: String },
    /// Not known yet: `IN_PROGRESS`, a status this version does not know, or an id the answer does
    /// not mention (`NOT_FOUND`) or reports under `errors` (`ERROR`).
    Pending { status: String },
}

/// The statuses of one answer, by task id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskStatuses(HashMap<String, TaskStatus>);

impl TaskStatuses {
    pub(crate) fn status_of(&self, task_id: &str) -> TaskStatus {
        self.0
            .get(task_id)
            .cloned()
            .unwrap_or_else(|| TaskStatus::Pending {
                status: "NOT_FOUND".to_owned(),
            })
    }
}

/// The verdict for a whole lookup: `Answered`, `RefreshToken` (401), `Throttled` (429),
/// `ElementFault` (400 "Batch key parameter value is invalid"), or `Retry` for anything else.
pub(crate) type LookupOutcome = Outcome<TaskStatuses>;

#[derive(Deserialize)]
struct TasksBody {
    #[serde(default)]
    results: HashMap<String, TaskResult>,
    #[serde(default)]
    errors: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskResult {
    id: Option<String>,
    status: Option<String>,
    job_posting: Option<String>,
    error_message: Option<String>,
}

/// Classifies an answer from the task endpoint received at `now`.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> LookupOutcome {
    let retry_after = || retry_after.and_then(|value| parse_retry_after(value, now));
    match status {
        200..=299 => match serde_json::from_slice::<TasksBody>(body) {
            Ok(parsed) => LookupOutcome::Answered(statuses(parsed)),
            Err(error) => LookupOutcome::Retry {
                retry_after: None,
                failure: Failure::new(
                    status,
                    format!("unusable answer from simpleJobPostingTasks: {error}"),
                ),
            },
        },
        401 => LookupOutcome::RefreshToken(failure_from_body(status, body)),
        400 if failure_from_body(status, body)
            .message
            .contains(BAD_BATCH_KEY) =>
        {
            LookupOutcome::ElementFault(failure_from_body(status, body))
        }
        429 => LookupOutcome::Throttled {
            retry_after: retry_after(),
            failure: failure_from_body(status, body),
        },
        _ => LookupOutcome::Retry {
            retry_after: retry_after(),
            failure: failure_from_body(status, body),
        },
    }
}

fn statuses(body: TasksBody) -> TaskStatuses {
    let mut statuses = HashMap::new();
    for task_id in body.errors.into_keys() {
        statuses.insert(
            task_id,
            TaskStatus::Pending {
                status: "ERROR".to_owned(),
            },
        );
    }
    for (key, result) in body.results {
        let status = match result.status.as_deref() {
            Some("SUCCEEDED") => TaskStatus::Succeeded {
                job_posting: result.job_posting,
                status: "SUCCEEDED",
            },
            Some("PROCESSED") => match result.error_message.filter(|m| !m.trim().is_empty()) {
                None => TaskStatus::Succeeded {
                    job_posting: result.job_posting,
                    status: "PROCESSED",
                },
                Some(message) => TaskStatus::Failed { message },
            },
            Some("FAILED") => TaskStatus::Failed {
                message: result.error_message.unwrap_or_else(|| {
                    "LinkedIn reported the close task FAILED without an errorMessage".to_owned()
                }),
            },
            other => TaskStatus::Pending {
                status: other.unwrap_or("UNKNOWN").to_owned(),
            },
        };
        // Results are keyed by task id; the entry's own `id` is the same id, should a key ever
        // come back encoded differently.
        if let Some(id) = result.id.filter(|id| *id != key) {
            statuses.insert(id, status.clone());
        }
        statuses.insert(key, status);
    }
    TaskStatuses(statuses)
}

/// Looks up the tasks in `query` with `token`; a transport failure is a retry.
pub(crate) async fn lookup(
    client: &LinkedInClient,
    token: &AccessToken,
    query: &TaskQuery,
) -> LookupOutcome {
    let url = format!("{}?{}", client.tasks_url(), query.as_str());
    let mut request = client
        .http()
        .get(url)
        .header(reqwest::header::AUTHORIZATION, token.bearer());
    if let Some(version) = client.api_version() {
        request = request.header("LinkedIn-Version", version);
    }
    match super::fetch(request).await {
        Ok(answer) => classify(
            answer.status,
            answer.retry_after.as_deref(),
            &answer.body,
            SystemTime::now(),
        ),
        // A timeout reads as 408, anything else that got no answer as 503, as for closes.
        Err(error) => super::transport_failure(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn urn(n: usize) -> String {
        format!(
            "urn:li:simpleJobPostingTask:{:08x}-1111-2222-3333-444444444444",
            n
        )
    }

    #[test]
    fn ids_are_url_encoded_and_joined() {
        let mut query = TaskQuery::default();
        assert!(query.try_add("urn:li:simpleJobPostingTask:a"));
        assert!(query.try_add("urn:li:simpleJobPostingTask:b&c=d"));
        assert!(
            query.try_add("urn:li:simpleJobPostingTask:a"),
            "a repeat is asked once"
        );
        assert_eq!(
            query.as_str(),
            "ids=urn%3Ali%3AsimpleJobPostingTask%3Aa&ids=urn%3Ali%3AsimpleJobPostingTask%3Ab%26c%3Dd"
        );
        assert_eq!(query.ids().len(), 2);
        let parsed: Vec<(String, String)> = url::form_urlencoded::parse(query.as_str().as_bytes())
            .into_owned()
            .collect();
        assert_eq!(parsed[1].1, "urn:li:simpleJobPostingTask:b&c=d");
    }

    #[test]
    fn queries_stay_under_4_kb() {
        let mut query = TaskQuery::default();
        let mut added = 0;
        while query.try_add(&urn(added)) {
            added += 1;
        }
        assert!(query.as_str().len() <= MAX_QUERY_BYTES);
        assert!(query.as_str().len() < 4096);
        // Each real-sized id costs 75 bytes: about 53 fit.
        assert!((50..=MAX_IDS_PER_QUERY).contains(&added), "{added}");
        assert_eq!(query.ids().len(), added);
        assert!(!query.try_add(&urn(added)), "still full");

        let mut short = TaskQuery::default();
        let mut n = 0;
        while short.try_add(&n.to_string()) {
            n += 1;
        }
        assert_eq!(n, MAX_IDS_PER_QUERY, "short ids stop at the id cap");

        assert!(TaskQuery::fits_alone(&urn(1)));
        assert!(!TaskQuery::fits_alone(&"x".repeat(MAX_QUERY_BYTES)));
    }

    fn answered(body: &str) -> TaskStatuses {
        match classify(200, None, body.as_bytes(), SystemTime::now()) {
            LookupOutcome::Answered(statuses) => statuses,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn task_statuses_decide_each_ids_fate() {
        let body = r#"{"errors":{"urn:e":{"status":404,"message":"Task not found"}},"statuses":{},"results":{
            "urn:s":{"id":"urn:s","externalJobPostingId":"a","jobPosting":"urn:li:jobPosting:1","status":"SUCCEEDED"},
            "urn:f":{"id":"urn:f","externalJobPostingId":"b","status":"FAILED","errorMessage":"Job b was dropped: true"},
            "urn:f2":{"id":"urn:f2","status":"FAILED"},
            "urn:i":{"id":"urn:i","status":"IN_PROGRESS"},
            "urn:p":{"id":"urn:p","status":"PROCESSED","jobPosting":"urn:li:jobPosting:2"},
            "urn:pe":{"id":"urn:pe","status":"PROCESSED","errorMessage":"The description length should be at least 100 characters"},
            "urn:n":{"id":"urn:n"}
        }}"#;
        let statuses = answered(body);
        assert_eq!(
            statuses.status_of("urn:s"),
            TaskStatus::Succeeded {
                job_posting: Some("urn:li:jobPosting:1".into()),
                status: "SUCCEEDED",
            }
        );
        assert_eq!(
            statuses.status_of("urn:p"),
            TaskStatus::Succeeded {
                job_posting: Some("urn:li:jobPosting:2".into()),
                status: "PROCESSED",
            },
            "PROCESSED without errorMessage is verified"
        );
        assert_eq!(
            statuses.status_of("urn:pe"),
            TaskStatus::Failed {
                message: "The description length should be at least 100 characters".into()
            },
            "PROCESSED with errorMessage failed validation"
        );
        assert_eq!(
            statuses.status_of("urn:f"),
            TaskStatus::Failed {
                message: "Job b was dropped: true".into()
            }
        );
        assert!(
            matches!(statuses.status_of("urn:f2"), TaskStatus::Failed { message } if message.contains("without an errorMessage"))
        );
        let pending = |status: &str| TaskStatus::Pending {
            status: status.into(),
        };
        assert_eq!(statuses.status_of("urn:i"), pending("IN_PROGRESS"));
        assert_eq!(statuses.status_of("urn:n"), pending("UNKNOWN"));
        assert_eq!(statuses.status_of("urn:e"), pending("ERROR"));
        assert_eq!(statuses.status_of("urn:missing"), pending("NOT_FOUND"));
        assert_eq!(answered("{}").status_of("x"), pending("NOT_FOUND"));
    }

    #[test]
    fn request_trouble_is_never_a_verdict_on_a_task() {
        let now = SystemTime::now();
        assert!(matches!(
            classify(401, None, br#"{"message":"Invalid access token","status":401}"#, now),
            LookupOutcome::RefreshToken(f) if f.message == "Invalid access token"
        ));
        assert!(matches!(
            classify(429, Some("3"), b"", now),
            LookupOutcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(400, None, br#"{"message":"Batch key parameter value is invalid","status":400}"#, now),
            LookupOutcome::ElementFault(f) if f.status == 400
        ));
        for status in [400, 403, 404, 414, 500, 502, 503, 504, 302] {
            assert!(
                matches!(classify(status, None, b"", now), LookupOutcome::Retry { failure, .. } if failure.status == status),
                "{status}"
            );
        }
        assert!(matches!(
            classify(200, None, b"<html>", now),
            LookupOutcome::Retry { failure, .. } if failure.message.contains("unusable")
        ));
    }
}
