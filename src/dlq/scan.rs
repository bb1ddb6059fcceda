//! The scan under every `dlq` command's walk ([`super::walk::Walk`] adds filters, limits, progress
//! and shutdown on top): read each message in queue order without taking it away, with bounded
//! memory, so that `list`, `stats` and `export` leave the queue exactly as it was and `replay`,
//! `purge` and `export --delete` remove only what they ack.
//!
//! # Design: hold every message, give them all back by closing the channels
//! Messages are consumed with manual acks and *held*: neither acked nor rejected. When the walk ends,
//! closing its channels makes the broker requeue everything they held, into the original positions.
//! What else was considered, and why not:
//! - *Requeueing as we go* (`nack requeue`) puts a message back at the head, where the walk reads it
//!   again.
//! - *Rotating* (republish each message to the tail, then ack it) reorders the queue as soon as the
//!   worker dead-letters something meanwhile (the new message lands between rotated ones), and a crash
//!   mid-walk leaves the queue rotated with a duplicate.
//! - *`basic.nack(multiple, requeue)` at the end* is correct but, measured on RabbitMQ 3.10, takes
//!   minutes for 20,000 messages (the requeue trickles back), while closing the channel requeued 5,000
//!   in 10 ms. A `list` right after another would see a half-empty queue.
//! - *`basic.get`* holds fine but costs a round trip per message: ten times slower than a consumer.
//!
//! Memory is bounded by windows: each channel's consumer has a prefetch of [`window_size`], so the broker
//! sends at most that many unacked messages to it. Once a window is full of held messages, its
//! consumer is cancelled (the channel stays open, still holding them) and a new channel continues
//! where it stopped. The client keeps at most one window in memory; the held messages stay in the
//! broker, where they were anyway. A `replay` acks what it moves, which frees room in the window.
//!
//! Guarantees: classic queues (the default) put requeued messages back at their original positions,
//! ahead of anything dead-lettered meanwhile, so order survives a running worker; if the walk dies
//! (kill -9, lost connection) the broker requeues the held messages the same way, so even a crash
//! cannot lose or reorder anything. The costs: while a walk runs, the messages it holds are invisible
//! to other readers of the dead-letter queue (a second walk at the same moment sees only what the
//! first has not reached; two replays split the queue between them, each message going to one), and
//! the broker marks them `redelivered`.
//!
//! Quorum queues (`QUEUE_TYPE=quorum`) put what is given back at their *tail*, in the order the
//! returns reach them. So on them a walk always goes through the whole queue — a `list --limit 3` too
//! — and closes its windows one by one, each once the broker has taken back the one before:
//! everything goes back behind nothing, in its order. The consumer
//! still reading is cancelled first, or it would be handed what the first windows give back. Dead
//! letters that arrive during such a walk end up ahead of the walked ones, and quorum queues count each
//! walk as a delivery attempt (`x-delivery-count`): with a delivery limit on the dead-letter queue
//! itself, walks would use it up.
//!
//! The walk yields no more than the number of messages ready when it started, so dead letters
//! arriving during a walk neither extend it forever nor get processed twice. When the queue holds
//! fewer (another reader took some), it stops once the broker has had nothing ready for it for
//! [`IDLE_GIVE_UP`] (not at once: what the broker already sent is unacked, not ready, and a big
//! message may still be on its way).

use super::filter::Candidate;
use crate::amqp::{self, AmqpError};
use crate::config::{AmqpArgs, QueueType};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use std::time::Duration;
use tracing::{debug, warn};

/// Messages one window (one channel's consumer) holds at most, for queues of up to
/// [`MIN_WINDOW`] × [`MAX_HOLDING_WINDOWS`] messages: the client buffers no more than one window.
pub(crate) const MIN_WINDOW: u16 = 1000;
/// Larger queues get larger windows, so that the channels holding messages stay well below
/// RabbitMQ's default limit of 2,047 channels per connection.
pub(crate) const MAX_HOLDING_WINDOWS: u64 = 500;

/// The prefetch of each window for a queue of `total` messages.
pub(crate) fn window_size(total: u64) -> u16 {
    let needed = total.div_ceil(MAX_HOLDING_WINDOWS);
    u16::try_from(needed.max(u64::from(MIN_WINDOW))).unwrap_or(u16::MAX)
}
/// The setting that names the queue the walk reads, for error messages.
pub(crate) const DEAD_LETTER_SETTING: &str = "DEAD_LETTER_QUEUE";
/// How often the walk looks whether the broker has put everything back.
const GIVE_BACK_POLL: Duration = Duration::from_millis(20);
/// If the ready count stops growing for this long, someone else is reading the queue: stop waiting.
const GIVE_BACK_STALL: Duration = Duration::from_secs(2);
/// With no delivery for this long, the walk asks the broker whether anything is left to read.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// The walk ends early (fewer messages than counted at its start) only once nothing is ready and
/// nothing arrived for this long: messages the broker already sent count as unacked, not ready, so
/// "nothing ready" alone also holds while a big message (a 1 MiB body) is still on its way.
const IDLE_GIVE_UP: Duration = Duration::from_secs(2);

/// Where the walk holds a message: the channel (window) it came on and its delivery tag there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) window: usize,
    pub(crate) delivery_tag: u64,
}

/// A message read from the dead-letter queue and still held by the walk.
#[derive(Clone, Debug)]
pub(crate) struct DeadLetter {
    /// 1-based position in the queue when the walk started.
    pub(crate) position: u64,
    pub(crate) held: Held,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: BasicProperties,
}

impl DeadLetter {
    /// What the filters look at.
    pub(crate) fn candidate(&self) -> Candidate<'_> {
        Candidate {
            body: &self.body,
            properties: &self.properties,
        }
    }
}

#[cfg(test)]
impl DeadLetter {
    /// A dead letter at `position`, held nowhere in particular: what the commands' tests look at.
    pub(crate) fn at(position: u64, body: &[u8], properties: BasicProperties) -> DeadLetter {
        DeadLetter {
            position,
            held: Held {
                window: 0,
                delivery_tag: 1,
            },
            body: body.to_vec(),
            properties,
        }
    }
}

/// How many messages a queue holds ready, without creating it: a missing queue is an error naming the
/// setting that names it.
pub(crate) async fn ready_count(
    connection: &Connection,
    queue: &str,
    setting: &'static str,
) -> Result<u32, AmqpError> {
    amqp::probe_queue(connection, queue)
        .await
        .map(|probed| probed.ready)
        .map_err(|error| error.named_by(setting))
}

/// One channel of the walk: its consumer (while it is the active one) and how many of its
/// deliveries are neither acked nor given back yet.
struct Window {
    /// `None` once closed: it held nothing any more.
    channel: Option<Channel>,
    consumer: Option<Consumer>,
    unacked: u64,
}

/// An in-order, non-destructive walk over one queue, on channels of its own.
pub(crate) struct Scan<'a> {
    connection: &'a Connection,
    queue: String,
    setting: &'static str,
    /// Quorum queues put what is given back behind the rest: only a walk over the whole queue then
    /// gives everything back in order.
    returns_to_tail: bool,
    /// Messages ready when the walk started.
    total: u64,
    /// Prefetch of each window.
    window: u16,
    /// The walk yields no more than this many.
    cap: u64,
    delivered: u64,
    windows: Vec<Window>,
}

impl<'a> Scan<'a> {
    /// Starts a walk over the dead-letter queue named by `amqp_args`, yielding at most `limit`
    /// messages when given.
    pub(crate) async fn dead_letters(
        connection: &'a Connection,
        amqp_args: &AmqpArgs,
        limit: Option<u64>,
    ) -> Result<Scan<'a>, AmqpError> {
        let queue = &amqp_args.dead_letter_queue;
        let setting = DEAD_LETTER_SETTING;
        let total = u64::from(ready_count(connection, queue, setting).await?);
        debug!(queue, total, "Walking the queue.");
        Ok(Scan {
            connection,
            queue: queue.clone(),
            setting,
            returns_to_tail: amqp_args.queue_type == QueueType::Quorum,
            total,
            window: window_size(total),
            cap: limit.map_or(total, |limit| limit.min(total)),
            delivered: 0,
            windows: Vec::new(),
        })
    }

    /// Messages that were ready when the walk started.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Messages the walk will yield at most.
    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// The next message in queue order, held until [`Scan::finish`] unless acked; `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<DeadLetter>, AmqpError> {
        let waiting_since = tokio::time::Instant::now();
        while self.delivered < self.cap {
            let window = self.active_window().await?;
            let active = &mut self.windows[window];
            let Some(consumer) = active.consumer.as_mut() else {
                unreachable!("the active window has a consumer");
            };
            match tokio::time::timeout(IDLE_CHECK, consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    active.unacked += 1;
                    self.delivered += 1;
                    return Ok(Some(DeadLetter {
                        position: self.delivered,
                        held: Held {
                            window,
                            delivery_tag: delivery.delivery_tag,
                        },
                        body: delivery.data,
                        properties: delivery.properties,
                    }));
                }
                Ok(Some(Err(error))) => return Err(error.into()),
                // The broker cancelled the consumer: the queue was deleted under the walk.
                Ok(None) => return Err(self.missing()),
                // Fewer messages than counted at the start (someone else took some): stop once the
                // broker has had nothing ready for us for a while.
                Err(_) => {
                    if waiting_since.elapsed() >= IDLE_GIVE_UP
                        && ready_count(self.connection, &self.queue, self.setting).await? == 0
                    {
                        break;
                    }
                }
            }
        }
        Ok(None)
    }

    /// The queue vanished under the walk.
    fn missing(&self) -> AmqpError {
        AmqpError::MissingQueue {
            queue: self.queue.clone(),
            setting: Some(self.setting),
        }
    }

    /// Removes a held message from the queue for good.
    pub(crate) async fn ack(&mut self, held: Held) -> Result<(), AmqpError> {
        let window = &mut self.windows[held.window];
        let Some(channel) = &window.channel else {
            unreachable!("a window is closed only once it holds nothing");
        };
        channel
            .basic_ack(held.delivery_tag, BasicAckOptions::default())
            .await?;
        window.unacked -= 1;
        Ok(())
    }

    /// Ends the walk: every message still held goes back to where it was. Callers must have sent
    /// every ack they mean to send first — a message not acked by now stays in the queue.
    pub(crate) async fn finish(mut self) -> Result<(), AmqpError> {
        if self.returns_to_tail && self.delivered < self.total {
            // Hold the rest too, so that everything goes back, in order, behind nothing.
            self.cap = self.total;
            while self.next().await?.is_some() {}
        }
        let mut first_error = None;
        // First stop the consumer still reading: otherwise the messages the first channels give back
        // are delivered to it, and come back again, out of place, when its own channel closes.
        for window in &mut self.windows {
            if let (Some(mut consumer), Some(channel)) = (window.consumer.take(), &window.channel) {
                match channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await
                {
                    // What was delivered before the cancel is held as well: count it.
                    Ok(()) => window.unacked += drain_cancelled(&mut consumer).await,
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error.into());
        }
        // Closing a channel makes the broker requeue everything it held: classic queues put each
        // message back at its original position, whatever the order of the closes; quorum queues
        // append them in the order the returns reach them, and a channel's returns may still be on
        // their way when the next channel closes — so there each window waits for the one before.
        let windows = std::mem::take(&mut self.windows);
        if self.returns_to_tail {
            for window in windows {
                self.close_and_wait(vec![window]).await?;
            }
        } else {
            self.close_and_wait(windows).await?;
        }
        Ok(())
    }

    /// Closes the windows and waits until the broker has made what they held ready again.
    async fn close_and_wait(&self, windows: Vec<Window>) -> Result<(), AmqpError> {
        let held: u64 = windows.iter().map(|window| window.unacked).sum();
        let ready_before = match held {
            0 => None,
            _ => Some(ready_count(self.connection, &self.queue, self.setting).await?),
        };
        let mut first_error = None;
        for channel in windows.into_iter().filter_map(|window| window.channel) {
            if let Err(error) = channel.close(200, "walk finished".into()).await {
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            return Err(error.into());
        }
        if let Some(ready_before) = ready_before {
            self.wait_until_given_back(u64::from(ready_before) + held)
                .await?;
        }
        Ok(())
    }

    /// Close-ok comes before the broker has put the messages back: on RabbitMQ 3.10, 100,000 take
    /// about two seconds to reappear. The walk ends only once they are ready again, so that whoever
    /// looks next (another `dlq` command, the operator) sees the whole queue. It stops waiting when the
    /// count stops growing, which is what happens when someone else reads the queue meanwhile.
    async fn wait_until_given_back(&self, expected_ready: u64) -> Result<(), AmqpError> {
        let channel = self.connection.create_channel().await?;
        let mut last_seen = 0;
        let mut last_growth = tokio::time::Instant::now();
        loop {
            let ready = amqp::probe_queue_on(&channel, &self.queue)
                .await
                .map_err(|error| error.named_by(self.setting))?
                .ready;
            let ready = u64::from(ready);
            if ready >= expected_ready {
                break;
            }
            if ready > last_seen {
                last_seen = ready;
                last_growth = tokio::time::Instant::now();
            } else if last_growth.elapsed() > GIVE_BACK_STALL {
                warn!(
                    queue = %self.queue,
                    ready,
                    expected_ready,
                    "Stopped waiting for the broker to give back every message; another reader may hold some."
                );
                break;
            }
            tokio::time::sleep(GIVE_BACK_POLL).await;
        }
        let _ = channel.close(200, "given back".into()).await;
        Ok(())
    }

    /// The window to read from: the current one while the broker may still deliver to it, else a
    /// new channel whose consumer starts where the last one stopped.
    async fn active_window(&mut self) -> Result<usize, AmqpError> {
        if let Some(last) = self.windows.last_mut()
            && last.consumer.is_some()
        {
            if last.unacked < u64::from(self.window) {
                return Ok(self.windows.len() - 1);
            }
            // Its prefetch is full of held messages: the broker will send it nothing more.
            if let (Some(consumer), Some(channel)) = (last.consumer.take(), &last.channel) {
                channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await?;
            }
        }
        // Windows whose messages were all acked (a replay moved them) hold nothing: close them, so
        // that a long replay does not pile up channels.
        for window in &mut self.windows {
            if window.consumer.is_none()
                && window.unacked == 0
                && let Some(channel) = window.channel.take()
            {
                channel.close(200, "window emptied".into()).await?;
            }
        }
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(self.window, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                amqp::queue_name(&self.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| AmqpError::from_lapin(error, &self.queue).named_by(self.setting))?;
        self.windows.push(Window {
            channel: Some(channel),
            consumer: Some(consumer),
            unacked: 0,
        });
        Ok(self.windows.len() - 1)
    }
}

/// Reads what a cancelled consumer was sent before its cancel took effect; returns how many.
async fn drain_cancelled(consumer: &mut Consumer) -> u64 {
    let mut count = 0;
    // After cancel-ok the stream ends; the timeout only guards against a broker that never says so.
    while let Ok(Some(delivery)) = tokio::time::timeout(IDLE_CHECK, consumer.next()).await {
        if delivery.is_ok() {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_with_huge_queues_to_bound_the_channels() {
        assert_eq!(window_size(0), MIN_WINDOW);
        assert_eq!(window_size(100_000), MIN_WINDOW);
        assert_eq!(window_size(500_000), MIN_WINDOW);
        assert_eq!(window_size(2_000_000), 4000);
        assert_eq!(window_size(u64::MAX), u16::MAX);
        for total in [1u64, 999_999, 5_000_000, 30_000_000] {
            let windows = total.div_ceil(u64::from(window_size(total)));
            assert!(windows <= MAX_HOLDING_WINDOWS, "{total}: {windows}");
        }
    }
}
