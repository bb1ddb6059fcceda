//! Helpers the sandbox's own unit tests share: starting a sandbox on a free port, getting a token
//! and posting batches the way job-closer does.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{Sandbox, SandboxConfig};

/// An HTTP client for talking to a sandbox. The sandbox speaks plain HTTP, so the client skips
/// loading the platform's root certificates, which costs tens of milliseconds per client.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .expect("an HTTP client without TLS roots builds")
}

pub(crate) async fn start_with(config: SandboxConfig) -> Sandbox {
    Sandbox::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("sandbox starts on a free port")
}

pub(crate) async fn start_default() -> Sandbox {
    start_with(SandboxConfig::default()).await
}

/// A token from the sandbox's token endpoint, using its configured credentials.
pub(crate) async fn access_token(sandbox: &Sandbox) -> String {
    let config = sandbox.config();
    let response = http_client()
        .post(sandbox.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

/// A description of the spec's minimum length, so the sandbox's own tests pass in strict mode too.
pub(crate) const DESCRIPTION: &str = "We are hiring a backend engineer to build and run distributed systems. This position has been filled; thank you for applying.";

/// A complete, valid premium CLOSE element for contract `urn:li:contract:1`, conformant to the
/// spec (absolute https apply URL, description of 100+ characters, a company context).
pub(crate) fn close_element(external_job_posting_id: &str) -> Value {
    json!({
        "listingType": "PREMIUM",
        "companyApplyUrl": format!("https://jobs.example.com/apply/{external_job_posting_id}"),
        "contract": "urn:li:contract:1",
        "industries": ["urn:li:industry:55"],
        "externalJobPostingId": external_job_posting_id,
        "description": DESCRIPTION,
        "listedAt": 1_700_000_000_000_u64,
        "title": format!("Job {external_job_posting_id}"),
        "integrationContext": "urn:li:organization:2",
        "location": "San Francisco, California",
        "jobPostingOperationType": "CLOSE",
    })
}

/// POSTs `elements` to `/v2/simpleJobPostings` as a proper batch_create; returns the status, the
/// JSON body (`Null` when it is not JSON) and the headers.
pub(crate) async fn post_batch(
    sandbox: &Sandbox,
    token: &str,
    elements: Vec<Value>,
) -> (u16, Value, HeaderMap) {
    let url = format!("{}/v2/simpleJobPostings", sandbox.api_url());
    post_batch_with(&url, token, None, elements).await
}

/// Like [`post_batch`], to any URL and with an optional `LinkedIn-Version` header.
pub(crate) async fn post_batch_with(
    url: &str,
    token: &str,
    linkedin_version: Option<&str>,
    elements: Vec<Value>,
) -> (u16, Value, HeaderMap) {
    let mut request = http_client()
        .post(url)
        .bearer_auth(token)
        .header("x-restli-method", "batch_create")
        .json(&json!({"elements": elements}));
    if let Some(version) = linkedin_version {
        request = request.header("LinkedIn-Version", version);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}
