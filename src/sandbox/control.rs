//! The `/_sandbox/...` control API: the HTTP face of [`super::Sandbox`]'s scripting methods, for
//! tests that run the sandbox out of process (`job-closer sandbox`). Unauthenticated, like the
//! rest of a sandbox meant for localhost.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;

use super::api_gate::LinkedInError;
use super::judge::RecloseAnswer;
use super::scripting::{Fault, TASK_STATUSES, TaskRule};
use super::state::{SandboxState, Stats};

type SharedState = State<Arc<SandboxState>>;

#[derive(Deserialize)]
pub(crate) struct FaultsRequest {
    fault: Fault,
    times: u32,
}

#[derive(Deserialize)]
pub(crate) struct OutageRequest {
    fault: Option<Fault>,
}

#[derive(Deserialize)]
pub(crate) struct TokenOutageRequest {
    status: Option<u16>,
}

#[derive(Deserialize)]
pub(crate) struct TaskRuleRequest {
    prefix: String,
    rule: TaskRule,
}

#[derive(Deserialize)]
pub(crate) struct AbsentRequest {
    ids: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct RecloseAnswerRequest {
    answer: RecloseAnswer,
}

#[derive(Deserialize)]
pub(crate) struct StringStatusesRequest {
    enabled: bool,
}

#[derive(Deserialize)]
pub(crate) struct DailyElementLimitRequest {
    limit: Option<u64>,
}

/// A control request that cannot be carried out.
fn bad_control_request(message: impl Into<String>) -> LinkedInError {
    LinkedInError::new(StatusCode::BAD_REQUEST, message)
}

/// The body of a control request, or the 400 explaining what is wrong with it.
fn control_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, LinkedInError> {
    body.map(|Json(request)| request)
        .map_err(|rejection| bad_control_request(rejection.body_text()))
}

/// Refuses statuses that cannot be put on the wire as an HTTP status code.
fn check_http_status(status: u16) -> Result<(), LinkedInError> {
    match StatusCode::from_u16(status) {
        Ok(_) => Ok(()),
        Err(_) => Err(bad_control_request(format!(
            "{status} is not an HTTP status code"
        ))),
    }
}

fn check_fault(fault: &Fault) -> Result<(), LinkedInError> {
    match fault {
        Fault::Status { status, .. } => check_http_status(*status),
        Fault::Hang | Fault::Garbage200 | Fault::WrongCount200 => Ok(()),
    }
}

/// What a control request that changed something answers.
type ControlResult = Result<StatusCode, LinkedInError>;

pub(crate) async fn stats(State(state): SharedState) -> Json<Stats> {
    Json(state.stats())
}

pub(crate) async fn push_faults(
    State(state): SharedState,
    body: Result<Json<FaultsRequest>, JsonRejection>,
) -> ControlResult {
    let FaultsRequest { fault, times } = control_body(body)?;
    check_fault(&fault)?;
    tracing::debug!(?fault, times, "control: faults pushed");
    state.push_fault(fault, times);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn push_task_faults(
    State(state): SharedState,
    body: Result<Json<FaultsRequest>, JsonRejection>,
) -> ControlResult {
    let FaultsRequest { fault, times } = control_body(body)?;
    check_fault(&fault)?;
    tracing::debug!(?fault, times, "control: task faults pushed");
    state.push_task_fault(fault, times);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn set_outage(
    State(state): SharedState,
    body: Result<Json<OutageRequest>, JsonRejection>,
) -> ControlResult {
    let OutageRequest { fault } = control_body(body)?;
    if let Some(fault) = &fault {
        check_fault(fault)?;
    }
    tracing::debug!(?fault, "control: outage set");
    state.set_outage(fault);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn set_token_outage(
    State(state): SharedState,
    body: Result<Json<TokenOutageRequest>, JsonRejection>,
) -> ControlResult {
    let TokenOutageRequest { status } = control_body(body)?;
    if let Some(status) = status {
        check_http_status(status)?;
    }
    tracing::debug!(?status, "control: token outage set");
    state.set_token_outage(status);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn expire_tokens(State(state): SharedState) -> StatusCode {
    tracing::debug!("control: tokens expired");
    state.expire_tokens();
    StatusCode::NO_CONTENT
}

pub(crate) async fn set_task_rule(
    State(state): SharedState,
    body: Result<Json<TaskRuleRequest>, JsonRejection>,
) -> ControlResult {
    let TaskRuleRequest { prefix, rule } = control_body(body)?;
    if !TASK_STATUSES.contains(&rule.status.as_str()) {
        return Err(bad_control_request(format!(
            "Unknown task status {:?}; expected one of {TASK_STATUSES:?}",
            rule.status
        )));
    }
    tracing::debug!(%prefix, ?rule, "control: task rule set");
    state.set_task_rule(&prefix, rule);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_sandbox/absent` `{"ids":["JOB-1",..]}`.
pub(crate) async fn mark_absent(
    State(state): SharedState,
    body: Result<Json<AbsentRequest>, JsonRejection>,
) -> ControlResult {
    let AbsentRequest { ids } = control_body(body)?;
    tracing::debug!(jobs = ids.len(), "control: jobs marked absent");
    state.mark_absent(ids);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_sandbox/reclose-answer` `{"answer":"Request"}` or `{"answer":"Element"}`.
pub(crate) async fn set_reclose_answer(
    State(state): SharedState,
    body: Result<Json<RecloseAnswerRequest>, JsonRejection>,
) -> ControlResult {
    let RecloseAnswerRequest { answer } = control_body(body)?;
    tracing::debug!(?answer, "control: re-close answer set");
    state.set_reclose_answer(answer);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_sandbox/string-statuses` `{"enabled":true}`.
pub(crate) async fn set_string_statuses(
    State(state): SharedState,
    body: Result<Json<StringStatusesRequest>, JsonRejection>,
) -> ControlResult {
    let StringStatusesRequest { enabled } = control_body(body)?;
    tracing::debug!(enabled, "control: string statuses set");
    state.set_string_statuses(enabled);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_sandbox/daily-element-limit` `{"limit":100}` or `{"limit":null}`.
pub(crate) async fn set_daily_element_limit(
    State(state): SharedState,
    body: Result<Json<DailyElementLimitRequest>, JsonRejection>,
) -> ControlResult {
    let DailyElementLimitRequest { limit } = control_body(body)?;
    tracing::debug!(?limit, "control: daily element limit set");
    state.set_daily_element_limit(limit);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn reset(State(state): SharedState) -> StatusCode {
    tracing::debug!("control: reset");
    state.reset();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::sandbox::test_support::{
        access_token, close_element, http_client, post_batch, start_default,
    };
    use crate::sandbox::{Fault, Sandbox, Stats, TaskRule};

    async fn control(sandbox: &Sandbox, path: &str, body: Option<Value>) -> u16 {
        let mut request = http_client().post(format!("{}/_sandbox/{path}", sandbox.api_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().status().as_u16()
    }

    async fn remote_stats(sandbox: &Sandbox) -> Stats {
        http_client()
            .get(format!("{}/_sandbox/stats", sandbox.api_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn stats_endpoint_matches_the_snapshot() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(remote_stats(&sandbox).await, sandbox.stats());
        assert_eq!(remote_stats(&sandbox).await.closed.get("A"), Some(&1));
    }

    #[tokio::test]
    async fn faults_and_outages_over_http() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let fault = json!({"Status": {"status": 502}});
        assert_eq!(
            control(
                &sandbox,
                "faults",
                Some(json!({"fault": fault, "times": 1}))
            )
            .await,
            204
        );
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(status, 502);

        assert_eq!(
            control(&sandbox, "outage", Some(json!({"fault": "WrongCount200"}))).await,
            204
        );
        let (status, answer, _) = post_batch(
            &sandbox,
            &token,
            vec![close_element("A"), close_element("B")],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer["elements"].as_array().unwrap().len(), 1);
        assert_eq!(
            control(&sandbox, "outage", Some(json!({"fault": null}))).await,
            204
        );
        let (status, answer, _) = post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(status, 200);
        assert_eq!(answer["elements"][0]["status"], 202);
    }

    #[tokio::test]
    async fn token_outage_and_expiry_over_http() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        assert_eq!(control(&sandbox, "expire-tokens", None).await, 204);
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(status, 401);

        assert_eq!(
            control(&sandbox, "token-outage", Some(json!({"status": 503}))).await,
            204
        );
        let response = http_client()
            .post(sandbox.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "sandbox-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(
            control(&sandbox, "token-outage", Some(json!({"status": null}))).await,
            204
        );
        access_token(&sandbox).await;
    }

    #[tokio::test]
    async fn task_rules_over_http() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let rule = json!({"status": "FAILED", "after_ms": 0, "error_message": "nope"});
        assert_eq!(
            control(
                &sandbox,
                "task-rules",
                Some(json!({"prefix": "A", "rule": rule}))
            )
            .await,
            204
        );
        let (_, answer, _) = post_batch(&sandbox, &token, vec![close_element("A1")]).await;
        let task_id = answer["elements"][0]["id"].as_str().unwrap();
        let tasks: Value = http_client()
            .get(format!("{}/v2/simpleJobPostingTasks", sandbox.api_url()))
            .bearer_auth(&token)
            .query(&[("ids", task_id)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tasks["results"][task_id]["status"], "FAILED");
        assert_eq!(tasks["results"][task_id]["errorMessage"], "nope");
    }

    #[tokio::test]
    async fn task_faults_over_http() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        let fault = json!({"Status": {"status": 429, "retry_after_secs": 2}});
        assert_eq!(
            control(
                &sandbox,
                "task-faults",
                Some(json!({"fault": fault, "times": 1}))
            )
            .await,
            204
        );
        let response = http_client()
            .get(format!("{}/v2/simpleJobPostingTasks", sandbox.api_url()))
            .bearer_auth(&token)
            .query(&[("ids", "urn:li:simpleJobPostingTask:x")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(
            control(
                &sandbox,
                "task-faults",
                Some(json!({"fault": {"Status": {"status": 1}}, "times": 1}))
            )
            .await,
            400
        );
    }

    #[tokio::test]
    async fn reset_clears_stats_faults_and_rules_but_keeps_tokens() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        sandbox.push_fault(Fault::Garbage200, 3);
        sandbox.set_task_rule(
            "",
            TaskRule {
                status: "FAILED".to_owned(),
                after: Duration::ZERO,
                error_message: None,
            },
        );
        post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(control(&sandbox, "reset", None).await, 204);
        assert_eq!(sandbox.stats(), Stats::default());
        let (status, answer, _) = post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(status, 200, "the token survives and the faults are gone");
        let task_id = answer["elements"][0]["id"].as_str().unwrap();
        let tasks: Value = http_client()
            .get(format!("{}/v2/simpleJobPostingTasks", sandbox.api_url()))
            .bearer_auth(&token)
            .query(&[("ids", task_id)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tasks["results"][task_id]["status"], "SUCCEEDED");
    }

    #[tokio::test]
    async fn malformed_control_requests_are_refused() {
        let sandbox = start_default().await;
        for (path, body) in [
            ("faults", json!({"fault": "Sometimes", "times": 1})),
            (
                "faults",
                json!({"fault": {"Status": {"status": 42}}, "times": 1}),
            ),
            ("outage", json!({"fault": 7})),
            ("token-outage", json!({"status": 5000})),
            (
                "task-rules",
                json!({"prefix": "A", "rule": {"status": "DONE", "after_ms": 0}}),
            ),
        ] {
            assert_eq!(
                control(&sandbox, path, Some(body.clone())).await,
                400,
                "{path} {body}"
            );
        }
    }

    #[tokio::test]
    async fn linkedin_state_knobs_over_http() {
        let sandbox = start_default().await;
        let token = access_token(&sandbox).await;
        assert_eq!(
            control(&sandbox, "absent", Some(json!({"ids": ["GONE"]}))).await,
            204
        );
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("GONE")]).await;
        assert_eq!(status, 409);
        assert_eq!(
            control(
                &sandbox,
                "reclose-answer",
                Some(json!({"answer": "Element"}))
            )
            .await,
            204
        );
        assert_eq!(
            control(&sandbox, "string-statuses", Some(json!({"enabled": true}))).await,
            204
        );
        let (status, answer, _) = post_batch(
            &sandbox,
            &token,
            vec![close_element("GONE"), close_element("A")],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer["elements"][0]["status"], "409");
        assert_eq!(answer["elements"][1]["status"], "202");
        assert_eq!(
            control(&sandbox, "daily-element-limit", Some(json!({"limit": 1}))).await,
            204
        );
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("B")]).await;
        assert_eq!(status, 429);
        assert_eq!(
            control(
                &sandbox,
                "daily-element-limit",
                Some(json!({"limit": null}))
            )
            .await,
            204
        );
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("B")]).await;
        assert_eq!(status, 200);
        assert_eq!(
            remote_stats(&sandbox).await.refused_closes.get("GONE"),
            Some(&2)
        );

        assert_eq!(control(&sandbox, "reset", None).await, 204);
        let (status, answer, _) = post_batch(&sandbox, &token, vec![close_element("C")]).await;
        assert_eq!(
            (status, &answer["elements"][0]["status"]),
            (200, &json!(202))
        );
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("GONE")]).await;
        assert_eq!(status, 200, "reset lifts the absent marks");
        let (status, _, _) = post_batch(&sandbox, &token, vec![close_element("A")]).await;
        assert_eq!(status, 409, "reset keeps the jobs LinkedIn closed");

        for (path, body) in [
            ("absent", json!({"ids": "GONE"})),
            ("reclose-answer", json!({"answer": "Sometimes"})),
            ("string-statuses", json!({"enabled": "yes"})),
            ("daily-element-limit", json!({"limit": -1})),
        ] {
            assert_eq!(
                control(&sandbox, path, Some(body.clone())).await,
                400,
                "{path} {body}"
            );
        }
    }
}
