//! Sending one group of elements until every element in it is settled: a small loop over an
//! attempt ([`prepare`] — rate limit, token, permit — then the request) and [`decide_close`] (what
//! the answer means),
//! carrying out each step — settle, resend, split, hold, wait.
//!
//! Before each attempt, elements LinkedIn accepted from this worker within the hour are settled as
//! `already-closed` without being sent (see [`super::recent`]). A group that is split carries on as
//! independent groups with the budget spent so far: halves for a run of 5xx or an unnamed single-job
//! fault — or, for a group of redeliveries (likely re-closes, so likely several culprits, where
//! halving would resend each of them at every level), single elements at once.

use super::attempt::{NotReady, Request, prepare, wait};
use super::decide::{Settlement, State, Step, decide_close};
use super::settle::Settler;
use super::{Item, Shared};
use crate::dead_letter::{Failure, Reason};
use crate::linkedin::classify::{self, RequestOutcome};
use crate::retry::RetryState;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Elements that travel together, and their shared retry history.
pub struct Group {
    pub items: Vec<Item>,
    pub retry: RetryState,
    /// Redeliveries (or duplicates of an id in hand): kept apart from first deliveries.
    pub suspect: bool,
}

/// Everything one batch task needs from its broker session.
#[derive(Clone)]
pub struct SessionHandle {
    pub settler: Arc<Settler>,
    /// Cancelled on shutdown or when the session's connection is lost: stop waiting, give back.
    pub stop: CancellationToken,
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

fn outcome_label(outcome: &RequestOutcome) -> &'static str {
    match outcome {
        RequestOutcome::Answered(_) => "answered",
        RequestOutcome::RefreshToken(_) => "unauthorized",
        RequestOutcome::Throttled { .. } => "throttled",
        RequestOutcome::Retry { .. } => "transient",
        RequestOutcome::ElementFault(_) | RequestOutcome::BatchFault(_) => "rejected",
        RequestOutcome::IntegrationFault(_) => "blocked",
    }
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
            suspect,
        } = group;
        let policy = shared.retry;
        // This group's task probes a blocked integration with its first element.
        let mut probing = false;
        if suspect {
            // A duplicate goes after its original: once that is accepted, this costs no request.
            let originals = futures_util::future::join_all(items.iter().map(|item| {
                shared
                    .recent
                    .until_no_first_delivery(&item.request.external_id)
            }));
            tokio::select! {
                biased;
                _ = originals => {}
                _ = session.stop.cancelled() => return give_back_all(&session, &items).await,
            }
        }
        loop {
            items = settle_known(&shared, &session, items).await;
            if items.is_empty() {
                if probing {
                    shared.hold.stop_probing();
                }
                return;
            }
            if shared.hold.is_blocked() && !probing {
                return give_back_all(&session, &items).await;
            }
            let request = Request::Close {
                elements: items.len() as u32,
            };
            let ready = match prepare(&shared, &session.stop, request).await {
                Ok(ready) => ready,
                Err(NotReady::Stopped) => {
                    if probing {
                        shared.hold.stop_probing();
                    }
                    return give_back_all(&session, &items).await;
                }
                Err(NotReady::NoToken(error)) => {
                    let delay = policy.on_wait(&mut retry, None);
                    error!(%error, delay_ms = delay.as_millis() as u64, external_ids = ?ids(&items), "No LinkedIn token; retrying.");
                    if !wait(&session.stop, delay).await {
                        if probing {
                            shared.hold.stop_probing();
                        }
                        return give_back_all(&session, &items).await;
                    }
                    continue;
                }
            };
            // Waiting for the limit and a permit can take a while: a duplicate's original may have
            // been accepted meanwhile.
            items = settle_known(&shared, &session, items).await;
            if items.is_empty() {
                continue;
            }
            let request = Request::Close {
                elements: items.len() as u32,
            };
            let outcome = ready
                .send(&shared, request, &mut retry.attempts, |token| {
                    let (shared, items) = (&shared, &items);
                    async move {
                        shared
                            .linkedin
                            .close_batch(&token, items.iter().map(|i| &i.request.element))
                            .await
                    }
                })
                .await;
            let token = ready.token.clone();
            drop(ready);
            shared.metrics.request(outcome_label(&outcome));
            if !matches!(outcome, RequestOutcome::Throttled { .. }) {
                shared.limiter.not_throttled();
            }
            let got_through = matches!(
                outcome,
                RequestOutcome::Answered(_)
                    | RequestOutcome::ElementFault(_)
                    | RequestOutcome::BatchFault(_)
            );
            let step = {
                let ids = ids(&items);
                decide_close(
                    outcome,
                    State {
                        policy: &policy,
                        retry: &mut retry,
                        now: Instant::now(),
                        ids: &ids,
                    },
                    shared.already_closed,
                )
            };
            if probing && got_through {
                probing = false;
                shared.hold.open();
            }
            let delay = match step {
                Step::SettleEach(settlements) => {
                    settle_each(
                        &shared,
                        &session,
                        items.into_iter().zip(settlements).collect(),
                    )
                    .await;
                    return;
                }
                Step::ResendWithout {
                    settle,
                    after,
                    refresh_token,
                    failure,
                } => {
                    if refresh_token {
                        shared.linkedin.tokens.invalidate(&token).await;
                    }
                    items = settle_some(&shared, &session, items, settle).await;
                    if let Some(failure) = &failure {
                        log_retry(&shared, &items, failure, after);
                    }
                    after
                }
                Step::ResendAll {
                    after,
                    refresh_token,
                    failure,
                } => {
                    if refresh_token {
                        shared.linkedin.tokens.invalidate(&token).await;
                        if !after.is_zero() {
                            error!(status = failure.status, error_message = %failure.message, delay_ms = after.as_millis() as u64, external_ids = ?ids(&items),
                                "LinkedIn keeps refusing fresh tokens; check the client credentials. Retrying.");
                        }
                    } else {
                        log_retry(&shared, &items, &failure, after);
                    }
                    after
                }
                Step::Split {
                    after,
                    failure,
                    one_job,
                } => {
                    if !wait(&session.stop, after).await {
                        return give_back_all(&session, &items).await;
                    }
                    let singles = one_job && suspect;
                    warn!(
                        status = failure.status,
                        error_message = %failure.message,
                        elements = items.len(),
                        into = if singles { "single elements" } else { "halves" },
                        "Splitting the request to isolate the element at fault."
                    );
                    let pieces = split(items, singles);
                    let groups = pieces.into_iter().map(|items| {
                        process(
                            shared.clone(),
                            session.clone(),
                            Group {
                                items,
                                retry: retry.clone(),
                                suspect,
                            },
                        )
                    });
                    futures_util::future::join_all(groups).await;
                    return;
                }
                Step::GiveUp(failure) => {
                    let failure = Failure {
                        reason: Reason::RetriesExhausted,
                        status: failure.status,
                        message: failure.message,
                        attempts: retry.attempts,
                        task_id: None,
                    };
                    return dead_letter_all(&session, &items, failure).await;
                }
                Step::Hold(failure) => {
                    if probing {
                        shared.hold.still_blocked(&failure);
                    } else if shared.hold.block(&failure) {
                        probing = true;
                        // One element probes; the rest waits in the broker.
                        let rest = items.split_off(1);
                        give_back_all(&session, &rest).await;
                    } else {
                        return give_back_all(&session, &items).await;
                    }
                    policy.probe_delay(&mut retry)
                }
                Step::Throttled {
                    retry_after,
                    failure,
                } => {
                    let in_a_row = shared.limiter.throttled(retry_after.is_some());
                    let pause =
                        policy.throttle_pause(&mut retry, retry_after, in_a_row, SystemTime::now());
                    // Throttling is per application: every sender waits, not only this group.
                    shared.limiter.pause_for(pause);
                    log_retry(&shared, &items, &failure, pause);
                    Duration::ZERO
                }
            };
            if !wait(&session.stop, delay).await {
                if probing {
                    shared.hold.stop_probing();
                }
                return give_back_all(&session, &items).await;
            }
        }
    })
}

/// Halves, or single elements.
fn split(mut items: Vec<Item>, singles: bool) -> Vec<Vec<Item>> {
    if singles {
        return items.into_iter().map(|item| vec![item]).collect();
    }
    let second = items.split_off(items.len() / 2);
    vec![items, second]
}

/// Settles, without sending them, the elements LinkedIn accepted from this worker within the hour
/// (unless replayed from the dead-letter queue); returns the others.
async fn settle_known(shared: &Shared, session: &SessionHandle, items: Vec<Item>) -> Vec<Item> {
    if !items
        .iter()
        .any(|item| !item.replayed && shared.recent.was_accepted(&item.request.external_id))
    {
        return items;
    }
    let (known, unknown): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|item| !item.replayed && shared.recent.was_accepted(&item.request.external_id));
    let settle = known
        .into_iter()
        .map(|item| {
            let failure = classify::Failure::new(
                409,
                "LinkedIn accepted a close of this job from this worker within the last hour; not sent again",
            );
            let settlement = match shared.already_closed {
                crate::config::AlreadyClosed::Ack => Settlement::AlreadyClosed(failure),
                crate::config::AlreadyClosed::DeadLetter => Settlement::DeadLetter(Failure {
                    reason: Reason::Rejected,
                    status: failure.status,
                    message: failure.message,
                    attempts: 0,
                    task_id: None,
                }),
            };
            (item, settlement)
        })
        .collect();
    settle_each(shared, session, settle).await;
    unknown
}

/// Settles the elements at the given positions; returns the others, in order.
async fn settle_some(
    shared: &Shared,
    session: &SessionHandle,
    items: Vec<Item>,
    settle: Vec<(usize, Settlement)>,
) -> Vec<Item> {
    let mut slots: Vec<Option<Settlement>> = items.iter().map(|_| None).collect();
    for (index, settlement) in settle {
        if let Some(slot) = slots.get_mut(index) {
            *slot = Some(settlement);
        }
    }
    let mut remaining = Vec::new();
    let mut settled = Vec::new();
    for (item, slot) in items.into_iter().zip(slots) {
        match slot {
            Some(settlement) => settled.push((item, settlement)),
            None => remaining.push(item),
        }
    }
    settle_each(shared, session, settled).await;
    remaining
}

/// Settles each element as its settlement says, acking the batch as one run. Accepted elements
/// settle concurrently: with task checks on, each waits for its pending check's confirm, and one
/// round trip for the batch beats one per element.
async fn settle_each(shared: &Shared, session: &SessionHandle, settled: Vec<(Item, Settlement)>) {
    if settled.is_empty() {
        return;
    }
    session
        .settler
        .together(async {
            let mut accepted = Vec::new();
            for (item, settlement) in settled {
                let external_id = item.request.external_id.as_str();
                match settlement {
                    Settlement::Closed { task_id } => {
                        shared.recent.accepted(external_id);
                        accepted.push((item, task_id));
                    }
                    Settlement::AlreadyClosed(failure) => {
                        shared.recent.accepted(external_id);
                        shared.metrics.already_closed.inc();
                        info!(
                            externalJobPostingId = external_id,
                            status = failure.status,
                            error_message = %failure.message,
                            "Already closed."
                        );
                        session.settler.ack(&item.delivery).await;
                    }
                    Settlement::DeadLetter(failure) => {
                        session
                            .settler
                            .dead_letter(&item.delivery, Some(external_id), failure)
                            .await;
                    }
                }
            }
            futures_util::future::join_all(accepted.iter().map(|(item, task_id)| {
                session.settler.closed(
                    &item.delivery,
                    &item.request.external_id,
                    task_id.as_deref(),
                )
            }))
            .await;
        })
        .await;
}

fn log_retry(shared: &Shared, items: &[Item], failure: &classify::Failure, delay: Duration) {
    shared.metrics.retried.inc_by(items.len() as u64);
    for item in items {
        warn!(
            externalJobPostingId = %item.request.external_id,
            status = failure.status,
            error_message = %failure.message,
            delay_ms = delay.as_millis() as u64,
            "Retrying."
        );
    }
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
