//! The walk over the dead-letter queue that every `dlq` command shares: read each message in queue
//! order without taking it away, with bounded memory, so that `list`, `stats` and `export` leave the
//! queue exactly as it was and `replay` and `purge` remove only what they mean to.
//!
//! # Why hold-and-requeue with `basic.get`
//! Each message is fetched with `basic.get` in manual-ack mode and *held* (neither acked nor requeued)
//! until the walk ends; then one `basic.nack(multiple, requeue)` gives every held message back. The
//! alternatives fail one of the requirements:
//! - *Requeueing as we go* puts a message back at the head, where the next fetch finds it again.
//! - *Rotating* (republish each message to the tail, then ack it) reorders the queue as soon as the
//!   worker dead-letters something meanwhile — the new message lands between the rotated ones — and
//!   a crash mid-walk leaves the queue rotated or with a duplicate.
//! - *A consumer* with a bounded prefetch stalls once the prefetch is full of held messages; an
//!   unbounded prefetch makes the broker push the whole queue at once into lapin's unbounded buffer.
//!
//! Holding keeps the bytes in the broker, where they already were; the client keeps at most
//! [`GET_PIPELINE_DEPTH`] messages. Classic queues (the default) put requeued messages back at their
//! original positions, ahead of anything dead-lettered meanwhile, so order survives a concurrent
//! worker; if the walk dies (kill -9, lost connection), the broker requeues the held messages the
//! same way, so even a crash cannot lose or reorder anything. The costs: while a walk runs, the
//! messages it holds are invisible to other readers of the dead-letter queue (a second `list` at the
//! same moment sees only what the first has not reached), and `redelivered` is set on them.
//! Quorum queues return requeued messages ahead of the rest in the order given, and count each walk
//! as a delivery attempt (`x-delivery-count`).
//!
//! `basic.get` costs a round trip per message, so the walk keeps [`GET_PIPELINE_DEPTH`] of them in
//! flight; the broker answers them in order. The walk stops after the number of messages that were
//! ready when it started, so dead letters arriving during a walk (the worker keeps running) neither
//! extend it forever nor get processed twice.

use crate::amqp::{self, AmqpError, protocol_error};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use std::time::Duration;
use tracing::debug;

/// Messages one window (one channel's consumer) holds at most: the client buffers no more than this.
pub const WINDOW: u16 = 2000;
/// With no delivery for this long, the walk asks the broker whether anything is left to read.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Where the walk holds a message: the channel (window) it came on and its delivery tag there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub window: usize,
    pub delivery_tag: u64,
}

/// A message read from the dead-letter queue and still held by the walk.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// 1-based position in the queue when the walk started.
    pub position: u64,
    pub held: Held,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(
        "queue '{queue}' does not exist (check {setting}; the worker declares it when it starts)"
    )]
    MissingQueue {
        queue: String,
        setting: &'static str,
    },
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

impl From<lapin::Error> for ScanError {
    fn from(error: lapin::Error) -> Self {
        ScanError::Amqp(AmqpError::Broker(error))
    }
}

/// How many messages a queue holds ready, without creating it: a missing queue is an error naming the
/// setting that names it.
pub async fn ready_count(
    connection: &Connection,
    queue: &str,
    setting: &'static str,
) -> Result<u32, ScanError> {
    let channel = connection.create_channel().await?;
    let count = passive_declare(&channel, queue, setting).await?;
    let _ = channel.close(200, "counted".into()).await;
    Ok(count)
}

async fn passive_declare(
    channel: &Channel,
    queue: &str,
    setting: &'static str,
) -> Result<u32, ScanError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(amqp::queue_name(queue)?, options, FieldTable::default())
        .await
    {
        Ok(declared) => Ok(declared.message_count()),
        Err(error) => match protocol_error(&error) {
            Some((AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), _)) => {
                Err(ScanError::MissingQueue {
                    queue: queue.to_owned(),
                    setting,
                })
            }
            _ => Err(error.into()),
        },
    }
}

/// One channel of the walk: its consumer (while it is the active one) and how many of its
/// deliveries are neither acked nor given back yet.
struct Window {
    channel: Channel,
    consumer: Option<Consumer>,
    unacked: u64,
}

/// An in-order, non-destructive walk over one queue, on channels of its own.
pub struct Walk<'a> {
    connection: &'a Connection,
    queue: String,
    setting: &'static str,
    /// Messages ready when the walk started.
    total: u64,
    /// The walk yields no more than this many.
    cap: u64,
    delivered: u64,
    windows: Vec<Window>,
}

impl<'a> Walk<'a> {
    /// Starts a walk over `queue`, yielding at most `limit` messages when given.
    pub async fn start(
        connection: &'a Connection,
        queue: &str,
        setting: &'static str,
        limit: Option<u64>,
    ) -> Result<Walk<'a>, ScanError> {
        let total = u64::from(ready_count(connection, queue, setting).await?);
        debug!(queue, total, "Walking the queue.");
        Ok(Walk {
            connection,
            queue: queue.to_owned(),
            setting,
            total,
            cap: limit.map_or(total, |limit| limit.min(total)),
            delivered: 0,
            windows: Vec::new(),
        })
    }

    /// Messages that were ready when the walk started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Messages the walk will yield at most.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The next message in queue order, held until [`Walk::finish`] unless acked; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, ScanError> {
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
                Ok(None) => {
                    return Err(ScanError::MissingQueue {
                        queue: self.queue.clone(),
                        setting: self.setting,
                    });
                }
                // Fewer messages than counted at the start (someone else took some): stop once the
                // broker has nothing ready for us.
                Err(_) => {
                    if ready_count(self.connection, &self.queue, self.setting).await? == 0 {
                        break;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Yield nothing more; [`Walk::finish`] gives back whatever was delivered meanwhile.
    pub fn stop(&mut self) {
        self.cap = self.delivered;
    }

    /// Removes a held message from the queue for good.
    pub async fn ack(&mut self, held: Held) -> Result<(), ScanError> {
        let window = &mut self.windows[held.window];
        window
            .channel
            .basic_ack(held.delivery_tag, BasicAckOptions::default())
            .await?;
        window.unacked -= 1;
        Ok(())
    }

    /// Ends the walk: every message still held goes back to where it was. Callers must have sent
    /// every ack they mean to send first — a message not acked by now stays in the queue.
    pub async fn finish(self) -> Result<(), ScanError> {
        // Closing a channel makes the broker requeue what it held, all at once and into the original
        // positions; closing waits for close-ok, so the messages are back when this returns.
        let mut first_error = None;
        for window in self.windows {
            if let Err(error) = window.channel.close(200, "walk finished".into()).await
                && first_error.is_none()
            {
                first_error = Some(error);
            }
        }
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// The window to read from: the current one while the broker may still deliver to it, else a
    /// new channel whose consumer starts where the last one stopped.
    async fn active_window(&mut self) -> Result<usize, ScanError> {
        if let Some(last) = self.windows.last_mut()
            && last.consumer.is_some()
        {
            if last.unacked < u64::from(WINDOW) {
                return Ok(self.windows.len() - 1);
            }
            // Its prefetch is full of held messages: the broker will send it nothing more.
            if let Some(consumer) = last.consumer.take() {
                last.channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await?;
            }
        }
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(WINDOW, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                amqp::queue_name(&self.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| match protocol_error(&error) {
                Some((AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), _)) => ScanError::MissingQueue {
                    queue: self.queue.clone(),
                    setting: self.setting,
                },
                _ => error.into(),
            })?;
        self.windows.push(Window {
            channel,
            consumer: Some(consumer),
            unacked: 0,
        });
        Ok(self.windows.len() - 1)
    }
}
