//! Talking to LinkedIn's Job Posting API: building a `batch_create` request from validated elements,
//! sending it with the shared token, and handing the answer to [`classify`]; asking how close tasks
//! ended ([`lookup`]); the shared token ([`token`]). Every request LinkedIn sees is made here, and
//! every answer becomes an [`classify::Outcome`] here.
//!
//! Nothing here retries or sleeps; the worker decides that from the classified outcome. (The task
//! lookup used to live with the pending checks in `tasks/`; it is a LinkedIn request like the close,
//! with the same transport failures, so it sits beside it.)

pub(crate) mod classify;
pub(crate) mod lookup;
pub(crate) mod token;

use crate::config::{Credentials, LinkedInArgs};
use crate::telemetry::spans;
use bytes::Bytes;
use classify::{Answer, Failure, RequestOutcome};
use std::time::{Duration, SystemTime};
use token::{AccessToken, ClientSecret, HttpTokenSource, TokenCache, describe_transport_error};

/// The HTTP client, endpoints and shared token for one worker.
pub(crate) struct LinkedInClient {
    http: reqwest::Client,
    postings_url: String,
    tasks_url: String,
    api_version: Option<String>,
    pub(crate) tokens: TokenCache<HttpTokenSource>,
}

impl LinkedInClient {
    pub(crate) fn new(args: &LinkedInArgs, credentials: Credentials) -> reqwest::Result<Self> {
        let http = http_client(args.http_timeout())?;
        let source = HttpTokenSource::new(
            http.clone(),
            args.linkedin_token_url.clone(),
            credentials.client_id,
            ClientSecret::of(credentials.client_secret, credentials.secret_file),
        );
        Ok(LinkedInClient {
            http,
            postings_url: args.postings_url(),
            tasks_url: args.tasks_url(),
            api_version: args.linkedin_api_version.clone(),
            tokens: TokenCache::new(source),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `{url}/v2/simpleJobPostings`, or the versioned `/rest` path.
    pub(crate) fn postings_url(&self) -> &str {
        &self.postings_url
    }

    /// `{url}/v2/simpleJobPostingTasks`, or the versioned `/rest` path.
    pub(crate) fn tasks_url(&self) -> &str {
        &self.tasks_url
    }

    pub(crate) fn api_version(&self) -> Option<&str> {
        self.api_version.as_deref()
    }

    /// Posts one `batch_create` and classifies the answer; a transport failure is a retry.
    pub(crate) async fn close_batch<'a>(
        &self,
        token: &AccessToken,
        elements: impl ExactSizeIterator<Item = &'a Bytes>,
    ) -> RequestOutcome {
        let sent = elements.len();
        let body = request_body(elements);
        let mut request = self
            .http
            .post(&self.postings_url)
            .header(reqwest::header::AUTHORIZATION, token.bearer())
            .header("x-restli-method", "batch_create")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(version) = &self.api_version {
            request = request.header("LinkedIn-Version", version);
        }
        let answer = match fetch(request).await {
            Ok(answer) => answer,
            Err(error) => return transport_failure(&error),
        };
        classify::classify(
            Answer {
                status: answer.status,
                retry_after: answer.retry_after.as_deref(),
                body: &answer.body,
            },
            sent,
            SystemTime::now(),
        )
    }
}

/// An HTTP answer, read whole.
pub(crate) struct RawAnswer {
    pub(crate) status: u16,
    /// The raw `Retry-After` header, if any.
    pub(crate) retry_after: Option<String>,
    pub(crate) body: bytes::Bytes,
}

/// Sends a request and reads its answer; an error is a transport failure (timeout, connection).
/// The status goes on the current span (the request's CLIENT span, when tracing).
pub(crate) async fn fetch(request: reqwest::RequestBuilder) -> reqwest::Result<RawAnswer> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    spans::answered(status);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    Ok(RawAnswer {
        status,
        retry_after,
        body,
    })
}

/// One client for the worker's lifetime: connections are kept alive between requests. Proxies follow
/// [`crate::http_proxy`]: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, never for loopback. TLS keeps the
/// platform's roots: the broker's `AMQP_TLS_CA_FILE` is never added here.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    crate::http_proxy::ProxyRules::from_env()
        .apply(reqwest::Client::builder())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        // A redirected POST would silently turn into a GET; better to see the 3xx.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("job-closer/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A timeout reads as 408 and a connection failure as 503 in dead letters: HTTP-style statuses for
/// what never got an HTTP answer.
pub(crate) fn transport_failure<A>(error: &reqwest::Error) -> classify::Outcome<A> {
    let status = if error.is_timeout() { 408 } else { 503 };
    spans::no_answer(if error.is_timeout() {
        "timeout"
    } else {
        "transport"
    });
    classify::Outcome::Retry {
        retry_after: None,
        failure: Failure::new(status, describe_transport_error(error)),
    }
}

/// `{"elements":[e1,e2,...]}` from the validated raw elements, without re-serialising them.
pub(crate) fn request_body<'a>(elements: impl Iterator<Item = &'a Bytes>) -> Vec<u8> {
    let elements: Vec<&Bytes> = elements.collect();
    let size = 16 + elements.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"elements\":[");
    for (index, element) in elements.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(element);
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_elements_spliced_together() {
        let elements = [
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b" {\"b\":2}\n"),
        ];
        let body = request_body(elements.iter());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"elements": [{"a": 1}, {"b": 2}]})
        );
        assert_eq!(request_body([].iter()), b"{\"elements\":[]}");
    }
}
