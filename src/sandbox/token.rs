//! The OAuth 2.0 client-credentials token endpoint (`POST /oauth/v2/accessToken`): checks the
//! form-encoded credentials the way LinkedIn does and issues tokens that expire after the
//! configured lifetime. Tokens and secrets never reach the log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::api_gate::json_response;
use super::state::SandboxState;

type TokenForm = Result<Form<HashMap<String, String>>, FormRejection>;

/// A refused token request, answered as OAuth does: `{"error":..,"error_description":..}`.
struct OAuthRefusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthRefusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthRefusal {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthRefusal::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for OAuthRefusal {
    fn into_response(self) -> Response {
        tracing::debug!(
            status = self.status.as_u16(),
            error = self.error,
            "token request refused"
        );
        json_response(
            self.status,
            json!({"error": self.error, "error_description": self.description}),
        )
    }
}

pub(crate) async fn issue_access_token(
    State(state): State<Arc<SandboxState>>,
    uri: Uri,
    form: TokenForm,
) -> Response {
    state.count_token_request();
    match check_token_request(&state, &uri, form) {
        Ok(()) => access_token_answer(&state),
        Err(refusal) => refusal.into_response(),
    }
}

/// LinkedIn's checks, in its order: outage, a secret in the URL, the form, the grant type, the
/// client's credentials.
fn check_token_request(
    state: &SandboxState,
    uri: &Uri,
    form: TokenForm,
) -> Result<(), OAuthRefusal> {
    check_token_outage(state)?;
    check_secret_not_in_url(uri)?;
    let Form(fields) = form.map_err(|rejection| {
        OAuthRefusal::invalid_request(format!(
            "Expected an application/x-www-form-urlencoded body: {}",
            rejection.body_text()
        ))
    })?;
    check_grant_type(&fields)?;
    check_client_credentials(state, &fields)
}

fn check_token_outage(state: &SandboxState) -> Result<(), OAuthRefusal> {
    let Some(status) = state.token_outage() else {
        return Ok(());
    };
    Err(OAuthRefusal::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        "temporarily_unavailable",
        "The authorization server is temporarily unavailable (sandbox token outage)",
    ))
}

/// URLs end up in proxy and server logs, so LinkedIn refuses a secret there even if correct.
fn check_secret_not_in_url(uri: &Uri) -> Result<(), OAuthRefusal> {
    let query_names_secret = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(pairs)| pairs.iter().any(|(name, _)| name == "client_secret"))
        .unwrap_or(false);
    if !query_names_secret {
        return Ok(());
    }
    Err(OAuthRefusal::invalid_request(
        "client_secret must be sent in the request body, never in the URL",
    ))
}

fn check_grant_type(fields: &HashMap<String, String>) -> Result<(), OAuthRefusal> {
    match fields.get("grant_type").map(String::as_str) {
        Some("client_credentials") => Ok(()),
        Some(_) => Err(OAuthRefusal::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only grant_type=client_credentials is supported",
        )),
        None => Err(OAuthRefusal::invalid_request(
            "A required parameter \"grant_type\" is missing",
        )),
    }
}

fn check_client_credentials(
    state: &SandboxState,
    fields: &HashMap<String, String>,
) -> Result<(), OAuthRefusal> {
    let credentials_match = fields.get("client_id") == Some(&state.config.client_id)
        && fields.get("client_secret") == Some(&state.client_secret());
    if credentials_match {
        return Ok(());
    }
    Err(OAuthRefusal::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed",
    ))
}

/// A new token and its lifetime, as a number or (configured) as LinkedIn's sample string.
fn access_token_answer(state: &SandboxState) -> Response {
    let access_token = state.issue_token();
    let lifetime_secs = state.config.token_lifetime.as_secs();
    tracing::debug!(lifetime_secs, "access token issued");
    let expires_in = if state.config.expires_in_as_string {
        json!(lifetime_secs.to_string())
    } else {
        json!(lifetime_secs)
    };
    json_response(
        StatusCode::OK,
        json!({"access_token": access_token, "expires_in": expires_in}),
    )
}

#[cfg(test)]
mod tests {
    use crate::sandbox::SandboxConfig;
    use crate::sandbox::test_support::{
        GOOD_TOKEN_FIELDS, http_client, post_token_form, start_default, start_with, token_form,
    };
    use serde_json::json;

    #[tokio::test]
    async fn good_credentials_get_a_token_with_numeric_lifetime() {
        let sandbox = start_default().await;
        let (status, answer) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 200);
        assert_eq!(answer["expires_in"], json!(1800));
        assert!(answer["access_token"].as_str().unwrap().len() >= 32);
        assert_eq!(sandbox.stats().tokens_issued, 1);
    }

    #[tokio::test]
    async fn secrets_with_reserved_characters_work_when_form_encoded() {
        let sandbox = start_with(SandboxConfig {
            client_secret: "a/b=c+d&e".to_owned(),
            expires_in_as_string: true,
            token_lifetime: std::time::Duration::from_secs(60),
            ..SandboxConfig::default()
        })
        .await;
        let fields = token_form("client_credentials", "sandbox-client", "a/b=c+d&e");
        let (status, answer) = post_token_form(&sandbox.token_url(), &fields).await;
        assert_eq!(status, 200);
        assert_eq!(answer["expires_in"], json!("60"));
    }

    #[tokio::test]
    async fn wrong_or_missing_credentials_are_invalid_client() {
        let sandbox = start_default().await;
        let wrong_secret = token_form("client_credentials", "sandbox-client", "wrong");
        let grant_type_only = [("grant_type", "client_credentials")];
        for body in [&wrong_secret[..], &grant_type_only[..]] {
            let (status, answer) = post_token_form(&sandbox.token_url(), body).await;
            assert_eq!(status, 401);
            assert_eq!(
                answer,
                json!({"error": "invalid_client", "error_description": "Client authentication failed"})
            );
        }
        let stats = sandbox.stats();
        assert_eq!(stats.token_requests, 2);
        assert_eq!(stats.tokens_issued, 0);
    }

    #[tokio::test]
    async fn a_rotated_secret_refuses_the_old_one_and_expires_its_tokens() {
        let sandbox = start_default().await;
        let (status, answer) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 200);
        let old_token = answer["access_token"].as_str().unwrap().to_owned();
        sandbox.rotate_client_secret("rotated/+=");
        let (status, answer) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 401);
        assert_eq!(
            answer,
            json!({"error": "invalid_client", "error_description": "Client authentication failed"})
        );
        let rotated = token_form("client_credentials", "sandbox-client", "rotated/+=");
        let (status, _) = post_token_form(&sandbox.token_url(), &rotated).await;
        assert_eq!(status, 200);
        assert_eq!(sandbox.config().client_secret, "rotated/+=");
        assert_eq!(
            sandbox.state.token_validity(&old_token),
            crate::sandbox::state::TokenValidity::Expired
        );
    }

    #[tokio::test]
    async fn wrong_grant_type_is_unsupported() {
        let sandbox = start_default().await;
        let password_grant = token_form("password", "sandbox-client", "sandbox-secret");
        let (status, answer) = post_token_form(&sandbox.token_url(), &password_grant).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"], "unsupported_grant_type");
    }

    #[tokio::test]
    async fn secret_in_the_url_is_refused_even_when_correct() {
        let sandbox = start_default().await;
        let url = format!(
            "{}?grant_type=client_credentials&client_id=sandbox-client&client_secret=sandbox-secret",
            sandbox.token_url()
        );
        let (status, answer) = post_token_form(&url, &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"], "invalid_request");
        assert_eq!(sandbox.stats().tokens_issued, 0);
    }

    #[tokio::test]
    async fn json_body_is_not_a_form() {
        let sandbox = start_default().await;
        let response = http_client()
            .post(sandbox.token_url())
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn token_outage_answers_its_status_until_lifted() {
        let sandbox = start_default().await;
        sandbox.set_token_outage(Some(503));
        let (status, answer) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 503);
        assert_eq!(answer["error"], "temporarily_unavailable");
        sandbox.set_token_outage(None);
        let (status, _) = post_token_form(&sandbox.token_url(), &GOOD_TOKEN_FIELDS).await;
        assert_eq!(status, 200);
        let stats = sandbox.stats();
        assert_eq!(stats.token_requests, 2);
        assert_eq!(stats.tokens_issued, 1);
    }
}
