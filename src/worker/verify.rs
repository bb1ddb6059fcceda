//! The task verifier: consumes the verification queue on its own channel and prefetch, gathers due
//! checks into lookups of many task ids, and settles every check by its task's status — verified
//! (its `closed` outcome, then the ack), `FAILED` (the original request dead-lettered as `task-failed`), or not known yet (on to the
//! next delay tier; after 24 hours, dead-lettered as `task-unknown`).
//!
//! It is part of the daemon and follows the sender's rules and shape: one lookup on its way is a
//! small loop over the worker's [`attempt`] and [`decide`], carrying out each step; settling
//! publishes (and waits for the confirm) before acking, on this channel's own [`Settler`]; trouble
//! with the lookup itself is waited out instead of blamed on the close; and on shutdown or a lost
//! session whatever is not settled is given back — the broker keeps it. The formats it reads and
//! writes (the pending check, the delay tiers, the lookup) are [`crate::tasks`]' and
//! [`crate::linkedin::lookup`]'s, which know nothing of the worker. (It used to live in `tasks/`,
//! calling back into the worker's settler: a loop in the module graph.)

use super::attempt::{Attempted, Request, attempt, drop_refused_token, wait, wait_for_token};
use super::decide::{Isolating, State, Step, decide};
use super::hold::Fault;
use super::settle::Settler;
use super::{Shared, sleep_until_deadline};
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{Failure, truncate_utf8};
use crate::linkedin::classify;
use crate::linkedin::lookup::{self, LookupOutcome, TASK_URN_PREFIX, TaskQuery, TaskStatus};
use crate::linkedin::token::{AccessToken, NoToken, TokenError};
use crate::outcome::Ended;
use crate::retry::RetryState;
use crate::tasks::Schedule;
use crate::tasks::pending::{self, PendingCheck};
use crate::telemetry::spans;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

/// Checks the verifier may hold unacknowledged: a few full lookups' worth.
pub(crate) const CHECK_PREFETCH: u16 = 250;

/// A delivery from the verification queue and what it says.
struct Check {
    delivery: Delivery,
    pending: PendingCheck,
    /// `process <verification queue>`: the child of the span that scheduled the check (its
    /// `traceparent`), so that a check made hours later is in the close request's trace.
    span: tracing::Span,
}

/// How one check of an answered lookup ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Settled {
    /// LinkedIn reported (or did not report) its task.
    Status(TaskStatus),
    /// LinkedIn refused to look its id up, alone.
    Refused(classify::Failure),
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

    /// A lookup of `checks` (each fits, having been in a lookup before), due now.
    fn of(checks: Vec<Check>) -> Lookup {
        let mut lookup = Lookup::new(Instant::now());
        for check in &checks {
            lookup.query.try_add(&check.pending.task_id);
        }
        lookup.checks = checks;
        lookup
    }
}

/// Verifies accepted closes for one broker session.
pub(crate) struct Verifier {
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    /// The verification channel's own settler (see [`Settler::for_another_channel`]).
    settler: Settler,
    /// How long the first check of a lookup waits for others to join it.
    linger: Duration,
}

impl Verifier {
    pub(crate) fn new(
        shared: Arc<Shared>,
        schedule: Arc<Schedule>,
        settler: Settler,
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
    pub(crate) async fn start(
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
        let consuming = Consuming {
            channel,
            consumer_tag,
            consumer,
            stop,
            tracker: tracker.clone(),
            down: down.clone(),
        };
        tracker.spawn(Arc::new(self).consume(consuming));
        Ok(down)
    }

    async fn consume(self: Arc<Self>, mut consuming: Consuming) {
        let (stop, tracker) = (consuming.stop.clone(), consuming.tracker.clone());
        let mut filling: Option<Lookup> = None;
        loop {
            let due = filling.as_ref().map(|lookup| lookup.due);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                delivery = consuming.consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if let Some(full) = self.accept(delivery, &mut filling, &tracker) {
                            self.dispatch(full, &stop, &tracker);
                        }
                    }
                    Some(Err(error)) => {
                        warn!(%error, "The task-check consumer failed.");
                        consuming.down.cancel();
                        break;
                    }
                    None => {
                        warn!("The task-check consumer was cancelled by the broker.");
                        consuming.down.cancel();
                        break;
                    }
                },
                _ = sleep_until_deadline(due) => {
                    if let Some(lookup) = filling.take() {
                        self.dispatch(lookup, &stop, &tracker);
                    }
                }
            }
        }
        consuming.cancel().await;
        // Gathered but never asked about: back to the verification queue, checked after a restart.
        if let Some(lookup) = filling {
            self.give_back_all(&lookup.checks).await;
        }
    }

    /// Reads one check and adds it to the lookup being filled; returns a lookup that is full.
    fn accept(
        self: &Arc<Self>,
        delivery: Delivery,
        filling: &mut Option<Lookup>,
        tracker: &TaskTracker,
    ) -> Option<Lookup> {
        let span = spans::process(self.schedule.check_queue(), &delivery);
        let pending =
            match PendingCheck::read(delivery.properties.headers().as_ref(), SystemTime::now()) {
                Ok(pending) => pending,
                Err(malformed) => {
                    self.dead_letter_unusable(delivery, malformed.to_string(), tracker, span);
                    return None;
                }
            };
        if let Some(why) = unusable_task_id(&pending.task_id) {
            self.dead_letter_unusable(delivery, why, tracker, span);
            return None;
        }
        spans::external_id(&span, &pending.external_id);
        let linger = self.linger;
        let lookup = filling.get_or_insert_with(|| Lookup::new(Instant::now() + linger));
        if lookup.query.try_add(&pending.task_id) {
            lookup.checks.push(Check {
                delivery,
                pending,
                span,
            });
            return None;
        }
        let mut next = Lookup::new(Instant::now() + linger);
        next.query.try_add(&pending.task_id);
        next.checks.push(Check {
            delivery,
            pending,
            span,
        });
        filling.replace(next)
    }

    fn dispatch(self: &Arc<Self>, lookup: Lookup, stop: &CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(self.clone().verify(lookup, stop.clone()));
    }

    /// A message in the verification queue that cannot be checked: dead-lettered rather than
    /// cycled forever.
    fn dead_letter_unusable(
        self: &Arc<Self>,
        delivery: Delivery,
        why: String,
        tracker: &TaskTracker,
        span: tracing::Span,
    ) {
        error!(error = %why, "Unusable task check; dead-lettering it.");
        let verifier = self.clone();
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        let failure = Failure::task_unknown(422, why, 0);
        tracker.spawn(
            async move {
                verifier
                    .settler
                    .dead_letter(&delivery, &original, None, failure)
                    .await
            }
            .instrument(span),
        );
    }

    /// Asks LinkedIn about one lookup's tasks until it answers, then settles every check.
    fn verify(self: Arc<Self>, lookup: Lookup, stop: CancellationToken) -> BoxFuture<'static, ()> {
        let retry = self.shared.retry.new_state();
        let verifying = Verifying {
            verifier: self,
            checks: lookup.checks,
            query: lookup.query,
            retry,
            stop,
            probing: false,
        };
        Box::pin(verifying.run())
    }

    /// Settles each check of an answered lookup, acking them as one run. They settle concurrently:
    /// each may wait for a confirm (an outcome, a dead letter, the next check).
    async fn settle_all(&self, settled: Vec<(Check, Settled)>) {
        let settling = settled.into_iter().map(|(check, settled)| {
            let span = check.span.clone();
            async move {
                match settled {
                    Settled::Status(status) => self.settle(check, status).await,
                    Settled::Refused(failure) => self.dead_letter_refused(check, failure).await,
                }
            }
            .instrument(span)
        });
        self.settler
            .together(futures_util::future::join_all(settling))
            .await;
    }

    /// Settles one check by its task's status.
    async fn settle(&self, check: Check, status: TaskStatus) {
        let pending = check.pending.checked();
        match status {
            TaskStatus::Succeeded {
                job_posting,
                status,
            } => {
                info!(
                    externalJobPostingId = %pending.external_id,
                    task_id = %pending.task_id,
                    job_posting = job_posting.as_deref().unwrap_or("-"),
                    checks = pending.checks,
                    status,
                    "Close verified."
                );
                self.shared.metrics.task(status);
                // Now, and only now, the close is done: its outcome before the ack.
                let delivery = &check.delivery;
                let original = pending::original_properties(&delivery.properties, &self.schedule);
                let ended = Ended::Closed {
                    verified: true,
                    task_id: Some(&pending.task_id),
                    job_posting: job_posting.as_deref(),
                };
                let (external_id, attempts) = (&pending.external_id, pending.send_attempts);
                self.settler
                    .finish(delivery, &original, external_id, attempts, ended)
                    .await;
            }
            TaskStatus::Failed { message } => {
                self.shared.metrics.task("FAILED");
                // The job is still open: a later close of it must be sent, not remembered.
                self.shared.recent.forget(&pending.external_id);
                let failure = Failure::task_failed(message, pending.checks, &pending.task_id);
                self.dead_letter(&check.delivery, &pending, failure).await;
            }
            TaskStatus::Pending { status } => self.check_later(check, &status, 200).await,
        }
    }

    /// LinkedIn refused to look up this task id on its own: it can never be checked.
    async fn dead_letter_refused(&self, check: Check, refused: classify::Failure) {
        let pending = check.pending.checked();
        self.shared.metrics.task("UNKNOWN");
        let message = format!(
            "LinkedIn refused to look up the task id: {}",
            refused.message
        );
        let failure = Failure::task_unknown(refused.status, message, pending.checks)
            .with_task_id(&pending.task_id);
        self.dead_letter(&check.delivery, &pending, failure).await;
    }

    /// The task's fate is not known yet (`seen` says what was seen instead): on to the next delay
    /// tier — or, once the task id has expired, dead-lettered as `task-unknown`.
    async fn check_later(&self, check: Check, seen: &str, http_status: u16) {
        let Check {
            delivery,
            pending,
            span,
        } = check;
        let pending = pending.checked();
        let now = SystemTime::now();
        if pending.is_expired(now) {
            self.shared.metrics.task("UNKNOWN");
            let hours = pending.age(now).as_secs() / 3600;
            let message = format!(
                "the close task's status was still unknown ({seen}) {hours} hours after LinkedIn accepted the close, after {} checks; its task id has expired",
                pending.checks
            );
            let failure = Failure::task_unknown(http_status, message, pending.checks)
                .with_task_id(&pending.task_id);
            return self.dead_letter(&delivery, &pending, failure).await;
        }
        let tier = self.schedule.tier_after(pending.checks);
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        // The next check is the child of this one.
        spans::ended(&span, "checking-later");
        let properties = pending::traced(
            pending.properties(&original),
            spans::context_of(&span).as_ref(),
        );
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
                self.settler.give_back_after_pause(&delivery).await;
            }
        }
    }

    /// Dead-letters the original request a check carries.
    async fn dead_letter(&self, delivery: &Delivery, pending: &PendingCheck, failure: Failure) {
        let original = pending::original_properties(&delivery.properties, &self.schedule);
        let external_id = Some(pending.external_id.as_str());
        self.settler
            .dead_letter(delivery, &original, external_id, failure)
            .await;
    }

    async fn give_back_all(&self, checks: &[Check]) {
        self.settler
            .together(async {
                for check in checks {
                    self.settler.give_back(&check.delivery).await;
                }
            })
            .await;
    }
}

/// Why a well-formed check's task id can never be looked up, if it cannot.
fn unusable_task_id(task_id: &str) -> Option<String> {
    if !task_id.starts_with(TASK_URN_PREFIX) {
        return Some(format!(
            "the task id {:?} is not a {TASK_URN_PREFIX} URN, so LinkedIn cannot look it up; it was never sent",
            truncate_utf8(task_id, 200)
        ));
    }
    if !TaskQuery::fits_alone(task_id) {
        return Some(format!(
            "the task id is too long to look up ({} bytes)",
            task_id.len()
        ));
    }
    None
}

/// The verification queue's consumer, and what its loop answers to.
struct Consuming {
    channel: Channel,
    consumer_tag: String,
    consumer: Consumer,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Cancelled when the consumer dies on its own.
    down: CancellationToken,
}

impl Consuming {
    async fn cancel(&self) {
        let tag = self.consumer_tag.as_str().into();
        if let Err(error) = self
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            debug!(%error, "Cancelling the task-check consumer failed.");
        }
    }
}

/// One lookup on its way: its checks, its query and its retry history.
struct Verifying {
    verifier: Arc<Verifier>,
    checks: Vec<Check>,
    query: TaskQuery,
    retry: RetryState,
    stop: CancellationToken,
    /// This lookup met refused credentials first: it is the hold's prober (see [`super::hold`]).
    probing: bool,
}

/// What the loop does after a step.
enum Next {
    Again(Duration),
    /// Again once the token cache may ask for a token again.
    AfterToken(NoToken),
    Done,
}

impl Verifying {
    async fn run(mut self) {
        loop {
            let next = match self.attempt().await {
                Attempted::Answered { token, answer } => {
                    self.token_had();
                    let step = self.decide(answer);
                    self.carry_out(step, &token).await
                }
                Attempted::NoToken(no_token) => self.no_token(no_token),
                Attempted::Stopped => return self.give_back().await,
            };
            let go_on = match next {
                Next::Done => return,
                Next::Again(delay) => wait(&self.stop, delay).await,
                Next::AfterToken(mut no_token) => wait_for_token(&self.stop, &mut no_token).await,
            };
            if !go_on {
                return self.give_back().await;
            }
        }
    }

    /// No token. Refused credentials hold the worker: the first lookup to meet them is the prober
    /// (the session stops consuming closes meanwhile). Every lookup keeps its checks and waits for
    /// the token cache's next step, which asks once for the whole worker: given back, the checks
    /// would come straight back from the broker.
    fn no_token(&mut self, no_token: NoToken) -> Next {
        let hold = &self.verifier.shared.hold;
        match &no_token.error {
            TokenError::Refused { status, message } => {
                let fault = Fault::Credentials(classify::Failure::new(*status, message.clone()));
                if self.probing {
                    hold.still_blocked(&fault);
                } else if hold.block(&fault) {
                    self.probing = true;
                }
            }
            TokenError::Unavailable(_) if no_token.asked => {
                let retry_in = no_token.retry_at.saturating_duration_since(Instant::now());
                warn!(error = %no_token.error, retry_in_ms = retry_in.as_millis() as u64, task_ids = self.query.ids().len(),
                    "No LinkedIn token for the task check; waiting for the next token request.");
            }
            TokenError::Unavailable(_) => {}
        }
        Next::AfterToken(no_token)
    }

    /// A token was had: a prober's hold for refused credentials is over; a hold for anything else
    /// is not this lookup's to probe, so it opens quietly (never a hold with nobody probing).
    fn token_had(&mut self) {
        if std::mem::take(&mut self.probing) {
            let hold = &self.verifier.shared.hold;
            if !hold.token_had() {
                hold.stop_probing();
            }
        }
    }

    async fn attempt(&mut self) -> Attempted<LookupOutcome> {
        let (shared, query) = (&self.verifier.shared, &self.query);
        // One lookup serves many checks: linked to each check's span.
        let span = spans::client(spans::TASK_LOOKUP, "GET", shared.linkedin.tasks_url());
        spans::batch(&span, self.checks.len());
        spans::attempt(&span, self.retry.attempts + 1);
        for check in &self.checks {
            spans::link(&span, &check.span);
        }
        let attempts = &mut self.retry.attempts;
        attempt(shared, &self.stop, Request::Lookup, attempts, |token| {
            async move { lookup::lookup(&shared.linkedin, &token, query).await }.instrument(span)
        })
        .await
    }

    fn decide(&mut self, outcome: LookupOutcome) -> Step<Settled> {
        let ids: Vec<&str> = self
            .checks
            .iter()
            .map(|c| c.pending.task_id.as_str())
            .collect();
        let answered = |statuses: lookup::TaskStatuses, _: State<'_>| {
            let each = ids.iter().map(|id| Settled::Status(statuses.status_of(id)));
            Step::SettleEach(each.collect())
        };
        let state = State {
            policy: &self.verifier.shared.retry,
            retry: &mut self.retry,
            now: Instant::now(),
            ids: &ids,
            // A lookup is never a poison element's: whole-lookup failures split as always.
            isolating: Isolating::default(),
        };
        decide(outcome, state, answered, Settled::Refused)
    }

    async fn carry_out(&mut self, step: Step<Settled>, token: &AccessToken) -> Next {
        let task_ids = self.query.ids().len();
        let shared = &self.verifier.shared;
        let policy = &shared.retry;
        match step {
            Step::SettleEach(settled) => {
                debug!(task_ids, "Task statuses answered.");
                let checks = std::mem::take(&mut self.checks);
                self.verifier
                    .settle_all(checks.into_iter().zip(settled).collect())
                    .await;
                Next::Done
            }
            Step::Split { failure, .. } => {
                warn!(task_ids, status = failure.status, error_message = %failure.message,
                    "LinkedIn refused the lookup for one of its ids; splitting it to find that id.");
                self.split().await;
                Next::Done
            }
            Step::GiveUp(failure) => {
                // Holding the checks any longer helps nobody: they wait for their next tier in
                // the broker, and the 24-hour limit still applies.
                warn!(task_ids, status = failure.status, error_message = %failure.message,
                    "Task lookups keep failing; the checks wait for their next turn.");
                let seen = format!("HTTP {}: {}", failure.status, failure.message);
                for check in std::mem::take(&mut self.checks) {
                    self.verifier
                        .check_later(check, &seen, failure.status)
                        .await;
                }
                Next::Done
            }
            Step::ResendAll {
                after,
                refresh_token,
                failure,
            } => {
                if !refresh_token {
                    log_retry(task_ids, &failure, after);
                } else if drop_refused_token(shared, token, after).await {
                    error!(status = failure.status, error_message = %failure.message, delay_ms = after.as_millis() as u64,
                        "LinkedIn keeps refusing fresh tokens for task checks; check the client credentials. Retrying.");
                }
                Next::Again(after)
            }
            Step::Throttled {
                retry_after,
                failure,
            } => {
                let delay = policy.on_wait(&mut self.retry, retry_after);
                log_retry(task_ids, &failure, delay);
                Next::Again(delay)
            }
            // Lookups are never answered per element; wait as for trouble.
            Step::ResendWithout { .. } => Next::Again(policy.on_wait(&mut self.retry, None)),
            // Nor held: a lookup refused as an integration fault is waited out.
            Step::Hold(failure) => {
                let delay = policy.on_wait(&mut self.retry, None);
                log_retry(task_ids, &failure, delay);
                Next::Again(delay)
            }
        }
    }

    /// Looks up each half on its own, to isolate the id LinkedIn refused.
    async fn split(&mut self) {
        let mut left = std::mem::take(&mut self.checks);
        let right = left.split_off(left.len() / 2);
        let halves = [left, right].map(|half| {
            let verifier = self.verifier.clone();
            verifier.verify(Lookup::of(half), self.stop.clone())
        });
        futures_util::future::join_all(halves).await;
    }

    async fn give_back(&mut self) {
        if std::mem::take(&mut self.probing) {
            self.verifier.shared.hold.stop_probing();
        }
        self.verifier.give_back_all(&self.checks).await;
    }
}

fn log_retry(task_ids: usize, failure: &classify::Failure, delay: Duration) {
    warn!(
        task_ids,
        status = failure.status,
        error_message = %failure.message,
        delay_ms = delay.as_millis() as u64,
        "Task lookup failed; retrying."
    );
}
