//! `POST /v2/simpleJobPostings` and `POST /rest/simpleJobPostings` (Rest.li `batch_create`): the
//! HTTP layer in front of [`super::judge`] — the gate (latency, `LinkedIn-Version`, token,
//! `x-restli-method`), scripted faults, parsing the body — and the per-element answers (202 with a
//! task URN, or LinkedIn's error entry) in request order. What to answer is decided in `judge.rs`.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api_gate::{
    ApiCall, LinkedInError, draw_random_answer, hold_back, json_response, linkedin_error,
    shutting_down, utc_now, wait_latency, with_retry_after,
};
use super::scripting::Fault;
use super::state::{SandboxState, accepted_entry};

/// How long a [`Fault::Hang`] holds a request before giving up with a 504.
const HANG_DURATION: Duration = Duration::from_secs(600);

/// LinkedIn's answer when `x-restli-method` is missing: without it the POST is not a batch_create.
pub(crate) const NOT_ENOUGH_PERMISSIONS_MESSAGE: &str =
    "Not enough permissions to access: POST /simpleJobPostings";

/// LinkedIn's answer to a POST whose `x-restli-method` names another method: Rest.li then reads
/// the body as one entity, whose `elements` field is not one it knows.
pub(crate) const UNPERMITTED_FIELDS_MESSAGE: &str = "Unpermitted fields present in REQUEST_BODY: Data Processing Exception while processing fields [/elements]";

/// `POST /v2/simpleJobPostings` and `POST /rest/simpleJobPostings`.
pub(crate) async fn batch_create(call: ApiCall, body: Bytes) -> Response {
    let state = &call.state;
    let in_flight = state.enter_posting_request();
    let answer = answer_batch_create(&call, &body).await;
    drop(in_flight);
    let response = call.respond("simpleJobPostings", answer);
    state.record_posting_response(response.status().as_u16());
    response
}

/// The answer to one batch_create request; `Err` holds a whole-request refusal. The decision is
/// [`super::judge::judge`]'s; this only puts the gate, faults and parsing in front of it.
async fn answer_batch_create(call: &ApiCall, body: &[u8]) -> Result<Response, LinkedInError> {
    let state = &*call.state;
    wait_latency(state).await?;
    call.check_version_and_token()?;
    check_restli_method(&call.headers)?;

    let elements = parse_elements(body);
    if let Ok(elements) = &elements {
        state.record_request_size(elements.len());
    }
    if let Some(fault) = state.take_fault() {
        let element_count = elements.as_ref().map_or(0, Vec::len);
        return Ok(answer_with_fault(state, fault, element_count).await);
    }
    let stall = draw_random_answer(state)?;
    let elements = elements?;
    let answer = state.answer_elements(&elements, utc_now().day_number);
    // Decided (and taken, when accepted) before the stall: a client that gives up waiting and
    // sends the close again is told it is closed already.
    hold_back(state, stall).await;
    Ok(json_response(StatusCode::OK, json!({"elements": answer?})))
}

/// LinkedIn refuses batch_create without `x-restli-method: batch_create` as a permission error.
fn check_restli_method(headers: &HeaderMap) -> Result<(), LinkedInError> {
    let method = headers
        .get("x-restli-method")
        .and_then(|value| value.to_str().ok());
    let message = match method {
        Some("batch_create") => return Ok(()),
        None => NOT_ENOUGH_PERMISSIONS_MESSAGE,
        Some(_) => UNPERMITTED_FIELDS_MESSAGE,
    };
    tracing::debug!(status = 403, ?method, "x-restli-method is not batch_create");
    Err(LinkedInError::new(StatusCode::FORBIDDEN, message))
}

/// The request's elements, each a JSON object.
fn parse_elements(body: &[u8]) -> Result<Vec<Map<String, Value>>, LinkedInError> {
    let bad_request = |message: String| {
        tracing::debug!(status = 400, message, "unusable batch_create body");
        LinkedInError::new(StatusCode::BAD_REQUEST, message)
    };
    let document: Value = serde_json::from_slice(body)
        .map_err(|error| bad_request(format!("Error parsing entity body: {error}")))?;
    let elements = match document {
        Value::Object(mut fields) => fields.remove("elements"),
        _ => None,
    };
    let Some(Value::Array(elements)) = elements else {
        return Err(bad_request(
            "The request body must be a JSON object with an \"elements\" array".to_owned(),
        ));
    };
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| match element {
            Value::Object(fields) => Ok(fields),
            _ => Err(bad_request(format!(
                "elements[{index}] must be a JSON object"
            ))),
        })
        .collect()
}

/// The answer a scripted fault gives in place of processing the request. Faulted requests change
/// nothing: no task is recorded and nothing counts as closed.
pub(crate) async fn answer_with_fault(
    state: &SandboxState,
    fault: Fault,
    element_count: usize,
) -> Response {
    tracing::debug!(?fault, "answering with a scripted fault");
    match fault {
        Fault::Status {
            status,
            retry_after_secs,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message
                .or_else(|| status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "Sandbox fault".to_owned());
            let response = linkedin_error(status, &message);
            match retry_after_secs {
                Some(secs) => with_retry_after(response, secs),
                None => response,
            }
        }
        Fault::Hang => {
            tokio::select! {
                () = tokio::time::sleep(HANG_DURATION) => {
                    linkedin_error(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
                }
                () = state.shutdown.cancelled() => shutting_down().into_response(),
            }
        }
        Fault::Garbage200 => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            "<html><body>502 Bad Gateway</body></html>{\"elements\":[{\"id\":",
        )
            .into_response(),
        Fault::WrongCount200 => {
            // Well-formed 202 entries, but for task URNs that were never recorded: a client that
            // guesses which element they belong to and polls them will find nothing.
            let string_statuses = state.string_statuses();
            let entries: Vec<Value> = (1..element_count)
                .map(|_| {
                    state.record_element_status(202);
                    accepted_entry(
                        &format!("urn:li:simpleJobPostingTask:{}", uuid::Uuid::new_v4()),
                        string_statuses,
                    )
                })
                .collect();
            json_response(StatusCode::OK, json!({"elements": entries}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Fault;
    use crate::sandbox::judge::MAX_ELEMENTS_PER_REQUEST;
    use crate::sandbox::test_support::{
        Answer, SignedInSandbox, access_token, close_element, close_elements,
    };

    /// A [`close_element`] changed by `change`.
    fn changed(external_id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut element = close_element(external_id);
        change(&mut element);
        element
    }

    /// A [`close_element`] without `field`.
    fn without(external_id: &str, field: &str) -> Value {
        changed(external_id, |element| {
            element.as_object_mut().unwrap().remove(field);
        })
    }

    /// POSTs a batch_create of job A to `/v2/simpleJobPostings` with `token`, if any, and
    /// exactly `headers`: for the requests job-closer never sends.
    async fn post_a_with(
        sandbox: &SignedInSandbox,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = sandbox.postings_request();
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.json(&json!({"elements": [close_element("A")]}));
        Answer::read(request.send().await.unwrap()).await
    }

    /// The answer's `message`, which must be a string.
    fn message_of(body: &Value) -> &str {
        body["message"].as_str().unwrap()
    }

    #[tokio::test]
    async fn valid_close_batch_gets_one_task_per_element() {
        let sandbox = SignedInSandbox::start().await;
        let answer = sandbox.close(&["A", "B"]).await;
        assert_eq!(answer.status, 200);
        let entries = answer.body["elements"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        for entry in entries {
            assert_eq!(entry["status"], 202);
            let id = entry["id"].as_str().unwrap();
            assert!(id.starts_with("urn:li:simpleJobPostingTask:"));
            assert_eq!(
                entry["location"],
                format!("/simpleJobPostings/{}", id.replace(':', "%3A"))
            );
        }
        let stats = sandbox.stats();
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.request_sizes, [2]);
        assert_eq!(stats.closed.get("A"), Some(&1));
        assert_eq!(stats.closed.get("B"), Some(&1));
        assert_eq!(stats.element_statuses.get(&202), Some(&2));
        assert_eq!(stats.responses_by_status.get(&200), Some(&1));
    }

    #[tokio::test]
    async fn mixed_batch_answers_each_element_in_order() {
        let sandbox = SignedInSandbox::start().await;
        let elements = vec![
            close_element("ok"),
            without("missing-title", "title"),
            changed("string-listed-at", |e| e["listedAt"] = json!("0123456789")),
            changed("numeric-title", |e| e["title"] = json!(42)),
            changed("bad-operation", |e| {
                e["jobPostingOperationType"] = json!("UPDATED");
            }),
            without("premium", "contract"),
            changed("create", |e| e["jobPostingOperationType"] = json!("CREATE")),
        ];
        let answer = sandbox.post(elements).await;
        assert_eq!(answer.status, 200);
        let entries = answer.body["elements"].as_array().unwrap();
        let messages: Vec<Option<&str>> = entries
            .iter()
            .map(|entry| entry["error"]["message"].as_str())
            .collect();
        assert_eq!(
            messages,
            [
                None,
                Some(
                    "ERROR :: /title :: field is required but not found and has no default value\n"
                ),
                Some("ERROR :: /listedAt :: \"0123456789\" cannot be coerced to Long\n"),
                Some("ERROR :: /title :: 42 cannot be coerced to String\n"),
                Some("ERROR :: /jobPostingOperationType :: \"UPDATED\" is not an enum symbol\n"),
                Some(
                    "ERROR :: /contract :: field is required but not found and has no default value\n"
                ),
                None,
            ]
        );
        assert_eq!(entries[1]["status"], 422);
        assert_eq!(entries[1]["error"]["status"], 422);
        assert_eq!(entries[6]["status"], 202);
        let stats = sandbox.stats();
        assert_eq!(stats.element_statuses.get(&422), Some(&5));
        assert_eq!(stats.element_statuses.get(&202), Some(&2));
        assert_eq!(
            stats.closed.len(),
            1,
            "only the valid CLOSE counts as closed"
        );
    }

    #[tokio::test]
    async fn missing_or_unknown_token_is_invalid() {
        let sandbox = SignedInSandbox::start().await;
        let without_token =
            post_a_with(&sandbox, None, &[("x-restli-method", "batch_create")]).await;
        assert_eq!(without_token.status, 401);
        let made_up = sandbox.with_token("made-up");
        let answer = made_up.close(&["A"]).await;
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.body,
            json!({"message": "Invalid access token", "serviceErrorCode": 65600, "status": 401})
        );
        let stats = made_up.stats();
        assert_eq!(stats.requests, 2);
        assert!(stats.request_sizes.is_empty());
        assert_eq!(stats.responses_by_status.get(&401), Some(&2));
    }

    #[tokio::test]
    async fn tokens_expire_by_lifetime_and_on_demand() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.expire_tokens();
        let answer = sandbox.close(&["A"]).await;
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.body,
            json!({"message": "The token used in the request has expired", "serviceErrorCode": 65602, "status": 401})
        );
        let token = access_token(&sandbox).await;
        let fresh = sandbox.with_token(token);
        assert_eq!(fresh.close(&["A"]).await.status, 200);

        let short_lived =
            SignedInSandbox::configured(|config| config.token_lifetime = Duration::ZERO).await;
        let answer = short_lived.close(&["A"]).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["serviceErrorCode"], 65602);
    }

    #[tokio::test]
    async fn missing_restli_method_is_a_permission_error() {
        let sandbox = SignedInSandbox::start().await;
        let token = Some(sandbox.token.as_str());
        let answer = post_a_with(&sandbox, token, &[]).await;
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.body,
            json!({"message": "Not enough permissions to access: POST /simpleJobPostings", "status": 403})
        );
        let uppercase_header_name =
            post_a_with(&sandbox, token, &[("X-RestLi-Method", "batch_create")]).await;
        assert_eq!(uppercase_header_name.status, 200);
    }

    #[tokio::test]
    async fn contract_not_on_the_allow_list_fails_the_whole_request() {
        let sandbox = SignedInSandbox::configured(|config| {
            config.allowed_contracts = Some(vec!["urn:li:contract:1".to_owned()])
        })
        .await;
        let other_contract = changed("B", |e| e["contract"] = json!("urn:li:contract:2"));
        let answer = sandbox.post(vec![close_element("A"), other_contract]).await;
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.body,
            json!({"message": "Caller is not authorized to access the jobs for contract: urn:li:contract:2", "status": 403})
        );
        assert!(sandbox.stats().closed.is_empty());
    }

    #[tokio::test]
    async fn non_string_external_id_poisons_the_whole_request() {
        let sandbox = SignedInSandbox::start().await;
        let numeric_id = changed("x", |e| e["externalJobPostingId"] = json!(150421));
        let answer = sandbox.post(vec![close_element("A"), numeric_id]).await;
        assert_eq!(answer.status, 500);
        assert_eq!(
            answer.body,
            json!({"message": "Internal Server Error", "status": 500})
        );
        let stats = sandbox.stats();
        assert!(stats.closed.is_empty());
        assert_eq!(stats.request_sizes, [2]);
    }

    #[tokio::test]
    async fn malformed_requests_are_bad_requests() {
        let sandbox = SignedInSandbox::start().await;
        let jobs = |count: usize| {
            (0..count)
                .map(|index| close_element(&format!("job-{index}")))
                .collect::<Vec<Value>>()
        };
        let answer = sandbox.post(jobs(MAX_ELEMENTS_PER_REQUEST + 1)).await;
        assert_eq!(answer.status, 400);
        assert!(
            message_of(&answer.body).contains("at most 100"),
            "{}",
            answer.body
        );

        let exactly_the_limit = sandbox.post(jobs(MAX_ELEMENTS_PER_REQUEST)).await;
        assert_eq!(exactly_the_limit.status, 200);

        let answer = sandbox.close(&["A", "A"]).await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body["status"], 400);

        for body in ["not json", "{\"items\": []}", "{\"elements\": [1]}"] {
            let response = sandbox
                .postings_request()
                .bearer_auth(&sandbox.token)
                .header("x-restli-method", "batch_create")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
        }
        assert_eq!(sandbox.stats().closed.len(), 100);
    }

    #[tokio::test]
    async fn rest_variant_requires_and_records_the_version_header() {
        let sandbox = SignedInSandbox::start().await;
        let elements = || vec![close_element("A")];
        assert_eq!(sandbox.post_rest(None, elements()).await.status, 400);
        let versioned = sandbox.post_rest(Some("202405"), elements()).await;
        assert_eq!(versioned.status, 200);
        let stats = sandbox.stats();
        assert_eq!(
            stats.linkedin_versions.into_iter().collect::<Vec<_>>(),
            ["202405"]
        );
        assert_eq!(stats.closed.get("A"), Some(&1));
    }

    #[tokio::test]
    async fn status_fault_carries_retry_after_and_is_used_up() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.push_fault(
            Fault::Status {
                status: 429,
                retry_after_secs: Some(7),
                message: Some("Resource level throttle limit".to_owned()),
            },
            2,
        );
        for _ in 0..2 {
            let answer = sandbox.close(&["A"]).await;
            assert_eq!(answer.status, 429);
            assert_eq!(answer.headers["retry-after"], "7");
            assert_eq!(
                answer.body,
                json!({"message": "Resource level throttle limit", "status": 429})
            );
        }
        assert_eq!(sandbox.close(&["A"]).await.status, 200);
        let stats = sandbox.stats();
        assert_eq!(stats.responses_by_status.get(&429), Some(&2));
        assert_eq!(
            stats.closed.get("A"),
            Some(&1),
            "faulted requests close nothing"
        );
        assert_eq!(stats.request_sizes, [1, 1, 1]);
    }

    #[tokio::test]
    async fn wrong_count_and_garbage_answers() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.push_fault(Fault::WrongCount200, 1);
        sandbox.push_fault(Fault::Garbage200, 1);
        let elements = close_elements(&["A", "B", "C"]);
        let answer = sandbox.post(elements.clone()).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"].as_array().unwrap().len(), 2);

        let response = sandbox.batch_request(elements).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.json::<Value>().await.is_err());
        assert!(sandbox.stats().closed.is_empty());
    }

    #[tokio::test]
    async fn outage_lasts_until_lifted() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.set_outage(Some(Fault::Status {
            status: 504,
            retry_after_secs: None,
            message: None,
        }));
        for _ in 0..3 {
            let answer = sandbox.close(&["A"]).await;
            assert_eq!(answer.status, 504);
            assert_eq!(answer.body["message"], "Gateway Timeout");
            assert!(answer.headers.get("retry-after").is_none());
        }
        sandbox.set_outage(None);
        assert_eq!(sandbox.close(&["A"]).await.status, 200);
    }

    #[tokio::test]
    async fn hang_outlasts_the_client_timeout_and_ends_on_shutdown() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.push_fault(Fault::Hang, 2);
        let request = || sandbox.batch_request(vec![close_element("A")]);
        let error = request()
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout());

        let held = tokio::spawn(request().send());
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(5), sandbox.shutdown())
            .await
            .expect("shutdown must not wait for a hanging request");
        let answer = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .unwrap()
            .unwrap();
        if let Ok(response) = answer {
            assert_eq!(response.status(), 503);
        }
    }

    #[tokio::test]
    async fn latency_shows_as_concurrency() {
        let sandbox =
            SignedInSandbox::configured(|config| config.latency = Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let (first, second) = tokio::join!(sandbox.close(&["A"]), sandbox.close(&["B"]));
        assert_eq!((first.status, second.status), (200, 200));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(sandbox.stats().max_concurrent_requests, 2);
    }

    #[tokio::test]
    async fn a_job_closed_once_and_reclosed_twice_is_one_close_and_two_refusals() {
        let sandbox = SignedInSandbox::start().await;
        let answer = sandbox.close(&["A"]).await;
        assert_eq!(
            (answer.status, &answer.body["elements"][0]["status"]),
            (200, &json!(202))
        );
        for _ in 0..2 {
            let answer = sandbox.close(&["B", "A"]).await;
            assert_eq!(answer.status, 409);
            assert_eq!(
                answer.body,
                json!({"message": "Cannot close job which is already closed or does not exist", "status": 409})
            );
        }
        let stats = sandbox.stats();
        assert_eq!(stats.closed.get("A"), Some(&1));
        assert_eq!(stats.refused_closes.get("A"), Some(&2));
        assert_eq!(
            stats.closed.get("B"),
            None,
            "refused requests close nothing"
        );
        assert_eq!(stats.responses_by_status.get(&409), Some(&2));
    }

    #[tokio::test]
    async fn reclose_per_element_string_statuses_and_absent_jobs() {
        let sandbox = SignedInSandbox::start().await;
        sandbox.close(&["A"]).await;
        sandbox.mark_absent(&["GONE"]);
        sandbox.set_reclose_answer(crate::sandbox::RecloseAnswer::Element);
        sandbox.set_string_statuses(true);
        let answer = sandbox.close(&["A", "B", "GONE"]).await;
        assert_eq!(answer.status, 200);
        let refused = json!({"error": {"message": "Cannot close job which is already closed or does not exist", "status": "409"}, "status": "409"});
        assert_eq!(answer.body["elements"][0], refused);
        assert_eq!(answer.body["elements"][1]["status"], "202");
        assert_eq!(answer.body["elements"][2], refused);
        let stats = sandbox.stats();
        assert_eq!(stats.closed.get("B"), Some(&1));
        assert_eq!(stats.refused_closes.get("A"), Some(&1));
        assert_eq!(stats.refused_closes.get("GONE"), Some(&1));
        assert_eq!(stats.element_statuses.get(&409), Some(&2));
    }

    #[tokio::test]
    async fn one_jobs_documented_faults_answer_the_whole_request() {
        let sandbox = SignedInSandbox::start().await;
        let bad_url = changed("bad-url", |e| {
            e["companyApplyUrl"] = json!("jobs.example.com/apply");
        });
        let answer = sandbox.post(vec![close_element("A"), bad_url]).await;
        assert_eq!(answer.status, 400);
        let message = message_of(&answer.body);
        assert!(
            message.starts_with("Invalid company apply url for job with externalPartnerId bad-url, taskUrn urn:li:simpleJobPostingTask:"),
            "{message}"
        );
        let eight = changed("eight", |e| {
            e["alternateLocations"] = json!(vec!["Berlin"; 8])
        });
        let answer = sandbox.post(vec![eight]).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                422,
                json!({"message": "The job contains more than seven locations. Please ensure maximum seven locations per job", "status": 422})
            )
        );
        let bad_enum = changed("enum", |e| e["employmentStatus"] = json!("FULLTIME"));
        let answer = sandbox.post(vec![bad_enum]).await;
        assert_eq!(answer.status, 422);
        assert_eq!(
            answer.body["message"],
            "ERROR :: /employmentStatus :: \"FULLTIME\" is not an enum symbol"
        );
        let two_types = changed("two", |e| {
            e["workplaceTypes"] = json!(["Remote", "On-site"])
        });
        let answer = sandbox.post(vec![two_types]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"][0]["status"], 400);
        assert_eq!(
            answer.body["elements"][0]["error"]["message"],
            "The workplaceTypes field cannot have more than one value provided. Provided values [Remote, On-site]"
        );
        assert!(!sandbox.stats().closed.contains_key("A"));
    }

    #[tokio::test]
    async fn the_daily_limit_answers_429_without_retry_after_once_reached() {
        let sandbox =
            SignedInSandbox::configured(|config| config.daily_element_limit = Some(3)).await;
        assert_eq!(sandbox.close(&["A", "B"]).await.status, 200);
        assert_eq!(
            sandbox.close(&["C", "D"]).await.status,
            200,
            "under the limit when it arrived"
        );
        for _ in 0..2 {
            let answer = sandbox.close(&["E"]).await;
            assert_eq!(answer.status, 429);
            assert_eq!(answer.body["status"], 429);
            assert!(answer.headers.get("retry-after").is_none());
        }
        sandbox.set_daily_element_limit(None);
        assert_eq!(sandbox.close(&["E"]).await.status, 200);
        assert_eq!(sandbox.stats().closed.len(), 5);
    }

    #[tokio::test]
    async fn strict_mode_refuses_short_descriptions_per_element() {
        let sandbox = SignedInSandbox::configured(|config| config.strict = true).await;
        let short = changed("short", |e| e["description"] = json!("Filled."));
        let answer = sandbox.post(vec![close_element("A"), short]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["elements"][0]["status"], 202);
        assert_eq!(answer.body["elements"][1]["status"], 422);
        assert!(
            answer.body["elements"][1]["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("ERROR :: /description :: ")
        );
    }

    #[tokio::test]
    async fn outages_carry_linkedins_integration_and_contract_errors() {
        let sandbox = SignedInSandbox::start().await;
        for (fault, status, message) in [
            (
                Fault::not_enough_permissions(),
                403,
                "Not enough permissions to access: POST /simpleJobPostings",
            ),
            (
                Fault::unpermitted_fields(),
                403,
                "Unpermitted fields present in REQUEST_BODY: Data Processing Exception while processing fields [/elements]",
            ),
            (
                Fault::resource_does_not_exist(),
                404,
                "Resource simpleJobPostings does not exist",
            ),
            (
                Fault::insufficient_job_slots("urn:li:contract:1"),
                402,
                "Insufficient job slots for contract = urn:li:contract:1 for purchase flow",
            ),
            (
                Fault::insufficient_budget("urn:li:contract:1"),
                402,
                "Insufficient lifetime budget for contract: urn:li:contract:1",
            ),
            (
                Fault::contract_not_authorized("urn:li:contract:1"),
                403,
                "Caller is not authorized to access the jobs for contract: urn:li:contract:1",
            ),
        ] {
            sandbox.set_outage(Some(fault));
            for _ in 0..2 {
                let answer = sandbox.close(&["A"]).await;
                assert_eq!(
                    (answer.status, answer.body),
                    (status, json!({"message": message, "status": status}))
                );
                assert!(answer.headers.get("retry-after").is_none());
            }
        }
        sandbox.set_outage(None);
        assert_eq!(sandbox.close(&["A"]).await.status, 200);
        assert_eq!(sandbox.stats().closed.get("A"), Some(&1));
    }

    #[tokio::test]
    async fn another_restli_method_is_an_unpermitted_fields_403() {
        let sandbox = SignedInSandbox::start().await;
        let token = Some(sandbox.token.as_str());
        let answer = post_a_with(&sandbox, token, &[("x-restli-method", "create")]).await;
        assert_eq!(answer.status, 403);
        assert_eq!(answer.body["message"], UNPERMITTED_FIELDS_MESSAGE);
    }

    #[tokio::test]
    async fn rest_versions_yyyymm_dot_nn_are_served_and_stale_ones_are_426() {
        let sandbox = SignedInSandbox::start().await;
        let served = sandbox
            .post_rest(Some("202508.02"), vec![close_element("A")])
            .await;
        assert_eq!(served.status, 200);
        for (version, status) in [("202312", 426), ("2025-04", 400)] {
            let answer = sandbox
                .post_rest(Some(version), vec![close_element("B")])
                .await;
            assert_eq!(answer.status, status, "{version}");
            assert!(
                message_of(&answer.body).contains("LinkedIn-Version"),
                "{version}"
            );
        }
        assert_eq!(sandbox.stats().closed.len(), 1);
    }
}
