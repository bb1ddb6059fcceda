//! The verifier: consumes the verification queue on its own channel and prefetch, gathers due checks
//! into lookups of many task ids, and settles every check by its task's status — verified (ack),
//! `FAILED` (the original request dead-lettered as `task-failed`), or not known yet (on to the next
//! delay tier; after 24 hours, dead-lettered as `task-unknown`).
//!
//! It runs inside the worker's broker session and follows its rules: publish (and wait for the
//! confirm) before acking, wait out any trouble with the lookup itself instead of blaming the close,
//! and on shutdown or a lost session give back whatever is not settled — the broker keeps it.

use super::lookup::{self, LookupOutcome, TaskQuery, TaskStatus, TaskStatuses};
use super::pending::{self, PendingCheck};
use super::queues::Schedule;
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{Failure, Reason};
use crate::worker::Shared;
use crate::worker::settle::{self, Settler};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Checks the verifier may hold unacknowledged: a few full lookups' worth.
pub const CHECK_PREFETCH: u16 = 250;

/// A delivery from the verification queue and what it says.
struct Check {
    delivery: Delivery,
    pending: PendingCheck,
}

/// Checks gathered for one lookup.
struct Lookup {
    checks: Vec<Check>,
    query: TaskQuery,
    due: Instant,
}

impl Lookup {
    fn new(due: Instant) -> Lookup {
        Lookup {
            checks: Vec::new(),
            query: TaskQuery::default(),
            due,
        }
    }
}

/// Verifies accepted closes for one broker session.
pub struct Verifier {
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    settler: Arc<Settler>,
    /// How long the first check of a lookup waits for others to join it.
    linger: Duration,
}

impl Verifier {
    pub fn new(
        shared: Arc<Shared>,
        schedule: Arc<Schedule>,
        settler: Arc<Settler>,
        linger: Duration,
    ) -> Verifier {
        Verifier {
            shared,
            schedule,
            settler,
            linger,
        }
    }

    /// Starts consuming the verification queue; the consuming loop and its lookups run on `tracker`
    /// until `stop`. The returned token is cancelled if the consumer dies on its own (the session
    /// is broken then).
    pub async fn start(
        self,
        connection: &Connection,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<CancellationToken, AmqpError> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(CHECK_PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer_tag = format!("job-closer-tasks-{}", uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(
                amqp::queue_name(self.schedule.check_queue())?,
                consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(
            queue = %self.schedule.check_queue(),
            delays_ms = ?self.schedule.tiers().iter().map(|t| t.delay.as_millis() as u64).collect::<Vec<_>>(),
            "Verifying close tasks."
        );
        let down = CancellationToken::new();
        let verifier = Arc::new(self);
        tracker.spawn(verifier.consume(
            channel,
            consumer_tag,
            consumer,
            stop,
            tracker.clone(),
            down.clone(),
        ));
        Ok(down)
    }

    async fn consume(
        self: Arc<Self>,
        channel: lapin::Channel,
        consumer_tag: String,
        mut consumer: Consumer,
        stop: CancellationToken,
        tracker: TaskTracker,
        down: CancellationToken,
    ) {
        let mut filling: Option<Lookup> = None;
        loop {
            let due = filling.as_ref().map(|lookup| lookup.due);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if let Some(full) = self.accept(delivery, &mut filling, &tracker) {
                            self.dispatch(full, &stop, &tracker);
                        }
                    }
                    Some(Err(error)) => {
                        warn!(%error, "The task-check consumer failed.");
                        down.cancel();
                        break;
                    }
                    None => {
                        warn!("The task-check consumer was cancelled by the broker.");
                        down.cancel();
                        break;
                    }
                },
                _ = sleep_until(due) => {
                    if let Some(lookup) = filling.take() {
                        self.dispatch(lookup, &stop, &tracker);
                    }
                }
            }
        }
        if let Err(error) = channel
            .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
            .await
        {
            debug!(%error, "Cancelling the task-check consumer failed.");
        }
        // Gathered but never asked about: back to the verification queue, checked after a restart.
        if let Some(lookup) = filling {
            give_back_all(&lookup.checks).await;
        }
    }

    /// Reads one check and adds it to the lookup being filled; returns a lookup that is full.
    fn accept(
        &self,
        delivery: Delivery,
        filling: &mut Option<Lookup>,
        tracker: &TaskTracker,
    ) -> Option<Lookup> {
        let now = SystemTime::now();
        let pending = match PendingCheck::read(delivery.properties.headers().as_ref(), now) {
            Ok(pending) if TaskQuery::fits_alone(&pending.task_id) => pending,
            Ok(pending) => {
                let why = format!(
                    "the task id is too long to look up ({} bytes)",
                    pending.task_id.len()
                );
                self.dead_letter_unusable(delivery, why, tracker);
                return None;
            }
            Err(malformed) => {
                self.dead_letter_unusable(delivery, malformed.to_string(), tracker);
                return None;
            }
        };
        let linger = self.linger;
        let lookup = filling.get_or_insert_with(|| Lookup::new(Instant::now() + linger));
        if lookup.query.try_add(&pending.task_id) {
            lookup.checks.push(Check { delivery, pending });
            return None;
        }
        let mut next = Lookup::new(Instant::now() + linger);
        next.query.try_add(&pending.task_id);
        next.checks.push(Check { delivery, pending });
        filling.replace(next)
    }

    fn dispatch(self: &Arc<Self>, lookup: Lookup, stop: &CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(self.clone().verify(lookup, stop.clone()));
    }

    /// A message in the verification queue that cannot be checked: dead-lettered rather than
    /// cycled forever.
    fn dead_letter_unusable(&self, delivery: Delivery, why: String, tracker: &TaskTracker) {
        error!(error = %why, "Unusable task check; dead-lettering it.");
        let settler = self.settler.clone();
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        let failure = Failure {
            reason: Reason::TaskUnknown,
            status: 422,
            message: why,
            attempts: 0,
            task_id: None,
        };
        tracker.spawn(async move {
            settler
                .dead_letter_original(&delivery, &original, None, failure)
                .await
        });
    }

    /// Asks LinkedIn about one lookup's tasks until it answers, then settles every check.
    async fn verify(self: Arc<Self>, lookup: Lookup, stop: CancellationToken) {
        let shared = &self.shared;
        let policy = shared.retry;
        let mut retry = policy.new_state();
        // As for closes: the first 401 only refreshes the token; more in a row back off.
        let mut unauthorized_in_a_row = 0u32;
        let task_ids = lookup.query.ids().len();
        loop {
            let token = match shared.linkedin.tokens.get().await {
                Ok(token) => token,
                Err(error) => {
                    let delay = policy.on_wait(&mut retry, None);
                    error!(%error, task_ids, delay_ms = delay.as_millis() as u64, "No LinkedIn token for the task check; retrying.");
                    if !wait(&stop, delay).await {
                        return give_back_all(&lookup.checks).await;
                    }
                    continue;
                }
            };
            shared.metrics.token_requests.inner().store(
                shared.linkedin.tokens.fetches(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let outcome = {
                let _permit = shared.in_flight.acquire().await.expect("never closed");
                retry.attempts += 1;
                lookup::lookup(&shared.linkedin, &token, &lookup.query).await
            };
            let delay = match outcome {
                LookupOutcome::Answered(statuses) => {
                    debug!(task_ids, "Task statuses answered.");
                    return self.settle_all(lookup.checks, &statuses).await;
                }
                LookupOutcome::RefreshToken(failure) => {
                    shared.linkedin.tokens.invalidate(&token).await;
                    unauthorized_in_a_row += 1;
                    if unauthorized_in_a_row > 1 {
                        let delay = policy.on_wait(&mut retry, None);
                        error!(status = failure.status, error_message = %failure.message, delay_ms = delay.as_millis() as u64,
                            "LinkedIn keeps refusing fresh tokens for task checks; check the client credentials. Retrying.");
                        delay
                    } else {
                        Duration::ZERO
                    }
                }
                LookupOutcome::Throttled {
                    retry_after,
                    failure,
                } => {
                    unauthorized_in_a_row = 0;
                    let delay = policy.on_wait(&mut retry, retry_after);
                    log_retry(task_ids, &failure, delay);
                    delay
                }
                LookupOutcome::Retry {
                    retry_after,
                    failure,
                } => {
                    unauthorized_in_a_row = 0;
                    match policy.on_transient(&mut retry, Instant::now(), retry_after) {
                        crate::retry::Verdict::RetryIn(delay) => {
                            log_retry(task_ids, &failure, delay);
                            delay
                        }
                        crate::retry::Verdict::GiveUp => {
                            // Holding the checks any longer helps nobody: they wait for their
                            // next tier in the broker, and the 24-hour limit still applies.
                            warn!(task_ids, status = failure.status, error_message = %failure.message,
                                "Task lookups keep failing; the checks wait for their next turn.");
                            for check in lookup.checks {
                                let seen = format!("HTTP {}: {}", failure.status, failure.message);
                                self.check_later(check, &seen, failure.status).await;
                            }
                            return;
                        }
                    }
                }
            };
            if !delay.is_zero() && !wait(&stop, delay).await {
                return give_back_all(&lookup.checks).await;
            }
        }
    }

    async fn settle_all(&self, checks: Vec<Check>, statuses: &TaskStatuses) {
        for check in checks {
            match statuses.status_of(&check.pending.task_id) {
                TaskStatus::Succeeded { job_posting } => {
                    let PendingCheck {
                        task_id,
                        external_id,
                        checks,
                        ..
                    } = check.pending.checked();
                    info!(
                        externalJobPostingId = %external_id,
                        %task_id,
                        job_posting = job_posting.as_deref().unwrap_or("-"),
                        checks,
                        status = "SUCCEEDED",
                        "Close verified."
                    );
                    self.shared.metrics.task("SUCCEEDED");
                    settle::ack(&check.delivery).await;
                }
                TaskStatus::Failed { message } => {
                    let pending = check.pending.checked();
                    self.shared.metrics.task("FAILED");
                    let failure = Failure {
                        reason: Reason::TaskFailed,
                        status: 200,
                        message,
                        attempts: pending.checks,
                        task_id: Some(pending.task_id.clone()),
                    };
                    let original =
                        pending::original_properties(&check.delivery.properties, &self.schedule);
                    self.settler
                        .dead_letter_original(
                            &check.delivery,
                            &original,
                            Some(&pending.external_id),
                            failure,
                        )
                        .await;
                }
                TaskStatus::Pending { status } => self.check_later(check, &status, 200).await,
            }
        }
    }

    /// The task's fate is not known yet (`seen` says what was seen instead): on to the next delay
    /// tier — or, once the task id has expired, dead-lettered as `task-unknown`.
    async fn check_later(&self, check: Check, seen: &str, http_status: u16) {
        let Check { delivery, pending } = check;
        let pending = pending.checked();
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        let now = SystemTime::now();
        if pending.is_expired(now) {
            self.shared.metrics.task("UNKNOWN");
            let hours = pending.age(now).as_secs() / 3600;
            let failure = Failure {
                reason: Reason::TaskUnknown,
                status: http_status,
                message: format!(
                    "the close task's status was still unknown ({seen}) {hours} hours after LinkedIn accepted the close, after {} checks; its task id has expired",
                    pending.checks
                ),
                attempts: pending.checks,
                task_id: Some(pending.task_id.clone()),
            };
            return self
                .settler
                .dead_letter_original(&delivery, &original, Some(&pending.external_id), failure)
                .await;
        }
        let tier = self.schedule.tier_after(pending.checks);
        let properties = pending.properties(&original);
        match self
            .settler
            .hand_on(&delivery, &tier.queue, properties)
            .await
        {
            Ok(()) => info!(
                externalJobPostingId = %pending.external_id,
                task_id = %pending.task_id,
                status = seen,
                checks = pending.checks,
                recheck_in_ms = tier.delay.as_millis() as u64,
                "Close task not finished; checking again later."
            ),
            Err(error) => {
                error!(externalJobPostingId = %pending.external_id, task_id = %pending.task_id, %error,
                    "Could not schedule the next task check; it goes back to the verification queue.");
                settle::give_back_after_pause(&delivery).await;
            }
        }
    }
}

fn log_retry(task_ids: usize, failure: &crate::linkedin::classify::Failure, delay: Duration) {
    warn!(
        task_ids,
        status = failure.status,
        error_message = %failure.message,
        delay_ms = delay.as_millis() as u64,
        "Task lookup failed; retrying."
    );
}

/// Sleeps, unless told to stop first. Returns false when stopped.
async fn wait(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

async fn give_back_all(checks: &[Check]) {
    for check in checks {
        settle::give_back(&check.delivery).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
