//! The `/_sandbox/...` control API: the HTTP face of [`super::Sandbox`]'s scripting methods, for
//! tests that run the sandbox out of process (`job-closer sandbox`). Unauthenticated, like the
//! rest of a sandbox meant for localhost.
//!
//! [`routes`] is the whole API as a table: each route's path, its JSON body and the state method
//! it calls. Every route with a body is handled the same way ([`with_body`]: parse, check, carry
//! out, 204), so a new knob is a body type, its check if it has one, and a row.

use std::fmt::Debug;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, Uri};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::api_gate::LinkedInError;
use super::judge::RecloseAnswer;
use super::scripting::{Fault, RandomFaults, TASK_STATUSES, TaskRule};
use super::state::{SandboxState, Stats};

type SharedState = State<Arc<SandboxState>>;

/// Every `/_sandbox` route.
pub(crate) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route(
            "/_sandbox/faults",
            with_body(|state, faults: FaultsRequest| state.push_fault(faults.fault, faults.times)),
        )
        .route(
            "/_sandbox/task-faults",
            with_body(|state, faults: FaultsRequest| {
                state.push_task_fault(faults.fault, faults.times);
            }),
        )
        .route(
            "/_sandbox/outage",
            with_body(|state, outage: OutageRequest| state.set_outage(outage.fault)),
        )
        .route(
            "/_sandbox/token-outage",
            with_body(|state, outage: TokenOutageRequest| state.set_token_outage(outage.status)),
        )
        .route(
            "/_sandbox/client-secret",
            with_body(|state, rotate: ClientSecretRequest| {
                state.rotate_client_secret(rotate.client_secret);
            }),
        )
        .route(
            "/_sandbox/expire-tokens",
            without_body(SandboxState::expire_tokens),
        )
        .route(
            "/_sandbox/task-rules",
            with_body(|state, rule: TaskRuleRequest| state.set_task_rule(&rule.prefix, rule.rule)),
        )
        .route(
            "/_sandbox/absent",
            with_body(|state, absent: AbsentRequest| state.mark_absent(absent.ids)),
        )
        .route(
            "/_sandbox/reclose-answer",
            with_body(|state, reclose: RecloseAnswerRequest| {
                state.set_reclose_answer(reclose.answer);
            }),
        )
        .route(
            "/_sandbox/string-statuses",
            with_body(|state, statuses: StringStatusesRequest| {
                state.set_string_statuses(statuses.enabled);
            }),
        )
        .route(
            "/_sandbox/daily-element-limit",
            with_body(|state, limit: DailyElementLimitRequest| {
                state.set_daily_element_limit(limit.limit);
            }),
        )
        .route(
            "/_sandbox/random-faults",
            with_body(|state, faults: RandomFaults| state.set_random_faults(faults)),
        )
        .route(
            "/_sandbox/already-closed-rate",
            with_body(|state, rate: AlreadyClosedRateRequest| {
                state.set_already_closed_rate(rate.rate);
            }),
        )
        .route("/_sandbox/reset", without_body(SandboxState::reset))
}

/// The JSON body of a control route, and what must hold before it is carried out.
trait ControlRequest: DeserializeOwned + Debug + Send + 'static {
    /// The 400 for a request the sandbox cannot carry out; most can always be.
    fn check(&self) -> Result<(), LinkedInError> {
        Ok(())
    }
}

/// `{"fault":{"Status":{"status":429}},"times":2}`, for `faults` and `task-faults`.
#[derive(Debug, Deserialize)]
struct FaultsRequest {
    fault: Fault,
    times: u32,
}

/// `{"fault":"Hang"}` or `{"fault":null}`.
#[derive(Debug, Deserialize)]
struct OutageRequest {
    fault: Option<Fault>,
}

/// `{"status":503}` or `{"status":null}`.
#[derive(Debug, Deserialize)]
struct TokenOutageRequest {
    status: Option<u16>,
}

/// `{"client_secret":"new-secret"}`: rotates the client secret.
#[derive(Deserialize)]
struct ClientSecretRequest {
    client_secret: String,
}

/// Never shows the secret (the control requests are logged at debug level).
impl Debug for ClientSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecretRequest([redacted])")
    }
}

/// `{"prefix":"JOB-","rule":{"status":"FAILED","after_ms":0}}`.
#[derive(Debug, Deserialize)]
struct TaskRuleRequest {
    prefix: String,
    rule: TaskRule,
}

/// `{"ids":["JOB-1",..]}`.
#[derive(Debug, Deserialize)]
struct AbsentRequest {
    ids: Vec<String>,
}

/// `{"answer":"Request"}` or `{"answer":"Element"}`.
#[derive(Debug, Deserialize)]
struct RecloseAnswerRequest {
    answer: RecloseAnswer,
}

/// `{"enabled":true}`.
#[derive(Debug, Deserialize)]
struct StringStatusesRequest {
    enabled: bool,
}

/// `{"limit":100}` or `{"limit":null}`.
#[derive(Debug, Deserialize)]
struct DailyElementLimitRequest {
    limit: Option<u64>,
}

/// `{"rate":0.1}`: a share from 0 to 1.
#[derive(Debug, Deserialize)]
struct AlreadyClosedRateRequest {
    rate: f64,
}

impl ControlRequest for AlreadyClosedRateRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        if (0.0..=1.0).contains(&self.rate) {
            return Ok(());
        }
        Err(bad_control_request(format!(
            "rate {} is not a share from 0 to 1",
            self.rate
        )))
    }
}

impl ControlRequest for FaultsRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        check_fault(&self.fault)
    }
}

impl ControlRequest for OutageRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        self.fault.as_ref().map_or(Ok(()), check_fault)
    }
}

impl ControlRequest for TokenOutageRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        self.status.map_or(Ok(()), check_http_status)
    }
}

impl ControlRequest for ClientSecretRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        if self.client_secret.is_empty() {
            return Err(bad_control_request("client_secret must not be empty"));
        }
        Ok(())
    }
}

impl ControlRequest for TaskRuleRequest {
    fn check(&self) -> Result<(), LinkedInError> {
        if TASK_STATUSES.contains(&self.rule.status.as_str()) {
            return Ok(());
        }
        Err(bad_control_request(format!(
            "Unknown task status {:?}; expected one of {TASK_STATUSES:?}",
            self.rule.status
        )))
    }
}

/// `{"server_error_rate":0.05,"throttle_rate":0.02,"stall_rate":0.01,"stall_ms":3000}`.
impl ControlRequest for RandomFaults {
    fn check(&self) -> Result<(), LinkedInError> {
        RandomFaults::check(self).map_err(bad_control_request)
    }
}

impl ControlRequest for AbsentRequest {}
impl ControlRequest for RecloseAnswerRequest {}
impl ControlRequest for StringStatusesRequest {}
impl ControlRequest for DailyElementLimitRequest {}

/// A control request that cannot be carried out.
fn bad_control_request(message: impl Into<String>) -> LinkedInError {
    LinkedInError::new(StatusCode::BAD_REQUEST, message)
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

/// The handler of a control route with a body: a body that does not parse or does not pass
/// [`ControlRequest::check`] is a 400 and changes nothing; otherwise `apply` carries it out, 204.
fn with_body<R: ControlRequest>(apply: fn(&SandboxState, R)) -> MethodRouter<Arc<SandboxState>> {
    post(
        move |State(state): SharedState, uri: Uri, body: Result<Json<R>, JsonRejection>| async move {
            let Json(request) =
                body.map_err(|rejection| bad_control_request(rejection.body_text()))?;
            request.check()?;
            tracing::debug!(path = uri.path(), ?request, "control request carried out");
            apply(&state, request);
            Ok::<_, LinkedInError>(StatusCode::NO_CONTENT)
        },
    )
}

/// The handler of a control route without a body: `apply`, 204.
fn without_body(apply: fn(&SandboxState)) -> MethodRouter<Arc<SandboxState>> {
    post(move |State(state): SharedState, uri: Uri| async move {
        tracing::debug!(path = uri.path(), "control request carried out");
        apply(&state);
        StatusCode::NO_CONTENT
    })
}

async fn stats(State(state): SharedState) -> Json<Stats> {
    Json(state.stats())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::sandbox::test_support::{
        GOOD_TOKEN_FIELDS, SignedInSandbox, access_token, http_client, post_token_form,
    };
    use crate::sandbox::{Fault, Sandbox, Stats, TaskRule};

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

    /// Control requests that must each be refused with a 400, as `(path, body)`.
    async fn assert_all_refused(sandbox: &SignedInSandbox, requests: &[(&str, Value)]) {
        for (path, body) in requests {
            assert_eq!(
                sandbox.control(path, body.clone()).await,
                400,
                "{path} {body}"
            );
        }
    }

    #[tokio::test]
    async fn stats_endpoint_matches_the_snapshot() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.close(&["A"]).await;
        assert_eq!(remote_stats(&sandbox).await, sandbox.stats());
        assert_eq!(remote_stats(&sandbox).await.closed.get("A"), Some(&1));
    }

    #[tokio::test]
    async fn faults_and_outages_over_http() {
        let sandbox = SignedInSandbox::start().await;
        let fault = json!({"Status": {"status": 502}});
        let pushed = sandbox
            .control("faults", json!({"fault": fault, "times": 1}))
            .await;
        assert_eq!(pushed, 204);
        assert_eq!(sandbox.close(&["A"]).await.status, 502);

        let outage = json!({"fault": "WrongCount200"});
        assert_eq!(sandbox.control("outage", outage).await, 204);
        let answer = sandbox.close(&["A", "B"]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"].as_array().unwrap().len(), 1);
        assert_eq!(sandbox.control("outage", json!({"fault": null})).await, 204);
        let answer = sandbox.close(&["A"]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"][0]["status"], 202);
    }

    #[tokio::test]
    async fn token_outage_and_expiry_over_http() {
        let sandbox = SignedInSandbox::start().await;
        assert_eq!(sandbox.control_without_body("expire-tokens").await, 204);
        assert_eq!(sandbox.close(&["A"]).await.status, 401);

        let outage = json!({"status": 503});
        assert_eq!(sandbox.control("token-outage", outage).await, 204);
        let (status, _) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 503);
        let lifted = json!({"status": null});
        assert_eq!(sandbox.control("token-outage", lifted).await, 204);
        access_token(&sandbox).await;

        let rotated = json!({"client_secret": "rotated"});
        assert_eq!(sandbox.control("client-secret", rotated).await, 204);
        let (status, _) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 401);
        assert_eq!(remote_stats(&sandbox).await.tokens_issued, 2);
        assert_eq!(sandbox.config().client_secret, "rotated");
    }

    #[tokio::test]
    async fn task_rules_over_http() {
        let sandbox = SignedInSandbox::start().await;
        let rule = json!({"status": "FAILED", "after_ms": 0, "error_message": "nope"});
        let set = sandbox
            .control("task-rules", json!({"prefix": "A", "rule": rule}))
            .await;
        assert_eq!(set, 204);
        let task_ids = sandbox.accepted_tasks(&["A1"]).await;
        let (_, tasks) = sandbox.query_tasks(&task_ids).await;
        assert_eq!(tasks["results"][&task_ids[0]]["status"], "FAILED");
        assert_eq!(tasks["results"][&task_ids[0]]["errorMessage"], "nope");
    }

    #[tokio::test]
    async fn task_faults_over_http() {
        let sandbox = SignedInSandbox::start().await;
        let fault = json!({"Status": {"status": 429, "retry_after_secs": 2}});
        let pushed = sandbox
            .control("task-faults", json!({"fault": fault, "times": 1}))
            .await;
        assert_eq!(pushed, 204);
        let response = http_client()
            .get(sandbox.url("/v2/simpleJobPostingTasks"))
            .bearer_auth(&sandbox.token)
            .query(&[("ids", "urn:li:simpleJobPostingTask:x")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        let not_a_status = json!({"fault": {"Status": {"status": 1}}, "times": 1});
        assert_all_refused(&sandbox, &[("task-faults", not_a_status)]).await;
    }

    #[tokio::test]
    async fn reset_clears_stats_faults_and_rules_but_keeps_tokens() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.push_fault(Fault::Garbage200, 3);
        sandbox.set_task_rule(
            "",
            TaskRule {
                status: "FAILED".to_owned(),
                after: Duration::ZERO,
                error_message: None,
            },
        );
        sandbox.close(&["A"]).await;
        assert_eq!(sandbox.control_without_body("reset").await, 204);
        assert_eq!(sandbox.stats(), Stats::default());
        let answer = sandbox.close(&["A"]).await;
        assert_eq!(
            answer.status, 200,
            "the token survives and the faults are gone"
        );
        let task_id = answer.body["elements"][0]["id"].as_str().unwrap();
        let (_, tasks) = sandbox.query_tasks(&[task_id.to_owned()]).await;
        assert_eq!(tasks["results"][task_id]["status"], "SUCCEEDED");
    }

    #[tokio::test]
    async fn random_faults_over_http_follow_the_seed() {
        // Two sandboxes with the same seed answer the same sequence of calls alike.
        let mut answers = Vec::new();
        for _ in 0..2 {
            let sandbox = SignedInSandbox::configured(|config| config.seed = Some(7)).await;
            let rates = json!({"server_error_rate": 0.3, "throttle_rate": 0.3});
            assert_eq!(sandbox.control("random-faults", rates).await, 204);
            let mut statuses = Vec::new();
            for i in 0..30 {
                statuses.push(sandbox.close(&[&format!("R{i}")]).await.status);
            }
            let stats = remote_stats(&sandbox).await;
            let count = |status: u16| statuses.iter().filter(|&&s| s == status).count() as u64;
            assert_eq!(
                stats.random_faults.get("500").copied().unwrap_or(0),
                count(500)
            );
            assert_eq!(
                stats.random_faults.get("429").copied().unwrap_or(0),
                count(429)
            );
            assert!(
                count(500) > 0 && count(429) > 0 && count(200) > 0,
                "{statuses:?}"
            );
            let off = json!({});
            assert_eq!(sandbox.control("random-faults", off).await, 204);
            assert_eq!(sandbox.close(&["after"]).await.status, 200);
            answers.push(statuses);
        }
        assert_eq!(answers[0], answers[1]);
    }

    #[tokio::test]
    async fn a_stall_answers_late_with_the_close_already_taken() {
        let sandbox = SignedInSandbox::start().await;
        let always = json!({"stall_rate": 1.0, "stall_ms": 400});
        assert_eq!(sandbox.control("random-faults", always).await, 204);
        let started = std::time::Instant::now();
        let answer = sandbox.close(&["SLOW"]).await;
        assert_eq!(answer.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            remote_stats(&sandbox).await.random_faults.get("stall"),
            Some(&1)
        );
        assert_eq!(sandbox.stats().closed.get("SLOW"), Some(&1));
        assert_eq!(sandbox.control_without_body("reset").await, 204);
        assert_eq!(
            sandbox.close(&["SLOW"]).await.status,
            409,
            "closed before the late answer"
        );
    }

    #[tokio::test]
    async fn malformed_control_requests_are_refused() {
        let sandbox = SignedInSandbox::start().await;
        let requests = [
            ("faults", json!({"fault": "Sometimes", "times": 1})),
            (
                "faults",
                json!({"fault": {"Status": {"status": 42}}, "times": 1}),
            ),
            ("outage", json!({"fault": 7})),
            ("token-outage", json!({"status": 5000})),
            ("client-secret", json!({"client_secret": ""})),
            ("random-faults", json!({"throttle_rate": 2.0})),
            ("random-faults", json!({"stall_ms": "long"})),
            (
                "task-rules",
                json!({"prefix": "A", "rule": {"status": "DONE", "after_ms": 0}}),
            ),
        ];
        assert_all_refused(&sandbox, &requests).await;
    }

    #[tokio::test]
    async fn linkedin_state_knobs_over_http() {
        // Seed 0: the share of jobs already closed on LinkedIn below is the one of that seed.
        let sandbox = SignedInSandbox::configured(|config| config.seed = Some(0)).await;
        let absent = json!({"ids": ["GONE"]});
        assert_eq!(sandbox.control("absent", absent).await, 204);
        assert_eq!(sandbox.close(&["GONE"]).await.status, 409);
        let per_element = json!({"answer": "Element"});
        assert_eq!(sandbox.control("reclose-answer", per_element).await, 204);
        let as_strings = json!({"enabled": true});
        assert_eq!(sandbox.control("string-statuses", as_strings).await, 204);
        let answer = sandbox.close(&["GONE", "A"]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"][0]["status"], "409");
        assert_eq!(answer.body["elements"][1]["status"], "202");
        let limit = json!({"limit": 1});
        assert_eq!(sandbox.control("daily-element-limit", limit).await, 204);
        assert_eq!(sandbox.close(&["B"]).await.status, 429);
        let no_limit = json!({"limit": null});
        assert_eq!(sandbox.control("daily-element-limit", no_limit).await, 204);
        assert_eq!(sandbox.close(&["B"]).await.status, 200);
        assert_eq!(
            remote_stats(&sandbox).await.refused_closes.get("GONE"),
            Some(&2)
        );

        assert_eq!(sandbox.control_without_body("reset").await, 204);
        let answer = sandbox.close(&["C"]).await;
        assert_eq!(
            (answer.status, &answer.body["elements"][0]["status"]),
            (200, &json!(202))
        );
        let gone = sandbox.close(&["GONE"]).await;
        assert_eq!(gone.status, 200, "reset lifts the absent marks");
        let closed = sandbox.close(&["A"]).await;
        assert_eq!(closed.status, 409, "reset keeps the jobs LinkedIn closed");

        // A job never accepted, of the seeded share already closed on LinkedIn (seed 0).
        let expired = (0..1000)
            .map(|i| format!("EXP-{i}"))
            .find(|id| crate::sandbox::judge::expired_on_linkedin(0, 0.5, id))
            .unwrap();
        let half = json!({"rate": 0.5});
        assert_eq!(sandbox.control("already-closed-rate", half).await, 204);
        assert_eq!(sandbox.close(&[&expired]).await.status, 409);
        assert_eq!(sandbox.control_without_body("reset").await, 204);
        assert_eq!(
            sandbox.close(&[&expired]).await.status,
            200,
            "reset: the configured rate, 0"
        );

        let requests = [
            ("already-closed-rate", json!({"rate": 1.5})),
            ("already-closed-rate", json!({"rate": "often"})),
            ("absent", json!({"ids": "GONE"})),
            ("reclose-answer", json!({"answer": "Sometimes"})),
            ("string-statuses", json!({"enabled": "yes"})),
            ("daily-element-limit", json!({"limit": -1})),
        ];
        assert_all_refused(&sandbox, &requests).await;
    }
}
