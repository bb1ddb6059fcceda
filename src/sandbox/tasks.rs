//! `GET /v2/simpleJobPostingTasks?ids=..` (and `/rest/...`): the status of the asynchronous tasks
//! accepted postings became, following the task rule each task was given when it was accepted, or a
//! scripted fault instead.

use std::time::Instant;

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::api_gate::{
    ApiCall, LinkedInError, draw_random_answer, hold_back, json_response, wait_latency,
};
use super::postings::answer_with_fault;
use super::scripting::Fault;
use super::state::PostingTask;

/// LinkedIn's documented limit on the query string of a task lookup.
const MAX_QUERY_BYTES: usize = 4096;

/// What every id of a task lookup must start with.
const TASK_URN_PREFIX: &str = "urn:li:simpleJobPostingTask:";

/// LinkedIn's answer to a lookup holding an id that is not a task URN: the whole lookup is refused.
pub(crate) const BAD_BATCH_KEY_MESSAGE: &str = "Batch key parameter value is invalid";

/// `GET /v2/simpleJobPostingTasks` and `GET /rest/simpleJobPostingTasks`.
pub(crate) async fn task_statuses(call: ApiCall, uri: Uri) -> Response {
    let task_ids = requested_task_ids(&uri);
    call.state
        .count_task_query(task_ids.as_ref().map_or(0, Vec::len));
    let answer = answer_task_statuses(&call, &uri, task_ids).await;
    call.respond("simpleJobPostingTasks", answer)
}

/// The `ids` query parameters, or `None` if the query string cannot be parsed.
fn requested_task_ids(uri: &Uri) -> Option<Vec<String>> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    Some(
        pairs
            .into_iter()
            .filter(|(name, _)| name == "ids")
            .map(|(_, value)| value)
            .collect(),
    )
}

async fn answer_task_statuses(
    call: &ApiCall,
    uri: &Uri,
    task_ids: Option<Vec<String>>,
) -> Result<Response, LinkedInError> {
    let state = &*call.state;
    wait_latency(state).await?;
    let query_bytes = uri.query().map_or(0, str::len);
    if query_bytes > MAX_QUERY_BYTES {
        return Err(LinkedInError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "URI Too Long: the query string has {query_bytes} bytes, the limit is {MAX_QUERY_BYTES}"
            ),
        ));
    }
    call.check_version_and_token()?;
    let mut task_ids = task_ids.filter(|ids| !ids.is_empty()).ok_or_else(|| {
        LinkedInError::new(
            StatusCode::BAD_REQUEST,
            "Expected one or more ids query parameters, e.g. ?ids=urn:li:simpleJobPostingTask:...",
        )
    })?;

    if let Some(bad_id) = task_ids.iter().find(|id| !is_task_urn(id)) {
        tracing::debug!(status = 400, task_id = %bad_id, "task lookup id is not a task URN");
        return Err(LinkedInError::new(
            StatusCode::BAD_REQUEST,
            BAD_BATCH_KEY_MESSAGE,
        ));
    }

    match state.take_task_fault() {
        // A well-formed answer that forgets the last id asked about.
        Some(Fault::WrongCount200) => {
            task_ids.pop();
        }
        Some(fault) => return Ok(answer_with_fault(state, fault, 0).await),
        None => {}
    }
    let stall = draw_random_answer(state)?;

    let now = Instant::now();
    let mut results = Map::new();
    let mut errors = Map::new();
    for task_id in task_ids {
        match state.task(&task_id) {
            Some(task) => {
                let result = task_result(&task_id, &task, now);
                state.record_task_status(
                    Some(&task.external_job_posting_id),
                    result["status"].as_str().unwrap_or_default(),
                );
                results.insert(task_id, result);
            }
            None => {
                state.record_task_status(None, "NOT_FOUND");
                let error = json!({"status": 404, "message": format!("Task not found: {task_id}")});
                errors.insert(task_id, error);
            }
        }
    }
    hold_back(state, stall).await;
    Ok(json_response(
        StatusCode::OK,
        json!({"errors": errors, "statuses": {}, "results": results}),
    ))
}

/// Whether `id` is a `urn:li:simpleJobPostingTask:{id}` with an id.
fn is_task_urn(id: &str) -> bool {
    id.strip_prefix(TASK_URN_PREFIX)
        .is_some_and(|rest| !rest.trim().is_empty())
}

fn task_result(task_id: &str, task: &PostingTask, now: Instant) -> Value {
    let status = task.status_after(now.saturating_duration_since(task.accepted_at));
    let mut result = json!({
        "id": task_id,
        "externalJobPostingId": task.external_job_posting_id,
        "jobPosting": task.job_posting_urn,
        "status": status,
    });
    // PROCESSED carries an errorMessage only when the rule gives one ("processed by LinkedIn but
    // also failed payload validation"); FAILED always does.
    if status == "PROCESSED"
        && let Some(message) = &task.rule.error_message
    {
        result["errorMessage"] = json!(message);
    }
    if status == "FAILED" {
        let message = task.rule.error_message.clone().unwrap_or_else(|| {
            format!(
                "Job {} was dropped: true (sandbox task rule)",
                task.external_job_posting_id
            )
        });
        result["errorMessage"] = json!(message);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sandbox::TaskRule;
    use crate::sandbox::test_support::{SignedInSandbox, http_client};

    /// The answers to looking `task_ids` up now and again 200 ms later.
    async fn lookups_now_and_later(
        sandbox: &SignedInSandbox,
        task_ids: &[String],
    ) -> (Value, Value) {
        let (_, now) = sandbox.query_tasks(task_ids).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, later) = sandbox.query_tasks(task_ids).await;
        (now, later)
    }

    /// The status the answer gives `task_id`.
    fn status_of<'a>(answer: &'a Value, task_id: &str) -> &'a Value {
        &answer["results"][task_id]["status"]
    }

    #[tokio::test]
    async fn accepted_tasks_succeed_and_unknown_ids_are_errors() {
        let sandbox = SignedInSandbox::start().await;
        let mut task_ids = sandbox.accepted_tasks(&["A", "B"]).await;
        task_ids.push("urn:li:simpleJobPostingTask:unknown".to_owned());
        let (status, answer) = sandbox.query_tasks(&task_ids).await;
        assert_eq!(status, 200);
        assert_eq!(answer["statuses"], json!({}));
        let result = &answer["results"][&task_ids[0]];
        assert_eq!(result["id"], task_ids[0].as_str());
        assert_eq!(result["externalJobPostingId"], "A");
        assert_eq!(result["status"], "SUCCEEDED");
        assert!(
            result["jobPosting"]
                .as_str()
                .unwrap()
                .starts_with("urn:li:jobPosting:")
        );
        assert_eq!(status_of(&answer, &task_ids[1]), "SUCCEEDED");
        assert_eq!(answer["errors"][&task_ids[2]]["status"], 404);
        let stats = sandbox.stats();
        assert_eq!(stats.task_queries, 1);
        assert_eq!(stats.task_ids_queried, 3);
    }

    #[tokio::test]
    async fn task_delay_keeps_tasks_in_progress_for_a_while() {
        let sandbox =
            SignedInSandbox::configured(|config| config.task_delay = Duration::from_millis(150))
                .await;
        let task_ids = sandbox.accepted_tasks(&["A"]).await;
        let (now, later) = lookups_now_and_later(&sandbox, &task_ids).await;
        assert_eq!(status_of(&now, &task_ids[0]), "IN_PROGRESS");
        assert_eq!(status_of(&later, &task_ids[0]), "SUCCEEDED");
    }

    #[tokio::test]
    async fn task_rules_decide_how_tasks_end() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.set_task_rule(
            "fail-",
            TaskRule {
                status: "FAILED".to_owned(),
                after: Duration::ZERO,
                error_message: Some("Job fail-1 was dropped: true".to_owned()),
            },
        );
        sandbox.set_task_rule("slow-", TaskRule::processed(Duration::from_millis(150)));
        let task_ids = sandbox.accepted_tasks(&["fail-1", "slow-1", "other"]).await;
        let (answer, later) = lookups_now_and_later(&sandbox, &task_ids).await;
        let failed = &answer["results"][&task_ids[0]];
        assert_eq!(failed["status"], "FAILED");
        assert_eq!(failed["errorMessage"], "Job fail-1 was dropped: true");
        assert_eq!(status_of(&answer, &task_ids[1]), "IN_PROGRESS");
        assert!(
            answer["results"][&task_ids[1]]
                .get("errorMessage")
                .is_none()
        );
        assert_eq!(status_of(&answer, &task_ids[2]), "SUCCEEDED");
        assert_eq!(status_of(&later, &task_ids[1]), "PROCESSED");
    }

    #[tokio::test]
    async fn task_faults_are_used_up_in_order_and_statuses_are_counted() {
        let sandbox = SignedInSandbox::start().await;
        let task_ids = sandbox.accepted_tasks(&["A", "B"]).await;
        sandbox.push_task_fault(
            crate::sandbox::Fault::Status {
                status: 503,
                retry_after_secs: None,
                message: None,
            },
            1,
        );
        sandbox.push_task_fault(crate::sandbox::Fault::WrongCount200, 1);
        let (status, _) = sandbox.query_tasks(&task_ids).await;
        assert_eq!(status, 503);
        let (status, answer) = sandbox.query_tasks(&task_ids).await;
        assert_eq!(status, 200);
        assert_eq!(status_of(&answer, &task_ids[0]), "SUCCEEDED");
        assert!(
            answer["results"].get(&task_ids[1]).is_none(),
            "the last id is left out"
        );
        assert!(answer["errors"].get(&task_ids[1]).is_none());
        let mut unknown = task_ids.clone();
        unknown.push("urn:li:simpleJobPostingTask:unknown".to_owned());
        let (status, _) = sandbox.query_tasks(&unknown).await;
        assert_eq!(status, 200);
        let stats = sandbox.stats();
        assert_eq!(stats.task_queries, 3);
        assert_eq!(stats.task_statuses.get("SUCCEEDED"), Some(&3));
        assert_eq!(stats.task_statuses.get("NOT_FOUND"), Some(&1));
        assert_eq!(
            stats.last_task_status.get("B").map(String::as_str),
            Some("SUCCEEDED")
        );
    }

    #[tokio::test]
    async fn lookups_need_a_token_and_a_short_query() {
        let sandbox = SignedInSandbox::start().await;
        let task_ids = sandbox.accepted_tasks(&["A"]).await;
        let (status, _) = sandbox.query_tasks_as("made-up", &task_ids).await;
        assert_eq!(status, 401);

        let too_many: Vec<String> = (0..100).map(|_| task_ids[0].clone()).collect();
        let (status, answer) = sandbox.query_tasks(&too_many).await;
        assert_eq!(status, 414);
        assert_eq!(answer["status"], 414);

        let (status, _) = sandbox.query_tasks(&[]).await;
        assert_eq!(status, 400);
        assert_eq!(sandbox.stats().task_queries, 3);
    }

    #[tokio::test]
    async fn rest_variant_needs_the_version_header() {
        let sandbox = SignedInSandbox::start().await;
        let task_ids = sandbox.accepted_tasks(&["A"]).await;
        let lookup = || {
            http_client()
                .get(sandbox.url("/rest/simpleJobPostingTasks"))
                .bearer_auth(&sandbox.token)
                .query(&[("ids", &task_ids[0])])
        };
        let without_version = lookup().send().await.unwrap();
        assert_eq!(without_version.status(), 400);
        let with_version = lookup()
            .header("LinkedIn-Version", "202501")
            .send()
            .await
            .unwrap();
        assert_eq!(with_version.status(), 200);
        let answer: Value = with_version.json().await.unwrap();
        assert_eq!(status_of(&answer, &task_ids[0]), "SUCCEEDED");
    }

    #[tokio::test]
    async fn a_lookup_holding_an_id_that_is_not_a_task_urn_is_a_400() {
        let sandbox = SignedInSandbox::start().await;
        let mut task_ids = sandbox.accepted_tasks(&["A"]).await;
        for bad in [
            "JOB-1",
            "urn:li:jobPosting:1",
            "urn:li:simpleJobPostingTask:",
        ] {
            task_ids.push(bad.to_owned());
            let (status, answer) = sandbox.query_tasks(&task_ids).await;
            assert_eq!(
                (status, answer),
                (
                    400,
                    json!({"message": "Batch key parameter value is invalid", "status": 400})
                ),
                "{bad}"
            );
            task_ids.pop();
        }
        let (status, _) = sandbox.query_tasks(&task_ids).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn processed_tasks_with_and_without_an_error_message() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.set_task_rule("ok-", TaskRule::processed(Duration::ZERO));
        sandbox.set_task_rule(
            "bad-",
            TaskRule::processed_with_error(
                Duration::ZERO,
                "The description length should be at least 100 characters",
            ),
        );
        let task_ids = sandbox.accepted_tasks(&["ok-1", "bad-1"]).await;
        let (_, answer) = sandbox.query_tasks(&task_ids).await;
        let processed = &answer["results"][&task_ids[0]];
        assert_eq!(processed["status"], "PROCESSED");
        assert!(processed.get("errorMessage").is_none(), "{processed}");
        let with_error = &answer["results"][&task_ids[1]];
        assert_eq!(with_error["status"], "PROCESSED");
        assert_eq!(
            with_error["errorMessage"],
            "The description length should be at least 100 characters"
        );
    }
}
