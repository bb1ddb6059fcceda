//! The one shared OAuth token: fetched lazily, reused by every request, renewed shortly before it
//! expires or when LinkedIn says it is no longer good — and never more than one fetch at a time.
//!
//! LinkedIn asks for exactly this ("use same access token for all concurrent and consecutive calls ...
//! only on expiry of the existing token, new token should be generated"). The cache holds an async
//! mutex across the fetch, so a hundred requests that find the token stale wait for one fetch and share
//! its result. Where tokens come from is a trait, so the caching is tested on tokio's paused clock.

use crate::config::Secret;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A bearer token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn new(value: impl Into<Arc<str>>) -> Self {
        AccessToken(value.into())
    }

    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// A token as the token endpoint hands it out.
#[derive(Clone, Debug)]
pub(crate) struct FreshToken {
    pub(crate) token: AccessToken,
    pub(crate) lifetime: Duration,
}

/// Why no token could be had. Either way the worker waits and tries again: messages are never blamed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// The endpoint refused the credentials (400/401): an operator must fix the configuration.
    #[error("the token endpoint refused the client credentials (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// The endpoint could not be reached or failed (5xx, timeout, unusable answer).
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
}

/// Where tokens come from.
pub(crate) trait TokenSource: Send + Sync {
    fn fetch(&self) -> impl Future<Output = Result<FreshToken, TokenError>> + Send;
}

/// Renew this long before expiry: a minute for LinkedIn's 30-minute tokens, a tenth of the lifetime for
/// short ones, so a 10-second token is not considered stale from the moment it arrives.
pub(crate) fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

struct Cached {
    token: AccessToken,
    renew_at: Instant,
}

/// The shared token.
pub(crate) struct TokenCache<S> {
    source: S,
    current: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl<S: TokenSource> TokenCache<S> {
    pub(crate) fn new(source: S) -> Self {
        TokenCache {
            source,
            current: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// The current token, fetching one if there is none or it is due for renewal.
    pub(crate) async fn get(&self) -> Result<AccessToken, TokenError> {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fresh = self.source.fetch().await?;
        let renew_at = Instant::now() + fresh.lifetime - renewal_margin(fresh.lifetime);
        *current = Some(Cached {
            token: fresh.token.clone(),
            renew_at,
        });
        Ok(fresh.token)
    }

    /// LinkedIn refused `used` (401). Forget it — unless another request already replaced it, so that
    /// a burst of 401s for one stale token leads to one fetch, not one per request.
    pub(crate) async fn invalidate(&self, used: &AccessToken) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| &c.token == used) {
            *current = None;
        }
    }

    /// Token fetches made so far (for metrics and tests).
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

/// The OAuth 2.0 client-credentials flow over HTTP.
pub(crate) struct HttpTokenSource {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: Secret,
}

impl HttpTokenSource {
    pub(crate) fn new(
        http: reqwest::Client,
        url: String,
        client_id: String,
        client_secret: Secret,
    ) -> Self {
        HttpTokenSource {
            http,
            url,
            client_id,
            client_secret,
        }
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: Lifetime,
}

/// LinkedIn's sample gives `expires_in` as a string; the live endpoint as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lifetime {
    Seconds(u64),
    Text(String),
}

impl TokenSource for HttpTokenSource {
    async fn fetch(&self) -> Result<FreshToken, TokenError> {
        // The secret travels in the form body, never in the URL (URLs end up in logs).
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let response = self
            .http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe_transport_error(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(describe_transport_error(&e)))?;
        if !(200..300).contains(&status) {
            let failure = super::classify::failure_from_body(status, &body);
            return Err(match status {
                400 | 401 | 403 => TokenError::Refused {
                    status,
                    message: failure.message,
                },
                _ => TokenError::Unavailable(format!("HTTP {status}: {}", failure.message)),
            });
        }
        parse_token_body(&body)
    }
}

fn parse_token_body(body: &[u8]) -> Result<FreshToken, TokenError> {
    let parsed: TokenBody = serde_json::from_slice(body)
        .map_err(|e| TokenError::Unavailable(format!("unusable token answer: {e}")))?;
    let seconds = match parsed.expires_in {
        Lifetime::Seconds(s) => s,
        Lifetime::Text(text) => text.trim().parse().map_err(|_| {
            TokenError::Unavailable(format!("unusable token answer: expires_in {text:?}"))
        })?,
    };
    if parsed.access_token.is_empty() {
        return Err(TokenError::Unavailable(
            "unusable token answer: empty access_token".into(),
        ));
    }
    Ok(FreshToken {
        token: AccessToken::new(parsed.access_token),
        lifetime: Duration::from_secs(seconds),
    })
}

/// reqwest's `Display` can include the URL; ours never carries a secret, but say what kind of failure
/// it was, which is what an operator needs.
pub(crate) fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        detail = format!("{detail}: {inner}");
        source = inner.source();
    }
    format!("{kind} ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Hands out numbered tokens after a delay, so concurrent callers overlap with the fetch.
    struct Numbered {
        issued: AtomicUsize,
        lifetime: Duration,
        delay: Duration,
    }

    impl TokenSource for Arc<Numbered> {
        async fn fetch(&self) -> Result<FreshToken, TokenError> {
            tokio::time::sleep(self.delay).await;
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(FreshToken {
                token: AccessToken::new(format!("token-{n}")),
                lifetime: self.lifetime,
            })
        }
    }

    fn source(lifetime: Duration) -> Arc<Numbered> {
        Arc::new(Numbered {
            issued: AtomicUsize::new(0),
            lifetime,
            delay: Duration::from_millis(50),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::new(source(Duration::from_secs(1800))));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await.unwrap() })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), AccessToken::new("token-1"));
        }
        assert_eq!(cache.fetches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renews_shortly_before_expiry() {
        let cache = TokenCache::new(source(Duration::from_secs(1800)));
        assert_eq!(cache.get().await.unwrap(), AccessToken::new("token-1"));
        tokio::time::advance(Duration::from_secs(1800 - 61)).await;
        assert_eq!(cache.get().await.unwrap(), AccessToken::new("token-1"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get().await.unwrap(), AccessToken::new("token-2"));
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn very_short_lifetimes_are_still_reused() {
        let cache = TokenCache::new(source(Duration::from_secs(2)));
        let first = cache.get().await.unwrap();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(cache.get().await.unwrap(), first);
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_ne!(cache.get().await.unwrap(), first);
        assert_eq!(
            renewal_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(1800)),
            Duration::from_secs(60)
        );
        assert_eq!(renewal_margin(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_401s_for_one_token_fetches_once() {
        let cache = Arc::new(TokenCache::new(source(Duration::from_secs(1800))));
        let stale = cache.get().await.unwrap();
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (cache, stale) = (cache.clone(), stale.clone());
                tokio::spawn(async move {
                    cache.invalidate(&stale).await;
                    cache.get().await.unwrap()
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), AccessToken::new("token-2"));
        }
        assert_eq!(cache.fetches(), 2);
    }

    #[test]
    fn expires_in_as_number_or_string() {
        let number = parse_token_body(br#"{"access_token":"a","expires_in":1800}"#).unwrap();
        let text = parse_token_body(br#"{"access_token":"a","expires_in":"1800"}"#).unwrap();
        assert_eq!(number.lifetime, Duration::from_secs(1800));
        assert_eq!(text.lifetime, Duration::from_secs(1800));
        assert!(parse_token_body(br#"{"access_token":"a","expires_in":"soon"}"#).is_err());
        assert!(parse_token_body(br#"{"access_token":"","expires_in":1}"#).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = AccessToken::new("very-secret-token");
        assert!(!format!("{token:?}").contains("very-secret"));
        let fresh = FreshToken {
            token,
            lifetime: Duration::from_secs(1),
        };
        assert!(!format!("{fresh:?}").contains("very-secret"));
    }
}
