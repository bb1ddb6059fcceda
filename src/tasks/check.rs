//! The verifier: consumes the verification queue on its own channel and prefetch, gathers due checks
//! into lookups of many task ids, and settles every check by its task's status — verified (ack),
//! `FAILED` (the original request dead-lettered as `task-failed`), or not known yet (on to the next
//! delay tier; after 24 hours, dead-lettered as `task-unknown`).
//!
//! It runs inside the worker's broker session and follows its rules: publish (and wait for the
//! confirm) before acking, wait out any trouble with the lookup itself instead of blaming the close,
//! and on shutdown or a lost session give back whatever is not settled — the broker keeps it.

use super::lookup::{self, TASK_URN_PREFIX, TaskQuery, TaskStatus, TaskStatuses};
use super::pending::{self, PendingCheck};
use super::queues::Schedule;
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{Failure, Reason};
use crate::worker::Shared;
use crate::worker::attempt::{Attempted, Request, attempt, wait};
use crate::worker::decide::{State, Step, decide};
use crate::worker::settle::{self, Settler};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
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

/// How one check of an answered lookup ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Settled {
    /// LinkedIn reported (or did not report) its task.
    Status(TaskStatus),
    /// LinkedIn refused to look its id up, alone.
    Refused(crate::linkedin::classify::Failure),
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
            Ok(pending) if !pending.task_id.starts_with(TASK_URN_PREFIX) => {
                let why = format!(
                    "the task id {:?} is not a {TASK_URN_PREFIX} URN, so LinkedIn cannot look it up; it was never sent",
                    crate::dead_letter::truncate_utf8(&pending.task_id, 200)
                );
                self.dead_letter_unusable(delivery, why, tracker);
                return None;
            }
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

    /// Asks LinkedIn about one lookup's tasks until it answers, then settles every check: a small
    /// loop over the worker's [`attempt`] and [`decide`], like the sender's.
    fn verify(self: Arc<Self>, lookup: Lookup, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let shared = self.shared.clone();
            let policy = shared.retry;
            let mut retry = policy.new_state();
            let Lookup { checks, query, .. } = lookup;
            let task_ids = query.ids().len();
            loop {
                let attempted = attempt(
                    &shared,
                    &stop,
                    Request::Lookup,
                    &mut retry.attempts,
                    |token| {
                        let (shared, query) = (&shared, &query);
                        async move { lookup::lookup(&shared.linkedin, &token, query).await }
                    },
                )
                .await;
                let (token, outcome) = match attempted {
                    Attempted::Answered { token, answer } => (token, answer),
                    Attempted::Stopped => return give_back_all(&checks).await,
                    Attempted::NoToken(error) => {
                        let delay = policy.on_wait(&mut retry, None);
                        error!(%error, task_ids, delay_ms = delay.as_millis() as u64, "No LinkedIn token for the task check; retrying.");
                        if !wait(&stop, delay).await {
                            return give_back_all(&checks).await;
                        }
                        continue;
                    }
                };
                let step = {
                    let ids: Vec<&str> =
                        checks.iter().map(|c| c.pending.task_id.as_str()).collect();
                    let answered = |statuses: TaskStatuses, _: State<'_>| {
                        Step::SettleEach(
                            ids.iter()
                                .map(|id| Settled::Status(statuses.status_of(id)))
                                .collect(),
                        )
                    };
                    decide(
                        outcome,
                        State {
                            policy: &policy,
                            retry: &mut retry,
                            now: Instant::now(),
                            ids: &ids,
                        },
                        answered,
                        Settled::Refused,
                    )
                };
                let delay = match step {
                    Step::SettleEach(settled) => {
                        debug!(task_ids, "Task statuses answered.");
                        return self
                            .settle_all(checks.into_iter().zip(settled).collect())
                            .await;
                    }
                    Step::Split { failure, .. } => {
                        warn!(task_ids, status = failure.status, error_message = %failure.message,
                            "LinkedIn refused the lookup for one of its ids; splitting it to find that id.");
                        let mut left = checks;
                        let right = left.split_off(left.len() / 2);
                        let halves = [left, right].map(|half| {
                            let mut query = TaskQuery::default();
                            for check in &half {
                                query.try_add(&check.pending.task_id);
                            }
                            self.clone().verify(
                                Lookup {
                                    checks: half,
                                    query,
                                    due: Instant::now(),
                                },
                                stop.clone(),
                            )
                        });
                        futures_util::future::join_all(halves).await;
                        return;
                    }
                    Step::GiveUp(failure) => {
                        // Holding the checks any longer helps nobody: they wait for their next
                        // tier in the broker, and the 24-hour limit still applies.
                        warn!(task_ids, status = failure.status, error_message = %failure.message,
                            "Task lookups keep failing; the checks wait for their next turn.");
                        for check in checks {
                            let seen = format!("HTTP {}: {}", failure.status, failure.message);
                            self.check_later(check, &seen, failure.status).await;
                        }
                        return;
                    }
                    Step::ResendAll {
                        after,
                        refresh_token,
                        failure,
                    } => {
                        if refresh_token {
                            shared.linkedin.tokens.invalidate(&token).await;
                            if !after.is_zero() {
                                error!(status = failure.status, error_message = %failure.message, delay_ms = after.as_millis() as u64,
                                    "LinkedIn keeps refusing fresh tokens for task checks; check the client credentials. Retrying.");
                            }
                        } else {
                            log_retry(task_ids, &failure, after);
                        }
                        after
                    }
                    Step::Throttled {
                        retry_after,
                        failure,
                    } => {
                        let delay = policy.on_wait(&mut retry, retry_after);
                        log_retry(task_ids, &failure, delay);
                        delay
                    }
                    // Lookups are never answered per element nor held; wait as for trouble.
                    Step::ResendWithout { .. } => policy.on_wait(&mut retry, None),
                    Step::Hold(failure) => {
                        let delay = policy.on_wait(&mut retry, None);
                        log_retry(task_ids, &failure, delay);
                        delay
                    }
                };
                if !wait(&stop, delay).await {
                    return give_back_all(&checks).await;
                }
            }
        })
    }

    async fn settle_all(&self, settled: Vec<(Check, Settled)>) {
        for (check, settled) in settled {
            let status = match settled {
                Settled::Status(status) => status,
                Settled::Refused(failure) => {
                    self.dead_letter_refused(check, failure).await;
                    continue;
                }
            };
            match status {
                TaskStatus::Succeeded {
                    job_posting,
                    status,
                } => {
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
                        status,
                        "Close verified."
                    );
                    self.shared.metrics.task(status);
                    settle::ack(&check.delivery).await;
                }
                TaskStatus::Failed { message } => {
                    let pending = check.pending.checked();
                    self.shared.metrics.task("FAILED");
                    // The job is still open: a later close of it must be sent, not remembered.
                    self.shared.recent.forget(&pending.external_id);
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

    /// LinkedIn refused to look up this task id on its own: it can never be checked.
    async fn dead_letter_refused(&self, check: Check, failure: crate::linkedin::classify::Failure) {
        let Check { delivery, pending } = check;
        let pending = pending.checked();
        self.shared.metrics.task("UNKNOWN");
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        let failure = Failure {
            reason: Reason::TaskUnknown,
            status: failure.status,
            message: format!(
                "LinkedIn refused to look up the task id: {}",
                failure.message
            ),
            attempts: pending.checks,
            task_id: Some(pending.task_id.clone()),
        };
        self.settler
            .dead_letter_original(&delivery, &original, Some(&pending.external_id), failure)
            .await;
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
