//! The one shared OAuth token: fetched lazily, reused by every request, renewed shortly before it
//! expires or when LinkedIn says it is no longer good — never more than one fetch at a time, and
//! after a failed fetch never another before the token backoff's next step, whoever asks.
//!
//! LinkedIn asks for exactly this ("use same access token for all concurrent and consecutive calls ...
//! only on expiry of the existing token, new token should be generated"), and throttles token
//! requests like any other call. The cache holds an async mutex across the fetch, so a hundred
//! requests that find the token stale wait for one fetch and share its result; a fetch that failed
//! (the credentials refused, or the endpoint in trouble) is remembered with the time of the next
//! step ([`crate::retry::TOKEN_RETRY`]: a few seconds, doubling to a minute), and everyone who asks
//! before then is told so ([`NoToken`]) without a request. So the whole worker — every send task and
//! the task verifier — makes one token request per step, where each used to retry on its own (81
//! requests in 20 s after a secret rotation). A renewal that fails leaves the old token in use while it
//! lasts.
//!
//! The client secret can change underneath: `LINKEDIN_CLIENT_SECRET_FILE` is read again before the
//! request that follows a refusal, and whenever the worker polls it ([`TokenCache::reread_credentials`]);
//! a new secret ends the wait for the next step at once (waiters watch [`NoToken::credentials`]).
//! Where tokens come from is a trait, so the caching is tested on tokio's paused clock.

use crate::config::Secret;
use crate::retry::{RetryState, TOKEN_RETRY};
use crate::secret_file::SecretFile;
use crate::telemetry::spans;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tracing::{Instrument, warn};

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
    /// The endpoint refused the credentials (400/401/403): an operator must fix the configuration;
    /// the worker holds until a token is had.
    #[error("the token endpoint refused the client credentials (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// The endpoint could not be reached or failed (5xx, timeout, unusable answer): waited out.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
}

/// Where tokens come from.
pub(crate) trait TokenSource: Send + Sync {
    fn fetch(&self) -> impl Future<Output = Result<FreshToken, TokenError>> + Send;

    /// Reads the credentials again where they live in a file; whether they changed.
    fn reread_credentials(&self) -> bool {
        false
    }

    /// Whether the credentials live in a file that is worth polling.
    fn follows_a_file(&self) -> bool {
        false
    }
}

/// Renew this long before expiry: a minute for LinkedIn's 30-minute tokens, a tenth of the lifetime for
/// short ones, so a 10-second token is not considered stale from the moment it arrives.
pub(crate) fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

struct Cached {
    token: AccessToken,
    renew_at: Instant,
    expires_at: Instant,
}

/// The last fetch failed: nobody asks again before `retry_at`.
struct Failed {
    error: TokenError,
    retry_at: Instant,
}

/// What the cache knows, behind its mutex.
struct Slot {
    token: Option<Cached>,
    failed: Option<Failed>,
    /// Failed fetches in a row, for the next step of [`TOKEN_RETRY`].
    backoff: RetryState,
}

/// No token now, and when to ask again.
#[derive(Debug)]
pub(crate) struct NoToken {
    pub(crate) error: TokenError,
    /// The next token request is made at (or after) this instant, whoever asks.
    pub(crate) retry_at: Instant,
    /// This caller's `get` made the failed request (the others were told of it): the one to log it.
    pub(crate) asked: bool,
    /// Changes when the credentials change: ask again at once then.
    pub(crate) credentials: watch::Receiver<u64>,
}

/// The shared token.
pub(crate) struct TokenCache<S> {
    source: S,
    slot: Mutex<Slot>,
    fetches: AtomicU64,
    refusals: AtomicU64,
    /// Counts changes of the credentials, for whoever waits for the next step.
    credentials: watch::Sender<u64>,
}

impl<S: TokenSource> TokenCache<S> {
    pub(crate) fn new(source: S) -> Self {
        TokenCache {
            source,
            slot: Mutex::new(Slot {
                token: None,
                failed: None,
                backoff: TOKEN_RETRY.new_state(),
            }),
            fetches: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            credentials: watch::Sender::new(0),
        }
    }

    /// The current token, fetching one if there is none or it is due for renewal — unless a fetch
    /// failed and the next step of the token backoff has not come: then the failure, at once.
    pub(crate) async fn get(&self) -> Result<AccessToken, NoToken> {
        let mut slot = self.slot.lock().await;
        let now = Instant::now();
        if let Some(cached) = &slot.token
            && now < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        if let Some(failed) = &slot.failed
            && now < failed.retry_at
        {
            return match still_valid(&slot, now) {
                Some(token) => Ok(token),
                None => Err(self.no_token(failed, false)),
            };
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.source.fetch().await {
            Ok(fresh) => {
                let now = Instant::now();
                slot.failed = None;
                slot.backoff = TOKEN_RETRY.new_state();
                slot.token = Some(Cached {
                    token: fresh.token.clone(),
                    renew_at: now + fresh.lifetime - renewal_margin(fresh.lifetime),
                    expires_at: now + fresh.lifetime,
                });
                Ok(fresh.token)
            }
            Err(error) => {
                if matches!(error, TokenError::Refused { .. }) {
                    self.refusals.fetch_add(1, Ordering::Relaxed);
                }
                let now = Instant::now();
                let delay = TOKEN_RETRY.on_wait(&mut slot.backoff, None);
                let failed = Failed {
                    error,
                    retry_at: now + delay,
                };
                let answer = match still_valid(&slot, now) {
                    Some(token) => {
                        warn!(error = %failed.error, retry_in_ms = delay.as_millis() as u64,
                            "Renewing the LinkedIn token failed; the current one is used while it lasts.");
                        Ok(token)
                    }
                    None => Err(self.no_token(&failed, true)),
                };
                slot.failed = Some(failed);
                answer
            }
        }
    }

    fn no_token(&self, failed: &Failed, asked: bool) -> NoToken {
        NoToken {
            error: failed.error.clone(),
            retry_at: failed.retry_at,
            asked,
            credentials: self.credentials.subscribe(),
        }
    }

    /// LinkedIn refused `used` (401). Forget it — unless another request already replaced it, so that
    /// a burst of 401s for one stale token leads to one fetch, not one per request.
    pub(crate) async fn invalidate(&self, used: &AccessToken) {
        let mut slot = self.slot.lock().await;
        if slot.token.as_ref().is_some_and(|c| &c.token == used) {
            slot.token = None;
        }
    }

    /// Reads the credentials again where they live in a file. When they changed, the wait for the
    /// next step after a failed fetch is over: the next `get` asks at once, and every waiter is told.
    pub(crate) async fn reread_credentials(&self) -> bool {
        if !self.source.reread_credentials() {
            return false;
        }
        {
            let mut slot = self.slot.lock().await;
            slot.failed = None;
            slot.backoff = TOKEN_RETRY.new_state();
        }
        self.credentials.send_modify(|changes| *changes += 1);
        true
    }

    /// Whether the credentials live in a file that is worth polling.
    pub(crate) fn follows_a_file(&self) -> bool {
        self.source.follows_a_file()
    }

    /// Token fetches made so far (for metrics and tests).
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the endpoint refused (400/401/403) so far.
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// The cached token while it has not expired (a renewal failed: it still works meanwhile).
fn still_valid(slot: &Slot, now: Instant) -> Option<AccessToken> {
    slot.token
        .as_ref()
        .filter(|cached| now < cached.expires_at)
        .map(|cached| cached.token.clone())
}

/// Where the client secret comes from: `LINKEDIN_CLIENT_SECRET` (fixed for the process's life), or
/// `LINKEDIN_CLIENT_SECRET_FILE`, read again.
pub(crate) enum ClientSecret {
    Fixed(Secret),
    File(SecretFile),
}

impl ClientSecret {
    /// The secret as the settings resolved it, from its file when there is one.
    pub(crate) fn of(value: Secret, file: Option<std::path::PathBuf>) -> ClientSecret {
        match file {
            Some(path) => ClientSecret::File(SecretFile::new(
                "LINKEDIN_CLIENT_SECRET_FILE",
                "client secret",
                path,
                value,
            )),
            None => ClientSecret::Fixed(value),
        }
    }

    fn value(&self) -> Secret {
        match self {
            ClientSecret::Fixed(secret) => secret.clone(),
            ClientSecret::File(file) => file.value(),
        }
    }

    fn reread(&self) -> bool {
        match self {
            ClientSecret::Fixed(_) => false,
            ClientSecret::File(file) => file.reread(),
        }
    }
}

/// The OAuth 2.0 client-credentials flow over HTTP.
pub(crate) struct HttpTokenSource {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: ClientSecret,
    /// The last answer was a refusal: the secret file is read again before the next request.
    refused: AtomicBool,
}

impl HttpTokenSource {
    pub(crate) fn new(
        http: reqwest::Client,
        url: String,
        client_id: String,
        client_secret: ClientSecret,
    ) -> Self {
        HttpTokenSource {
            http,
            url,
            client_id,
            client_secret,
            refused: AtomicBool::new(false),
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
        if self.refused.swap(false, Ordering::SeqCst) {
            self.client_secret.reread();
        }
        let answer = self.request().await;
        if matches!(answer, Err(TokenError::Refused { .. })) {
            self.refused.store(true, Ordering::SeqCst);
        }
        answer
    }

    fn reread_credentials(&self) -> bool {
        self.client_secret.reread()
    }

    fn follows_a_file(&self) -> bool {
        matches!(self.client_secret, ClientSecret::File(_))
    }
}

impl HttpTokenSource {
    async fn request(&self) -> Result<FreshToken, TokenError> {
        let secret = self.client_secret.value();
        // The secret travels in the form body, never in the URL (URLs end up in logs).
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", secret.expose()),
        ];
        // Its own CLIENT span (a token serves every request of the hour); the form, which holds
        // the secret, is never recorded.
        let span = spans::client(spans::TOKEN_REQUEST, "POST", &self.url);
        let answer = async {
            let response = self.http.post(&self.url).form(&form).send().await?;
            let status = response.status().as_u16();
            spans::answered(status);
            Ok((status, response.bytes().await?))
        }
        .instrument(span.clone())
        .await;
        let (status, body) = answer.map_err(|e: reqwest::Error| {
            let _entered = span.enter();
            spans::no_answer(if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            });
            TokenError::Unavailable(describe_transport_error(&e))
        })?;
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

    /// Answers as told (a token, or an error) and notes when it was asked.
    struct Scripted {
        answer: std::sync::Mutex<Result<Duration, TokenError>>,
        asked_at: std::sync::Mutex<Vec<Instant>>,
        /// What the next `reread_credentials` reports.
        changed: AtomicBool,
    }

    impl Scripted {
        fn answering(answer: Result<Duration, TokenError>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answer: std::sync::Mutex::new(answer),
                asked_at: std::sync::Mutex::new(Vec::new()),
                changed: AtomicBool::new(false),
            })
        }

        fn answer(&self, answer: Result<Duration, TokenError>) {
            *self.answer.lock().unwrap() = answer;
        }

        fn asked(&self) -> Vec<Instant> {
            self.asked_at.lock().unwrap().clone()
        }
    }

    impl TokenSource for Arc<Scripted> {
        async fn fetch(&self) -> Result<FreshToken, TokenError> {
            let n = {
                let mut asked = self.asked_at.lock().unwrap();
                asked.push(Instant::now());
                asked.len()
            };
            let answer = self.answer.lock().unwrap().clone();
            answer.map(|lifetime| FreshToken {
                token: AccessToken::new(format!("token-{n}")),
                lifetime,
            })
        }

        fn reread_credentials(&self) -> bool {
            self.changed.swap(false, Ordering::SeqCst)
        }
    }

    fn refused() -> TokenError {
        TokenError::Refused {
            status: 401,
            message: "Client authentication failed".into(),
        }
    }

    /// What a send task does without a token: wait for the step (or new credentials), ask again.
    async fn keep_asking(cache: Arc<TokenCache<Arc<Scripted>>>, until: Instant) -> (u32, u32) {
        let (mut told, mut asked) = (0, 0);
        while Instant::now() < until {
            match cache.get().await {
                Ok(_) => return (told, asked),
                Err(mut no_token) => {
                    told += 1;
                    asked += u32::from(no_token.asked);
                    tokio::select! {
                        Ok(()) = no_token.credentials.changed() => {}
                        _ = tokio::time::sleep_until(no_token.retry_at) => {}
                    }
                }
            }
        }
        (told, asked)
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_are_asked_about_once_per_step_for_the_whole_worker() {
        let source = Scripted::answering(Err(refused()));
        let cache = Arc::new(TokenCache::new(source.clone()));
        let start = Instant::now();
        let until = start + Duration::from_secs(300);
        let callers: Vec<_> = (0..40)
            .map(|_| tokio::spawn(keep_asking(cache.clone(), until)))
            .collect();
        let mut asked_total = 0;
        for caller in callers {
            let (told, asked) = caller.await.unwrap();
            assert!(told >= 5, "each caller was told of the refusals: {told}");
            asked_total += asked;
        }
        let asked = source.asked();
        assert_eq!(
            asked_total as usize,
            asked.len(),
            "one caller logs each request"
        );
        assert_eq!(cache.refusals(), asked.len() as u64);
        assert_eq!(cache.fetches(), asked.len() as u64);
        // A few seconds at first, backing off to a minute: a handful in five minutes, not 40 a step.
        assert!((6..=16).contains(&asked.len()), "{} requests", asked.len());
        let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[0] >= Duration::from_secs(1) && gaps[0] <= Duration::from_secs(3),
            "{gaps:?}"
        );
        assert!(
            gaps.iter().all(|gap| *gap <= Duration::from_secs(60)),
            "{gaps:?}"
        );
        assert!(*gaps.last().unwrap() >= Duration::from_secs(30), "{gaps:?}");

        // The secret is fixed: at the next step everyone has the token, and the steps start over.
        source.answer(Ok(Duration::from_secs(1800)));
        let waiter = tokio::spawn(keep_asking(
            cache.clone(),
            Instant::now() + Duration::from_secs(120),
        ));
        assert_eq!(waiter.await.unwrap().1, 0);
        assert_eq!(source.asked().len(), asked.len() + 1);
        let token = cache.get().await.unwrap();
        source.answer(Err(refused()));
        cache.invalidate(&token).await;
        let refused_at = Instant::now();
        let first = cache.get().await.unwrap_err();
        assert!(first.asked);
        assert!(first.retry_at - refused_at <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn new_credentials_end_the_wait_for_the_next_step_at_once() {
        let source = Scripted::answering(Err(refused()));
        let cache = Arc::new(TokenCache::new(source.clone()));
        for _ in 0..6 {
            let no_token = cache.get().await.unwrap_err();
            tokio::time::sleep_until(no_token.retry_at).await;
        }
        let no_token = cache.get().await.unwrap_err();
        assert!(no_token.retry_at - Instant::now() >= Duration::from_secs(30));
        let waiting = tokio::spawn(keep_asking(
            cache.clone(),
            Instant::now() + Duration::from_secs(600),
        ));
        tokio::task::yield_now().await;
        assert!(
            !cache.reread_credentials().await,
            "nothing changed: nothing ends"
        );
        source.answer(Ok(Duration::from_secs(1800)));
        source.changed.store(true, Ordering::SeqCst);
        let before = Instant::now();
        assert!(cache.reread_credentials().await);
        waiting.await.unwrap();
        assert!(
            Instant::now() - before < Duration::from_secs(1),
            "asked at once"
        );
        assert_eq!(cache.get().await.unwrap(), AccessToken::new("token-8"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_keeps_the_old_token_while_it_lasts() {
        let source = Scripted::answering(Ok(Duration::from_secs(100)));
        let cache = TokenCache::new(source.clone());
        let first = cache.get().await.unwrap();
        tokio::time::advance(Duration::from_secs(91)).await;
        source.answer(Err(TokenError::Unavailable("HTTP 503".into())));
        assert_eq!(
            cache.get().await.unwrap(),
            first,
            "renewal failed; still valid"
        );
        assert_eq!(cache.get().await.unwrap(), first);
        assert_eq!(
            source.asked().len(),
            2,
            "not asked again before the next step"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let no_token = cache.get().await.unwrap_err();
        assert_eq!(no_token.error, TokenError::Unavailable("HTTP 503".into()));
        assert_eq!(cache.refusals(), 0);
    }

    #[tokio::test]
    async fn the_secret_file_is_read_again_before_the_request_after_a_refusal() {
        let sandbox = crate::sandbox::Sandbox::start(
            ([127, 0, 0, 1], 0).into(),
            crate::sandbox::SandboxConfig::default(),
        )
        .await
        .unwrap();
        let config = sandbox.config();
        let files = crate::config::SettingFiles::new();
        let path = files.write("secret", &format!("{}\n", config.client_secret));
        let source = HttpTokenSource::new(
            crate::linkedin::http_client(Duration::from_secs(5)).unwrap(),
            sandbox.token_url(),
            config.client_id,
            ClientSecret::of(Secret::new(config.client_secret), Some(path)),
        );
        assert!(source.follows_a_file());
        source.fetch().await.unwrap();
        sandbox.rotate_client_secret("rotated/+=secret");
        let refusal = source.fetch().await.unwrap_err();
        assert!(
            matches!(refusal, TokenError::Refused { status: 401, .. }),
            "{refusal:?}"
        );
        files.write("secret", "rotated/+=secret\n");
        source.fetch().await.unwrap();
        assert_eq!(sandbox.stats().token_requests, 3);
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
