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
use futures_util::stream::{FuturesOrdered, StreamExt};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use std::future::Future;
use std::pin::Pin;
use tracing::debug;

/// `basic.get`s in flight at once: enough to hide the round trip, few enough that the messages
/// fetched ahead stay small.
pub const GET_PIPELINE_DEPTH: usize = 128;

type PendingGet = Pin<Box<dyn Future<Output = lapin::Result<Option<BasicGetMessage>>> + Send>>;

/// A message read from the dead-letter queue and still held by the walk.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// 1-based position in the queue when the walk started.
    pub position: u64,
    pub delivery_tag: u64,
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

/// An in-order, non-destructive walk over one queue on a channel of its own.
pub struct Walk {
    channel: Channel,
    queue: ShortString,
    /// Messages ready when the walk started.
    total: u64,
    /// The walk fetches no more than this many.
    cap: u64,
    issued: u64,
    in_flight: FuturesOrdered<PendingGet>,
    /// The broker answered `get-empty`: nothing more to fetch.
    drained: bool,
    position: u64,
    /// The highest delivery tag fetched: one `nack(multiple)` up to it returns every held message.
    highest_tag: Option<u64>,
}

impl Walk {
    /// Starts a walk over `queue`, fetching at most `limit` messages when given.
    pub async fn start(
        connection: &Connection,
        queue: &str,
        setting: &'static str,
        limit: Option<u64>,
    ) -> Result<Walk, ScanError> {
        let channel = connection.create_channel().await?;
        let total = u64::from(passive_declare(&channel, queue, setting).await?);
        debug!(queue, total, "Walking the queue.");
        Ok(Walk {
            channel,
            queue: amqp::queue_name(queue)?,
            total,
            cap: limit.map_or(total, |limit| limit.min(total)),
            issued: 0,
            in_flight: FuturesOrdered::new(),
            drained: false,
            position: 0,
            highest_tag: None,
        })
    }

    /// Messages that were ready when the walk started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Messages the walk will fetch at most.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The next message in queue order, held until [`Walk::finish`] unless acked; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, ScanError> {
        loop {
            self.refill();
            match self.in_flight.next().await {
                None => return Ok(None),
                Some(Ok(Some(message))) => return Ok(Some(self.hold(message))),
                Some(Ok(None)) => self.drained = true,
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }

    /// Fetch nothing more; what is already fetched is still returned by [`Walk::next`].
    pub fn stop(&mut self) {
        self.cap = self.issued;
    }

    /// Removes a held message from the queue for good.
    pub async fn ack(&self, delivery_tag: u64) -> Result<(), ScanError> {
        self.channel
            .basic_ack(delivery_tag, BasicAckOptions::default())
            .await?;
        Ok(())
    }

    /// Ends the walk: every message still held goes back to where it was. Callers must have sent
    /// every ack they mean to send first — a message not acked by now stays in the queue.
    pub async fn finish(mut self) -> Result<(), ScanError> {
        self.stop();
        while let Some(fetched) = self.in_flight.next().await {
            if let Some(message) = fetched? {
                self.hold(message);
            }
        }
        if let Some(highest) = self.highest_tag {
            self.channel
                .basic_nack(
                    highest,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        // Closing waits for the broker's close-ok, so the requeue has happened when this returns.
        self.channel.close(200, "walk finished".into()).await?;
        Ok(())
    }

    fn refill(&mut self) {
        while !self.drained && self.issued < self.cap && self.in_flight.len() < GET_PIPELINE_DEPTH
        {
            let channel = self.channel.clone();
            let queue = self.queue.clone();
            self.in_flight.push_back(Box::pin(async move {
                channel.basic_get(queue, BasicGetOptions { no_ack: false }).await
            }));
            self.issued += 1;
        }
    }

    fn hold(&mut self, message: BasicGetMessage) -> DeadLetter {
        let delivery = message.delivery;
        self.position += 1;
        self.highest_tag = Some(
            self.highest_tag
                .map_or(delivery.delivery_tag, |tag| tag.max(delivery.delivery_tag)),
        );
        DeadLetter {
            position: self.position,
            delivery_tag: delivery.delivery_tag,
            body: delivery.data,
            properties: delivery.properties,
        }
    }
}
