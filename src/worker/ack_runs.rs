//! Acknowledging in runs: one `basic.ack` with `multiple` per contiguous run of settled deliveries,
//! instead of one frame per message. Every ack frame costs the client a round through lapin's I/O
//! loop and costs RabbitMQ (on the same small machine) a channel operation; a batch of 100 closes
//! settled together needs one.
//!
//! A multiple ack of tag T acknowledges *every* outstanding delivery up to T on the channel, so it is
//! only sent once every tag up to T is settled: waiting to be acked, given back, or acked on its own
//! already. Delivery tags on a channel count up from 1 with every delivery, so the state is a floor
//! (every tag up to it is settled and needs no further frame), a bitmap of settled tags above it, and
//! the acks not yet sent. A delivery still in flight leaves a gap: acks above it are held until it
//! settles, and any held longer than [`HOLD`] is sent on its own, so one delivery stuck in a long
//! retry never keeps the prefetch window full of finished work.
//!
//! Frames must reach the broker in the order they are decided: a multiple ack overtaking an
//! individual ack of a tag it covers would make the broker close the channel ("unknown delivery
//! tag"). So every frame is sent while the state's lock is held (lapin queues it on the first poll).
//!
//! Settling a batch element by element would advance the floor one tag at a time and still send a
//! frame per element; inside [`AckRuns::together`] acks are only recorded, and one flush at the end
//! sends the run. Outside it, each ack is flushed at once. Either way an ack is sent by the task that
//! recorded it, or — held above a gap — by the task whose settlement closes the gap: shutdown waits
//! for those tasks, so it never closes the connection on an ack that was decided but not sent.

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The longest an ack waits above a gap before it is sent on its own. A gap normally closes within
/// one request to LinkedIn; one that lasts longer is a retry, and its neighbours should not wait.
pub(crate) const HOLD: Duration = Duration::from_millis(250);

/// Settled tags tracked above an open gap before giving up on runs for the session (the bitmap is
/// then 2 MiB). Only a delivery left unsettled while millions of others pass gets here — a bug, or a
/// retry lasting many minutes with the rate limit off — and the bitmap must not grow without bound.
const MAX_SPAN: u64 = 1 << 24;

tokio::task_local! {
    /// Set while a task settles a group of deliveries together: its acks wait for the group's flush.
    static SETTLING_TOGETHER: ();
}

/// The acks of one consumer channel.
#[derive(Clone)]
pub(crate) struct AckRuns {
    state: Arc<Mutex<State<Acker>>>,
}

struct Unsent<A> {
    acker: A,
    settled_at: Instant,
}

/// The bookkeeping, generic over the ack handle so it is tested without a broker.
struct State<A> {
    /// Every tag up to and including this one is settled, and its frame (if it needs one) is sent.
    floor: u64,
    /// Settled tags above the floor: bit `i` of word `w` stands for tag `base + 64 * w + i`.
    settled: VecDeque<u64>,
    base: u64,
    /// Acks recorded but not sent yet, by tag.
    unsent: BTreeMap<u64, Unsent<A>>,
    /// Whether a task is waiting to send held acks on their own.
    hold_timer: bool,
    /// Runs were given up for this session: every ack goes out on its own.
    one_by_one: bool,
}

/// What recording a settlement asks for.
enum Recorded<A> {
    /// Tracked: a flush takes care of it.
    Tracked,
    /// Runs are given up: ack it on its own, now.
    AckAlone(A),
    /// The tag was settled before; a second frame for it would close the channel.
    Duplicate,
}

impl<A> State<A> {
    fn new() -> Self {
        State {
            floor: 0,
            settled: VecDeque::new(),
            base: 1,
            unsent: BTreeMap::new(),
            hold_timer: false,
            one_by_one: false,
        }
    }

    fn set_settled(&mut self, tag: u64) {
        let index = tag - self.base;
        let word = (index / 64) as usize;
        if word >= self.settled.len() {
            self.settled.resize(word + 1, 0);
        }
        self.settled[word] |= 1 << (index % 64);
    }

    fn is_settled(&self, tag: u64) -> bool {
        if tag <= self.floor {
            return true;
        }
        let index = tag - self.base;
        self.settled
            .get((index / 64) as usize)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    /// Records that `tag` is settled, with the handle to ack it by if it wants an ack.
    fn record(&mut self, tag: u64, ack: Option<A>, now: Instant) -> Recorded<A> {
        if self.one_by_one {
            return ack.map_or(Recorded::Tracked, Recorded::AckAlone);
        }
        if tag == 0 || self.is_settled(tag) {
            return Recorded::Duplicate;
        }
        if tag - self.floor > MAX_SPAN {
            warn!(
                floor = self.floor,
                tag,
                "A delivery has stayed unsettled for very long; acking one by one from now on."
            );
            self.one_by_one = true;
            return ack.map_or(Recorded::Tracked, Recorded::AckAlone);
        }
        self.set_settled(tag);
        if let Some(acker) = ack {
            self.unsent.insert(
                tag,
                Unsent {
                    acker,
                    settled_at: now,
                },
            );
        }
        Recorded::Tracked
    }

    /// Moves the floor over every settled tag right above it; returns the handle whose multiple ack
    /// covers the unsent acks it passed, if any.
    fn advance(&mut self) -> Option<A> {
        let mut next = self.floor + 1;
        while self.is_settled(next) {
            let index = next - self.base;
            // Skip the rest of a run of ones within this word at once.
            let word = self.settled[(index / 64) as usize] >> (index % 64);
            next += u64::from(word.trailing_ones());
        }
        let floor = next - 1;
        if floor == self.floor {
            return None;
        }
        self.floor = floor;
        while self.floor + 1 - self.base >= 64 {
            self.settled.pop_front();
            self.base += 64;
        }
        let above = self.unsent.split_off(&(floor + 1));
        let covered = std::mem::replace(&mut self.unsent, above);
        covered.into_values().next_back().map(|unsent| unsent.acker)
    }

    /// Takes the acks that have waited above a gap for `HOLD` or longer.
    fn take_overdue(&mut self, now: Instant) -> Vec<A> {
        let overdue: Vec<u64> = self
            .unsent
            .iter()
            .filter(|(_, unsent)| unsent.settled_at + HOLD <= now)
            .map(|(tag, _)| *tag)
            .collect();
        overdue
            .into_iter()
            .filter_map(|tag| self.unsent.remove(&tag))
            .map(|unsent| unsent.acker)
            .collect()
    }

    fn oldest_unsent(&self) -> Option<Instant> {
        self.unsent.values().map(|unsent| unsent.settled_at).min()
    }
}

impl Default for AckRuns {
    fn default() -> Self {
        Self::new()
    }
}

impl AckRuns {
    pub(crate) fn new() -> Self {
        AckRuns {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    /// The delivery is settled and may be acked: at once, or with its run.
    pub(crate) async fn ack(&self, delivery: &Delivery) {
        let mut state = self.state.lock().await;
        let recorded = state.record(
            delivery.delivery_tag,
            Some(delivery.acker.clone()),
            Instant::now(),
        );
        self.after_record(&mut state, recorded, delivery.delivery_tag)
            .await;
    }

    /// The delivery was settled another way (given back) and that frame is sent: runs may pass it.
    pub(crate) async fn settled_elsewhere(&self, delivery: &Delivery) {
        let mut state = self.state.lock().await;
        let recorded = state.record(delivery.delivery_tag, None, Instant::now());
        self.after_record(&mut state, recorded, delivery.delivery_tag)
            .await;
    }

    async fn after_record(&self, state: &mut State<Acker>, recorded: Recorded<Acker>, tag: u64) {
        match recorded {
            Recorded::AckAlone(acker) => send(&acker, false).await,
            Recorded::Duplicate => {
                warn!(
                    delivery_tag = tag,
                    "A delivery was settled twice; ignoring the second."
                )
            }
            Recorded::Tracked if SETTLING_TOGETHER.try_with(|_| ()).is_ok() => {}
            Recorded::Tracked => self.flush_locked(state).await,
        }
    }

    /// Runs `settling` with its acks recorded only, then sends them in as few frames as possible.
    pub(crate) async fn together<F: Future>(&self, settling: F) -> F::Output {
        let output = SETTLING_TOGETHER.scope((), settling).await;
        self.flush().await;
        output
    }

    /// Sends the ack for the run the floor can now pass, if any.
    pub(crate) async fn flush(&self) {
        let mut state = self.state.lock().await;
        self.flush_locked(&mut state).await;
    }

    async fn flush_locked(&self, state: &mut State<Acker>) {
        if let Some(acker) = state.advance() {
            send(&acker, true).await;
        }
        if !state.unsent.is_empty() && !state.hold_timer {
            state.hold_timer = true;
            tokio::spawn(send_when_held_too_long(self.state.clone()));
        }
    }
}

/// Sends held acks on their own once they have waited `HOLD`; ends when nothing is held.
async fn send_when_held_too_long(state: Arc<Mutex<State<Acker>>>) {
    loop {
        let oldest = state.lock().await.oldest_unsent();
        if let Some(oldest) = oldest {
            tokio::time::sleep_until(oldest + HOLD).await;
        }
        let mut state = state.lock().await;
        let overdue = state.take_overdue(Instant::now());
        if !overdue.is_empty() {
            debug!(
                count = overdue.len(),
                floor = state.floor,
                "Acking deliveries one by one: an earlier delivery is still unsettled."
            );
        }
        for acker in &overdue {
            send(acker, false).await;
        }
        // Their tags stay settled: once the gap closes, the floor passes them without a frame.
        if let Some(acker) = state.advance() {
            send(&acker, true).await;
        }
        if state.unsent.is_empty() {
            // Cleared under the lock, so a task that records an ack after this re-arms the timer.
            state.hold_timer = false;
            return;
        }
    }
}

async fn send(acker: &Acker, multiple: bool) {
    if let Err(error) = acker.ack(BasicAckOptions { multiple }).await {
        // The channel is gone: the broker will redeliver, which is the safe side.
        debug!(%error, multiple, "Ack failed; the messages will be redelivered.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state with tags as ack handles: a flush reports the tag its multiple ack would name.
    struct Harness {
        state: State<u64>,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                state: State::new(),
                now: Instant::now(),
            }
        }

        fn ack(&mut self, tag: u64) {
            let recorded = self.state.record(tag, Some(tag), self.now);
            assert!(matches!(recorded, Recorded::Tracked));
        }

        fn given_back(&mut self, tag: u64) {
            let recorded = self.state.record(tag, None, self.now);
            assert!(matches!(recorded, Recorded::Tracked));
        }

        fn flush(&mut self) -> Option<u64> {
            self.state.advance()
        }
    }

    #[test]
    fn a_batch_settled_in_order_is_one_frame() {
        let mut h = Harness::new();
        for tag in 1..=100 {
            h.ack(tag);
        }
        assert_eq!(h.flush(), Some(100));
        assert_eq!(h.state.floor, 100);
        assert!(h.state.unsent.is_empty());
        assert_eq!(h.flush(), None);
    }

    #[test]
    fn acks_above_a_gap_wait_for_it() {
        let mut h = Harness::new();
        for tag in 101..=200 {
            h.ack(tag);
        }
        assert_eq!(h.flush(), None, "tags 1..=100 are still out");
        for tag in 1..=99 {
            h.ack(tag);
        }
        assert_eq!(h.flush(), Some(99));
        h.ack(100);
        assert_eq!(
            h.flush(),
            Some(200),
            "one frame covers the rest of both batches"
        );
    }

    #[test]
    fn given_back_tags_are_passed_but_never_named() {
        let mut h = Harness::new();
        h.ack(1);
        h.ack(2);
        h.given_back(3);
        assert_eq!(h.flush(), Some(2));
        assert_eq!(h.state.floor, 3);
        h.given_back(4);
        assert_eq!(h.flush(), None, "nothing left to ack");
        assert_eq!(h.state.floor, 4);
    }

    #[test]
    fn held_acks_go_alone_after_the_hold_and_are_then_passed() {
        let mut h = Harness::new();
        h.ack(2);
        h.ack(3);
        assert_eq!(h.flush(), None);
        assert!(h.state.take_overdue(h.now).is_empty());
        assert_eq!(h.state.take_overdue(h.now + HOLD), vec![2, 3]);
        h.ack(1);
        assert_eq!(
            h.flush(),
            Some(1),
            "2 and 3 went alone: the run's frame names 1"
        );
        assert_eq!(h.state.floor, 3);
    }

    #[test]
    fn a_second_settlement_of_a_tag_sends_nothing() {
        let mut h = Harness::new();
        h.given_back(2);
        assert!(matches!(
            h.state.record(2, Some(2), h.now),
            Recorded::Duplicate
        ));
        h.ack(1);
        assert_eq!(
            h.flush(),
            Some(1),
            "2 was given back: never named by an ack"
        );
        assert!(matches!(
            h.state.record(1, Some(1), h.now),
            Recorded::Duplicate
        ));
        assert!(matches!(
            h.state.record(0, Some(0), h.now),
            Recorded::Duplicate
        ));
    }

    #[test]
    fn scrambled_settlement_never_acks_an_unsettled_tag() {
        let mut order: Vec<u64> = (1..=5000).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut h = Harness::new();
        let mut settled = std::collections::BTreeSet::new();
        let mut given_back = std::collections::BTreeSet::new();
        let mut acked_up_to = 0;
        for (n, tag) in order.into_iter().enumerate() {
            if n % 7 == 0 {
                h.given_back(tag);
                given_back.insert(tag);
            } else {
                h.ack(tag);
            }
            settled.insert(tag);
            if n % 3 == 0
                && let Some(named) = h.flush()
            {
                assert!(named > acked_up_to);
                assert!(!given_back.contains(&named));
                assert!((1..=named).all(|t| settled.contains(&t)));
                acked_up_to = named;
            }
        }
        h.flush();
        assert_eq!(h.state.floor, 5000);
        assert!(h.state.unsent.is_empty());
        assert!(
            h.state.settled.len() <= 1,
            "the bitmap shrinks behind the floor"
        );
    }
}
