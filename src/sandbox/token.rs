//! The OAuth 2.0 client-credentials token endpoint (`POST /oauth/v2/accessToken`): checks the
//! form-encoded credentials the way LinkedIn does and issues tokens that expire after the
//! configured lifetime. Tokens and secrets never reach the log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::api_gate::json_response;
use super::state::SandboxState;

/// An OAuth error answer: `{"error":..,"error_description":..}`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    tracing::debug!(status = status.as_u16(), error, "token request refused");
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

pub(crate) async fn issue_access_token(
    State(state): State<Arc<SandboxState>>,
    uri: Uri,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    state.count_token_request();

    if let Some(status) = state.token_outage() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return oauth_error(
            status,
            "temporarily_unavailable",
            "The authorization server is temporarily unavailable (sandbox token outage)",
        );
    }

    // URLs end up in proxy and server logs, so LinkedIn refuses a secret there even if correct.
    let query_names_secret = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs.iter().any(|(name, _)| name == "client_secret"))
        .unwrap_or(false);
    if query_names_secret {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_secret must be sent in the request body, never in the URL",
        );
    }

    let Form(fields) = match form {
        Ok(form) => form,
        Err(rejection) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "Expected an application/x-www-form-urlencoded body: {}",
                    rejection.body_text()
                ),
            );
        }
    };

    match fields.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=client_credentials is supported",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "A required parameter \"grant_type\" is missing",
            );
        }
    }

    let credentials_match = fields.get("client_id") == Some(&state.config.client_id)
        && fields.get("client_secret") == Some(&state.config.client_secret);
    if !credentials_match {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }

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
    use crate::sandbox::test_support::{http_client, start_default, start_with};
    use serde_json::{Value, json};

    const GOOD_FIELDS: [(&str, &str); 3] = [
        ("grant_type", "client_credentials"),
        ("client_id", "sandbox-client"),
        ("client_secret", "sandbox-secret"),
    ];

    async fn post_form(url: &str, fields: &[(&str, &str)]) -> (u16, Value) {
        let response = http_client().post(url).form(fields).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    #[tokio::test]
    async fn good_credentials_get_a_token_with_numeric_lifetime() {
        let sandbox = start_default().await;
        let (status, answer) = post_form(&sandbox.token_url(), &GOOD_FIELDS).await;
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
        let response = http_client()
            .post(sandbox.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "a/b=c+d&e"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["expires_in"], json!("60"));
    }

    #[tokio::test]
    async fn wrong_or_missing_credentials_are_invalid_client() {
        let sandbox = start_default().await;
        for body in [
            Vec::from([
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "wrong"),
            ]),
            Vec::from([("grant_type", "client_credentials")]),
        ] {
            let (status, answer) = post_form(&sandbox.token_url(), &body).await;
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
    async fn wrong_grant_type_is_unsupported() {
        let sandbox = start_default().await;
        let body = Vec::from([
            ("grant_type", "password"),
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-secret"),
        ]);
        let (status, answer) = post_form(&sandbox.token_url(), &body).await;
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
        let (status, answer) = post_form(&url, &GOOD_FIELDS).await;
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
        let (status, answer) = post_form(&sandbox.token_url(), &GOOD_FIELDS).await;
        assert_eq!(status, 503);
        assert_eq!(answer["error"], "temporarily_unavailable");
        sandbox.set_token_outage(None);
        let (status, _) = post_form(&sandbox.token_url(), &GOOD_FIELDS).await;
        assert_eq!(status, 200);
        let stats = sandbox.stats();
        assert_eq!(stats.token_requests, 2);
        assert_eq!(stats.tokens_issued, 1);
    }
}
