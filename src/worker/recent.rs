//! What this worker knows about recent closes, so that quota is not spent on what is already known:
//! the ids LinkedIn accepted (or reported already closed) within the last hour, and the ids in hand
//! right now (batched or in flight).
//!
//! The worker is at-least-once and producers send twice, so a second close of a job is routine;
//! LinkedIn answers it with a 409 that, at the level of a whole request, costs a split of its batch.
//! A close for an id accepted here within [`TTL`] is therefore settled as `already-closed` without
//! being sent — except a message replayed from the dead-letter queue (`x-replay-count`), or an id
//! whose task ended `FAILED` (forgotten then), which are always sent. A delivery whose id is in hand
//! elsewhere, like a redelivery, goes into batches of its own.
//!
//! A delivery is in hand for as long as its session lives: when the broker session is lost, the
//! broker takes every unacked delivery back and redelivers it, so a first delivery of a lost session
//! no longer counts — even if the task holding it is still winding down against a dead channel. A
//! redelivered copy waiting for it would otherwise wait for a task that may never finish.
//!
//! With task checks on, an accepted id also remembers its close task, so that a duplicate whose
//! producer wants to know how it ended can wait for that task's verdict instead of being told
//! `already-closed` before the task could still fail (see `send::settle_known`).
//!
//! Memory is bounded twice: entries expire after [`TTL`], and beyond [`CAPACITY`] the oldest go first
//! (LinkedIn's 2,000 records a minute are 120,000 an hour). Forgetting only costs a 409, never a lost
//! close. Rejected: persisting the set (in the broker or on disk) — a restart then costs a few 409s,
//! which rule 1 isolates, against a second source of truth to keep consistent. Time is tokio's clock,
//! so tests can pause it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an accepted id is remembered.
pub(crate) const TTL: Duration = Duration::from_secs(60 * 60);
/// Most ids remembered at once.
pub(crate) const CAPACITY: usize = 120_000;

/// The close task LinkedIn accepted for an id, as its pending check records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AcceptedTask {
    pub(crate) task_id: Arc<str>,
    /// When LinkedIn accepted it, in milliseconds since the Unix epoch.
    pub(crate) accepted_at_ms: i64,
}

/// One accepted id: when, the acceptance's sequence number, and its task (task checks on).
struct Accepted {
    at: Instant,
    sequence: u64,
    task: Option<AcceptedTask>,
}

#[derive(Default)]
struct Inner {
    /// Accepted ids; `order` holds them oldest first (a re-accepted id leaves its older records
    /// behind, told apart by the sequence number).
    accepted: HashMap<Arc<str>, Accepted>,
    order: VecDeque<(Instant, u64, Arc<str>)>,
    sequence: u64,
    /// Numbers the guards of first deliveries.
    guards: u64,
    /// Deliveries in hand per id: all of them, and the first deliveries among them.
    in_hand: HashMap<Arc<str>, Holders>,
}

#[derive(Default)]
struct Holders {
    all: u32,
    /// The first deliveries among them, each with its session's stop token (cancelled once the
    /// session is over) and the number that tells its guard apart.
    fresh: Vec<(u64, CancellationToken)>,
}

impl Holders {
    /// First deliveries whose session still lives.
    fn live_fresh(&self) -> usize {
        self.fresh
            .iter()
            .filter(|(_, session)| !session.is_cancelled())
            .count()
    }
}

/// Recent closes of one worker (shared by its sessions).
pub(crate) struct Recent {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
    /// Woken whenever a delivery is released.
    released: Notify,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(TTL, CAPACITY)
    }
}

impl Recent {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Recent {
        Recent {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            released: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// LinkedIn accepted a close for `id` (or said it is already closed).
    pub(crate) fn accepted(&self, id: &str) {
        self.remember(id, None);
    }

    /// LinkedIn accepted a close for `id`, which became `task` (to be verified).
    pub(crate) fn accepted_task(&self, id: &str, task: AcceptedTask) {
        self.remember(id, Some(task));
    }

    fn remember(&self, id: &str, task: Option<AcceptedTask>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let key: Arc<str> = Arc::from(id);
        inner.sequence += 1;
        let sequence = inner.sequence;
        let accepted = Accepted {
            at: now,
            sequence,
            task,
        };
        inner.accepted.insert(key.clone(), accepted);
        inner.order.push_back((now, sequence, key));
        self.expire(&mut inner, now);
    }

    /// Whether LinkedIn accepted a close for `id` within the TTL.
    pub(crate) fn was_accepted(&self, id: &str) -> bool {
        self.with_live(id, |_| ()).is_some()
    }

    /// The task of the close LinkedIn accepted for `id` within the TTL, when it has one.
    pub(crate) fn task_of(&self, id: &str) -> Option<AcceptedTask> {
        self.with_live(id, |accepted| accepted.task.clone())
            .flatten()
    }

    fn with_live<T>(&self, id: &str, read: impl FnOnce(&Accepted) -> T) -> Option<T> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner
            .accepted
            .get(id)
            .filter(|accepted| now.duration_since(accepted.at) < self.ttl)
            .map(read)
    }

    /// The id's close task FAILED: the job is still open, so the next close must be sent.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().accepted.remove(id);
    }

    /// Ids remembered as accepted.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().accepted.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, sequence, key)) = inner.order.front() {
            let stale = now.duration_since(*at) >= self.ttl;
            let over = inner.accepted.len() > self.capacity;
            if !stale && !over {
                break;
            }
            // Only remove the entry if this is its latest acceptance.
            if inner
                .accepted
                .get(key)
                .is_some_and(|accepted| accepted.sequence == *sequence)
            {
                inner.accepted.remove(key);
            }
            inner.order.pop_front();
        }
        // Entries re-accepted leave stale order records behind; keep the queue bounded too.
        if inner.order.len() > 2 * self.capacity {
            let accepted = &inner.accepted;
            inner.order.retain(|(_, sequence, key)| {
                accepted
                    .get(key)
                    .is_some_and(|accepted| accepted.sequence == *sequence)
            });
        }
    }

    /// A delivery for `id`, of the session whose stop token is `session`, is in hand until the
    /// returned guard is dropped or the session ends. Returns whether it is suspect: `redelivered`,
    /// or a duplicate of an id already in hand. A suspect delivery is not a first delivery: it
    /// waits for those (see [`Recent::until_no_first_delivery`]).
    pub(crate) fn hold(
        self: &Arc<Self>,
        id: &str,
        redelivered: bool,
        session: &CancellationToken,
    ) -> (InHand, bool) {
        let key: Arc<str> = Arc::from(id);
        let mut inner = self.lock();
        inner.guards += 1;
        let guard = inner.guards;
        let holders = inner.in_hand.entry(key.clone()).or_default();
        let suspect = redelivered || holders.all > 0;
        holders.all += 1;
        if !suspect {
            holders.fresh.push((guard, session.clone()));
        }
        (
            InHand {
                recent: self.clone(),
                id: key,
                fresh: (!suspect).then_some(guard),
            },
            suspect,
        )
    }

    /// A session ended: its first deliveries are the broker's again, so whoever waits for them
    /// looks again (their session's stop token is cancelled by now).
    pub(crate) fn session_ended(&self) {
        self.released.notify_waiters();
    }

    /// Waits until no first delivery of `id` is in hand: a duplicate goes after its original, so
    /// that the original's acceptance settles it without a request.
    pub(crate) async fn until_no_first_delivery(&self, id: &str) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let fresh = self.lock().in_hand.get(id).map_or(0, Holders::live_fresh);
            if fresh == 0 {
                return;
            }
            released.await;
        }
    }
}

/// A delivery in hand; dropping it (settled or given back) releases the id.
pub(crate) struct InHand {
    recent: Arc<Recent>,
    id: Arc<str>,
    /// The guard's number, for a first delivery.
    fresh: Option<u64>,
}

impl Drop for InHand {
    fn drop(&mut self) {
        {
            let mut inner = self.recent.lock();
            if let Some(holders) = inner.in_hand.get_mut(&self.id) {
                holders.all = holders.all.saturating_sub(1);
                if let Some(guard) = self.fresh {
                    holders.fresh.retain(|(number, _)| *number != guard);
                }
                if holders.all == 0 {
                    inner.in_hand.remove(&self.id);
                }
            }
        }
        self.recent.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accepted_ids_are_remembered_for_an_hour() {
        let recent = Recent::default();
        recent.accepted("J-1");
        assert!(recent.was_accepted("J-1"));
        assert!(!recent.was_accepted("J-2"));
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert!(recent.was_accepted("J-1"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!recent.was_accepted("J-1"));
        assert!(recent.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepted_task_is_remembered_with_its_id_and_replaced_by_a_later_acceptance() {
        let recent = Recent::default();
        let task = AcceptedTask {
            task_id: Arc::from("urn:li:simpleJobPostingTask:1"),
            accepted_at_ms: 1_700_000_000_000,
        };
        recent.accepted_task("J-1", task.clone());
        assert!(recent.was_accepted("J-1"));
        assert_eq!(recent.task_of("J-1"), Some(task));
        assert_eq!(recent.task_of("J-2"), None);
        recent.accepted("J-1");
        assert_eq!(recent.task_of("J-1"), None, "a 409 has no task to wait for");
        recent.accepted_task(
            "J-3",
            AcceptedTask {
                task_id: Arc::from("t"),
                accepted_at_ms: 0,
            },
        );
        tokio::time::advance(TTL).await;
        assert_eq!(recent.task_of("J-3"), None, "forgotten with its id");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_task_is_forgotten() {
        let recent = Recent::default();
        recent.accepted("J-1");
        recent.forget("J-1");
        assert!(!recent.was_accepted("J-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_capped_oldest_first() {
        let recent = Recent::new(TTL, 100);
        for i in 0..1000 {
            recent.accepted(&format!("J-{i}"));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(recent.len(), 100);
        assert!(recent.was_accepted("J-999"));
        assert!(!recent.was_accepted("J-899"));
        // Accepting one id again and again never grows the order queue without bound.
        for _ in 0..10_000 {
            recent.accepted("J-999");
        }
        assert!(recent.lock().order.len() <= 200 + 1);
        assert!(recent.was_accepted("J-999"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_accepted_id_lives_from_its_latest_acceptance() {
        let recent = Recent::default();
        recent.accepted("J-1");
        tokio::time::advance(TTL / 2).await;
        recent.accepted("J-1");
        tokio::time::advance(TTL / 2 + Duration::from_secs(1)).await;
        assert!(recent.was_accepted("J-1"));
    }

    #[test]
    fn ids_in_hand_are_counted_until_released() {
        let recent = Arc::new(Recent::default());
        let session = CancellationToken::new();
        let (first, suspect) = recent.hold("J-1", false, &session);
        assert!(!suspect);
        let (second, suspect) = recent.hold("J-1", false, &session);
        assert!(suspect, "a duplicate of an id in hand");
        drop(first);
        drop(second);
        let (_third, suspect) = recent.hold("J-1", false, &session);
        assert!(!suspect, "released when both were dropped");
        let (_redelivered, suspect) = recent.hold("J-2", true, &session);
        assert!(suspect);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_waits_for_its_first_delivery_only() {
        let recent = Arc::new(Recent::default());
        let session = CancellationToken::new();
        let (first, _) = recent.hold("J-1", false, &session);
        let (_duplicate, _) = recent.hold("J-1", false, &session);
        let (_other_duplicate, _) = recent.hold("J-1", true, &session);
        let waiting = tokio::spawn({
            let recent = recent.clone();
            async move { recent.until_no_first_delivery("J-1").await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the original is in hand");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released with the original, not with the other duplicates")
            .unwrap();
        // A redelivered id alone never waits.
        let (_alone, _) = recent.hold("J-2", true, &session);
        recent.until_no_first_delivery("J-2").await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_delivery_of_a_lost_session_is_not_waited_for() {
        let recent = Arc::new(Recent::default());
        let lost = CancellationToken::new();
        // The lost session's task still holds its delivery (winding down on a dead channel).
        let (_wedged, _) = recent.hold("J-1", false, &lost);
        let next = CancellationToken::new();
        let (_redelivered, suspect) = recent.hold("J-1", true, &next);
        assert!(suspect);
        let waiting = tokio::spawn({
            let recent = recent.clone();
            async move { recent.until_no_first_delivery("J-1").await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "its session still lives");
        lost.cancel();
        recent.session_ended();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released when its session ended")
            .unwrap();
    }
}
