//! How fast the whole worker may send: a sliding-window element limit and a shared throttle pause.
//!
//! LinkedIn documents 2,000 records a minute per application. A token bucket would allow a full burst on
//! top of a full minute's refill; a sliding window of what was sent in the last 60 seconds holds the
//! limit over *any* minute, which is what LinkedIn counts. A 429 pauses every sender, not just the
//! request that got it: the throttle is on the application, so one batch backing off alone would only
//! let the others burn through the same limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    /// Elements per minute; 0 = unlimited.
    per_minute: u32,
    sent: Mutex<VecDeque<(Instant, u32)>>,
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            sent: Mutex::new(VecDeque::new()),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits until `elements` may be sent, and counts them as sent.
    pub async fn acquire(&self, elements: u32) {
        loop {
            let pause = *self.paused_until.lock().expect("poisoned");
            if let Some(until) = pause
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
                continue;
            }
            match self.try_take(elements, Instant::now()) {
                None => return,
                Some(until) => tokio::time::sleep_until(until).await,
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
        let mut sent = self.sent.lock().expect("poisoned");
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
    pub fn pause_until(&self, until: Instant) {
        let mut paused = self.paused_until.lock().expect("poisoned");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    pub fn pause_for(&self, delay: Duration) {
        self.pause_until(Instant::now() + delay);
    }
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
    fn oversized_requests_are_clamped_rather_than_stalled() {
        let limiter = RateLimiter::new(50);
        assert_eq!(limiter.try_take(100, Instant::now()), None);
    }
}
