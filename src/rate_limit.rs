//! How fast the whole worker may send: a sliding-window element limit per minute, a count of elements
//! per UTC day, and a shared throttle pause.
//!
//! LinkedIn documents 2,000 records a minute per application. A token bucket would allow a full burst on
//! top of a full minute's refill; a sliding window of what was sent in the last 60 seconds holds the
//! limit over *any* minute, which is what LinkedIn counts. A 429 pauses every sender, not just the
//! request that got it: the throttle is on the application, so one batch backing off alone would only
//! let the others burn through the same limit.
//!
//! LinkedIn also counts 60,000 records a day per application, reset at 00:00 UTC: when
//! `RATE_LIMIT_PER_DAY` elements were sent in the current UTC day, sending pauses until the next
//! midnight. The count lives in memory, so a restart forgets it; LinkedIn's own 429 stays the
//! backstop (and [`crate::retry::RetryPolicy::throttle_pause`] stretches the pauses it earns).
//! `job_closer_throttled_until_seconds` shows until when sending is paused (Unix time, 0 when not).

use crate::retry::{until_next_utc_midnight, utc_day};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct RateLimiter {
    /// Elements per minute; 0 = unlimited.
    per_minute: u32,
    /// Elements per UTC day; 0 = unlimited.
    per_day: u64,
    sent: Mutex<VecDeque<(Instant, u32)>>,
    /// The UTC day being counted, and the elements sent in it.
    today: Mutex<(u64, u64)>,
    /// When the day's quota was found spent: sending waits until then (the next 00:00 UTC).
    day_spent_until: Mutex<Option<SystemTime>>,
    paused_until: Mutex<Option<Instant>>,
    /// 429s without `Retry-After` in a row, worker-wide (the throttle is the application's).
    throttles_in_a_row: AtomicU32,
    /// `job_closer_throttled_until_seconds`.
    throttled_until: Gauge,
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl RateLimiter {
    /// A limiter per minute only, without a gauge (the tests' shorthand).
    #[cfg(test)]
    fn new(per_minute: u32) -> Self {
        RateLimiter::with_daily_limit(per_minute, 0, Gauge::default())
    }

    /// A limiter counting `per_day` elements per UTC day too, showing its pauses in `throttled_until`.
    pub(crate) fn with_daily_limit(per_minute: u32, per_day: u64, throttled_until: Gauge) -> Self {
        RateLimiter {
            per_minute,
            per_day,
            sent: Mutex::new(VecDeque::new()),
            today: Mutex::new((0, 0)),
            day_spent_until: Mutex::new(None),
            paused_until: Mutex::new(None),
            throttles_in_a_row: AtomicU32::new(0),
            throttled_until,
        }
    }

    /// Waits until `elements` may be sent, and counts them as sent.
    pub(crate) async fn acquire(&self, elements: u32) {
        loop {
            let pause = *lock(&self.paused_until);
            if let Some(until) = pause
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
                continue;
            }
            if let Some(wait) = self.try_take_day(elements, SystemTime::now()) {
                tracing::warn!(
                    per_day = self.per_day,
                    wait_s = wait.as_secs(),
                    "RATE_LIMIT_PER_DAY reached; sending pauses until 00:00 UTC."
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            match self.try_take(elements, Instant::now()) {
                None => {
                    self.count_day(elements, SystemTime::now());
                    return;
                }
                Some(until) => tokio::time::sleep_until(until).await,
            }
        }
    }

    /// Whether `elements` fit in the UTC day of `now`; if not, how long until the next day starts
    /// (shown in the gauge).
    fn try_take_day(&self, elements: u32, now: SystemTime) -> Option<Duration> {
        if self.per_day == 0 {
            return None;
        }
        // As for the minute: a request larger than the day's limit goes as if it fitted.
        let elements = u64::from(elements).min(self.per_day);
        let mut today = lock(&self.today);
        let day = utc_day(now);
        if today.0 != day {
            *today = (day, 0);
        }
        if today.1 + elements <= self.per_day {
            return None;
        }
        let wait = until_next_utc_midnight(now);
        *lock(&self.day_spent_until) = Some(now + wait);
        self.throttled_until.set(unix_seconds(now + wait));
        Some(wait)
    }

    fn count_day(&self, elements: u32, now: SystemTime) {
        let mut today = lock(&self.today);
        let day = utc_day(now);
        if today.0 != day {
            *today = (day, 0);
        }
        today.1 += u64::from(elements);
    }

    /// A 429 came back (`with_retry_after` when it said how long): the count of 429s without it in
    /// a row, this one included.
    pub(crate) fn throttled(&self, with_retry_after: bool) -> u32 {
        if with_retry_after {
            self.throttles_in_a_row.store(0, Ordering::Relaxed);
            0
        } else {
            self.throttles_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    /// LinkedIn answered something other than a 429: the throttle is over.
    pub(crate) fn not_throttled(&self) {
        if self.throttles_in_a_row.swap(0, Ordering::Relaxed) > 0 || self.throttled_until.get() > 0
        {
            let paused = lock(&self.paused_until).is_some_and(|until| until > Instant::now());
            let day_spent =
                lock(&self.day_spent_until).is_some_and(|until| until > SystemTime::now());
            if !paused && !day_spent {
                self.throttled_until.set(0);
            }
        }
    }

    /// Takes `elements` from the window at `now`, or says when enough will have left it.
    fn try_take(&self, elements: u32, now: Instant) -> Option<Instant> {
        if self.per_minute == 0 {
            return None;
        }
        // A request larger than the limit could never go; config keeps batches within it, so this
        // only guards against a misconfiguration stalling forever.
        let elements = elements.min(self.per_minute);
        let mut sent = lock(&self.sent);
        while sent.front().is_some_and(|(at, _)| *at + WINDOW <= now) {
            sent.pop_front();
        }
        let mut in_window: u32 = sent.iter().map(|(_, n)| n).sum();
        if in_window + elements <= self.per_minute {
            sent.push_back((now, elements));
            return None;
        }
        for (at, n) in sent.iter() {
            in_window -= n;
            if in_window + elements <= self.per_minute {
                return Some(*at + WINDOW);
            }
        }
        unreachable!("an empty window always has room for a request within the limit")
    }

    /// LinkedIn throttled us: nobody sends before `until`.
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
            let left = until.saturating_duration_since(Instant::now());
            self.throttled_until
                .set(unix_seconds(SystemTime::now() + left));
        }
    }

    pub(crate) fn pause_for(&self, delay: Duration) {
        self.pause_until(Instant::now() + delay);
    }
}

/// The limiter's state is plain numbers: a panic elsewhere while holding a lock leaves it usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_minute() {
        let limiter = RateLimiter::new(250);
        let start = Instant::now();
        let mut sends = Vec::new();
        for _ in 0..12 {
            limiter.acquire(100).await;
            sends.push((Instant::now(), 100u32));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        for (i, (at, _)) in sends.iter().enumerate() {
            let in_minute: u32 = sends[i..]
                .iter()
                .take_while(|(t, _)| *t < *at + WINDOW)
                .map(|(_, n)| n)
                .sum();
            assert!(in_minute <= 250, "{in_minute} elements within a minute");
        }
        // 1200 elements at 250/minute need at least four full windows after the first.
        assert!(Instant::now() - start >= Duration::from_secs(240));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire(100).await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_sender() {
        let limiter = RateLimiter::new(0);
        let start = Instant::now();
        limiter.pause_for(Duration::from_secs(5));
        limiter.pause_for(Duration::from_secs(2));
        limiter.acquire(1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[test]
    fn a_days_quota_pauses_until_midnight_utc_and_resets_then() {
        let gauge = Gauge::default();
        let limiter = RateLimiter::with_daily_limit(0, 250, gauge.clone());
        // A day to come, so that "now" has not passed its midnight.
        let evening = UNIX_EPOCH + Duration::from_secs(30_000 * 86_400 + 23 * 3600);
        for _ in 0..2 {
            assert_eq!(limiter.try_take_day(100, evening), None);
            limiter.count_day(100, evening);
        }
        assert_eq!(
            limiter.try_take_day(100, evening),
            Some(Duration::from_secs(3600)),
            "250 a day: a third 100 waits for 00:00 UTC"
        );
        assert_eq!(limiter.try_take_day(50, evening), None, "50 still fit");
        let midnight = evening + Duration::from_secs(3600);
        assert_eq!(gauge.get(), unix_seconds(midnight));
        limiter.not_throttled();
        assert_eq!(
            gauge.get(),
            unix_seconds(midnight),
            "an answer to a request sent earlier does not end the day's pause"
        );
        assert_eq!(limiter.try_take_day(100, midnight), None, "a new day");
        let unlimited = RateLimiter::with_daily_limit(0, 0, Gauge::default());
        assert_eq!(unlimited.try_take_day(u32::MAX, evening), None);
    }

    #[test]
    fn throttles_without_retry_after_are_counted_in_a_row_worker_wide() {
        let gauge = Gauge::default();
        let limiter = RateLimiter::with_daily_limit(0, 0, gauge.clone());
        assert_eq!(limiter.throttled(false), 1);
        assert_eq!(limiter.throttled(false), 2);
        assert_eq!(limiter.throttled(true), 0);
        assert_eq!(limiter.throttled(false), 1);
        gauge.set(5);
        limiter.not_throttled();
        assert_eq!(limiter.throttled(false), 1);
        assert_eq!(gauge.get(), 0, "no pause: not throttled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_shows_in_the_gauge() {
        let gauge = Gauge::default();
        let limiter = RateLimiter::with_daily_limit(0, 0, gauge.clone());
        limiter.pause_for(Duration::from_secs(60));
        let now = unix_seconds(SystemTime::now());
        assert!(
            (now + 59..=now + 61).contains(&gauge.get()),
            "{}",
            gauge.get()
        );
    }

    #[test]
    fn oversized_requests_are_clamped_rather_than_stalled() {
        let limiter = RateLimiter::new(50);
        assert_eq!(limiter.try_take(100, Instant::now()), None);
    }
}
