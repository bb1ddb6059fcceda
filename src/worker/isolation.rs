//! What the worker has learnt about culprits LinkedIn does not name — the jobs it already closed (or
//! that expired), a 422 enum, a poison element's 500 — and what follows for the next request: the
//! estimated culprit rate that [`super::sizing`] turns into the size of fresh requests and of the
//! pieces a refused group goes out in, and the window that keeps a cold worker from sending many
//! large requests before it knows the rate. One [`Isolation`] is shared by every send task and the
//! consume loop (which cuts batches at [`Isolation::fresh_size`]).
//!
//! The estimate is culprits per close answered (a fresh request's closes all count at its first
//! answer that is not a whole-request retry), both counts decaying with a half-life
//! (`CULPRIT_HALF_LIFE_MS`) and the closes starting from a prior of [`PRIOR_CLOSES`] clean ones, so
//! that the rate falls back towards zero — and requests grow back to `BATCH_SIZE` — once culprits
//! stop, with traffic or without. A culprit is counted as soon as it is certain there is one: a
//! fresh request refused counts one; a piece of a split, refused, counts one unless it is the first
//! of its siblings refused (that one was its group's); so the count is a lower bound while isolation
//! goes on and exact once it is done. Only fresh first deliveries count: redeliveries and duplicates
//! are likely re-closes, sent on their own, and would make fresh batches small for no reason.
//!
//! The window: fresh elements in flight (sent and not yet answered other than by a whole-request
//! retry) may not exceed the closes answered recently, one request always allowed. A cold worker thus sends one full request, learns from its
//! answer, and doubles up from there; at 0 % culprits that costs a couple of round trips, at 10 % it
//! saves sending four full batches that would all be refused.
//!
//! Beside it, how often LinkedIn fails a request at random: whole-request transient failures of
//! groups that then got through unchanged, per request that got through (decaying alike, from a
//! prior of one failure in [`PRIOR_REQUESTS`]). A failure before a split is left out (it may have
//! been a poison's). With the poison rate — lone pieces whose first answer was a failure, less
//! what the random rate explains — it says how long a run of failures a lone piece must meet
//! before it is given up on (`decide::lone_failures_to_give_up`); [`Isolation::answered`]
//! counts the requests LinkedIn answered, so that such a run only counts while LinkedIn answers
//! others.
//!
//! Rejected: estimating from refusals of fresh requests alone (a maximum-likelihood rate from `1 − qˢ`
//! per size) — unbiased, but it needs a prior to say anything after the first refusal and knows
//! nothing until a refused batch of 100 is answered again; counting culprits only when isolated —
//! the first splits of a cold worker would then use a rate of zero; a window in time instead of
//! decay (ids and times kept per observation, for the same answer).

use super::sizing::Plan;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

/// Clean closes the estimate starts from (and falls back to as its counts decay): with them, one
/// refused request of 100 is a rate of 2 %, not 100 %, and a quiet worker forgets its culprits.
pub(crate) const PRIOR_CLOSES: f64 = 50.0;

/// Requests the transient-failure rate starts from, one of them failed: 1 % until LinkedIn's own
/// answers say otherwise.
pub(crate) const PRIOR_REQUESTS: f64 = 100.0;

/// Where a group of elements comes from, as far as the estimate cares.
#[derive(Clone, Debug)]
pub(crate) enum Lineage {
    /// Cut by the batcher (or cut again to the target before it was first sent).
    Fresh,
    /// A piece of a refused group, with what its siblings share.
    Piece(Arc<Siblings>),
}

/// What the pieces of one split share.
#[derive(Debug, Default)]
pub(crate) struct Siblings {
    /// Set once one of them was refused: that one holds the culprit its group was counted for.
    culprit_taken: AtomicBool,
    /// Set once any group of the whole isolation — these pieces, their parent's siblings, the
    /// pieces of their pieces — got through to LinkedIn: a run of 5xx in it is then an element's,
    /// not LinkedIn's as a whole.
    got_through: Arc<AtomicBool>,
    /// How many pieces the split made, whether it was for a run of 5xx (not a one-job 4xx), and
    /// how many of them got through.
    pieces: usize,
    after_5xx: bool,
    pieces_through: AtomicUsize,
    /// Woken when one of them got through.
    piece_through: Notify,
}

impl Lineage {
    /// A lineage for the `pieces` pieces of one split of a group of this lineage, split for a run
    /// of 5xx (`after_5xx`) or for a one-job fault.
    pub(crate) fn pieces_of(parent: &Lineage, pieces: usize, after_5xx: bool) -> Lineage {
        let got_through = match parent {
            Lineage::Fresh => Arc::new(AtomicBool::new(false)),
            Lineage::Piece(siblings) => siblings.got_through.clone(),
        };
        Lineage::Piece(Arc::new(Siblings {
            culprit_taken: AtomicBool::new(false),
            got_through,
            pieces,
            after_5xx,
            pieces_through: AtomicUsize::new(0),
            piece_through: Notify::new(),
        }))
    }

    /// This piece got through for the first time (call once per piece).
    pub(crate) fn piece_got_through(&self) {
        if let Lineage::Piece(siblings) = self {
            siblings.pieces_through.fetch_add(1, Ordering::Relaxed);
            siblings.piece_through.notify_waiters();
        }
    }

    /// Whether this is a piece of a split for a run of 5xx whose siblings have not all got through
    /// yet (they may be answered any moment: they went out with it).
    pub(crate) fn awaits_siblings(&self) -> bool {
        matches!(self, Lineage::Piece(siblings) if siblings.after_5xx)
            && !self.siblings_cleared_it_of_the_5xx()
    }

    /// Until every sibling got through ([`Lineage::siblings_cleared_it_of_the_5xx`]); never for a
    /// fresh group or a split for a one-job fault.
    pub(crate) async fn until_siblings_through(&self) {
        let Lineage::Piece(siblings) = self else {
            return std::future::pending().await;
        };
        loop {
            let through = siblings.piece_through.notified();
            tokio::pin!(through);
            through.as_mut().enable();
            if self.siblings_cleared_it_of_the_5xx() {
                return;
            }
            through.await;
        }
    }

    /// Whether this piece's group was split for a run of 5xx and every other piece of it got
    /// through: the group's failure was then this piece's doing, or LinkedIn's bad luck.
    pub(crate) fn siblings_cleared_it_of_the_5xx(&self) -> bool {
        match self {
            Lineage::Fresh => false,
            Lineage::Piece(siblings) => {
                siblings.after_5xx
                    && siblings.pieces_through.load(Ordering::Relaxed) + 1 >= siblings.pieces
            }
        }
    }

    pub(crate) fn is_piece(&self) -> bool {
        matches!(self, Lineage::Piece(_))
    }

    /// A group of this lineage got through to LinkedIn (answered as a request).
    pub(crate) fn got_through(&self) {
        if let Lineage::Piece(siblings) = self {
            siblings.got_through.store(true, Ordering::Relaxed);
        }
    }

    /// Whether another group of this lineage's isolation got through.
    pub(crate) fn others_got_through(&self) -> bool {
        match self {
            Lineage::Fresh => false,
            Lineage::Piece(siblings) => siblings.got_through.load(Ordering::Relaxed),
        }
    }
}

/// `value` after `elapsed` of decay with `half_life`.
fn decayed(value: f64, elapsed: Duration, half_life: Duration) -> f64 {
    value * (-elapsed.as_secs_f64() / half_life.as_secs_f64().max(1e-9)).exp2()
}

/// The culprit rate from the decayed counts.
fn rate_of(culprits: f64, closes: f64) -> f64 {
    (culprits / (closes + PRIOR_CLOSES)).clamp(0.0, 1.0)
}

/// The rate of random whole-request failures from the decayed counts.
fn transient_rate_of(failures: f64, got_through: f64) -> f64 {
    ((failures + 1.0) / (failures + got_through + PRIOR_REQUESTS)).clamp(0.0, 1.0)
}

/// The poison rate from the decayed counts: lone failures beyond what `random` explains, per close.
fn poison_rate_of(lone_failures: f64, lone_tries: f64, random: f64, closes: f64) -> f64 {
    rate_of((lone_failures - random * lone_tries).max(0.0), closes)
}

/// Whether a fresh request of `elements` may go with `in_flight` fresh elements unanswered and
/// `recent_closes` settled recently.
fn window_admits(in_flight: usize, elements: usize, recent_closes: f64) -> bool {
    in_flight == 0 || (in_flight + elements) as f64 <= recent_closes
}

/// Whether a refused group of this lineage adds a culprit to the count (and marks its siblings).
fn counts_a_culprit(lineage: &Lineage) -> bool {
    match lineage {
        Lineage::Fresh => true,
        // The first refused sibling takes over the group's culprit; later ones are more.
        Lineage::Piece(siblings) => siblings.culprit_taken.swap(true, Ordering::Relaxed),
    }
}

/// The decaying counts, as of `at`.
#[derive(Debug)]
struct Counts {
    culprits: f64,
    /// Lone pieces answered at all, and those whose first answer was a whole-request failure
    /// (poisons, and LinkedIn's random failures).
    lone_tries: f64,
    lone_5xx: f64,
    closes: f64,
    /// Requests that got through, and the whole-request failures their groups met just before.
    got_through: f64,
    transient_failures: f64,
    at: Instant,
    fresh_in_flight: usize,
}

impl Counts {
    fn now(&mut self, half_life: Duration) -> &mut Counts {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.at);
        self.culprits = decayed(self.culprits, elapsed, half_life);
        self.lone_5xx = decayed(self.lone_5xx, elapsed, half_life);
        self.lone_tries = decayed(self.lone_tries, elapsed, half_life);
        self.closes = decayed(self.closes, elapsed, half_life);
        self.got_through = decayed(self.got_through, elapsed, half_life);
        self.transient_failures = decayed(self.transient_failures, elapsed, half_life);
        self.at = now;
        self
    }
}

/// The worker's estimate, its plan and its window (see the module doc).
pub(crate) struct Isolation {
    plan: Plan,
    half_life: Duration,
    counts: Mutex<Counts>,
    /// Woken when the window or the estimate changed: waiting fresh groups look again.
    changed: Notify,
    /// `job_closer_batch_target_size`.
    target: Gauge,
    /// Requests LinkedIn answered as requests, ever.
    answered: AtomicU64,
}

impl Isolation {
    pub(crate) fn new(batch_size: usize, half_life: Duration, target: Gauge) -> Isolation {
        target.set(batch_size as i64);
        Isolation {
            plan: Plan::new(batch_size),
            half_life,
            counts: Mutex::new(Counts {
                culprits: 0.0,
                lone_tries: 0.0,
                lone_5xx: 0.0,
                closes: 0.0,
                got_through: 0.0,
                transient_failures: 0.0,
                at: Instant::now(),
                fresh_in_flight: 0,
            }),
            changed: Notify::new(),
            target,
            answered: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Plain numbers: a panic elsewhere while holding the lock leaves them usable.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The estimated share of closes that turn out to be a culprit LinkedIn does not name.
    pub(crate) fn rate(&self) -> f64 {
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        rate_of(counts.culprits, counts.closes)
    }

    /// The estimated share of closes that are a poison — a lone element LinkedIn answers with a 5xx:
    /// the prior of a lone piece's verdict. Lone pieces whose first answer was a failure, less the
    /// share LinkedIn's random failures explain, per close. Not [`Isolation::rate`], which counts
    /// jobs already closed too: where many are, and LinkedIn fails a request now and then, every
    /// piece of a group failed at random would otherwise start from their odds.
    pub(crate) fn poison_rate(&self) -> f64 {
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        let random = transient_rate_of(counts.transient_failures, counts.got_through);
        poison_rate_of(counts.lone_5xx, counts.lone_tries, random, counts.closes)
    }

    /// A lone piece's first answer came: a whole-request failure (`failed`) or not.
    pub(crate) fn lone_piece_answered(&self, failed: bool) {
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        counts.lone_tries += 1.0;
        if failed {
            counts.lone_5xx += 1.0;
        }
    }

    /// The estimated share of requests LinkedIn fails as a whole at random (see the module doc).
    pub(crate) fn transient_rate(&self) -> f64 {
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        transient_rate_of(counts.transient_failures, counts.got_through)
    }

    /// A request got through to LinkedIn (answered as a request) after its group had met
    /// `failures_before` whole-request transient failures in a row, unsplit.
    pub(crate) fn got_through(&self, failures_before: u32) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        counts.got_through += 1.0;
        counts.transient_failures += f64::from(failures_before);
    }

    /// Requests LinkedIn answered as requests so far.
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// How many elements a fresh request holds now (shown in `job_closer_batch_target_size`).
    pub(crate) fn fresh_size(&self) -> usize {
        let size = self.plan.fresh_size(self.rate());
        self.target.set(size as i64);
        size
    }

    /// Whether culprits LinkedIn does not name are common now: fresh requests are cut below
    /// `BATCH_SIZE`, so a whole-request 5xx is split at once rather than after a second one.
    pub(crate) fn culprits_common(&self) -> bool {
        self.plan.fresh_size(self.rate()) < self.plan.batch_size()
    }

    /// The sizes of the pieces a refused group of `n` goes out in now.
    pub(crate) fn split(&self, n: usize) -> Vec<usize> {
        self.plan.split(n, self.rate())
    }

    /// A group of this lineage was refused for a job LinkedIn did not name.
    pub(crate) fn refused(&self, lineage: &Lineage) {
        if counts_a_culprit(lineage) {
            self.lock().now(self.half_life).culprits += 1.0;
            self.changed.notify_waiters();
        }
    }

    /// LinkedIn's first answer to a fresh request of `closes` came (see the module doc).
    pub(crate) fn settled(&self, closes: usize) {
        if closes == 0 {
            return;
        }
        self.lock().now(self.half_life).closes += closes as f64;
        self.changed.notify_waiters();
    }

    /// A fresh request of `elements` may go now; it counts in the window until the guard is dropped
    /// (at its first answer).
    pub(crate) fn try_admit(self: &Arc<Self>, elements: usize) -> Option<FreshInFlight> {
        let mut counts = self.lock();
        let counts = counts.now(self.half_life);
        if !window_admits(counts.fresh_in_flight, elements, counts.closes) {
            return None;
        }
        counts.fresh_in_flight += elements;
        Some(FreshInFlight {
            isolation: self.clone(),
            elements,
        })
    }

    /// Until the window has room for a fresh request of the current size.
    pub(crate) async fn until_room(&self) {
        loop {
            let changed = self.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let size = self.fresh_size();
            let room = {
                let mut counts = self.lock();
                let counts = counts.now(self.half_life);
                window_admits(counts.fresh_in_flight, size, counts.closes)
            };
            if room {
                return;
            }
            changed.await;
        }
    }

    /// Completes when the window or the estimate changes; create it before looking at them.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }
}

/// A fresh request's place in the window.
pub(crate) struct FreshInFlight {
    isolation: Arc<Isolation>,
    elements: usize,
}

impl Drop for FreshInFlight {
    fn drop(&mut self) {
        {
            let mut counts = self.isolation.lock();
            counts.fresh_in_flight = counts.fresh_in_flight.saturating_sub(self.elements);
        }
        self.isolation.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_LIFE: Duration = Duration::from_secs(10);

    fn isolation() -> Arc<Isolation> {
        Arc::new(Isolation::new(100, HALF_LIFE, Gauge::default()))
    }

    #[test]
    fn counts_halve_every_half_life() {
        assert_eq!(decayed(8.0, Duration::ZERO, HALF_LIFE), 8.0);
        assert!((decayed(8.0, HALF_LIFE, HALF_LIFE) - 4.0).abs() < 1e-9);
        assert!((decayed(8.0, HALF_LIFE * 3, HALF_LIFE) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_rate_starts_at_zero_and_the_prior_tempers_the_first_refusal() {
        assert_eq!(rate_of(0.0, 0.0), 0.0);
        assert!((rate_of(1.0, 0.0) - 0.02).abs() < 1e-9);
        assert!((rate_of(10.0, 50.0) - 0.1).abs() < 1e-9);
        assert_eq!(rate_of(1e9, 0.0), 1.0);
    }

    #[test]
    fn the_transient_rate_starts_at_one_percent_and_follows_linkedins_answers() {
        assert!((transient_rate_of(0.0, 0.0) - 0.01).abs() < 1e-9);
        assert!(transient_rate_of(0.0, 1000.0) < 0.001);
        assert!((transient_rate_of(39.0, 861.0) - 0.04).abs() < 1e-9);
        let isolation = isolation();
        for _ in 0..96 {
            isolation.got_through(0);
        }
        for _ in 0..4 {
            isolation.got_through(1);
        }
        let rate = isolation.transient_rate();
        assert!((0.02..0.03).contains(&rate), "{rate}");
        assert_eq!(isolation.answered(), 100);
    }

    #[test]
    fn poisons_are_the_lone_failures_random_ones_do_not_explain() {
        // 200 poisons among 2,000 closes, 740 lone pieces, LinkedIn failing nothing else.
        let rate = poison_rate_of(200.0, 740.0, 0.0007, 2000.0);
        assert!((0.09..0.1).contains(&rate), "{rate}");
        // No poison, one request in twenty-five failing: 120 of 3,000 lone pieces failed.
        assert_eq!(poison_rate_of(120.0, 3000.0, 0.04, 15000.0), 0.0);
        assert!(poison_rate_of(130.0, 3000.0, 0.04, 15000.0) < 0.001);
    }

    #[test]
    fn the_window_lets_one_request_go_then_what_was_settled() {
        assert!(window_admits(0, 100, 0.0));
        assert!(!window_admits(100, 100, 100.0));
        assert!(window_admits(100, 100, 200.0));
        assert!(!window_admits(1, 1, 1.5));
    }

    #[test]
    fn the_first_refused_sibling_takes_over_its_groups_culprit() {
        assert!(counts_a_culprit(&Lineage::Fresh));
        let pieces = Lineage::pieces_of(&Lineage::Fresh, 3, false);
        assert!(!counts_a_culprit(&pieces), "the group's own culprit");
        assert!(counts_a_culprit(&pieces), "a second one");
        assert!(counts_a_culprit(&pieces));
        assert!(
            !counts_a_culprit(&Lineage::pieces_of(&Lineage::Fresh, 3, false)),
            "other pieces, other group"
        );
    }

    #[test]
    fn a_piece_is_left_holding_a_5xx_once_every_sibling_got_through() {
        let pieces = Lineage::pieces_of(&Lineage::Fresh, 3, true);
        assert!(!pieces.siblings_cleared_it_of_the_5xx());
        pieces.piece_got_through();
        assert!(!pieces.siblings_cleared_it_of_the_5xx(), "one sibling left");
        pieces.piece_got_through();
        assert!(pieces.siblings_cleared_it_of_the_5xx());
        // A split for a one-job 4xx says nothing of a 5xx.
        let after_4xx = Lineage::pieces_of(&Lineage::Fresh, 2, false);
        after_4xx.piece_got_through();
        assert!(!after_4xx.siblings_cleared_it_of_the_5xx());
        assert!(!Lineage::Fresh.siblings_cleared_it_of_the_5xx());
    }

    #[tokio::test(start_paused = true)]
    async fn a_piece_waiting_for_its_siblings_wakes_once_the_last_got_through() {
        let pieces = Lineage::pieces_of(&Lineage::Fresh, 3, true);
        assert!(pieces.awaits_siblings());
        let waiting = tokio::spawn({
            let pieces = pieces.clone();
            async move { pieces.until_siblings_through().await }
        });
        pieces.piece_got_through();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one sibling left");
        pieces.piece_got_through();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(!pieces.awaits_siblings());
        assert!(!Lineage::pieces_of(&Lineage::Fresh, 2, false).awaits_siblings());
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_requests_shrink_with_culprits_and_grow_back_once_they_stop() {
        let isolation = isolation();
        assert_eq!(isolation.fresh_size(), 100);
        // 10 % of 1,000 closes were culprits, all found.
        for _ in 0..100 {
            isolation.refused(&Lineage::Fresh);
        }
        isolation.settled(1000);
        let rate = isolation.rate();
        assert!((0.09..0.1).contains(&rate), "{rate}");
        let small = isolation.fresh_size();
        assert!((2..=4).contains(&small), "{small}");
        assert_eq!(isolation.target.get(), small as i64);
        // Culprits stop; closes go on at 50 a second.
        let mut grown_back = None;
        for second in 1..=600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            isolation.settled(50);
            if isolation.fresh_size() == 100 {
                grown_back = Some(second);
                break;
            }
        }
        let seconds = grown_back.expect("back to BATCH_SIZE");
        assert!(seconds <= 180, "grew back after {seconds} s");
        // And without any traffic too.
        isolation.refused(&Lineage::Fresh);
        isolation.settled(10);
        assert!(isolation.fresh_size() < 100);
        tokio::time::advance(HALF_LIFE * 20).await;
        assert_eq!(isolation.fresh_size(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cold_worker_sends_one_fresh_request_then_as_many_as_were_settled() {
        let isolation = isolation();
        let first = isolation.try_admit(100).expect("one request always goes");
        assert!(isolation.try_admit(100).is_none());
        let no_room = tokio::time::timeout(Duration::from_millis(10), isolation.until_room()).await;
        assert!(no_room.is_err(), "a due batch waits for room");
        let changed = isolation.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        isolation.settled(100);
        drop(first);
        changed.await;
        let second = isolation
            .try_admit(100)
            .expect("100 settled: 100 may be in flight");
        assert!(isolation.try_admit(100).is_none());
        isolation.settled(300);
        let more: Vec<_> = (0..3)
            .map(|_| isolation.try_admit(100).expect("400 settled"))
            .collect();
        assert!(isolation.try_admit(100).is_none(), "400 in flight");
        drop((second, more));
        tokio::time::timeout(Duration::from_secs(1), isolation.until_room())
            .await
            .expect("room once nothing is in flight");
        // A long pause forgets what was settled: one request at a time again.
        tokio::time::advance(HALF_LIFE * 10).await;
        let _alone = isolation.try_admit(100).expect("one request always goes");
        assert!(isolation.try_admit(100).is_none());
    }
}
