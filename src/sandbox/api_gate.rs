//! What every LinkedIn API call (`/v2/...` and `/rest/...`) passes before its handler does its own
//! work: the configured latency, the `LinkedIn-Version` header of `/rest` calls and the bearer
//! token; plus LinkedIn's JSON error body, which all of them answer with.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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
    /// `/rest/...`: requires a `LinkedIn-Version: YYYYMM` header.
    Rest,
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
    pub fn new(status: StatusCode, message: impl Into<String>) -> LinkedInError {
        LinkedInError {
            status,
            message: message.into(),
            service_error_code: None,
        }
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

/// The answer to requests still held when the sandbox stops.
pub(crate) fn shutting_down() -> LinkedInError {
    LinkedInError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The LinkedIn sandbox is shutting down",
    )
}

/// Checks (and records) the `LinkedIn-Version` header that `/rest` calls must carry.
pub(crate) fn check_version_header(
    state: &SandboxState,
    family: ApiFamily,
    headers: &HeaderMap,
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
    if !is_year_month(&version) {
        tracing::debug!(status = 400, version = %version, "malformed LinkedIn-Version header");
        return Err(LinkedInError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid version format: {version}. The LinkedIn-Version header must be YYYYMM."
            ),
        ));
    }
    Ok(())
}

/// Whether `version` looks like `YYYYMM`.
fn is_year_month(version: &str) -> bool {
    let digits_only = version.len() == 6 && version.bytes().all(|byte| byte.is_ascii_digit());
    let month = version.get(4..).and_then(|month| month.parse::<u8>().ok());
    digits_only && matches!(month, Some(1..=12))
}

/// Checks the `Authorization: Bearer ...` header against the tokens this sandbox issued.
pub(crate) fn check_bearer_token(
    state: &SandboxState,
    headers: &HeaderMap,
) -> Result<(), LinkedInError> {
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

    #[test]
    fn year_month_versions() {
        assert!(is_year_month("202405"));
        assert!(!is_year_month("202413"));
        assert!(!is_year_month("2024-05"));
        assert!(!is_year_month("20240"));
        assert!(!is_year_month(""));
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
