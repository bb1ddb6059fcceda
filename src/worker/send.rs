//! Sending one group of elements until every element in it is settled: a small loop over an
//! attempt ([`prepare`] — rate limit, token, permit — then the request) and [`decide_close`] (what
//! the answer means),
//! carrying out each step — settle, resend, split, hold, wait.
//!
//! Before each attempt, elements LinkedIn accepted from this worker within the hour (or called
//! already closed) are not sent again (see [`super::recent`]): settled as `already-closed` — or,
//! with task checks on and a task to wait for, handed on as a check of the first close's task when
//! it asked for an outcome (never told `already-closed` while that task can still fail) or is a
//! redelivery (whose own check may have been lost with its session: verified all the same)
//! ([`super::decide::known_duplicate`]).
//! A fresh group first waits for its place in the window of [`super::isolation`], and one cut before
//! the culprit estimate rose is cut again to the size it says. A group that is split, for a run of
//! 5xx or an unnamed single-job fault, carries on as independent pieces with the budget spent so far,
//! as many as [`super::sizing`] says for the estimated culprit rate; what each answer shows of
//! culprits ([`shows_a_culprit`]) and every fresh close settled feed that estimate. Redeliveries
//! and duplicates go one element per group from the start and never feed it. A lone piece that
//! keeps getting 500s while LinkedIn answers others is given up on as a poison once the run
//! reaches what [`super::decide::lone_failures_to_give_up`] asks for; resent after a 500, it first
//! waits for its siblings' answers, which may make that verdict without another request.

use super::attempt::{NotReady, Request, drop_refused_token, prepare, wait, wait_for_token};
use super::decide::{
    Isolating, Known, LONE_OTHERS_ANSWERED, POISON_STATUS, Settlement, State, Step, decide_close,
    gives_up_on_a_lone_element, known_duplicate, lone_failures_to_give_up,
    refused_for_an_unnamed_job, shows_a_culprit,
};
use super::hold::Fault;
use super::isolation::{FreshInFlight, Lineage};
use super::recent::AcceptedTask;
use super::settle::Settler;
use super::sizing::recut;
use super::{Item, Shared};
use crate::dead_letter::Failure;
use crate::linkedin::classify::{self, RequestOutcome};
use crate::linkedin::token::{AccessToken, NoToken, TokenError};
use crate::outcome::Ended;
use crate::retry::RetryState;
use crate::tasks::PendingCheck;
use crate::tasks::pending;
use crate::telemetry::spans;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

/// How long a lone piece resent after a 500 waits at most for its siblings' answers: they went out
/// with it, so they come within a round trip unless they wait for the rate limit or fail too.
const SIBLINGS_WAIT: Duration = Duration::from_secs(5);

/// Elements that travel together, and their shared retry history.
pub(crate) struct Group {
    pub(crate) items: Vec<Item>,
    pub(crate) retry: RetryState,
    /// Redeliveries (or duplicates of an id in hand): kept apart from first deliveries.
    pub(crate) suspect: bool,
    /// Fresh, or a piece of a refused group.
    pub(crate) lineage: Lineage,
}

/// Everything one batch task needs from its broker session.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub(crate) settler: Arc<Settler>,
    /// Cancelled on shutdown or when the session's connection is lost: stop waiting, give back.
    pub(crate) stop: CancellationToken,
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

/// A group on its way: its elements, its retry history, and whether it probes a hold.
struct Sending {
    shared: Arc<Shared>,
    session: SessionHandle,
    items: Vec<Item>,
    retry: RetryState,
    suspect: bool,
    lineage: Lineage,
    /// A fresh group's place in the window, held until its first answer that is not a
    /// whole-request retry (a cold worker's first batch refused with a 500 tells nothing yet).
    unanswered: Option<FreshInFlight>,
    /// It failed as a whole request before (its first such failure is what counts a lone piece's
    /// culprit).
    failed_before: bool,
    /// For a lone piece: how many requests LinkedIn had answered when its run of whole-request
    /// failures began (a run only counts against it while LinkedIn answers others).
    answered_at_first_failure: Option<u64>,
    /// It got through to LinkedIn once (counted among its siblings then).
    got_through_before: bool,
    /// The whole-request transient failure of its last answer, if that was one.
    last_transient: Option<classify::Failure>,
    /// Its closes are in the estimate's count (see [`Sending::count_answered`]).
    counted: bool,
    probing: bool,
}

/// How a fresh group's wait for the window ended.
enum Admission {
    Go,
    /// Too big for the target now: these pieces go instead, each fresh.
    Recut(Vec<BoxFuture<'static, ()>>),
    Settled,
    Stopped,
}

/// How an attempt went, as far as the loop cares.
enum Tried {
    Answered {
        token: AccessToken,
        outcome: RequestOutcome,
        /// The request's CLIENT span, kept open until what comes next (a retry) is known.
        span: tracing::Span,
    },
    /// Nothing sent: no token until the token cache's next step.
    NoToken(NoToken),
    /// Nothing left to send.
    Settled,
    /// Stopped: give back what is left.
    Stopped,
}

/// What the loop does after a step.
enum Next {
    Again(Duration),
    /// Again once the token cache may ask for a token again.
    AfterToken(NoToken),
    Done,
}

/// Sends a group until all its elements are settled.
pub(crate) fn process(
    shared: Arc<Shared>,
    session: SessionHandle,
    group: Group,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut sending = Sending {
            shared,
            session,
            items: group.items,
            retry: group.retry,
            suspect: group.suspect,
            lineage: group.lineage,
            unanswered: None,
            failed_before: false,
            answered_at_first_failure: None,
            got_through_before: false,
            last_transient: None,
            counted: false,
            probing: false,
        };
        if sending.suspect && !sending.after_first_deliveries().await {
            return sending.give_back().await;
        }
        if sending.is_fresh() {
            match sending.admit().await {
                Admission::Go => {}
                Admission::Recut(pieces) => {
                    futures_util::future::join_all(pieces).await;
                    return;
                }
                Admission::Settled => return sending.finish(),
                Admission::Stopped => return sending.give_back().await,
            }
        }
        loop {
            let next = match sending.attempt().await {
                Tried::Answered {
                    token,
                    outcome,
                    span,
                } => {
                    let step = sending.decide(outcome);
                    sending.count_answered(&step);
                    // Answered, and what it showed counted: no longer an unverified fresh request
                    // (a fresh group waiting for the window now sees the estimate this answer made).
                    if !matches!(step, Step::ResendAll { .. }) {
                        sending.unanswered = None;
                    }
                    let next = sending.carry_out(step, &token).await;
                    if let Next::Again(delay) = &next {
                        spans::retry(&span, *delay);
                    }
                    next
                }
                Tried::NoToken(no_token) => sending.no_token(no_token).await,
                Tried::Settled => Next::Done,
                Tried::Stopped => return sending.give_back().await,
            };
            let go_on = match next {
                Next::Done => return sending.finish(),
                Next::Again(delay) => {
                    let waited = wait(&sending.session.stop, delay).await
                        && sending.until_siblings_answered().await;
                    if waited && let Some(failure) = sending.given_up_before_resend() {
                        sending.carry_out_give_up(failure).await;
                        return sending.finish();
                    }
                    waited
                }
                Next::AfterToken(mut no_token) => {
                    wait_for_token(&sending.session.stop, &mut no_token).await
                }
            };
            if !go_on {
                return sending.give_back().await;
            }
        }
    })
}

impl Sending {
    /// First deliveries cut by the batcher, not yet sent: these wait for the window.
    fn is_fresh(&self) -> bool {
        !self.suspect && !self.lineage.is_piece()
    }

    /// A fresh group waits until the window lets it go, at the size the estimate asks for now (the
    /// batcher cut it when the estimate may have been lower).
    async fn admit(&mut self) -> Admission {
        let isolation = self.shared.isolation.clone();
        loop {
            let changed = isolation.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let items = std::mem::take(&mut self.items);
            self.items =
                settle_known(&self.shared, &self.session, items, self.retry.attempts).await;
            if self.items.is_empty() {
                return Admission::Settled;
            }
            if self.shared.hold.is_blocked() {
                return Admission::Stopped;
            }
            if let Some(sizes) = recut(self.items.len(), isolation.fresh_size()) {
                return Admission::Recut(self.pieces(sizes, || Lineage::Fresh));
            }
            if let Some(place) = isolation.try_admit(self.items.len()) {
                self.unanswered = Some(place);
                return Admission::Go;
            }
            tokio::select! {
                biased;
                _ = self.session.stop.cancelled() => return Admission::Stopped,
                _ = changed => {}
            }
        }
    }

    /// This group's elements as groups of `sizes`, in order, each with the lineage `lineage` gives
    /// and the budget spent so far.
    fn pieces(
        &mut self,
        sizes: Vec<usize>,
        lineage: impl Fn() -> Lineage,
    ) -> Vec<BoxFuture<'static, ()>> {
        let mut items = std::mem::take(&mut self.items).into_iter();
        sizes
            .into_iter()
            .map(|size| {
                process(
                    self.shared.clone(),
                    self.session.clone(),
                    Group {
                        items: items.by_ref().take(size).collect(),
                        retry: self.retry.clone(),
                        suspect: self.suspect,
                        lineage: lineage(),
                    },
                )
            })
            .collect()
    }

    /// A fresh group's closes feed the estimate at its first answer that is not a whole-request
    /// retry — accepted, refused for a culprit, or given up — all of them at once, since the culprit
    /// a refusal counts is counted then too: counting closes only as each piece settles would put
    /// the culprits of every isolation under way over too few closes, and shrink requests for a
    /// rate that is not there. Pieces were counted with their group; redeliveries never count.
    fn count_answered(&mut self, step: &Step<Settlement>) {
        if self.suspect || self.counted || self.lineage.is_piece() {
            return;
        }
        if !matches!(step, Step::ResendAll { .. }) {
            self.counted = true;
            self.shared.isolation.settled(self.items.len());
        }
    }

    /// A duplicate goes after its original: once that is accepted, this costs no request.
    async fn after_first_deliveries(&self) -> bool {
        let recent = &self.shared.recent;
        let originals = futures_util::future::join_all(
            self.items
                .iter()
                .map(|item| recent.until_no_first_delivery(&item.request.external_id)),
        );
        tokio::select! {
            biased;
            _ = originals => true,
            _ = self.session.stop.cancelled() => false,
        }
    }

    /// One attempt: what is known is settled first, and again once a permit is held (waiting for
    /// the limit and a permit can take a while, and a duplicate's original may be accepted
    /// meanwhile).
    async fn attempt(&mut self) -> Tried {
        let (shared, session) = (&self.shared, &self.session);
        let attempts = self.retry.attempts;
        self.items = settle_known(shared, session, std::mem::take(&mut self.items), attempts).await;
        if self.items.is_empty() {
            return Tried::Settled;
        }
        if shared.hold.is_blocked() && !self.probing {
            return Tried::Stopped;
        }
        let request = Request::Close {
            elements: self.items.len() as u32,
        };
        let ready = match prepare(shared, &session.stop, request).await {
            Ok(ready) => ready,
            Err(NotReady::Stopped) => return Tried::Stopped,
            Err(NotReady::NoToken(no_token)) => return Tried::NoToken(no_token),
        };
        // A token had ends a hold for refused credentials; this group sends as any other then.
        if self.probing && shared.hold.token_had() {
            self.probing = false;
        }
        self.items = settle_known(shared, session, std::mem::take(&mut self.items), attempts).await;
        if self.items.is_empty() {
            return Tried::Settled;
        }
        let request = Request::Close {
            elements: self.items.len() as u32,
        };
        let items = &self.items;
        // One request serves every element's trace: linked to each process span.
        let span = spans::client(spans::CLOSE_REQUEST, "POST", shared.linkedin.postings_url());
        spans::batch(&span, items.len());
        spans::attempt(&span, self.retry.attempts + 1);
        for item in items {
            spans::link(&span, &item.span);
        }
        let outcome = ready
            .send(
                shared,
                request,
                &mut self.retry.attempts,
                |token| async move {
                    shared
                        .linkedin
                        .close_batch(&token, items.iter().map(|i| &i.request.element))
                        .await
                },
            )
            .instrument(span.clone())
            .await;
        shared.metrics.request(outcome_label(&outcome));
        if self.lineage.is_piece() {
            shared.metrics.isolation_requests.inc();
        }
        if !matches!(outcome, RequestOutcome::Throttled { .. }) {
            shared.limiter.not_throttled();
        }
        Tried::Answered {
            token: ready.token.clone(),
            outcome,
            span,
        }
    }

    fn decide(&mut self, outcome: RequestOutcome) -> Step<Settlement> {
        // A probe that LinkedIn answered as a request ends the hold.
        let got_through = matches!(
            outcome,
            RequestOutcome::Answered(_)
                | RequestOutcome::ElementFault(_)
                | RequestOutcome::BatchFault(_)
        );
        if self.probing && got_through {
            self.probing = false;
            self.shared.hold.open();
        }
        let isolation = &self.shared.isolation;
        let whole_request_retry = matches!(outcome, RequestOutcome::Retry { .. });
        // Its first answer that got through or failed as a whole (nothing else lets a group go on).
        let first_answer = !self.got_through_before && !self.failed_before;
        if got_through {
            self.lineage.got_through();
            isolation.got_through(self.retry.consecutive_failures);
            if !self.got_through_before {
                self.got_through_before = true;
                self.lineage.piece_got_through();
            }
        }
        let ids = ids(&self.items);
        let alone = ids.len() == 1;
        let first_failure_here = whole_request_retry && !self.failed_before;
        self.failed_before |= whole_request_retry;
        let others_got_through = self.lineage.others_got_through();
        let lone_piece = alone && self.lineage.is_piece();
        self.last_transient = match &outcome {
            RequestOutcome::Retry { failure, .. } => Some(failure.clone()),
            _ => None,
        };
        if lone_piece && whole_request_retry {
            self.answered_at_first_failure
                .get_or_insert_with(|| isolation.answered());
        }
        let isolating = Isolating {
            culprits_common: isolation.culprits_common(),
            others_got_through,
            lone_give_up_after: self.lone_give_up_after(),
        };
        let unnamed_alone = alone && refused_for_an_unnamed_job(&outcome, &ids);
        let step = decide_close(
            outcome,
            State {
                policy: &self.shared.retry,
                retry: &mut self.retry,
                now: Instant::now(),
                ids: &ids,
                isolating,
            },
            self.shared.already_closed,
        );
        let lone_piece_first_failure = lone_piece && first_failure_here;
        if !self.suspect && shows_a_culprit(&step, unnamed_alone, lone_piece_first_failure) {
            self.shared.isolation.refused(&self.lineage);
        }
        if lone_piece && !self.suspect && first_answer && (got_through || whole_request_retry) {
            self.shared
                .isolation
                .lone_piece_answered(whole_request_retry);
        }
        step
    }

    /// For a lone piece, the run of whole-request failures at which it is given up on as a poison,
    /// when the evidence allows a verdict at all: LinkedIn answers others — every sibling got
    /// through (and then its group's 5xx counts as one of its own), or some request was answered
    /// since its run began.
    fn lone_give_up_after(&self) -> Option<u32> {
        let isolation = &self.shared.isolation;
        if self.items.len() != 1 || !self.lineage.is_piece() || !self.lineage.others_got_through() {
            return None;
        }
        let group_failure = self.lineage.siblings_cleared_it_of_the_5xx();
        let answered_since = self
            .answered_at_first_failure
            .is_some_and(|at| isolation.answered() >= at + LONE_OTHERS_ANSWERED);
        if !(group_failure || answered_since) {
            return None;
        }
        lone_failures_to_give_up(isolation.poison_rate(), isolation.transient_rate())
            .map(|run| run.saturating_sub(u32::from(group_failure)).max(1))
    }

    /// A lone piece resent after a 500 first waits, up to [`SIBLINGS_WAIT`], for the siblings it went
    /// out with to be answered: if they all get through, the verdict may need no further request.
    /// Returns false when stopped.
    async fn until_siblings_answered(&self) -> bool {
        let after_a_500 = self
            .last_transient
            .as_ref()
            .is_some_and(|failure| failure.status == POISON_STATUS);
        if self.items.len() != 1 || !after_a_500 || !self.lineage.awaits_siblings() {
            return true;
        }
        tokio::select! {
            biased;
            _ = self.session.stop.cancelled() => false,
            _ = tokio::time::timeout(SIBLINGS_WAIT, self.lineage.until_siblings_through()) => true,
        }
    }

    /// Before a lone piece is sent again after a 5xx: whether what came meanwhile (its siblings'
    /// answers) already makes the verdict, so that a poison costs no further request.
    fn given_up_before_resend(&self) -> Option<classify::Failure> {
        let failure = self.last_transient.as_ref()?;
        self.is_a_poison_at(failure.status).then(|| failure.clone())
    }

    /// Whether its run of failures, the last with `status`, makes it a poison now.
    fn is_a_poison_at(&self, status: u16) -> bool {
        gives_up_on_a_lone_element(
            self.items.len(),
            self.lone_give_up_after(),
            self.retry.consecutive_failures,
            status,
        )
    }

    async fn carry_out(&mut self, step: Step<Settlement>, token: &AccessToken) -> Next {
        let shared = &self.shared;
        match step {
            Step::SettleEach(settlements) => {
                let settled = std::mem::take(&mut self.items).into_iter().zip(settlements);
                let attempts = self.retry.attempts;
                settle_each(shared, &self.session, settled.collect(), attempts).await;
                Next::Done
            }
            Step::ResendWithout {
                settle,
                after,
                refresh_token,
                failure,
            } => {
                if refresh_token {
                    shared.linkedin.tokens.invalidate(token).await;
                }
                let items = std::mem::take(&mut self.items);
                let attempts = self.retry.attempts;
                self.items = settle_some(shared, &self.session, items, settle, attempts).await;
                if let Some(failure) = &failure {
                    log_retry(shared, &self.items, failure, after);
                }
                Next::Again(after)
            }
            Step::ResendAll {
                after,
                refresh_token: true,
                failure,
            } => {
                if drop_refused_token(shared, token, after).await {
                    error!(status = failure.status, error_message = %failure.message, delay_ms = after.as_millis() as u64, external_ids = ?ids(&self.items),
                        "LinkedIn keeps refusing fresh tokens; check the client credentials. Retrying.");
                }
                Next::Again(after)
            }
            Step::ResendAll { after, failure, .. } => {
                log_retry(shared, &self.items, &failure, after);
                Next::Again(after)
            }
            Step::Split {
                after,
                failure,
                one_job,
            } => {
                if !wait(&self.session.stop, after).await {
                    self.give_back().await;
                    return Next::Done;
                }
                self.split(&failure, one_job).await;
                Next::Done
            }
            Step::GiveUp(failure) => {
                self.carry_out_give_up(failure).await;
                Next::Done
            }
            Step::Hold(failure) => self.hold(&failure).await,
            Step::Throttled {
                retry_after,
                failure,
            } => self.throttled(retry_after, &failure),
        }
    }

    /// The budget is spent, or a lone element is a poison: every element is dead-lettered
    /// `retries-exhausted` with LinkedIn's last failure.
    async fn carry_out_give_up(&mut self, failure: classify::Failure) {
        if self.is_a_poison_at(failure.status) {
            let isolation = &self.shared.isolation;
            warn!(status = failure.status, error_message = %failure.message, external_ids = ?ids(&self.items),
                failures_in_a_row = self.retry.consecutive_failures, poison_rate = isolation.poison_rate(),
                random_failure_rate = isolation.transient_rate(),
                "LinkedIn keeps failing this element alone while it answers others: giving up on it as a poison.");
        }
        let failure = Failure::exhausted(failure.status, failure.message, self.retry.attempts);
        dead_letter_all(&self.session, &std::mem::take(&mut self.items), failure).await;
    }

    /// The integration is broken: the first group to see it probes with one element and gives the
    /// rest back; a probe that is still refused probes again; any other group gives back all.
    async fn hold(&mut self, failure: &classify::Failure) -> Next {
        if !self.hold_on(Fault::Integration(failure.clone())).await {
            return Next::Done;
        }
        Next::Again(self.shared.retry.probe_delay(&mut self.retry))
    }

    /// No token. Refused credentials hold the worker like an integration fault ([`Self::hold_on`]);
    /// trouble at the token endpoint is waited out. Either way the token cache times the next token
    /// request, once for the whole worker, and the hold's ERROR (or the WARN of the one group whose
    /// request failed) is all that is logged.
    async fn no_token(&mut self, no_token: NoToken) -> Next {
        match &no_token.error {
            TokenError::Refused { status, message } => {
                let fault = Fault::Credentials(classify::Failure::new(*status, message.clone()));
                if !self.hold_on(fault).await {
                    return Next::Done;
                }
            }
            TokenError::Unavailable(_) if no_token.asked => {
                let retry_in = no_token.retry_at.saturating_duration_since(Instant::now());
                warn!(error = %no_token.error, retry_in_ms = retry_in.as_millis() as u64, elements = self.items.len(),
                    "No LinkedIn token; waiting for the next token request.");
            }
            TokenError::Unavailable(_) => {}
        }
        Next::AfterToken(no_token)
    }

    /// A fault holds the worker: the first group to meet it becomes the prober, keeping one element
    /// and giving the rest back; the prober meeting it again probes on; any other group gives back
    /// all. Returns whether this group goes on (as the prober).
    async fn hold_on(&mut self, fault: Fault) -> bool {
        let hold = &self.shared.hold;
        if self.probing {
            hold.still_blocked(&fault);
        } else if hold.block(&fault) {
            self.probing = true;
            // One element probes; the rest waits in the broker.
            let rest = self.items.split_off(1);
            give_back_all(&self.session, &rest).await;
        } else {
            self.give_back().await;
            return false;
        }
        true
    }

    /// LinkedIn throttles the application: every sender pauses, not only this group.
    fn throttled(&mut self, retry_after: Option<Duration>, failure: &classify::Failure) -> Next {
        let shared = &self.shared;
        let in_a_row = shared.limiter.throttled(retry_after.is_some());
        let pause =
            shared
                .retry
                .throttle_pause(&mut self.retry, retry_after, in_a_row, SystemTime::now());
        shared.limiter.pause_for(pause);
        log_retry(shared, &self.items, failure, pause);
        Next::Again(Duration::ZERO)
    }

    /// Sends the group again in as many pieces as the estimated culprit rate asks for (its
    /// refusal is already counted in the estimate).
    async fn split(&mut self, failure: &classify::Failure, one_job: bool) {
        let sizes = self.shared.isolation.split(self.items.len());
        warn!(
            status = failure.status,
            error_message = %failure.message,
            elements = self.items.len(),
            into = %format!("{} pieces", sizes.len()),
            unnamed_job = one_job,
            "Splitting the request to isolate the element at fault."
        );
        // Siblings share one lineage: the first of them refused holds the culprit counted already.
        let siblings = Lineage::pieces_of(&self.lineage, sizes.len(), !one_job);
        futures_util::future::join_all(self.pieces(sizes, || siblings.clone())).await;
    }

    /// Ends without a verdict for what is left: back to the queue (and no hold without a prober).
    async fn give_back(&mut self) {
        self.finish();
        give_back_all(&self.session, &std::mem::take(&mut self.items)).await;
    }

    /// Everything is settled: a prober that never got through lets the hold go.
    fn finish(&mut self) {
        if self.probing {
            self.probing = false;
            self.shared.hold.stop_probing();
        }
    }
}

/// Settles, without sending them, the elements LinkedIn accepted from this worker within the hour
/// (unless replayed from the dead-letter queue); returns the others. With task checks on, a known
/// duplicate that wants an outcome, or a redelivery, waits for the first close's task instead of
/// being settled while that task could still fail: it becomes a pending check of the same task.
async fn settle_known(
    shared: &Shared,
    session: &SessionHandle,
    items: Vec<Item>,
    attempts: u32,
) -> Vec<Item> {
    let known =
        |item: &Item| !item.replayed && shared.recent.was_accepted(&item.request.external_id);
    if !items.iter().any(known) {
        return items;
    }
    let (known, unknown): (Vec<Item>, Vec<Item>) = items.into_iter().partition(known);
    let mut settle = Vec::new();
    let mut waiting = Vec::new();
    for item in known {
        // Worth waiting for the first close's task: an outcome is asked for, or this is a
        // redelivery whose own pending check may have been lost with its session.
        let worth_waiting =
            item.delivery.redelivered || session.settler.wants_outcome(&item.delivery.properties);
        match known_duplicate(
            shared.already_closed,
            first_task(shared, &item),
            worth_waiting,
        ) {
            Known::AwaitTask((schedule, task)) => waiting.push((item, schedule, task)),
            Known::Settle(settlement) => settle.push((item, settlement)),
        }
    }
    settle_each(shared, session, settle, attempts).await;
    if !waiting.is_empty() {
        let settler = &session.settler;
        settler
            .together(futures_util::future::join_all(waiting.iter().map(
                |(item, schedule, task)| {
                    wait_for_first_task(shared, settler, item, schedule, task)
                        .instrument(item.span.clone())
                },
            )))
            .await;
    }
    unknown
}

/// The task the first close of a known duplicate's id became, with the schedule to check it on:
/// only with task checks on.
fn first_task(shared: &Shared, item: &Item) -> Option<(Arc<crate::tasks::Schedule>, AcceptedTask)> {
    let schedule = shared.task_checks.clone()?;
    Some((schedule, shared.recent.task_of(&item.request.external_id)?))
}

/// A duplicate of a close accepted within the hour whose task is still to be verified: its outcome
/// is that task's, so it is handed on as a pending check of the same task (nothing is sent).
async fn wait_for_first_task(
    shared: &Shared,
    settler: &Settler,
    item: &Item,
    schedule: &crate::tasks::Schedule,
    task: &AcceptedTask,
) {
    let (delivery, external_id) = (&item.delivery, item.request.external_id.as_str());
    let check = PendingCheck {
        task_id: task.task_id.to_string(),
        external_id: external_id.to_owned(),
        accepted_at_ms: task.accepted_at_ms,
        checks: 0,
        send_attempts: 0,
    };
    let tier = schedule.tier_after(0);
    let properties = pending::traced(
        check.properties(&delivery.properties),
        spans::context_of(&item.span).as_ref(),
    );
    spans::ended(&item.span, "awaiting-task");
    if let Err(error) = settler.hand_on(delivery, &tier.queue, properties).await {
        error!(externalJobPostingId = external_id, task_id = %task.task_id, %error,
            "Could not schedule the task check of a duplicate; the message goes back to the queue.");
        return settler.give_back_after_pause(delivery).await;
    }
    shared.metrics.already_closed.inc();
    info!(
        externalJobPostingId = external_id,
        task_id = %task.task_id,
        "Accepted from this worker within the hour; not sent again, its outcome waits for that close's task."
    );
}

/// Settles the elements at the given positions; returns the others, in order.
async fn settle_some(
    shared: &Shared,
    session: &SessionHandle,
    items: Vec<Item>,
    settle: Vec<(usize, Settlement)>,
    attempts: u32,
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
    settle_each(shared, session, settled, attempts).await;
    remaining
}

/// Settles each element as its settlement says, after `attempts` requests, acking the batch as one
/// run. They settle concurrently: each may wait for a confirm (its pending check, its dead letter,
/// its outcome), and one round trip for the batch beats one per element.
async fn settle_each(
    shared: &Shared,
    session: &SessionHandle,
    settled: Vec<(Item, Settlement)>,
    attempts: u32,
) {
    if settled.is_empty() {
        return;
    }
    let settling = settled.into_iter().map(|(item, settlement)| {
        let span = item.span.clone();
        settle_one(shared, session, item, settlement, attempts).instrument(span)
    });
    session
        .settler
        .together(futures_util::future::join_all(settling))
        .await;
}

async fn settle_one(
    shared: &Shared,
    session: &SessionHandle,
    item: Item,
    settlement: Settlement,
    attempts: u32,
) {
    let (delivery, external_id) = (&item.delivery, item.request.external_id.as_str());
    match settlement {
        Settlement::Closed { task_id } => {
            settle_closed(
                shared,
                &session.settler,
                &item,
                task_id.as_deref(),
                attempts,
            )
            .await;
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
            let ended = Ended::AlreadyClosed {
                status: failure.status,
                message: &failure.message,
            };
            let properties = &delivery.properties;
            session
                .settler
                .finish(delivery, properties, external_id, attempts, ended)
                .await;
        }
        Settlement::DeadLetter(failure) => {
            session
                .settler
                .dead_letter(delivery, &delivery.properties, Some(external_id), failure)
                .await;
        }
    }
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
                let delivery = &item.delivery;
                let external_id = Some(item.request.external_id.as_str());
                session
                    .settler
                    .dead_letter(delivery, &delivery.properties, external_id, failure.clone())
                    .instrument(item.span.clone())
                    .await;
            }
        })
        .await;
}

/// LinkedIn accepted the close after `attempts` requests. With task checks on, a 202 is not yet a
/// close: the pending check (the original request plus the task id) must be the broker's before the
/// original is acked, and the outcome waits for the verdict. Otherwise the close is done: its
/// outcome (not verified) before the ack.
async fn settle_closed(
    shared: &Shared,
    settler: &Settler,
    item: &Item,
    task_id: Option<&str>,
    attempts: u32,
) {
    let (delivery, external_id) = (&item.delivery, item.request.external_id.as_str());
    let unverified = Ended::Closed {
        verified: false,
        task_id,
        job_posting: None,
    };
    match (&shared.task_checks, task_id) {
        (Some(schedule), Some(task_id)) => {
            let tier = schedule.tier_after(0);
            let check = PendingCheck::accepted(task_id, external_id, SystemTime::now(), attempts);
            let task = AcceptedTask {
                task_id: Arc::from(task_id),
                accepted_at_ms: check.accepted_at_ms,
            };
            shared.recent.accepted_task(external_id, task);
            // The check joins this trace, as the child of the span that closed it.
            let properties = pending::traced(
                check.properties(&delivery.properties),
                spans::context_of(&item.span).as_ref(),
            );
            spans::ended(&item.span, "closed");
            if let Err(error) = settler.hand_on(delivery, &tier.queue, properties).await {
                error!(externalJobPostingId = external_id, task_id, %error,
                    "Could not schedule the task check; the message goes back to the queue and will be sent again.");
                return settler.give_back_after_pause(delivery).await;
            }
            info!(
                externalJobPostingId = external_id,
                task_id,
                task_check_in_ms = tier.delay.as_millis() as u64,
                "Closed."
            );
        }
        (Some(_), None) => {
            shared.recent.accepted(external_id);
            warn!(
                externalJobPostingId = external_id,
                "Closed, but LinkedIn gave no task id to verify."
            );
            let properties = &delivery.properties;
            settler
                .finish(delivery, properties, external_id, attempts, unverified)
                .await;
        }
        (None, _) => {
            shared.recent.accepted(external_id);
            info!(externalJobPostingId = external_id, task_id, "Closed.");
            let properties = &delivery.properties;
            settler
                .finish(delivery, properties, external_id, attempts, unverified)
                .await;
        }
    }
    shared.metrics.closed.inc();
}
