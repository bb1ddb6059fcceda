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

/// LinkedIn's error body: `{"message":..,"status":..}`.
pub(crate) fn linkedin_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "status": status.as_u16()}),
    )
}

fn linkedin_error_with_service_code(
    status: StatusCode,
    message: &str,
    service_error_code: u32,
) -> Response {
    json_response(
        status,
        json!({
            "message": message,
            "serviceErrorCode": service_error_code,
            "status": status.as_u16(),
        }),
    )
}

/// Waits the configured latency; gives up with a 503 if the sandbox shuts down meanwhile, so
/// shutting down is never held up by a slow configuration.
pub(crate) async fn wait_latency(state: &SandboxState) -> Result<(), Response> {
    if state.config.latency.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(state.config.latency) => Ok(()),
        () = state.shutdown.cancelled() => Err(shutting_down()),
    }
}

/// The answer to requests still held when the sandbox stops.
pub(crate) fn shutting_down() -> Response {
    linkedin_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The LinkedIn sandbox is shutting down",
    )
}

/// Checks (and records) the `LinkedIn-Version` header that `/rest` calls must carry.
pub(crate) fn check_version_header(
    state: &SandboxState,
    family: ApiFamily,
    headers: &HeaderMap,
) -> Result<(), Response> {
    if family == ApiFamily::V2 {
        return Ok(());
    }
    let Some(version) = headers.get("linkedin-version") else {
        tracing::debug!(status = 400, "rest call without LinkedIn-Version header");
        return Err(linkedin_error(
            StatusCode::BAD_REQUEST,
            "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
        ));
    };
    let version = String::from_utf8_lossy(version.as_bytes());
    state.record_linkedin_version(&version);
    if !is_year_month(&version) {
        tracing::debug!(status = 400, version = %version, "malformed LinkedIn-Version header");
        return Err(linkedin_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid version format: {version}. The LinkedIn-Version header must be YYYYMM."),
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
pub(crate) fn check_bearer_token(state: &SandboxState, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
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
            Err(linkedin_error_with_service_code(
                StatusCode::UNAUTHORIZED,
                "Invalid access token",
                INVALID_TOKEN_SERVICE_CODE,
            ))
        }
        TokenValidity::Expired => {
            tracing::debug!(status = 401, "expired access token");
            Err(linkedin_error_with_service_code(
                StatusCode::UNAUTHORIZED,
                "The token used in the request has expired",
                EXPIRED_TOKEN_SERVICE_CODE,
            ))
        }
    }
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
}
