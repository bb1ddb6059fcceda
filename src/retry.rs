//! When to try again, and when to give up: the retry policy as a small value.
//!
//! Delays are exponential with jitter (the `backoff` crate computes them); the budget is measured from
//! an element's first transient failure on tokio's clock, so tests can pause time. Throttling (429) and
//! credential trouble (401) are waited out but never exhaust the budget: they say nothing about the
//! message, only about LinkedIn or the account, so they must never dead-letter it.
//!
//! LinkedIn's daily limits reset at 00:00 UTC and a spent daily quota is answered with 429s without
//! `Retry-After`. Backing off at most `RETRY_MAX_MS` would spend two requests a minute all day on
//! them; so after [`THROTTLES_BEFORE_ESCALATION`] such 429s in a row the pause doubles beyond it,
//! toward the next midnight UTC ([`RetryPolicy::throttle_pause`]). The timing of every wait — the
//! transient backoff, the throttle pause, the integration-fault probe, the next token request after
//! a failed one ([`TOKEN_RETRY`]) — is decided here.

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// 429s without `Retry-After` in a row after which the pause grows beyond `RETRY_MAX_MS`.
pub(crate) const THROTTLES_BEFORE_ESCALATION: u32 = 3;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Token requests after a failed one (the credentials refused, or the endpoint in trouble): one per
/// step for the whole worker, a few seconds at first, doubling (with jitter) to a minute, and never
/// given up. LinkedIn throttles token requests like any other call; a refused secret is fixed by an
/// operator, so a storm of requests would only burn the quota.
pub(crate) const TOKEN_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(60),
    max_elapsed: Duration::MAX,
};

/// The UTC day `at` falls in, counted from the Unix epoch.
pub(crate) fn utc_day(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / DAY.as_secs()
}

/// How long from `at` until the next 00:00 UTC (a full day at midnight itself).
pub(crate) fn until_next_utc_midnight(at: SystemTime) -> Duration {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_day = Duration::from_nanos((since_epoch.as_nanos() % DAY.as_nanos()) as u64);
    DAY - into_day
}

/// Settings for retrying transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    /// A transient failure that outlives this is given up on (`retries-exhausted`).
    pub(crate) max_elapsed: Duration,
}

/// What the policy says about one more failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    RetryIn(Duration),
    GiveUp,
}

/// The retry history of one group of elements; cloned when a failing batch is split so the halves
/// keep the budget already spent.
#[derive(Clone, Debug)]
pub(crate) struct RetryState {
    backoff: ExponentialBackoff,
    first_failure: Option<Instant>,
    /// Requests made for these elements so far.
    pub(crate) attempts: u32,
    /// Whole-request transient failures in a row (5xx, timeouts): the trigger for splitting.
    pub(crate) consecutive_failures: u32,
    /// 401s in a row: the first only refreshes the token; after that, back off.
    pub(crate) unauthorized_in_a_row: u32,
}

impl RetryPolicy {
    pub(crate) fn new_state(&self) -> RetryState {
        RetryState {
            backoff: ExponentialBackoff {
                current_interval: self.initial,
                initial_interval: self.initial,
                randomization_factor: 0.5,
                multiplier: 2.0,
                max_interval: self.max,
                // The budget is ours to measure, on tokio's clock.
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            },
            first_failure: None,
            attempts: 0,
            consecutive_failures: 0,
            unauthorized_in_a_row: 0,
        }
    }

    /// A transient failure (5xx, 408, timeout, connection error, unmatched answer) happened at `now`.
    pub(crate) fn on_transient(
        &self,
        state: &mut RetryState,
        now: Instant,
        retry_after: Option<Duration>,
    ) -> Verdict {
        let first = *state.first_failure.get_or_insert(now);
        state.consecutive_failures += 1;
        if now.duration_since(first) >= self.max_elapsed {
            return Verdict::GiveUp;
        }
        let delay = next_delay(state, self.max);
        Verdict::RetryIn(retry_after.unwrap_or(delay))
    }

    /// Throttled (429) or unauthorised (401): wait, never give up.
    pub(crate) fn on_wait(
        &self,
        state: &mut RetryState,
        retry_after: Option<Duration>,
    ) -> Duration {
        retry_after.unwrap_or_else(|| next_delay(state, self.max))
    }

    /// A request got an answer that was not a transient failure: the next failure starts a new run.
    pub(crate) fn on_answer(&self, state: &mut RetryState) {
        state.consecutive_failures = 0;
    }

    /// A 401: resend at once the first time (the token was refreshed), back off after that.
    pub(crate) fn on_unauthorized(&self, state: &mut RetryState) -> Duration {
        state.unauthorized_in_a_row += 1;
        if state.unauthorized_in_a_row > 1 {
            self.on_wait(state, None)
        } else {
            Duration::ZERO
        }
    }

    /// How long the whole worker pauses after a 429, the `in_a_row`-th without `Retry-After` (0 when
    /// it had one), at `now`: LinkedIn's `Retry-After` when given; the backoff for the first few;
    /// then `RETRY_MAX_MS` doubling with each further 429, but never past the next 00:00 UTC, when
    /// LinkedIn's daily limits reset.
    pub(crate) fn throttle_pause(
        &self,
        state: &mut RetryState,
        retry_after: Option<Duration>,
        in_a_row: u32,
        now: SystemTime,
    ) -> Duration {
        if let Some(retry_after) = retry_after {
            return retry_after;
        }
        let backoff = self.on_wait(state, None);
        if in_a_row < THROTTLES_BEFORE_ESCALATION {
            return backoff;
        }
        let doublings = (in_a_row - THROTTLES_BEFORE_ESCALATION + 1).min(20);
        let escalated = self.max.saturating_mul(1 << doublings);
        escalated.min(until_next_utc_midnight(now)).max(backoff)
    }

    /// The wait before the next probe of a blocked integration: the backoff, never the budget.
    pub(crate) fn probe_delay(&self, state: &mut RetryState) -> Duration {
        self.on_wait(state, None)
    }
}

fn next_delay(state: &mut RetryState, max: Duration) -> Duration {
    state.backoff.next_backoff().unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_cap() {
        let policy = policy();
        let mut state = policy.new_state();
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..12 {
            match policy.on_transient(&mut state, now, None) {
                Verdict::RetryIn(d) => delays.push(d),
                Verdict::GiveUp => panic!("gave up within budget"),
            }
        }
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(delays[3] > delays[0]);
        assert!(delays.iter().all(|d| *d <= policy.max));
        assert!(
            delays[11] >= Duration::from_millis(500),
            "reaches the cap region"
        );
        assert_eq!(state.consecutive_failures, 12);
    }

    #[test]
    fn gives_up_once_the_budget_since_the_first_failure_is_spent() {
        let policy = policy();
        let mut state = policy.new_state();
        let start = Instant::now();
        assert!(matches!(
            policy.on_transient(&mut state, start, None),
            Verdict::RetryIn(_)
        ));
        let later = start + Duration::from_secs(9);
        assert!(matches!(
            policy.on_transient(&mut state, later, None),
            Verdict::RetryIn(_)
        ));
        let spent = start + Duration::from_secs(10);
        assert_eq!(
            policy.on_transient(&mut state, spent, None),
            Verdict::GiveUp
        );
    }

    #[test]
    fn retry_after_is_honoured() {
        let policy = policy();
        let mut state = policy.new_state();
        let after = Duration::from_secs(7);
        assert_eq!(
            policy.on_transient(&mut state, Instant::now(), Some(after)),
            Verdict::RetryIn(after)
        );
        assert_eq!(policy.on_wait(&mut state, Some(after)), after);
    }

    #[test]
    fn waiting_never_gives_up_and_does_not_spend_the_budget() {
        let policy = policy();
        let mut state = policy.new_state();
        for _ in 0..100 {
            assert!(policy.on_wait(&mut state, None) <= policy.max);
        }
        assert_eq!(state.first_failure, None);
        let now = Instant::now();
        assert!(matches!(
            policy.on_transient(&mut state, now, None),
            Verdict::RetryIn(_)
        ));
    }

    #[test]
    fn the_first_401_resends_at_once_and_later_ones_back_off() {
        let policy = policy();
        let mut state = policy.new_state();
        assert_eq!(policy.on_unauthorized(&mut state), Duration::ZERO);
        assert!(policy.on_unauthorized(&mut state) > Duration::ZERO);
        assert_eq!(state.first_failure, None, "no budget spent");
    }

    #[test]
    fn utc_midnight_arithmetic() {
        let midnight = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        assert_eq!(utc_day(midnight), 20_000);
        assert_eq!(utc_day(midnight - Duration::from_secs(1)), 19_999);
        assert_eq!(until_next_utc_midnight(midnight), DAY);
        assert_eq!(
            until_next_utc_midnight(midnight - Duration::from_secs(90)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn repeated_429s_without_retry_after_double_toward_midnight() {
        let policy = policy();
        let mut state = policy.new_state();
        let morning = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 6 * 3600);
        assert_eq!(
            policy.throttle_pause(&mut state, Some(Duration::from_secs(5)), 0, morning),
            Duration::from_secs(5),
            "LinkedIn's Retry-After wins"
        );
        for in_a_row in 1..THROTTLES_BEFORE_ESCALATION {
            assert!(policy.throttle_pause(&mut state, None, in_a_row, morning) <= policy.max);
        }
        let pauses: Vec<Duration> = (THROTTLES_BEFORE_ESCALATION..40)
            .map(|n| policy.throttle_pause(&mut state, None, n, morning))
            .collect();
        assert_eq!(pauses[0], policy.max * 2, "beyond RETRY_MAX_MS");
        assert_eq!(pauses[1], policy.max * 4);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        let to_midnight = Duration::from_secs(18 * 3600);
        assert_eq!(*pauses.last().unwrap(), to_midnight, "never past 00:00 UTC");
        // A day's quota spent: a handful of probes, not two a minute all day.
        let mut waited = Duration::ZERO;
        let mut probes = 0;
        while waited < to_midnight {
            probes += 1;
            waited += policy.throttle_pause(&mut state, None, probes, morning + waited);
        }
        assert!(probes < 30, "{probes} probes in 18 hours");
    }

    #[test]
    fn an_answer_resets_the_failure_run_but_not_the_budget() {
        let policy = policy();
        let mut state = policy.new_state();
        let start = Instant::now();
        policy.on_transient(&mut state, start, None);
        policy.on_answer(&mut state);
        assert_eq!(state.consecutive_failures, 0);
        let spent = start + policy.max_elapsed;
        assert_eq!(
            policy.on_transient(&mut state, spent, None),
            Verdict::GiveUp
        );
    }
}
