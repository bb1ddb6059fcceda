//! When to try again, and when to give up: the retry policy as a small value.
//!
//! Delays are exponential with jitter (the `backoff` crate computes them); the budget is measured from
//! an element's first transient failure on tokio's clock, so tests can pause time. Throttling (429) and
//! credential trouble (401) are waited out but never exhaust the budget: they say nothing about the
//! message, only about LinkedIn or the account, so they must never dead-letter it.

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;

/// Settings for retrying transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A transient failure that outlives this is given up on (`retries-exhausted`).
    pub max_elapsed: Duration,
}

/// What the policy says about one more failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    RetryIn(Duration),
    GiveUp,
}

/// The retry history of one group of elements; cloned when a failing batch is split so the halves
/// keep the budget already spent.
#[derive(Clone, Debug)]
pub struct RetryState {
    backoff: ExponentialBackoff,
    first_failure: Option<Instant>,
    /// Requests made for these elements so far.
    pub attempts: u32,
    /// Whole-request transient failures in a row (5xx, timeouts): the trigger for splitting.
    pub consecutive_failures: u32,
}

impl RetryPolicy {
    pub fn new_state(&self) -> RetryState {
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
        }
    }

    /// A transient failure (5xx, 408, timeout, connection error, unmatched answer) happened at `now`.
    pub fn on_transient(
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
    pub fn on_wait(&self, state: &mut RetryState, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| next_delay(state, self.max))
    }

    /// A request got an answer that was not a transient failure: the next failure starts a new run.
    pub fn on_answer(&self, state: &mut RetryState) {
        state.consecutive_failures = 0;
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
