//! What every LinkedIn API call (`/v2/...` and `/rest/...`) passes before its handler does its own
//! work: the configured latency, the `LinkedIn-Version` header of `/rest` calls and the bearer
//! token, and the random answers a soak asks for (a 500 or 429 instead, or a stalled answer); plus
//! LinkedIn's JSON error body, which all of them answer with. [`ApiCall`] is how a
//! handler sees a call, so each endpoint has one handler for both URL families and one way of
//! answering and logging.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::scripting::RandomAnswer;
use super::state::{SandboxState, TokenValidity};

/// LinkedIn's `serviceErrorCode` for a token it does not know.
const INVALID_TOKEN_SERVICE_CODE: u32 = 65600;
/// LinkedIn's `serviceErrorCode` for a token past its lifetime.
const EXPIRED_TOKEN_SERVICE_CODE: u32 = 65602;

/// Which of LinkedIn's two URL families a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApiFamily {
    /// `/v2/...`: unversioned, what the close-jobs page documents.
    V2,
    /// `/rest/...`: requires a `LinkedIn-Version: YYYYMM` (or `YYYYMM.NN`) header.
    Rest,
}

impl ApiFamily {
    /// The family of a request path; the router only sends `/v2/...` and `/rest/...` here.
    fn of_path(path: &str) -> ApiFamily {
        if path.starts_with("/rest/") {
            ApiFamily::Rest
        } else {
            ApiFamily::V2
        }
    }
}

/// One call to LinkedIn's API as its handler sees it: the sandbox, the URL family the call came in
/// on, and its headers.
pub(crate) struct ApiCall {
    pub(crate) state: Arc<SandboxState>,
    pub(crate) family: ApiFamily,
    pub(crate) headers: HeaderMap,
}

impl FromRequestParts<Arc<SandboxState>> for ApiCall {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<SandboxState>,
    ) -> Result<ApiCall, Infallible> {
        Ok(ApiCall {
            state: Arc::clone(state),
            family: ApiFamily::of_path(parts.uri.path()),
            headers: parts.headers.clone(),
        })
    }
}

impl ApiCall {
    /// The `LinkedIn-Version` header (on `/rest`), then the bearer token: the checks every call
    /// passes after the latency, in LinkedIn's order.
    pub(crate) fn check_version_and_token(&self) -> Result<(), LinkedInError> {
        check_version_header(&self.state, self.family, &self.headers, utc_now())?;
        check_bearer_token(&self.state, &self.headers)
    }

    /// The response to send for `answer` (a refusal becomes LinkedIn's error body), logged as
    /// `endpoint`'s.
    pub(crate) fn respond(
        &self,
        endpoint: &str,
        answer: Result<Response, LinkedInError>,
    ) -> Response {
        let response = answer.unwrap_or_else(IntoResponse::into_response);
        tracing::debug!(
            status = response.status().as_u16(),
            family = ?self.family,
            "{endpoint} answered"
        );
        response
    }
}

/// A JSON answer with the given status.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A whole-request error in LinkedIn's body shape, `{"message":..,"status":..}` (plus
/// `serviceErrorCode` for token errors). Checks return this small value rather than a built
/// [`Response`], which is large to move around.
#[derive(Debug)]
pub(crate) struct LinkedInError {
    status: StatusCode,
    message: String,
    service_error_code: Option<u32>,
}

impl LinkedInError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> LinkedInError {
        LinkedInError {
            status,
            message: message.into(),
            service_error_code: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn with_service_error_code(mut self, service_error_code: u32) -> LinkedInError {
        self.service_error_code = Some(service_error_code);
        self
    }
}

impl IntoResponse for LinkedInError {
    fn into_response(self) -> Response {
        let mut body = json!({"message": self.message, "status": self.status.as_u16()});
        if let Some(code) = self.service_error_code {
            body["serviceErrorCode"] = json!(code);
        }
        json_response(self.status, body)
    }
}

/// LinkedIn's error answer, ready to send.
pub(crate) fn linkedin_error(status: StatusCode, message: &str) -> Response {
    LinkedInError::new(status, message).into_response()
}

/// Waits the configured latency; gives up with a 503 if the sandbox shuts down meanwhile, so
/// shutting down is never held up by a slow configuration.
pub(crate) async fn wait_latency(state: &SandboxState) -> Result<(), LinkedInError> {
    if state.config.latency.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(state.config.latency) => Ok(()),
        () = state.shutdown.cancelled() => Err(shutting_down()),
    }
}

/// This call's random answer ([`super::RandomFaults`]): `Err` for a 500 or a 429 in place of
/// the answer, else how long the answer is to be held back once decided (see [`hold_back`]).
pub(crate) fn draw_random_answer(state: &SandboxState) -> Result<Duration, LinkedInError> {
    match state.draw_random_answer() {
        RandomAnswer::Normal => Ok(Duration::ZERO),
        RandomAnswer::Stalled(stall) => Ok(stall),
        RandomAnswer::ServerError => Err(LinkedInError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        )),
        RandomAnswer::Throttled => Err(LinkedInError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
        )),
    }
}

/// Holds a decided answer back for `stall` (a stalled LinkedIn); the sandbox shutting down lets it
/// go at once.
pub(crate) async fn hold_back(state: &SandboxState, stall: Duration) {
    if stall.is_zero() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(stall) => {}
        () = state.shutdown.cancelled() => {}
    }
}

/// The answer to requests still held when the sandbox stops.
pub(crate) fn shutting_down() -> LinkedInError {
    LinkedInError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The LinkedIn sandbox is shutting down",
    )
}

/// The calendar facts a request is judged by: which UTC day it is (for the daily limit) and which
/// month (for the versions LinkedIn serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcNow {
    /// Days since the Unix epoch; the daily limit resets when it changes, at 00:00 UTC.
    pub(crate) day_number: u64,
    /// The current month as `YYYYMM`.
    pub(crate) year_month: u32,
}

pub(crate) fn utc_now() -> UtcNow {
    let now = time::OffsetDateTime::now_utc();
    let year = u32::try_from(now.year()).unwrap_or(0);
    UtcNow {
        day_number: u64::try_from(now.unix_timestamp() / 86_400).unwrap_or(0),
        year_month: year * 100 + u32::from(u8::from(now.month())),
    }
}

/// Checks (and records) the `LinkedIn-Version` header that `/rest` calls must carry: `YYYYMM` or
/// `YYYYMM.NN`, a month LinkedIn still serves (from the configured oldest to the current one).
fn check_version_header(
    state: &SandboxState,
    family: ApiFamily,
    headers: &HeaderMap,
    now: UtcNow,
) -> Result<(), LinkedInError> {
    if family == ApiFamily::V2 {
        return Ok(());
    }
    let Some(version) = headers.get("linkedin-version") else {
        tracing::debug!(status = 400, "rest call without LinkedIn-Version header");
        return Err(LinkedInError::new(
            StatusCode::BAD_REQUEST,
            "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
        ));
    };
    let version = String::from_utf8_lossy(version.as_bytes());
    state.record_linkedin_version(&version);
    judge_version(&version, state.config.oldest_linkedin_version, now)
}

/// The pure part of [`check_version_header`].
pub(crate) fn judge_version(
    version: &str,
    oldest_served: u32,
    now: UtcNow,
) -> Result<(), LinkedInError> {
    let Some(month) = version_month(version) else {
        tracing::debug!(status = 400, version, "malformed LinkedIn-Version header");
        return Err(LinkedInError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid version format: {version}. The LinkedIn-Version header must be YYYYMM or YYYYMM.NN."
            ),
        ));
    };
    if month < oldest_served || month > now.year_month {
        tracing::debug!(status = 426, version, "LinkedIn-Version not served");
        return Err(LinkedInError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "Requested version {version} is not active. Set the LinkedIn-Version header to an active version (from {oldest_served} to {}).",
                now.year_month
            ),
        ));
    }
    Ok(())
}

/// The `YYYYMM` of a `YYYYMM` or `YYYYMM.NN` version, or `None` when it is neither.
fn version_month(version: &str) -> Option<u32> {
    let (month_part, revision) = match version.split_once('.') {
        Some((month_part, revision)) => (month_part, Some(revision)),
        None => (version, None),
    };
    let all_digits = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !all_digits(month_part, 6) || revision.is_some_and(|revision| !all_digits(revision, 2)) {
        return None;
    }
    let year_month: u32 = month_part.parse().ok()?;
    matches!(year_month % 100, 1..=12).then_some(year_month)
}

/// Checks the `Authorization: Bearer ...` header against the tokens this sandbox issued.
fn check_bearer_token(state: &SandboxState, headers: &HeaderMap) -> Result<(), LinkedInError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_credentials);
    let validity = match token {
        Some(token) => state.token_validity(token),
        None => TokenValidity::Unknown,
    };
    match validity {
        TokenValidity::Valid => Ok(()),
        TokenValidity::Unknown => {
            tracing::debug!(
                status = 401,
                header_present = token.is_some(),
                "invalid access token"
            );
            Err(
                LinkedInError::new(StatusCode::UNAUTHORIZED, "Invalid access token")
                    .with_service_error_code(INVALID_TOKEN_SERVICE_CODE),
            )
        }
        TokenValidity::Expired => {
            tracing::debug!(status = 401, "expired access token");
            Err(LinkedInError::new(
                StatusCode::UNAUTHORIZED,
                "The token used in the request has expired",
            )
            .with_service_error_code(EXPIRED_TOKEN_SERVICE_CODE))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme name is case-insensitive).
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Adds a `Retry-After: secs` header.
pub(crate) fn with_retry_after(mut response: Response, retry_after_secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECEMBER_2026: UtcNow = UtcNow {
        day_number: 20_788,
        year_month: 202_612,
    };

    #[test]
    fn versions_are_yyyymm_or_yyyymm_dot_nn() {
        assert_eq!(version_month("202405"), Some(202_405));
        assert_eq!(version_month("202508.02"), Some(202_508));
        for malformed in [
            "202413",
            "202400",
            "2024-05",
            "20240",
            "",
            "202405.",
            "202405.2",
            "202405.123",
            "202405.ab",
            "v202405",
            "2024051",
        ] {
            assert_eq!(version_month(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn a_malformed_version_is_a_400_naming_the_header() {
        let error = judge_version("2025-04", 202_401, DECEMBER_2026).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.message().contains("LinkedIn-Version"), "{error:?}");
    }

    #[test]
    fn versions_linkedin_no_longer_or_not_yet_serves_are_a_426_naming_the_header() {
        assert!(judge_version("202401", 202_401, DECEMBER_2026).is_ok());
        assert!(judge_version("202612.01", 202_401, DECEMBER_2026).is_ok());
        for unserved in ["202312", "202312.05", "202701"] {
            let error = judge_version(unserved, 202_401, DECEMBER_2026).unwrap_err();
            assert_eq!(error.status(), StatusCode::UPGRADE_REQUIRED, "{unserved}");
            assert!(error.message().contains("LinkedIn-Version"), "{error:?}");
        }
    }

    #[test]
    fn utc_now_is_today() {
        let now = utc_now();
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.day_number.abs_diff(seconds / 86_400) <= 1);
        assert!(now.year_month > 202_500 && now.year_month % 100 <= 12);
    }

    #[test]
    fn the_family_is_the_first_path_segment() {
        assert_eq!(
            ApiFamily::of_path("/rest/simpleJobPostings"),
            ApiFamily::Rest
        );
        assert_eq!(ApiFamily::of_path("/v2/simpleJobPostings"), ApiFamily::V2);
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearer "), None);
        assert_eq!(bearer_credentials("Bearer"), None);
    }
}
