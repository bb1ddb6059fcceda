//! The step after each classified answer, as a pure function: [`decide`] takes what LinkedIn said
//! about a request (an [`Outcome`]) and the group's retry state, and says what happens next — send
//! everything again, settle some elements and send the rest again, split the group, settle every
//! element, hold the whole worker, or wait out a throttle. Nothing here sends, sleeps or acks;
//! the sender (`worker::send`) and the task verifier (`worker::verify`) carry the step out, and both
//! reach their answers through the same `worker::attempt`.
//!
//! The request-level rules are shared by both callers; only what an answered element means differs
//! (a close's entry, a task's status), so that part is a closure. Splitting lives here too, and not
//! in the sender's loop as before (where it was interleaved with sleeping, token handling and acks,
//! and where the verifier repeated it): a request-level fault of one job that does not name it is
//! isolated by splitting the group (into as many pieces as `worker::sizing` says for the culprit rate
//! `worker::isolation` estimates, fed by [`shows_a_culprit`]), a named one settles at once, and a
//! one-element request's answer is its element's.

use crate::dead_letter;
use crate::linkedin::classify::{ElementOutcome, Failure, RequestOutcome, named_element};
use crate::retry::{RetryPolicy, RetryState, Verdict};
use std::time::Duration;
use tokio::time::Instant;

/// Whole-request transient failures in a row before a group is split (a poison element earns its
/// request a 500).
pub(crate) const SPLIT_AFTER: u32 = 2;

pub(crate) use crate::linkedin::classify::Outcome;

/// What happens next to a group of `n` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step<S> {
    /// Send every element again after `after` (after refreshing the token, if asked).
    ResendAll {
        after: Duration,
        refresh_token: bool,
        failure: Failure,
    },
    /// Settle the elements at these positions; send the others again after `after`.
    ResendWithout {
        settle: Vec<(usize, S)>,
        after: Duration,
        refresh_token: bool,
        failure: Option<Failure>,
    },
    /// Send the group again in pieces, each on its own, after `after`, with the budget spent so far.
    /// `one_job` when LinkedIn reported one job's fault without naming it (rather than a run of 5xx).
    Split {
        after: Duration,
        failure: Failure,
        one_job: bool,
    },
    /// Every element is settled, in request order.
    SettleEach(Vec<S>),
    /// The retry budget is spent: every element gives up with `failure`.
    GiveUp(Failure),
    /// The integration is broken: hold everything, probe until LinkedIn accepts again.
    Hold(Failure),
    /// LinkedIn throttles the application: pause every sender, then send again. No budget spent.
    Throttled {
        retry_after: Option<Duration>,
        failure: Failure,
    },
}

/// What [`decide`] reads besides the answer.
pub(crate) struct State<'a> {
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) retry: &'a mut RetryState,
    pub(crate) now: Instant,
    /// The ids sent, in request order (a message may name one).
    pub(crate) ids: &'a [&'a str],
    /// What is known beyond this group's own answers about a run of whole-request failures.
    pub(crate) isolating: Isolating,
}

/// What the sender knows, beyond a group's own answers, about whether a run of whole-request
/// transient failures (LinkedIn's 500 for a poison element looks like any other 500) is one
/// element's doing rather than LinkedIn's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Isolating {
    /// Culprits LinkedIn does not name are common now (fresh requests are cut below `BATCH_SIZE`).
    pub(crate) culprits_common: bool,
    /// The group is a piece of a split group, and another group of the same split (or of one of
    /// its splits) got through: LinkedIn as a whole is answering.
    pub(crate) others_got_through: bool,
    /// For a lone piece whose run of whole-request failures LinkedIn has answered other requests
    /// through: the run's length at which it is given up on ([`lone_failures_to_give_up`]).
    pub(crate) lone_give_up_after: Option<u32>,
}

/// How many whole-request transient failures in a row it takes before a group of `n` is split:
/// two by default, since an outage looks the same at first; one when culprits are common or when
/// other pieces of the split got through. `None` for a lone element: it cannot be split; it is
/// retried until its budget is spent, or until [`lone_failures_to_give_up`] says its run of
/// failures is its own.
pub(crate) fn failures_before_isolating(isolating: Isolating, n: usize) -> Option<u32> {
    match (n, isolating.others_got_through, isolating.culprits_common) {
        (0 | 1, _, _) => None,
        (_, true, _) | (_, _, true) => Some(1),
        (_, false, false) => Some(SPLIT_AFTER),
    }
}

/// The odds, poison against a LinkedIn failing at random, that a lone element's run of failures
/// must reach before it is given up on: a valid close is dead-lettered for a run of bad luck at
/// most once in this many such verdicts, as far as failures are independent.
pub(crate) const GIVE_UP_ODDS: f64 = 10_000.0;

/// What a poison element earns its request: a lone element is only given up on at a 500 (a 502,
/// 503 or 504, a timeout or a lost connection is LinkedIn's or the network's, and an outage's).
pub(crate) const POISON_STATUS: u16 = 500;

/// Requests LinkedIn must have answered since a lone piece's run of failures began before the run
/// counts against it: in an outage nothing is answered, and every lone element in flight fails alike.
pub(crate) const LONE_OTHERS_ANSWERED: u64 = 1;

/// Longer runs than this are left to the retry budget: the evidence never gets that strong where
/// LinkedIn fails often at random.
pub(crate) const MOST_LONE_FAILURES: u32 = 8;

/// Whether a group of `n` whose run of whole-request failures is `run` long, the last with `status`,
/// is given up on as a poison now ([`lone_failures_to_give_up`] said `give_up_after`). Asked at each
/// failure and again before a lone element is resent: its siblings' answers may have come meanwhile.
pub(crate) fn gives_up_on_a_lone_element(
    n: usize,
    give_up_after: Option<u32>,
    run: u32,
    status: u16,
) -> bool {
    n == 1 && status == POISON_STATUS && give_up_after.is_some_and(|after| run >= after)
}

/// How many whole-request transient failures in a row a lone piece of an isolation must meet —
/// while LinkedIn answers other requests — before it is given up on as a poison element
/// (`retries-exhausted`, its last 5xx), rather than retried until `RETRY_MAX_ELAPSED_MS`. A poison
/// fails every time; a valid element fails only when LinkedIn does at random, at the rate
/// `transient_rate` the worker measures (failures of requests that then got through unchanged).
/// Starting from the odds of `poison_rate` (the worker's estimate: lone pieces that failed with a
/// 5xx, per close — not the share of jobs already closed, which says nothing of a 500), each failure multiplies the odds of
/// poison by `1 / transient_rate`; the run needed is the first that reaches [`GIVE_UP_ODDS`], at
/// least two (one failure alone says little of a lone element), and `None` beyond
/// [`MOST_LONE_FAILURES`] or when LinkedIn fails half of its requests or more. The sender counts
/// the 5xx its group was split for as one of the run once every sibling got through (the group's
/// failure was then this element's doing or bad luck, as its own are), and gives up only at a
/// [`POISON_STATUS`].
///
/// With poisons at 10 % and a LinkedIn that rarely fails, two failures: its group's and its first
/// alone, once its siblings got through (a poison costs one request of one element, not a budget's
/// worth: about thirty at the default settings). With no poison and one request in twenty-five
/// failing at random (the combined-fault soak) the poison estimate stays near zero: a run of five
/// or more at 0.3 %, which a valid close meets about once in ten million tries, and none at all
/// (the budget decides) at zero. Rejected: a fixed run of two
/// while siblings got through — a LinkedIn failing one request in twenty-five convicted good closes
/// that way (the soak dead-lettered one to seven a run); a run counted without LinkedIn answering
/// others meanwhile — an outage then convicts every lone element in flight; the prior from every
/// unnamed culprit, jobs already closed included — where many are, each piece of a group failed at
/// random started from their odds, and the ten-minute soak dead-lettered a valid close; the lone
/// failures alone as the poison estimate — LinkedIn's random ones count there too (the ten-minute
/// soak again).
pub(crate) fn lone_failures_to_give_up(poison_rate: f64, transient_rate: f64) -> Option<u32> {
    let transient_rate = if transient_rate.is_nan() {
        1.0
    } else {
        transient_rate.clamp(1e-6, 1.0)
    };
    if transient_rate >= 0.5 {
        return None;
    }
    let poison_rate = if poison_rate.is_nan() {
        0.0
    } else {
        poison_rate
    }
    .clamp(1e-9, 0.5);
    let prior_odds = poison_rate / (1.0 - poison_rate);
    let per_failure = (1.0 / transient_rate).ln();
    let needed = ((GIVE_UP_ODDS / prior_odds).ln() / per_failure - 1e-9).ceil();
    let run = needed.max(2.0);
    (run <= f64::from(MOST_LONE_FAILURES)).then_some(run as u32)
}

/// The step after `outcome`. `answered` settles a full answer; `of_fault` is what a one-element
/// (or contract-wide) request-level fault means for an element.
pub(crate) fn decide<A, S>(
    outcome: Outcome<A>,
    state: State<'_>,
    answered: impl FnOnce(A, State<'_>) -> Step<S>,
    of_fault: impl Fn(Failure) -> S,
) -> Step<S> {
    let State {
        policy,
        retry,
        now,
        ids,
        isolating,
    } = state;
    let n = ids.len();
    if !matches!(outcome, Outcome::RefreshToken(_)) {
        retry.unauthorized_in_a_row = 0;
    }
    match outcome {
        Outcome::Answered(answer) => {
            policy.on_answer(retry);
            answered(
                answer,
                State {
                    policy,
                    retry,
                    now,
                    ids,
                    isolating,
                },
            )
        }
        Outcome::RefreshToken(failure) => Step::ResendAll {
            after: policy.on_unauthorized(retry),
            refresh_token: true,
            failure,
        },
        Outcome::Throttled {
            retry_after,
            failure,
        } => Step::Throttled {
            retry_after,
            failure,
        },
        Outcome::Retry {
            retry_after,
            failure,
        } => {
            let verdict = policy.on_transient(retry, now, retry_after);
            transient(verdict, failure, retry, n, isolating)
        }
        Outcome::ElementFault(failure) => {
            policy.on_answer(retry);
            one_jobs_fault(failure, ids, of_fault)
        }
        Outcome::BatchFault(failure) => {
            policy.on_answer(retry);
            Step::SettleEach((0..n).map(|_| of_fault(failure.clone())).collect())
        }
        Outcome::IntegrationFault(failure) => Step::Hold(failure),
    }
}

/// A whole-request transient failure: resend, give up once the budget is spent, or — after a run of
/// them ([`failures_before_isolating`]) — split a group of several, since a poison element earns its
/// request a 500.
fn transient<S>(
    verdict: Verdict,
    failure: Failure,
    retry: &mut RetryState,
    n: usize,
    isolating: Isolating,
) -> Step<S> {
    let after = match verdict {
        Verdict::GiveUp => return Step::GiveUp(failure),
        Verdict::RetryIn(after) => after,
    };
    if gives_up_on_a_lone_element(
        n,
        isolating.lone_give_up_after,
        retry.consecutive_failures,
        failure.status,
    ) {
        return Step::GiveUp(failure);
    }
    match failures_before_isolating(isolating, n) {
        Some(run) if retry.consecutive_failures >= run && n > 1 => {
            retry.consecutive_failures = 0;
            Step::Split {
                after,
                failure,
                one_job: false,
            }
        }
        _ => Step::ResendAll {
            after,
            refresh_token: false,
            failure,
        },
    }
}

/// A request-level fault of one job: alone, it is the element's verdict; named, that element
/// settles and the others go again at once; unnamed, the group is split to find it.
fn one_jobs_fault<S>(failure: Failure, ids: &[&str], of_fault: impl Fn(Failure) -> S) -> Step<S> {
    if ids.len() <= 1 {
        return Step::SettleEach(vec![of_fault(failure)]);
    }
    match named_element(&failure.message, ids) {
        Some(culprit) => Step::ResendWithout {
            settle: vec![(culprit, of_fault(failure))],
            after: Duration::ZERO,
            refresh_token: false,
            failure: None,
        },
        None => Step::Split {
            after: Duration::ZERO,
            failure,
            one_job: true,
        },
    }
}

/// Whether LinkedIn refused the request of `ids` for one job without naming one of them: the
/// request holds a culprit (alone, the culprit is that element).
pub(crate) fn refused_for_an_unnamed_job<A>(outcome: &Outcome<A>, ids: &[&str]) -> bool {
    matches!(outcome, Outcome::ElementFault(failure) if named_element(&failure.message, ids).is_none())
}

/// Whether `step` shows one more culprit LinkedIn did not name, for the estimate: a group split to
/// find one (for an unnamed fault or a run of 5xx), an element refused alone for an unnamed fault
/// (`unnamed_alone`: [`refused_for_an_unnamed_job`] of a one-element request), or a lone piece of a
/// split whose request failed as a whole for the first time (`lone_piece_first_failure`: the poison
/// of a run of 5xx, isolated — its retries go on, but its siblings went through).
pub(crate) fn shows_a_culprit<S>(
    step: &Step<S>,
    unnamed_alone: bool,
    lone_piece_first_failure: bool,
) -> bool {
    match step {
        Step::Split { .. } => true,
        Step::SettleEach(_) => unnamed_alone,
        Step::GiveUp(_) => lone_piece_first_failure,
        Step::ResendAll {
            refresh_token: false,
            ..
        } => lone_piece_first_failure,
        _ => false,
    }
}

/// What `ALREADY_CLOSED` asks for a close LinkedIn says is already closed.
pub(crate) use crate::config::AlreadyClosed as AlreadyClosedPolicy;

/// How one close ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// LinkedIn took it; the task id says where to check it.
    Closed { task_id: Option<String> },
    /// LinkedIn already had it closed (409): done, nothing to check.
    AlreadyClosed(Failure),
    /// Dead-lettered with this failure.
    DeadLetter(dead_letter::Failure),
}

/// The step after an answer to a close request.
pub(crate) fn decide_close(
    outcome: RequestOutcome,
    state: State<'_>,
    already_closed: AlreadyClosedPolicy,
) -> Step<Settlement> {
    let attempts = state.retry.attempts;
    let settle_element = move |verdict: ElementOutcome| match verdict {
        ElementOutcome::Accepted { task_id } => Some(Settlement::Closed { task_id }),
        ElementOutcome::AlreadyClosed(failure) => Some(match already_closed {
            AlreadyClosedPolicy::Ack => Settlement::AlreadyClosed(failure),
            AlreadyClosedPolicy::DeadLetter => rejected(failure, attempts),
        }),
        ElementOutcome::Rejected(failure) => Some(rejected(failure, attempts)),
        ElementOutcome::Retry(_) | ElementOutcome::Unauthorized(_) => None,
    };
    decide(
        outcome,
        state,
        |verdicts: Vec<ElementOutcome>, state| answered_close(verdicts, state, settle_element),
        |failure| {
            settle_element(ElementOutcome::of_fault(failure.clone()))
                .unwrap_or_else(|| rejected(failure, attempts))
        },
    )
}

fn rejected(failure: Failure, attempts: u32) -> Settlement {
    Settlement::DeadLetter(dead_letter::Failure::rejected(
        failure.status,
        failure.message,
        attempts,
    ))
}

/// What LinkedIn's answer for a close this worker accepted within the hour would be (it is not sent
/// again).
pub(crate) const KNOWN_MESSAGE: &str = "LinkedIn accepted a close of this job from this worker, or called it already closed, within the last hour; not sent again";

/// What becomes of a close for an id this worker accepted within the hour, which is not sent again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Known<T> {
    /// Settled as `ALREADY_CLOSED` says, as if LinkedIn had answered 409.
    Settle(Settlement),
    /// Waits for the first close's task (`T`), and ends as that task does: told `already-closed`
    /// now, it would be told so while the task can still fail.
    AwaitTask(T),
}

/// A known duplicate waits for its first close's task when there is one to wait for (task checks
/// on, a close this worker had accepted), `ALREADY_CLOSED=ack` would otherwise settle it as done,
/// and `worth_waiting`: it asked for an outcome (told `already-closed` now, it would be told so while
/// that task can still fail), or it is a redelivery (its own pending check may have been lost with
/// its session after LinkedIn accepted it, and then this is the close's only chance of being
/// verified). Otherwise it is settled as a 409.
pub(crate) fn known_duplicate<T>(
    policy: AlreadyClosedPolicy,
    first_task: Option<T>,
    worth_waiting: bool,
) -> Known<T> {
    let failure = Failure::new(409, KNOWN_MESSAGE);
    match (policy, first_task) {
        (AlreadyClosedPolicy::Ack, Some(task)) if worth_waiting => Known::AwaitTask(task),
        (AlreadyClosedPolicy::Ack, _) => Known::Settle(Settlement::AlreadyClosed(failure)),
        (AlreadyClosedPolicy::DeadLetter, _) => Known::Settle(rejected(failure, 0)),
    }
}

/// A 200 with one entry per element: settle what is final, send the rest again.
fn answered_close(
    verdicts: Vec<ElementOutcome>,
    state: State<'_>,
    settle_element: impl Fn(ElementOutcome) -> Option<Settlement>,
) -> Step<Settlement> {
    let State {
        policy, retry, now, ..
    } = state;
    let total = verdicts.len();
    let mut settle = Vec::with_capacity(total);
    let mut transient = None;
    let mut unauthorized = None;
    for (index, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            ElementOutcome::Retry(failure) => transient = Some(failure),
            ElementOutcome::Unauthorized(failure) => unauthorized = Some(failure),
            other => {
                if let Some(settlement) = settle_element(other) {
                    settle.push((index, settlement));
                }
            }
        }
    }
    if settle.len() == total {
        return Step::SettleEach(settle.into_iter().map(|(_, s)| s).collect());
    }
    if let Some(failure) = transient {
        // Element-level transient failures spend the budget, but no whole-request run happened:
        // never a split.
        return match policy.on_transient(retry, now, None) {
            Verdict::RetryIn(after) => {
                retry.consecutive_failures = 0;
                Step::ResendWithout {
                    settle,
                    after,
                    refresh_token: unauthorized.is_some(),
                    failure: Some(failure),
                }
            }
            Verdict::GiveUp => {
                let exhausted = |_| {
                    Settlement::DeadLetter(dead_letter::Failure::exhausted(
                        failure.status,
                        failure.message.clone(),
                        retry.attempts,
                    ))
                };
                let mut each: Vec<Option<Settlement>> = (0..total).map(|_| None).collect();
                for (index, settlement) in settle {
                    each[index] = Some(settlement);
                }
                Step::SettleEach(
                    each.into_iter()
                        .map(|s| s.unwrap_or_else(|| exhausted(())))
                        .collect(),
                )
            }
        };
    }
    let after = policy.on_unauthorized(retry);
    Step::ResendWithout {
        settle,
        after,
        refresh_token: true,
        failure: unauthorized,
    }
}

#[cfg(test)]
mod tests {
    //! One row (of [`DOCUMENTED`] and [`ONE_JOB_FOR_THE_WHOLE_REQUEST`]) per row of LinkedIn's tables
    //! in API-NOTES ("Errors documented for this endpoint" and "Errors LinkedIn reports for one job at
    //! the level of the whole request"), one test for each row that takes several steps, plus the
    //! rules of issue 10 that are decisions.
    use super::*;
    use crate::dead_letter::Reason;
    use crate::linkedin::classify::{Answer, classify};
    use std::time::SystemTime;

    const IDS: [&str; 4] = ["J-1", "J-2", "J-3", "J-4"];

    #[test]
    fn a_known_duplicate_waits_for_its_first_task_only_when_worth_waiting() {
        use AlreadyClosedPolicy::{Ack, DeadLetter};
        let already = Settlement::AlreadyClosed(Failure::new(409, KNOWN_MESSAGE));
        assert_eq!(
            known_duplicate(Ack, Some("task"), true),
            Known::AwaitTask("task")
        );
        assert_eq!(
            known_duplicate(Ack, Some("task"), false),
            Known::Settle(already.clone())
        );
        assert_eq!(
            known_duplicate::<&str>(Ack, None, true),
            Known::Settle(already)
        );
        for (task, worth) in [(Some("task"), true), (None, false)] {
            match known_duplicate(DeadLetter, task, worth) {
                Known::Settle(Settlement::DeadLetter(failure)) => {
                    assert_eq!(
                        (failure.reason, failure.status, failure.attempts),
                        (Reason::Rejected, 409, 0),
                        "never sent"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(10),
        }
    }

    /// The step after LinkedIn answered `status` with `body` to a request of `ids`.
    fn step_for(status: u16, body: &str, ids: &[&str]) -> Step<Settlement> {
        step_with(
            status,
            body,
            ids,
            AlreadyClosedPolicy::Ack,
            &mut policy().new_state(),
        )
    }

    fn step_with(
        status: u16,
        body: &str,
        ids: &[&str],
        already_closed: AlreadyClosedPolicy,
        retry: &mut RetryState,
    ) -> Step<Settlement> {
        let outcome = classify(
            Answer {
                status,
                retry_after: None,
                body: body.as_bytes(),
            },
            ids.len(),
            SystemTime::now(),
        );
        let policy = policy();
        decide_close(
            outcome,
            State {
                policy: &policy,
                retry,
                now: Instant::now(),
                ids,
                isolating: Isolating::default(),
            },
            already_closed,
        )
    }

    /// The steps after LinkedIn answered `status` with `message` to each group in turn, the retry
    /// state carried from one to the next as the sender carries it.
    fn in_a_row<const N: usize>(
        status: u16,
        message: &str,
        groups: [&[&str]; N],
    ) -> [Step<Settlement>; N] {
        let body = error_body(status, message);
        let mut retry = policy().new_state();
        groups.map(|ids| step_with(status, &body, ids, AlreadyClosedPolicy::Ack, &mut retry))
    }

    fn error_body(status: u16, message: &str) -> String {
        serde_json::json!({"message": message, "status": status}).to_string()
    }

    fn entries(entries: &[(u16, &str)]) -> String {
        let elements: Vec<_> = entries
            .iter()
            .map(|(status, message)| match status {
                200..=299 => serde_json::json!({"id": format!("urn:li:simpleJobPostingTask:{message}"), "status": status}),
                _ => serde_json::json!({"error": {"message": message, "status": status}, "status": status}),
            })
            .collect();
        serde_json::json!({ "elements": elements }).to_string()
    }

    fn dead(reason: Reason, status: u16, message: &str) -> Settlement {
        Settlement::DeadLetter(dead_letter::Failure {
            reason,
            status,
            message: message.into(),
            attempts: 0,
            task_id: None,
        })
    }

    fn closed(task: &str) -> Settlement {
        Settlement::Closed {
            task_id: Some(format!("urn:li:simpleJobPostingTask:{task}")),
        }
    }

    /// How the job at fault settles: dead-lettered as rejected, or (a 409) as already closed.
    #[derive(Clone, Copy, Debug)]
    enum Settled {
        Rejected,
        AlreadyClosed,
    }

    impl Settled {
        fn settlement(self, status: u16, message: &str) -> Settlement {
            match self {
                Settled::Rejected => dead(Reason::Rejected, status, message),
                Settled::AlreadyClosed => Settlement::AlreadyClosed(Failure::new(status, message)),
            }
        }
    }

    /// What a row of the tables says becomes of a request of four jobs (and of one alone).
    #[derive(Clone, Copy, Debug)]
    enum Expect {
        /// An entry of a 200: that job settles so, the jobs around it close.
        Element(Settled),
        /// A request-level fault of one job that does not name it: isolated by splitting; alone, it
        /// is that job's verdict.
        Unnamed(Settled),
        /// A request-level fault naming the job at this position: that job is rejected, the others
        /// are sent again at once.
        Named(usize),
        /// A request-level fault naming a job that is not in the request: it names nobody here, so
        /// the group is split.
        NamesAnother,
        /// The contract's fault: every job of the batch is rejected.
        Contract,
        /// The integration is broken: the worker holds, whatever the group.
        Hold,
    }

    /// One row: LinkedIn answers `status` with `message`.
    struct Row {
        name: &'static str,
        status: u16,
        message: &'static str,
        expect: Expect,
    }

    use Expect::*;
    use Settled::{AlreadyClosed, Rejected};

    /// "Errors documented for this endpoint" (401, 429, 500 and 504 take several steps: their own
    /// tests below).
    const DOCUMENTED: &[Row] = &[
        Row {
            name: "row_200_element_422_field_missing",
            status: 422,
            message: "ERROR :: /title :: field is required but not found and has no default value\n",
            expect: Element(Rejected),
        },
        Row {
            name: "row_200_element_422_wrong_type",
            status: 422,
            message: "ERROR :: /listedAt :: \"soon\" cannot be coerced to Long",
            expect: Element(Rejected),
        },
        Row {
            name: "row_200_element_422_bad_operation",
            status: 422,
            message: "ERROR :: /jobPostingOperationType :: \"UPDATED\" is not an enum symbol",
            expect: Element(Rejected),
        },
        Row {
            name: "row_400_bad_element_named_settles_it_and_resends_the_rest_at_once",
            status: 400,
            message: "Invalid company apply url for job with externalPartnerId J-3, taskUrn urn:li:simpleJobPostingTask:5",
            expect: Named(2),
        },
        Row {
            name: "row_400_company_missing_is_isolated",
            status: 400,
            message: "Either context or company or companyPageUrl or companyName must be provided",
            expect: Unnamed(Rejected),
        },
        Row {
            name: "row_402_job_slots_settle_the_contracts_batch",
            status: 402,
            message: "Insufficient job slots for contract = urn:li:contract:7 for purchase flow",
            expect: Contract,
        },
        Row {
            name: "row_402_budget_settles_the_contracts_batch",
            status: 402,
            message: "Insufficient lifetime budget for contract: urn:li:contract:7",
            expect: Contract,
        },
        Row {
            name: "row_403_contract_settles_the_contracts_batch",
            status: 403,
            message: "Caller is not authorized to access the jobs for contract: urn:li:contract:9",
            expect: Contract,
        },
        Row {
            name: "row_403_fp4p_contract_settles_the_batch",
            status: 403,
            message: "Caller is not authorized to access the fp4p contract",
            expect: Contract,
        },
        Row {
            name: "row_403_not_enough_permissions_holds",
            status: 403,
            message: "Not enough permissions to access: POST /simpleJobPostings",
            expect: Hold,
        },
        Row {
            name: "row_403_not_enough_permissions_with_a_name_holds",
            status: 403,
            message: "Not enough permissions to access: POST (Name)",
            expect: Hold,
        },
        Row {
            name: "row_403_unpermitted_fields_holds",
            status: 403,
            message: "Unpermitted fields present in REQUEST_BODY: Data Processing Exception while processing fields [/elements]",
            expect: Hold,
        },
        Row {
            name: "row_404_resource_does_not_exist_holds",
            status: 404,
            message: "Resource simpleJobPostings does not exist",
            expect: Hold,
        },
        Row {
            name: "row_409_already_closed_unnamed_is_isolated_and_alone_is_a_close",
            status: 409,
            message: "Cannot close job which is already closed or does not exist",
            expect: Unnamed(AlreadyClosed),
        },
        Row {
            name: "row_409_per_element_in_a_200_is_already_closed",
            status: 409,
            message: "Cannot close job which is already closed or does not exist",
            expect: Element(AlreadyClosed),
        },
    ];

    /// "Errors LinkedIn reports for one job at the level of the whole request".
    const ONE_JOB_FOR_THE_WHOLE_REQUEST: &[Row] = &[
        Row {
            name: "row_200_element_400_workplace_types",
            status: 400,
            message: "The workplaceTypes field cannot have more than one value provided. Provided values [On-site, Remote]",
            expect: Element(Rejected),
        },
        Row {
            name: "row_400_invalid_apply_url_names_the_job",
            status: 400,
            message: "Invalid company apply url for job with externalPartnerId J-1, taskUrn urn:li:simpleJobPostingTask:77",
            expect: Named(0),
        },
        Row {
            name: "row_400_invalid_apply_url_naming_a_job_not_in_the_request_is_isolated",
            status: 400,
            message: "Invalid company apply url for job with externalPartnerId J-9, taskUrn urn:li:simpleJobPostingTask:77",
            expect: NamesAnother,
        },
        Row {
            name: "row_422_bad_enum_is_isolated",
            status: 422,
            message: "ERROR :: /employmentStatus :: PART is not an enum symbol",
            expect: Unnamed(Rejected),
        },
        Row {
            name: "row_422_enum_not_backed_by_a_string_is_isolated",
            status: 422,
            message: "ERROR :: /workplaceTypes :: enum type is not backed by a String",
            expect: Unnamed(Rejected),
        },
        Row {
            name: "row_422_more_than_seven_locations_is_isolated",
            status: 422,
            message: "The job contains more than seven locations. Please ensure maximum seven locations per job",
            expect: Unnamed(Rejected),
        },
    ];

    /// A `LinkedIn-Version` LinkedIn refuses (issue 10): no job's fault, the worker holds.
    const VERSION_REFUSED: &[Row] = &[
        Row {
            name: "a_linkedin_version_refused_with_400_holds",
            status: 400,
            message: "Invalid value for header LinkedIn-Version: 2025-04",
            expect: Hold,
        },
        Row {
            name: "a_linkedin_version_refused_with_426_holds",
            status: 426,
            message: "LinkedIn-Version 202101 is not active",
            expect: Hold,
        },
    ];

    impl Row {
        /// Asserts what the row says; every assertion names the row.
        fn check(&self) {
            let Row {
                name,
                status,
                message,
                expect,
            } = *self;
            let body = error_body(status, message);
            match expect {
                Element(settled) => {
                    let body = entries(&[(202, "a"), (status, message), (202, "c")]);
                    assert_eq!(
                        step_for(200, &body, &IDS[..3]),
                        Step::SettleEach(vec![
                            closed("a"),
                            settled.settlement(status, message),
                            closed("c")
                        ]),
                        "{name}"
                    );
                }
                Unnamed(alone) => {
                    assert!(
                        matches!(step_for(status, &body, &IDS), Step::Split { after, one_job: true, .. } if after.is_zero()),
                        "{name}"
                    );
                    assert_eq!(
                        step_for(status, &body, &IDS[..1]),
                        Step::SettleEach(vec![alone.settlement(status, message)]),
                        "{name}"
                    );
                }
                Named(culprit) => assert_eq!(
                    step_for(status, &body, &IDS),
                    Step::ResendWithout {
                        settle: vec![(culprit, dead(Reason::Rejected, status, message))],
                        after: Duration::ZERO,
                        refresh_token: false,
                        failure: None,
                    },
                    "{name}"
                ),
                NamesAnother => assert!(
                    matches!(step_for(status, &body, &IDS), Step::Split { .. }),
                    "{name}"
                ),
                Contract => assert_eq!(
                    step_for(status, &body, &IDS),
                    Step::SettleEach(vec![dead(Reason::Rejected, status, message); 4]),
                    "{name}"
                ),
                Hold => {
                    for ids in [&IDS[..], &IDS[..1]] {
                        assert_eq!(
                            step_for(status, &body, ids),
                            Step::Hold(Failure::new(status, message)),
                            "{name}"
                        );
                    }
                }
            }
        }
    }

    /// Every row of every table is checked, even after one fails; the failures are named.
    #[test]
    fn every_row_of_the_tables_and_a_refused_version() {
        let tables = [DOCUMENTED, ONE_JOB_FOR_THE_WHOLE_REQUEST, VERSION_REFUSED];
        let failed: Vec<&str> = tables
            .iter()
            .flat_map(|rows| rows.iter())
            .filter(|row| std::panic::catch_unwind(|| row.check()).is_err())
            .map(|row| row.name)
            .collect();
        assert!(failed.is_empty(), "rows that fail: {failed:?}");
    }

    // --- What takes several steps ---

    #[test]
    fn row_401_refreshes_the_token_then_backs_off_and_never_dead_letters() {
        let [first, second] = in_a_row(
            401,
            "The token used in the request has expired",
            [&IDS[..], &IDS[..]],
        );
        assert!(matches!(
            first,
            Step::ResendAll { after, refresh_token: true, .. } if after.is_zero()
        ));
        assert!(matches!(
            second,
            Step::ResendAll { after, refresh_token: true, .. } if !after.is_zero()
        ));
        let invalid = error_body(401, "Invalid access token");
        assert!(matches!(
            step_for(401, &invalid, &IDS),
            Step::ResendAll {
                refresh_token: true,
                ..
            }
        ));
    }

    #[test]
    fn already_closed_dead_letter_setting_dead_letters_it_as_rejected_409() {
        let message = "Cannot close job which is already closed or does not exist";
        let step = step_with(
            409,
            &error_body(409, message),
            &IDS[..1],
            AlreadyClosedPolicy::DeadLetter,
            &mut policy().new_state(),
        );
        assert_eq!(
            step,
            Step::SettleEach(vec![dead(Reason::Rejected, 409, message)])
        );
        let body = entries(&[(409, message), (202, "b")]);
        let step = step_with(
            200,
            &body,
            &IDS[..2],
            AlreadyClosedPolicy::DeadLetter,
            &mut policy().new_state(),
        );
        assert_eq!(
            step,
            Step::SettleEach(vec![dead(Reason::Rejected, 409, message), closed("b")])
        );
    }

    #[test]
    fn row_429_throttles_the_worker_and_never_dead_letters() {
        assert!(matches!(
            step_for(429, "", &IDS),
            Step::Throttled {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn row_500_whole_request_is_retried_then_split_then_given_up() {
        let [first, second, alone] = in_a_row(
            500,
            "Internal Server Error",
            [&IDS[..], &IDS[..], &IDS[..1]],
        );
        assert!(matches!(
            first,
            Step::ResendAll {
                refresh_token: false,
                ..
            }
        ));
        assert!(
            matches!(second, Step::Split { one_job: false, .. }),
            "{second:?}"
        );
        assert!(
            matches!(alone, Step::ResendAll { .. }),
            "one element is never split"
        );

        let policy = policy();
        let mut spent = policy.new_state();
        let start = Instant::now();
        let outcome = RequestOutcome::Retry {
            retry_after: None,
            failure: Failure::new(500, "Internal Server Error"),
        };
        for (now, expect_give_up) in [(start, false), (start + policy.max_elapsed, true)] {
            let step = decide_close(
                outcome.clone(),
                State {
                    policy: &policy,
                    retry: &mut spent,
                    now,
                    ids: &IDS[..1],
                    isolating: Isolating::default(),
                },
                AlreadyClosedPolicy::Ack,
            );
            assert_eq!(
                step == Step::GiveUp(Failure::new(500, "Internal Server Error")),
                expect_give_up,
                "{step:?}"
            );
        }
    }

    #[test]
    fn a_run_of_500s_isolates_sooner_on_evidence_and_a_lone_element_is_only_retried() {
        let plain = Isolating::default();
        let common = Isolating {
            culprits_common: true,
            ..Isolating::default()
        };
        let siblings_through = Isolating {
            others_got_through: true,
            ..Isolating::default()
        };
        assert_eq!(failures_before_isolating(plain, 4), Some(SPLIT_AFTER));
        assert_eq!(failures_before_isolating(common, 4), Some(1));
        assert_eq!(failures_before_isolating(siblings_through, 4), Some(1));
        for isolating in [plain, common, siblings_through] {
            assert_eq!(failures_before_isolating(isolating, 1), None);
        }

        let policy = policy();
        let outcome = RequestOutcome::Retry {
            retry_after: None,
            failure: Failure::new(500, "Internal Server Error"),
        };
        // The step after the `run`th 500 in a row.
        let step_of = |ids: &[&str], isolating: Isolating, run: u32| {
            let mut retry = policy.new_state();
            let mut step = None;
            for _ in 0..run {
                step = Some(decide_close(
                    outcome.clone(),
                    State {
                        policy: &policy,
                        retry: &mut retry,
                        now: Instant::now(),
                        ids,
                        isolating,
                    },
                    AlreadyClosedPolicy::Ack,
                ));
            }
            step.expect("run > 0")
        };
        assert!(matches!(
            step_of(&IDS, common, 1),
            Step::Split { one_job: false, .. }
        ));
        assert!(matches!(
            step_of(&IDS, siblings_through, 1),
            Step::Split { .. }
        ));
        assert!(matches!(step_of(&IDS, plain, 1), Step::ResendAll { .. }));
        assert!(matches!(
            step_of(&IDS, plain, 2),
            Step::Split { one_job: false, .. }
        ));
        for run in 1..=5 {
            for isolating in [plain, common, siblings_through] {
                assert!(matches!(
                    step_of(&IDS[..1], isolating, run),
                    Step::ResendAll { .. }
                ));
            }
        }
        // A lone piece LinkedIn keeps failing while it answers others: given up on at the run the
        // evidence asks for, and not before; a group of several is split as before.
        let convicting = Isolating {
            lone_give_up_after: Some(3),
            ..siblings_through
        };
        assert!(matches!(
            step_of(&IDS[..1], convicting, 2),
            Step::ResendAll { .. }
        ));
        assert_eq!(
            step_of(&IDS[..1], convicting, 3),
            Step::GiveUp(Failure::new(500, "Internal Server Error"))
        );
        assert!(matches!(step_of(&IDS, convicting, 1), Step::Split { .. }));
        // A 503 is LinkedIn's or an outage's, however long the run.
        let mut retry = policy.new_state();
        for _ in 0..6 {
            let step = decide_close(
                RequestOutcome::Retry {
                    retry_after: None,
                    failure: Failure::new(503, "Service Unavailable"),
                },
                State {
                    policy: &policy,
                    retry: &mut retry,
                    now: Instant::now(),
                    ids: &IDS[..1],
                    isolating: convicting,
                },
                AlreadyClosedPolicy::Ack,
            );
            assert!(matches!(step, Step::ResendAll { .. }), "{step:?}");
        }
    }

    #[test]
    fn a_lone_element_is_given_up_on_when_its_failures_outweigh_linkedins_own() {
        // Culprits common, LinkedIn rarely failing: two failures.
        assert_eq!(lone_failures_to_give_up(0.10, 0.0007), Some(2));
        assert_eq!(lone_failures_to_give_up(0.10, 0.0), Some(2));
        // Poisons estimated at 0.3 % of closes, one request in twenty-five failing.
        assert_eq!(lone_failures_to_give_up(0.003, 0.04), Some(5));
        // Few culprits and a flaky LinkedIn: left to the budget.
        assert_eq!(lone_failures_to_give_up(1e-4, 0.2), None);
        assert_eq!(lone_failures_to_give_up(0.3, 0.5), None);
        assert_eq!(lone_failures_to_give_up(0.1, f64::NAN), None);
        assert_eq!(lone_failures_to_give_up(f64::NAN, 0.001), Some(5));
    }

    #[test]
    fn row_504_gateway_timeout_stays_transient() {
        let body = error_body(504, "Gateway Timeout");
        assert!(matches!(
            step_for(504, &body, &IDS),
            Step::ResendAll { failure, .. } if failure.status == 504
        ));
    }

    #[test]
    fn element_level_transient_and_401_resend_only_those() {
        let body = r#"{"elements":[{"status":202,"id":"t"},{"status":503,"error":{"message":"busy"}},{"status":401}]}"#;
        match step_for(200, body, &IDS[..3]) {
            Step::ResendWithout {
                settle,
                refresh_token: true,
                failure: Some(failure),
                ..
            } => {
                assert_eq!(
                    settle,
                    vec![(
                        0,
                        Settlement::Closed {
                            task_id: Some("t".into())
                        }
                    )]
                );
                assert_eq!(failure, Failure::new(503, "busy"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod properties {
    //! Splitting as the sizing plans it isolates every culprit, every element is settled exactly once
    //! however the culprits are spread and whatever the estimated rate, and the estimate hears of
    //! each culprit.
    use super::*;
    use crate::worker::sizing::Plan;
    use proptest::prelude::*;

    /// What a play cost and showed.
    struct Played {
        settled: Vec<Vec<Settlement>>,
        sent: usize,
        /// Steps that showed a culprit ([`shows_a_culprit`]).
        culprits_shown: usize,
        splits: usize,
    }

    /// Plays a group of `n` ids (the culprits being those in `bad`) against a LinkedIn that answers
    /// any request holding a culprit with an unnamed request-level 409, follows the steps and splits
    /// as the plan says at `rate`.
    fn play(n: usize, bad: &[bool], rate: f64) -> Played {
        let plan = Plan::new(120);
        let ids: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            max_elapsed: Duration::from_secs(1),
        };
        let mut played = Played {
            settled: vec![Vec::new(); n],
            sent: 0,
            culprits_shown: 0,
            splits: 0,
        };
        let mut groups: Vec<Vec<usize>> = vec![(0..n).collect()];
        while let Some(group) = groups.pop() {
            played.sent += group.len();
            let outcome = if group.iter().any(|&i| bad[i]) {
                RequestOutcome::ElementFault(Failure::new(
                    409,
                    "Cannot close job which is already closed or does not exist",
                ))
            } else {
                RequestOutcome::Answered(
                    group
                        .iter()
                        .map(|_| ElementOutcome::Accepted { task_id: None })
                        .collect(),
                )
            };
            let group_ids: Vec<&str> = group.iter().map(|&i| ids[i].as_str()).collect();
            let unnamed_alone =
                group.len() == 1 && refused_for_an_unnamed_job(&outcome, &group_ids);
            let mut retry = policy.new_state();
            let step = decide_close(
                outcome,
                State {
                    policy: &policy,
                    retry: &mut retry,
                    now: Instant::now(),
                    ids: &group_ids,
                    isolating: Isolating::default(),
                },
                AlreadyClosedPolicy::Ack,
            );
            played.culprits_shown += usize::from(shows_a_culprit(&step, unnamed_alone, false));
            match step {
                Step::SettleEach(settlements) => {
                    assert_eq!(settlements.len(), group.len());
                    for (&i, s) in group.iter().zip(settlements) {
                        played.settled[i].push(s);
                    }
                }
                Step::Split { .. } => {
                    assert!(group.len() > 1);
                    played.splits += 1;
                    let mut rest = group.as_slice();
                    for size in plan.split(group.len(), rate) {
                        let (piece, after) = rest.split_at(size);
                        groups.push(piece.to_vec());
                        rest = after;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        played
    }

    proptest! {
        /// Never a single failure; more culprits never need a longer run, a flakier LinkedIn
        /// never a shorter one; and the run reached makes a valid close's bad luck at most one in
        /// GIVE_UP_ODDS of the verdicts.
        #[test]
        fn the_run_to_give_up_on_follows_the_odds(
            culprits in 1e-6f64..0.5,
            more_culprits in 0.0f64..0.5,
            transient in 1e-6f64..0.6,
            more_transient in 0.0f64..0.6,
        ) {
            let run = lone_failures_to_give_up(culprits, transient);
            if let Some(run) = run {
                prop_assert!((2..=MOST_LONE_FAILURES).contains(&run));
                let odds = culprits / (1.0 - culprits) * (1.0 / transient).powi(run as i32);
                prop_assert!(odds >= GIVE_UP_ODDS * (1.0 - 1e-6), "{}", odds);
            }
            let with_more_culprits = lone_failures_to_give_up((culprits + more_culprits).min(0.5), transient);
            let flakier = lone_failures_to_give_up(culprits, (transient + more_transient).min(1.0));
            let longer = |a: Option<u32>, b: Option<u32>| match (a, b) {
                (Some(a), Some(b)) => a >= b,
                (None, _) => true,
                (Some(_), None) => false,
            };
            prop_assert!(longer(run, with_more_culprits));
            prop_assert!(longer(flakier, run));
        }
    }

    proptest! {
        #[test]
        fn every_element_is_settled_exactly_once(
            bad in prop::collection::vec(any::<bool>(), 1..120),
            rate in 0.0f64..=1.0,
        ) {
            let played = play(bad.len(), &bad, rate);
            for (i, s) in played.settled.iter().enumerate() {
                prop_assert_eq!(s.len(), 1, "element {} settled {} times", i, s.len());
                let already = matches!(s[0], Settlement::AlreadyClosed(_));
                prop_assert_eq!(already, bad[i]);
            }
            // Every split and every culprit found alone is shown to the estimate.
            let culprits = bad.iter().filter(|&&b| b).count();
            prop_assert_eq!(played.culprits_shown, played.splits + culprits);
        }

        #[test]
        fn a_lone_culprit_is_isolated_cheaply_when_culprits_are_rare(n in 2usize..=100, culprit in 0usize..100) {
            let culprit = culprit % n;
            let bad: Vec<bool> = (0..n).map(|i| i == culprit).collect();
            let played = play(n, &bad, 1e-4);
            prop_assert!(matches!(played.settled[culprit][0], Settlement::AlreadyClosed(_)));
            // The first request, then the culprit's piece at every level: at most twice more.
            prop_assert!(played.sent <= 3 * n, "{} sent for {}", played.sent, n);
        }
    }

    #[test]
    fn what_shows_a_culprit() {
        let failure = Failure::new(
            409,
            "Cannot close job which is already closed or does not exist",
        );
        let split: Step<Settlement> = Step::Split {
            after: Duration::ZERO,
            failure: failure.clone(),
            one_job: false,
        };
        assert!(shows_a_culprit(&split, false, false));
        let alone = Step::SettleEach(vec![Settlement::AlreadyClosed(failure.clone())]);
        assert!(shows_a_culprit(&alone, true, false));
        assert!(
            !shows_a_culprit(&alone, false, false),
            "a per-element 409 in a 200"
        );
        let resend: Step<Settlement> = Step::ResendAll {
            after: Duration::ZERO,
            refresh_token: false,
            failure: failure.clone(),
        };
        assert!(
            shows_a_culprit(&resend, false, true),
            "the poison, isolated"
        );
        assert!(!shows_a_culprit(&resend, false, false));
        let refresh: Step<Settlement> = Step::ResendAll {
            after: Duration::ZERO,
            refresh_token: true,
            failure: failure.clone(),
        };
        assert!(
            !shows_a_culprit(&refresh, false, true),
            "a 401 is no culprit"
        );

        let refused = RequestOutcome::ElementFault(failure);
        assert!(refused_for_an_unnamed_job(&refused, &["J-1"]));
        let named = RequestOutcome::ElementFault(Failure::new(
            400,
            "Invalid company apply url for job with externalPartnerId J-1, taskUrn urn:li:simpleJobPostingTask:1",
        ));
        assert!(!refused_for_an_unnamed_job(&named, &["J-1", "J-2"]));
        assert!(
            refused_for_an_unnamed_job(&named, &["J-2"]),
            "names a job not in the request"
        );
        let contract = RequestOutcome::BatchFault(Failure::new(402, "Insufficient job slots"));
        assert!(!refused_for_an_unnamed_job(&contract, &["J-1"]));
    }
}
