//! `GET /v2/simpleJobPostingTasks?ids=..` (and `/rest/...`): the status of the asynchronous tasks
//! accepted postings became, following the task rule each task was given when it was accepted, or a
//! scripted fault instead.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api_gate::{
    ApiFamily, LinkedInError, check_bearer_token, check_version_header, json_response, utc_now,
    wait_latency,
};
use super::postings::answer_with_fault;
use super::scripting::Fault;
use super::state::{PostingTask, SandboxState};

/// LinkedIn's documented limit on the query string of a task lookup.
const MAX_QUERY_BYTES: usize = 4096;

/// What every id of a task lookup must start with.
const TASK_URN_PREFIX: &str = "urn:li:simpleJobPostingTask:";

/// LinkedIn's answer to a lookup holding an id that is not a task URN: the whole lookup is refused.
pub const BAD_BATCH_KEY_MESSAGE: &str = "Batch key parameter value is invalid";

pub(crate) async fn task_statuses_v2(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    task_statuses(&state, ApiFamily::V2, &headers, &uri).await
}

pub(crate) async fn task_statuses_rest(
    State(state): State<Arc<SandboxState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    task_statuses(&state, ApiFamily::Rest, &headers, &uri).await
}

async fn task_statuses(
    state: &SandboxState,
    family: ApiFamily,
    headers: &HeaderMap,
    uri: &Uri,
) -> Response {
    let task_ids = requested_task_ids(uri);
    state.count_task_query(task_ids.as_ref().map_or(0, Vec::len));
    let response = answer_task_statuses(state, family, headers, uri, task_ids)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(
        status = response.status().as_u16(),
        ?family,
        "simpleJobPostingTasks answered"
    );
    response
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
    state: &SandboxState,
    family: ApiFamily,
    headers: &HeaderMap,
    uri: &Uri,
    task_ids: Option<Vec<String>>,
) -> Result<Response, LinkedInError> {
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
    check_version_header(state, family, headers, utc_now())?;
    check_bearer_token(state, headers)?;
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
    use crate::sandbox::test_support::{
        access_token, close_element, http_client, post_batch, start_default, start_with,
    };
    use crate::sandbox::{Sandbox, SandboxConfig, TaskRule};

    /// Posts CLOSE elements for `external_ids` and returns their task URNs.
    async fn accepted_tasks(sandbox: &Sandbox, token: &str, external_ids: &[&str]) -> Vec<String> {
        let elements = external_ids.iter().map(|id| close_element(id)).collect();
        let (status, answer, _) = post_batch(sandbox, token, elements).await;
        assert_eq!(status, 200);
        answer["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn query_tasks(sandbox: &Sandbox, token: &str, task_ids: &[String]) -> (u16, Value) {
        let query: Vec<(&str, &str)> = task_ids.iter().map(|id| ("ids", id.as_str())).collect();
        let response = http_client()
            .get(format!("{}/v2/simpleJobPostingTasks", sandbox.api_url()))
            .bearer_auth(token)
            .query(&query)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    #[tokio::test]
    async fn accepted_tasks_succeed_and_unknown_ids_are_errors() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let mut task_ids = accepted_tasks(&sandbox, &token, &["A", "B"]).await;
        task_ids.push("urn:li:simpleJobPostingTask:unknown".to_owned());
        let (status, answer) = query_tasks(&sandbox, &token, &task_ids).await;
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
        assert_eq!(answer["results"][&task_ids[1]]["status"], "SUCCEEDED");
        assert_eq!(answer["errors"][&task_ids[2]]["status"], 404);
        let stats = sandbox.stats();
        assert_eq!(stats.task_queries, 1);
        assert_eq!(stats.task_ids_queried, 3);
    }

    #[tokio::test]
    async fn task_delay_keeps_tasks_in_progress_for_a_while() {
        let sandbox = start_with(SandboxConfig {
            task_delay: Duration::from_millis(150),
            ..SandboxConfig::default()
        })
        .await;
        let token = access_token(&sandbox).await;
        let task_ids = accepted_tasks(&sandbox, &token, &["A"]).await;
        let (_, answer) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(answer["results"][&task_ids[0]]["status"], "IN_PROGRESS");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, answer) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(answer["results"][&task_ids[0]]["status"], "SUCCEEDED");
    }

    #[tokio::test]
    async fn task_rules_decide_how_tasks_end() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        sandbox.set_task_rule(
            "fail-",
            TaskRule {
                status: "FAILED".to_owned(),
                after: Duration::ZERO,
                error_message: Some("Job fail-1 was dropped: true".to_owned()),
            },
        );
        sandbox.set_task_rule(
            "slow-",
            TaskRule {
                status: "PROCESSED".to_owned(),
                after: Duration::from_millis(150),
                error_message: None,
            },
        );
        let task_ids = accepted_tasks(&sandbox, &token, &["fail-1", "slow-1", "other"]).await;
        let (_, answer) = query_tasks(&sandbox, &token, &task_ids).await;
        let failed = &answer["results"][&task_ids[0]];
        assert_eq!(failed["status"], "FAILED");
        assert_eq!(failed["errorMessage"], "Job fail-1 was dropped: true");
        assert_eq!(answer["results"][&task_ids[1]]["status"], "IN_PROGRESS");
        assert!(
            answer["results"][&task_ids[1]]
                .get("errorMessage")
                .is_none()
        );
        assert_eq!(answer["results"][&task_ids[2]]["status"], "SUCCEEDED");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, answer) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(answer["results"][&task_ids[1]]["status"], "PROCESSED");
    }

    #[tokio::test]
    async fn task_faults_are_used_up_in_order_and_statuses_are_counted() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let task_ids = accepted_tasks(&sandbox, &token, &["A", "B"]).await;
        sandbox.push_task_fault(
            crate::sandbox::Fault::Status {
                status: 503,
                retry_after_secs: None,
                message: None,
            },
            1,
        );
        sandbox.push_task_fault(crate::sandbox::Fault::WrongCount200, 1);
        let (status, _) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(status, 503);
        let (status, answer) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(status, 200);
        assert_eq!(answer["results"][&task_ids[0]]["status"], "SUCCEEDED");
        assert!(
            answer["results"].get(&task_ids[1]).is_none(),
            "the last id is left out"
        );
        assert!(answer["errors"].get(&task_ids[1]).is_none());
        let mut unknown = task_ids.clone();
        unknown.push("urn:li:simpleJobPostingTask:unknown".to_owned());
        let (status, _) = query_tasks(&sandbox, &token, &unknown).await;
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
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let task_ids = accepted_tasks(&sandbox, &token, &["A"]).await;
        let (status, _) = query_tasks(&sandbox, "made-up", &task_ids).await;
        assert_eq!(status, 401);

        let too_many: Vec<String> = (0..100).map(|_| task_ids[0].clone()).collect();
        let (status, answer) = query_tasks(&sandbox, &token, &too_many).await;
        assert_eq!(status, 414);
        assert_eq!(answer["status"], 414);

        let (status, _) = query_tasks(&sandbox, &token, &[]).await;
        assert_eq!(status, 400);
        assert_eq!(sandbox.stats().task_queries, 3);
    }

    #[tokio::test]
    async fn rest_variant_needs_the_version_header() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let task_ids = accepted_tasks(&sandbox, &token, &["A"]).await;
        let url = format!("{}/rest/simpleJobPostingTasks", sandbox.api_url());
        let client = http_client();
        let without_version = client
            .get(&url)
            .bearer_auth(&token)
            .query(&[("ids", &task_ids[0])])
            .send()
            .await
            .unwrap();
        assert_eq!(without_version.status(), 400);
        let with_version = client
            .get(&url)
            .bearer_auth(&token)
            .header("LinkedIn-Version", "202501")
            .query(&[("ids", &task_ids[0])])
            .send()
            .await
            .unwrap();
        assert_eq!(with_version.status(), 200);
        let answer: Value = with_version.json().await.unwrap();
        assert_eq!(answer["results"][&task_ids[0]]["status"], "SUCCEEDED");
    }

    #[tokio::test]
    async fn a_lookup_holding_an_id_that_is_not_a_task_urn_is_a_400() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let mut task_ids = accepted_tasks(&sandbox, &token, &["A"]).await;
        for bad in [
            "JOB-1",
            "urn:li:jobPosting:1",
            "urn:li:simpleJobPostingTask:",
        ] {
            task_ids.push(bad.to_owned());
            let (status, answer) = query_tasks(&sandbox, &token, &task_ids).await;
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
        let (status, _) = query_tasks(&sandbox, &token, &task_ids).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn processed_tasks_with_and_without_an_error_message() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        sandbox.set_task_rule("ok-", TaskRule::processed(Duration::ZERO));
        sandbox.set_task_rule(
            "bad-",
            TaskRule::processed_with_error(
                Duration::ZERO,
                "The description length should be at least 100 characters",
            ),
        );
        let task_ids = accepted_tasks(&sandbox, &token, &["ok-1", "bad-1"]).await;
        let (_, answer) = query_tasks(&sandbox, &token, &task_ids).await;
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
