//! Where pending task checks wait: the delay tiers, the verification queue, their names and the
//! arguments they are declared with.
//!
//! A pending check waits in a *delay queue* whose fixed `x-message-ttl` expires it into the
//! verification queue (`x-dead-letter-exchange: ""`, routing key = the verification queue), which the
//! worker consumes. RabbitMQ only expires messages at the head of a queue, so a single queue holding
//! mixed per-message delays would keep a short delay waiting behind a long one; one queue per delay
//! ("tier") keeps each queue in expiry order. The tiers start at `TASK_CHECK_DELAY_MS` and double up to
//! an hour, never more than [`MAX_TIERS`] of them, so the set of queues stays small and fixed.

use crate::amqp::{self, AmqpError, QueueRole};
use crate::config::AmqpArgs;
use lapin::Connection;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// Rechecks back off up to this (unless the first check is set even later).
pub(crate) const MAX_RECHECK_DELAY: Duration = Duration::from_secs(60 * 60);
/// At most this many delay queues per close queue.
pub(crate) const MAX_TIERS: usize = 6;
/// Rechecks never come faster than this, even when the first check is immediate
/// (`TASK_CHECK_DELAY_MS=0`): doubling nothing would poll LinkedIn in a tight loop.
pub(crate) const MIN_RECHECK_DELAY: Duration = Duration::from_millis(100);

/// One delay queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tier {
    pub(crate) delay: Duration,
    pub(crate) queue: String,
}

/// The queues of one close queue's task checks, and which tier a check waits in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    check_queue: String,
    wait_prefix: String,
    tiers: Vec<Tier>,
}

impl Schedule {
    /// The schedule for `close_queue` whose first check comes `first_delay` after acceptance.
    pub fn new(close_queue: &str, first_delay: Duration) -> Schedule {
        let wait_prefix = format!("{close_queue}.tasks.wait.");
        let tiers = tier_delays(first_delay)
            .into_iter()
            .map(|delay| Tier {
                delay,
                queue: format!("{wait_prefix}{}", delay.as_millis()),
            })
            .collect();
        Schedule {
            check_queue: format!("{close_queue}.tasks.check"),
            wait_prefix,
            tiers,
        }
    }

    /// The queue the verifier consumes: checks whose wait is over.
    pub(crate) fn check_queue(&self) -> &str {
        &self.check_queue
    }

    pub(crate) fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Where a check waits after `checks_done` status checks (0: waiting for the first one).
    pub(crate) fn tier_after(&self, checks_done: u32) -> &Tier {
        &self.tiers[tier_index(checks_done, self.tiers.len())]
    }

    /// Whether `queue` is one of this close queue's delay queues, under any delay setting: a
    /// restart with another `TASK_CHECK_DELAY_MS` leaves the old tiers draining into the same
    /// verification queue.
    pub(crate) fn is_wait_queue(&self, queue: &str) -> bool {
        queue
            .strip_prefix(&self.wait_prefix)
            .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Every queue the schedule declares: the verification queue, then the tiers.
    pub fn queue_names(&self) -> Vec<String> {
        std::iter::once(self.check_queue.clone())
            .chain(self.tiers.iter().map(|tier| tier.queue.clone()))
            .collect()
    }
}

/// The tier delays: `first`, then doubling from it (from [`MIN_RECHECK_DELAY`] at least) up to
/// [`MAX_RECHECK_DELAY`], at most [`MAX_TIERS`] in all. A first delay beyond the cap is its own cap.
pub(crate) fn tier_delays(first: Duration) -> Vec<Duration> {
    let cap = MAX_RECHECK_DELAY.max(first);
    let base = first.max(MIN_RECHECK_DELAY);
    let mut delays = vec![first];
    let mut factor = 1u32;
    while delays.len() < MAX_TIERS && delays.last().is_some_and(|last| *last < cap) {
        factor *= 2;
        delays.push(base.saturating_mul(factor).min(cap));
    }
    delays
}

/// The tier index after `checks_done` checks: one tier further per check, staying on the last.
pub(crate) fn tier_index(checks_done: u32, tiers: usize) -> usize {
    usize::try_from(checks_done)
        .unwrap_or(usize::MAX)
        .min(tiers.saturating_sub(1))
}

fn ttl_millis(delay: Duration) -> i32 {
    // Config caps the first delay at 24 hours and the tiers at max(first, 1 h): always fits.
    i32::try_from(delay.as_millis()).unwrap_or(i32::MAX)
}

/// The verification queue is declared like the close queue (a quorum queue dead-letters a message
/// that keeps crashing consumers into the dead-letter queue), but without single active consumer:
/// checks need no order, and every worker may verify.
pub(crate) fn check_queue_arguments(args: &AmqpArgs) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in amqp::queue_arguments(args, QueueRole::Close).inner() {
        if key.as_str() != "x-single-active-consumer" {
            table.insert(key.clone(), value.clone());
        }
    }
    table
}

/// A delay queue: its messages expire after `delay` into `check_queue`.
pub(crate) fn wait_queue_arguments(
    args: &AmqpArgs,
    delay: Duration,
    check_queue: &str,
) -> FieldTable {
    let mut table = amqp::queue_type_argument(args.queue_type);
    table.insert(
        "x-message-ttl".into(),
        AMQPValue::LongInt(ttl_millis(delay)),
    );
    // Expired checks must reach the verification queue: at least once with quorum queues.
    amqp::dead_letter_into(&mut table, check_queue, args.queue_type);
    table
}

/// Declares the verification queue and every tier (durable, explicit arguments).
pub(crate) async fn declare(
    connection: &Connection,
    args: &AmqpArgs,
    schedule: &Schedule,
) -> Result<(), AmqpError> {
    let mut declarations = vec![(schedule.check_queue.clone(), check_queue_arguments(args))];
    for tier in &schedule.tiers {
        declarations.push((
            tier.queue.clone(),
            wait_queue_arguments(args, tier.delay, &schedule.check_queue),
        ));
    }
    for (name, arguments) in declarations {
        amqp::declare_queue(connection, &name, arguments).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::{dead_letter_target, header_int, header_text};
    use crate::config::QueueType;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn five_minutes_doubles_to_the_hour_cap() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            tier_delays(minutes(5)),
            [
                minutes(5),
                minutes(10),
                minutes(20),
                minutes(40),
                minutes(60)
            ]
        );
    }

    #[test]
    fn short_delays_stop_at_the_tier_count() {
        assert_eq!(
            tier_delays(ms(300)),
            [ms(300), ms(600), ms(1200), ms(2400), ms(4800), ms(9600)]
        );
    }

    #[test]
    fn an_immediate_first_check_still_backs_off() {
        assert_eq!(
            tier_delays(Duration::ZERO),
            [
                Duration::ZERO,
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200)
            ]
        );
    }

    #[test]
    fn a_first_delay_past_the_cap_is_the_only_tier() {
        let two_hours = Duration::from_secs(7200);
        assert_eq!(tier_delays(two_hours), [two_hours]);
        let forty_five = Duration::from_secs(45 * 60);
        assert_eq!(tier_delays(forty_five), [forty_five, MAX_RECHECK_DELAY]);
    }

    #[test]
    fn each_check_moves_one_tier_on_and_stays_on_the_last() {
        assert_eq!(tier_index(0, 5), 0);
        assert_eq!(tier_index(1, 5), 1);
        assert_eq!(tier_index(4, 5), 4);
        assert_eq!(tier_index(5, 5), 4);
        assert_eq!(tier_index(u32::MAX, 5), 4);
        assert_eq!(tier_index(3, 1), 0);
        let schedule = Schedule::new("close", ms(300));
        assert_eq!(schedule.tier_after(0).queue, "close.tasks.wait.300");
        assert_eq!(schedule.tier_after(2).delay, ms(1200));
        assert_eq!(schedule.tier_after(99).queue, "close.tasks.wait.9600");
    }

    #[test]
    fn names_derive_from_the_close_queue() {
        let schedule = Schedule::new("jobs.close", Duration::from_secs(300));
        assert_eq!(schedule.check_queue(), "jobs.close.tasks.check");
        assert_eq!(
            schedule.queue_names(),
            [
                "jobs.close.tasks.check",
                "jobs.close.tasks.wait.300000",
                "jobs.close.tasks.wait.600000",
                "jobs.close.tasks.wait.1200000",
                "jobs.close.tasks.wait.2400000",
                "jobs.close.tasks.wait.3600000",
            ]
        );
        assert!(schedule.is_wait_queue("jobs.close.tasks.wait.300000"));
        assert!(schedule.is_wait_queue("jobs.close.tasks.wait.42"));
        assert!(!schedule.is_wait_queue("jobs.close.tasks.wait."));
        assert!(!schedule.is_wait_queue("jobs.close.tasks.check"));
        assert!(!schedule.is_wait_queue("other.tasks.wait.300000"));
    }

    fn args(queue_type: QueueType) -> AmqpArgs {
        amqp::test_args(queue_type, true)
    }

    #[test]
    fn wait_queues_expire_into_the_check_queue() {
        let table = wait_queue_arguments(&args(QueueType::Classic), ms(1200), "close.tasks.check");
        let inner = table.inner();
        let text = |key: &str| inner.get(key).and_then(header_text);
        assert_eq!(text("x-queue-type").as_deref(), Some("classic"));
        assert_eq!(inner.get("x-message-ttl").and_then(header_int), Some(1200));
        assert_eq!(text("x-dead-letter-exchange").as_deref(), Some(""));
        assert_eq!(
            text("x-dead-letter-routing-key").as_deref(),
            Some("close.tasks.check")
        );
        assert_eq!(inner.len(), 4);

        let quorum = wait_queue_arguments(&args(QueueType::Quorum), ms(1200), "c");
        let text = |key: &str| quorum.inner().get(key).and_then(header_text);
        assert_eq!(
            text("x-dead-letter-strategy").as_deref(),
            Some("at-least-once")
        );
        assert_eq!(text("x-overflow").as_deref(), Some("reject-publish"));
    }

    #[test]
    fn the_check_queue_is_declared_like_the_close_queue_without_single_active_consumer() {
        let classic = check_queue_arguments(&args(QueueType::Classic));
        assert_eq!(classic.inner().len(), 1, "{classic:?}");
        let quorum = check_queue_arguments(&args(QueueType::Quorum));
        let inner = quorum.inner();
        assert!(!inner.contains_key("x-single-active-consumer"));
        assert_eq!(inner.get("x-delivery-limit").and_then(header_int), Some(7));
        assert_eq!(dead_letter_target(inner).as_deref(), Some("dead"));
    }
}
