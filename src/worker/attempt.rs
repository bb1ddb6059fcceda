//! One attempt at LinkedIn, for the sender and the task verifier alike ([`attempt`], or its two
//! halves [`prepare`] and [`Ready::send`]): wait for the rate limit
//! (per minute and per UTC day; closes only — status lookups are not records), get the shared token,
//! take an in-flight permit, make the request and hand back its classified answer. What to do with
//! the answer is [`super::decide`]'s business; waiting before the next attempt is the caller's —
//! after no token, until the token cache's next step ([`wait_for_token`]), which is the same for
//! every caller.
//!
//! Before, the sender and the verifier each inlined this sequence with their own variations; one
//! function keeps the accounting (attempts, elements sent, token requests, latency) in one place.

use super::Shared;
use crate::linkedin::token::{AccessToken, NoToken};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How an attempt went.
pub(crate) enum Attempted<T> {
    /// LinkedIn was asked with `token`; this is its classified answer.
    Answered { token: AccessToken, answer: T },
    /// No token could be had (the token endpoint failed, now or at its last step): nothing was sent.
    NoToken(NoToken),
    /// Stopped (shutdown or a lost session) while waiting: nothing was sent.
    Stopped,
}

/// What is being asked, for the rate limit and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// A `batch_create` of this many elements.
    Close { elements: u32 },
    /// A task status lookup.
    Lookup,
}

/// Makes one attempt: rate limit, token, permit, request. `attempts` counts the requests made.
pub(crate) async fn attempt<T, F, Fut>(
    shared: &Shared,
    stop: &CancellationToken,
    request: Request,
    attempts: &mut u32,
    send: F,
) -> Attempted<T>
where
    F: FnOnce(AccessToken) -> Fut,
    Fut: Future<Output = T>,
{
    match prepare(shared, stop, request).await {
        Ok(ready) => {
            let answer = ready.send(shared, request, attempts, send).await;
            Attempted::Answered {
                token: ready.token,
                answer,
            }
        }
        Err(NotReady::NoToken(error)) => Attempted::NoToken(error),
        Err(NotReady::Stopped) => Attempted::Stopped,
    }
}

/// Why an attempt could not be made.
pub(crate) enum NotReady {
    NoToken(NoToken),
    Stopped,
}

/// Everything a request needs, held: the token and an in-flight permit. The sender looks at its
/// elements once more between [`prepare`] and [`Ready::send`]: waiting for the limit and a permit
/// can take long, and a duplicate's original may have been accepted meanwhile.
pub(crate) struct Ready<'a> {
    pub(crate) token: AccessToken,
    _permit: SemaphorePermit<'a>,
}

/// The first half of an attempt: rate limit (closes only), token, permit.
pub(crate) async fn prepare<'a>(
    shared: &'a Shared,
    stop: &CancellationToken,
    request: Request,
) -> Result<Ready<'a>, NotReady> {
    if let Request::Close { elements } = request {
        tokio::select! {
            biased;
            _ = shared.limiter.acquire(elements) => {}
            _ = stop.cancelled() => return Err(NotReady::Stopped),
        }
    }
    let tokens = &shared.linkedin.tokens;
    let token = tokens.get().await;
    // Failed fetches count too: a refused secret shows as token requests without closes.
    let metrics = &shared.metrics;
    metrics
        .token_requests
        .inner()
        .store(tokens.fetches(), Ordering::Relaxed);
    metrics
        .token_refusals
        .inner()
        .store(tokens.refusals(), Ordering::Relaxed);
    let token = match token {
        Ok(token) => token,
        Err(no_token) => return Err(NotReady::NoToken(no_token)),
    };
    let permit = tokio::select! {
        biased;
        permit = shared.in_flight.acquire() => match permit {
            Ok(permit) => permit,
            // Never closed; if it were, nothing more may be sent.
            Err(_) => return Err(NotReady::Stopped),
        },
        _ = stop.cancelled() => return Err(NotReady::Stopped),
    };
    Ok(Ready {
        token,
        _permit: permit,
    })
}

impl Ready<'_> {
    /// The second half: the request itself, counted (`request` says how many elements go).
    pub(crate) async fn send<T, F, Fut>(
        &self,
        shared: &Shared,
        request: Request,
        attempts: &mut u32,
        send: F,
    ) -> T
    where
        F: FnOnce(AccessToken) -> Fut,
        Fut: Future<Output = T>,
    {
        *attempts += 1;
        let metrics = &shared.metrics;
        let started = Instant::now();
        if let Request::Close { elements } = request {
            metrics.in_flight.inc();
            metrics.batch_size.observe(f64::from(elements));
            metrics.elements_sent.inc_by(u64::from(elements));
        }
        let answer = send(self.token.clone()).await;
        if let Request::Close { .. } = request {
            metrics
                .request_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.in_flight.dec();
        }
        answer
    }
}

/// Sleeps, unless told to stop first. Returns false when stopped.
pub(crate) async fn wait(stop: &CancellationToken, delay: Duration) -> bool {
    if delay.is_zero() {
        return !stop.is_cancelled();
    }
    tokio::select! {
        biased;
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

/// Waits for the token cache's next step after a failed token request — or less, when the
/// credentials change meanwhile (a secret file reloaded). Returns false when stopped.
pub(crate) async fn wait_for_token(stop: &CancellationToken, no_token: &mut NoToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        Ok(()) = no_token.credentials.changed() => true,
        _ = tokio::time::sleep_until(no_token.retry_at) => true,
    }
}

/// LinkedIn refused `token` (401): drop it, so that the next attempt fetches a fresh one. Returns
/// whether fresh tokens keep being refused — the policy waits `after` before the next attempt
/// then — which the caller reports: the client credentials need a look.
pub(crate) async fn drop_refused_token(
    shared: &Shared,
    token: &AccessToken,
    after: Duration,
) -> bool {
    shared.linkedin.tokens.invalidate(token).await;
    !after.is_zero()
}
