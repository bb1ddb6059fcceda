//! Sending one batch until every element in it is settled: wait for the rate limit and the token,
//! post, classify, then act on each element's verdict — and retry what is left.
//!
//! A batch whose request keeps failing as a whole (a poison element earns its batch a 500) is split
//! in halves after a few failures, and the halves carry on independently, so the culprit ends up alone
//! and its good neighbours get closed. 401s and 429s are waited out without spending the retry budget.

use super::settle::Settler;
use super::{Item, Shared};
use crate::dead_letter::{Failure, Reason};
use crate::linkedin::classify::{ElementOutcome, RequestOutcome};
use crate::retry::{RetryState, Verdict};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Whole-request transient failures in a row before a batch is halved.
const SPLIT_AFTER: u32 = 2;

/// Elements that travel together, and their shared retry history.
pub struct Group {
    pub items: Vec<Item>,
    pub retry: RetryState,
}

/// Everything one batch task needs from its broker session.
#[derive(Clone)]
pub struct SessionHandle {
    pub settler: Arc<Settler>,
    /// Cancelled on shutdown or when the session's connection is lost: stop waiting, give back.
    pub stop: CancellationToken,
}

/// Sleeps, unless told to stop first. Returns false when stopped.
async fn wait(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

async fn give_back_all(session: &SessionHandle, items: &[Item]) {
    session
        .settler
        .together(async {
            for item in items {
                session.settler.give_back(&item.delivery).await;
            }
        })
        .await;
}

fn ids(items: &[Item]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i.request.external_id.as_str())
        .collect()
}

/// Sends a group until all its elements are settled.
pub fn process(
    shared: Arc<Shared>,
    session: SessionHandle,
    group: Group,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let Group {
            mut items,
            mut retry,
        } = group;
        let policy = shared.retry;
        // 401s in a row: the first one just refreshes the token; after that, back off.
        let mut unauthorized_in_a_row = 0u32;
        while !items.is_empty() {
            let elements = items.len() as u32;
            let limited = tokio::select! {
                biased;
                _ = shared.limiter.acquire(elements) => true,
                _ = session.stop.cancelled() => false,
            };
            if !limited {
                return give_back_all(&session, &items).await;
            }

            let token = shared.linkedin.tokens.get().await;
            // Failed fetches count too: a refused secret shows as token requests without closes.
            shared.metrics.token_requests.inner().store(
                shared.linkedin.tokens.fetches(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let token = match token {
                Ok(token) => token,
                Err(error) => {
                    let delay = policy.on_wait(&mut retry, None);
                    error!(%error, delay_ms = delay.as_millis() as u64, external_ids = ?ids(&items), "No LinkedIn token; retrying.");
                    if !wait(&session.stop, delay).await {
                        return give_back_all(&session, &items).await;
                    }
                    continue;
                }
            };

            let outcome = {
                let _permit = shared.in_flight.acquire().await.expect("never closed");
                shared.metrics.in_flight.inc();
                shared.metrics.batch_size.observe(items.len() as f64);
                let started = Instant::now();
                retry.attempts += 1;
                let outcome = shared
                    .linkedin
                    .close_batch(&token, items.iter().map(|i| &i.request.element))
                    .await;
                shared
                    .metrics
                    .request_seconds
                    .observe(started.elapsed().as_secs_f64());
                shared.metrics.in_flight.dec();
                outcome
            };

            let delay = match outcome {
                RequestOutcome::Answered(verdicts) => {
                    shared.metrics.request("answered");
                    policy.on_answer(&mut retry);
                    let mut transient = None;
                    let mut unauthorized = false;
                    let mut remaining = Vec::new();
                    // One ack frame for the whole batch instead of one per element; accepted
                    // elements settle concurrently (with task checks on, each waits for its pending
                    // check's confirm, and one round trip for the batch beats one per element).
                    session
                        .settler
                        .together(async {
                            let mut accepted = Vec::new();
                            for (item, verdict) in items.into_iter().zip(verdicts) {
                                match verdict {
                                    ElementOutcome::Accepted { task_id } => {
                                        accepted.push((item, task_id));
                                    }
                                    ElementOutcome::Rejected(failure) => {
                                        let failure = Failure {
                                            reason: Reason::Rejected,
                                            status: failure.status,
                                            message: failure.message,
                                            attempts: retry.attempts,
                                            task_id: None,
                                        };
                                        session
                                            .settler
                                            .dead_letter(
                                                &item.delivery,
                                                Some(&item.request.external_id),
                                                failure,
                                            )
                                            .await;
                                    }
                                    ElementOutcome::Retry(failure) => {
                                        transient = Some(failure);
                                        remaining.push(item);
                                    }
                                    ElementOutcome::Unauthorized(_) => {
                                        unauthorized = true;
                                        remaining.push(item);
                                    }
                                }
                            }
                            futures_util::future::join_all(accepted.iter().map(
                                |(item, task_id)| {
                                    session.settler.closed(
                                        &item.delivery,
                                        &item.request.external_id,
                                        task_id.as_deref(),
                                    )
                                },
                            ))
                            .await;
                        })
                        .await;
                    items = remaining;
                    if unauthorized {
                        shared.linkedin.tokens.invalidate(&token).await;
                    }
                    match transient {
                        None if unauthorized => {
                            unauthorized_in_a_row += 1;
                            if unauthorized_in_a_row > 1 {
                                policy.on_wait(&mut retry, None)
                            } else {
                                Duration::ZERO
                            }
                        }
                        None => Duration::ZERO,
                        Some(failure) => {
                            unauthorized_in_a_row = 0;
                            // Element-level transient failures count against the budget, but a
                            // whole-request run of failures did not happen: no split.
                            match policy.on_transient(&mut retry, Instant::now(), None) {
                                Verdict::RetryIn(delay) => {
                                    retry.consecutive_failures = 0;
                                    log_retry(&shared, &items, &failure, delay);
                                    delay
                                }
                                Verdict::GiveUp => {
                                    return exhaust(&session, items, failure, retry.attempts).await;
                                }
                            }
                        }
                    }
                }
                RequestOutcome::RefreshToken(failure) => {
                    shared.metrics.request("unauthorized");
                    shared.linkedin.tokens.invalidate(&token).await;
                    unauthorized_in_a_row += 1;
                    if unauthorized_in_a_row > 1 {
                        let delay = policy.on_wait(&mut retry, None);
                        error!(status = failure.status, error_message = %failure.message, delay_ms = delay.as_millis() as u64, external_ids = ?ids(&items),
                            "LinkedIn keeps refusing fresh tokens; check the client credentials. Retrying.");
                        delay
                    } else {
                        Duration::ZERO
                    }
                }
                RequestOutcome::Throttled {
                    retry_after,
                    failure,
                } => {
                    shared.metrics.request("throttled");
                    unauthorized_in_a_row = 0;
                    let delay = policy.on_wait(&mut retry, retry_after);
                    // Throttling is per application: every sender waits, not only this batch.
                    shared.limiter.pause_for(delay);
                    log_retry(&shared, &items, &failure, delay);
                    Duration::ZERO
                }
                RequestOutcome::Retry {
                    retry_after,
                    failure,
                } => {
                    shared.metrics.request("transient");
                    unauthorized_in_a_row = 0;
                    match policy.on_transient(&mut retry, Instant::now(), retry_after) {
                        Verdict::GiveUp => {
                            return exhaust(&session, items, failure, retry.attempts).await;
                        }
                        Verdict::RetryIn(delay) => {
                            log_retry(&shared, &items, &failure, delay);
                            if items.len() > 1 && retry.consecutive_failures >= SPLIT_AFTER {
                                if !wait(&session.stop, delay).await {
                                    return give_back_all(&session, &items).await;
                                }
                                let second = items.split_off(items.len() / 2);
                                warn!(
                                    status = failure.status,
                                    left = items.len(),
                                    right = second.len(),
                                    "Batch keeps failing as a whole; splitting it to isolate the cause."
                                );
                                let mut left_retry = retry.clone();
                                let mut right_retry = retry;
                                left_retry.consecutive_failures = 0;
                                right_retry.consecutive_failures = 0;
                                let left = process(
                                    shared.clone(),
                                    session.clone(),
                                    Group {
                                        items,
                                        retry: left_retry,
                                    },
                                );
                                let right = process(
                                    shared,
                                    session,
                                    Group {
                                        items: second,
                                        retry: right_retry,
                                    },
                                );
                                futures_util::future::join(left, right).await;
                                return;
                            }
                            delay
                        }
                    }
                }
                RequestOutcome::Reject(failure) => {
                    shared.metrics.request("rejected");
                    let failure = Failure {
                        reason: Reason::Rejected,
                        status: failure.status,
                        message: failure.message,
                        attempts: retry.attempts,
                        task_id: None,
                    };
                    return dead_letter_all(&session, &items, failure).await;
                }
            };
            if !items.is_empty() && !delay.is_zero() && !wait(&session.stop, delay).await {
                return give_back_all(&session, &items).await;
            }
        }
    })
}

fn log_retry(
    shared: &Shared,
    items: &[Item],
    failure: &crate::linkedin::classify::Failure,
    delay: Duration,
) {
    shared.metrics.retried.inc_by(items.len() as u64);
    // One line per element, so that a search for one job's id finds every retry of it.
    for item in items {
        warn!(
            externalJobPostingId = item.request.external_id.as_str(),
            status = failure.status,
            error_message = %failure.message,
            delay_ms = delay.as_millis() as u64,
            "Retrying."
        );
    }
}

async fn exhaust(
    session: &SessionHandle,
    items: Vec<Item>,
    failure: crate::linkedin::classify::Failure,
    attempts: u32,
) {
    let failure = Failure {
        reason: Reason::RetriesExhausted,
        status: failure.status,
        message: failure.message,
        attempts,
        task_id: None,
    };
    dead_letter_all(session, &items, failure).await;
}

/// Dead-letters every item with the same failure, acking them as one run.
async fn dead_letter_all(session: &SessionHandle, items: &[Item], failure: Failure) {
    session
        .settler
        .together(async {
            for item in items {
                session
                    .settler
                    .dead_letter(
                        &item.delivery,
                        Some(&item.request.external_id),
                        failure.clone(),
                    )
                    .await;
            }
        })
        .await;
}
