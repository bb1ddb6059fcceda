//! Helpers the sandbox's own unit tests share: starting a sandbox on a free port, getting a token
//! and talking to each endpoint the way job-closer does. Most tests start from a
//! [`SignedInSandbox`] (a sandbox and a token from it) and post with [`SignedInSandbox::close`].

use std::ops::Deref;

use reqwest::RequestBuilder;
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

/// The form fields of a token request: `grant_type`, `client_id` and `client_secret`.
pub(crate) const fn token_form<'a>(
    grant_type: &'a str,
    client_id: &'a str,
    client_secret: &'a str,
) -> [(&'static str, &'a str); 3] {
    [
        ("grant_type", grant_type),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ]
}

/// The form fields of a good token request to a sandbox with the default configuration.
pub(crate) const GOOD_TOKEN_FIELDS: [(&str, &str); 3] =
    token_form("client_credentials", "sandbox-client", "sandbox-secret");

/// POSTs `fields` form-encoded to `url` (a token endpoint); returns the status and the JSON body
/// every answer of the token endpoint has.
pub(crate) async fn post_token_form(url: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let response = http_client().post(url).form(fields).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A token from the sandbox's token endpoint, using its configured credentials.
pub(crate) async fn access_token(sandbox: &Sandbox) -> String {
    let config = sandbox.config();
    let fields = token_form(
        "client_credentials",
        &config.client_id,
        &config.client_secret,
    );
    let (status, answer) = post_token_form(&sandbox.token_url(), &fields).await;
    assert_eq!(status, 200);
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

/// [`close_element`]s for `external_job_posting_ids`, in order.
pub(crate) fn close_elements(external_job_posting_ids: &[&str]) -> Vec<Value> {
    external_job_posting_ids
        .iter()
        .map(|id| close_element(id))
        .collect()
}

/// `request` made a batch_create of `elements` with `token`, as job-closer sends one.
fn authorized_batch_create(
    request: RequestBuilder,
    token: &str,
    elements: Vec<Value>,
) -> RequestBuilder {
    request
        .bearer_auth(token)
        .header("x-restli-method", "batch_create")
        .json(&json!({"elements": elements}))
}

/// A sandbox's answer to a batch_create: the status, the JSON body (`Null` when it is not JSON)
/// and the headers.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: HeaderMap,
}

impl Answer {
    pub(crate) async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }
}

/// A running sandbox (default configuration unless [`SignedInSandbox::configured`] otherwise)
/// and a token from its token endpoint: where most tests start. Derefs to the [`Sandbox`], for
/// its knobs and stats.
pub(crate) struct SignedInSandbox {
    pub(crate) sandbox: Sandbox,
    pub(crate) token: String,
}

impl Deref for SignedInSandbox {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl SignedInSandbox {
    pub(crate) async fn start() -> SignedInSandbox {
        SignedInSandbox::configured(|_| {}).await
    }

    /// A sandbox whose configuration is the default one after `change`.
    pub(crate) async fn configured(change: impl FnOnce(&mut SandboxConfig)) -> SignedInSandbox {
        let mut config = SandboxConfig::default();
        change(&mut config);
        let sandbox = start_with(config).await;
        let token = access_token(&sandbox).await;
        SignedInSandbox { sandbox, token }
    }

    /// The same sandbox, signed in with `token` instead.
    pub(crate) fn with_token(self, token: impl Into<String>) -> SignedInSandbox {
        SignedInSandbox {
            token: token.into(),
            ..self
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.api_url())
    }

    /// A bare POST to `/v2/simpleJobPostings`, for tests of what [`Self::batch_request`] sets.
    pub(crate) fn postings_request(&self) -> RequestBuilder {
        http_client().post(self.url("/v2/simpleJobPostings"))
    }

    /// A proper batch_create of `elements` to `/v2/simpleJobPostings`, not sent yet.
    pub(crate) fn batch_request(&self, elements: Vec<Value>) -> RequestBuilder {
        authorized_batch_create(self.postings_request(), &self.token, elements)
    }

    /// POSTs `elements` to `/v2/simpleJobPostings` as a proper batch_create.
    pub(crate) async fn post(&self, elements: Vec<Value>) -> Answer {
        Answer::read(self.batch_request(elements).send().await.unwrap()).await
    }

    /// POSTs a [`close_element`] for each of `external_job_posting_ids`.
    pub(crate) async fn close(&self, external_job_posting_ids: &[&str]) -> Answer {
        self.post(close_elements(external_job_posting_ids)).await
    }

    /// Like [`Self::post`], to `/rest/simpleJobPostings` and with an optional `LinkedIn-Version`.
    pub(crate) async fn post_rest(
        &self,
        linkedin_version: Option<&str>,
        elements: Vec<Value>,
    ) -> Answer {
        let request = http_client().post(self.url("/rest/simpleJobPostings"));
        let mut request = authorized_batch_create(request, &self.token, elements);
        if let Some(version) = linkedin_version {
            request = request.header("LinkedIn-Version", version);
        }
        Answer::read(request.send().await.unwrap()).await
    }

    /// The task URNs of the answer to CLOSEs of `external_job_posting_ids`, which must be a 200.
    pub(crate) async fn accepted_tasks(&self, external_job_posting_ids: &[&str]) -> Vec<String> {
        let answer = self.close(external_job_posting_ids).await;
        assert_eq!(answer.status, 200);
        answer.body["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Looks `task_ids` up at `/v2/simpleJobPostingTasks` with `token`; returns the status and the
    /// JSON body every answer of the endpoint has.
    pub(crate) async fn query_tasks_as(&self, token: &str, task_ids: &[String]) -> (u16, Value) {
        let query: Vec<(&str, &str)> = task_ids.iter().map(|id| ("ids", id.as_str())).collect();
        let response = http_client()
            .get(self.url("/v2/simpleJobPostingTasks"))
            .bearer_auth(token)
            .query(&query)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// [`Self::query_tasks_as`] with the sandbox's token.
    pub(crate) async fn query_tasks(&self, task_ids: &[String]) -> (u16, Value) {
        self.query_tasks_as(&self.token, task_ids).await
    }

    /// POSTs `body` to the control route `/_sandbox/{path}`; returns the status.
    pub(crate) async fn control(&self, path: &str, body: Value) -> u16 {
        let request = http_client().post(self.url(&format!("/_sandbox/{path}")));
        request.json(&body).send().await.unwrap().status().as_u16()
    }

    /// POSTs to the control route `/_sandbox/{path}` without a body; returns the status.
    pub(crate) async fn control_without_body(&self, path: &str) -> u16 {
        let request = http_client().post(self.url(&format!("/_sandbox/{path}")));
        request.send().await.unwrap().status().as_u16()
    }

    pub(crate) async fn shutdown(self) {
        self.sandbox.shutdown().await;
    }
}
