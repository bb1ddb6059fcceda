//! Publisher confirms, for every publisher: the confirm window — publishes pipelined, confirms
//! awaited in order, at most a bounded number outstanding — and what a confirm means. `publish`,
//! `dlq replay` and `dlq import` publish through a window; the worker's dead letters and pending task
//! checks through [`publish_confirmed`], a window of one; its outcome messages publish to their two
//! targets first ([`publish_to_exchange`], [`publish_mandatory`]) and then await both ([`confirmed`]).
//! An unroutable `mandatory` message is its own error ([`AmqpError::Unroutable`]), so that a caller
//! for whom it is routine (a `reply_to` queue that does not exist) can tell it from a refusal. So the rule "the broker's confirm first,
//! then whatever depends on it" (an ack, a count) lives in one place.
//!
//! Each publish carries a tag (`T`): what to do once its confirm arrives — nothing for `publish`, the
//! dead letter to ack for `replay`. Confirms are awaited oldest first; RabbitMQ confirms in order on
//! one channel, so awaiting the oldest never waits behind a later one. Rejected: awaiting each confirm
//! before the next publish (one round trip per message: ten times slower on 100,000), and an
//! unbounded window (a slow broker would make the client hold every message).

use super::{AmqpError, queue_name};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use std::collections::VecDeque;

/// A channel in confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes one message to a queue (default exchange, `mandatory`) and waits for the broker's
/// confirm: only then is the message the broker's responsibility. For publishers whose next step
/// waits on this one message (the worker acks the original only after its dead letter is confirmed).
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let mut window = ConfirmWindow::new(queue, 1)?;
    window.publish(channel, body, properties, ()).await?;
    match window.oldest().await {
        Some(((), confirmed)) => confirmed,
        None => Ok(()),
    }
}

/// Turns a confirmation into success only when the broker took the message and routed it.
pub fn check_confirmation(queue: &str, confirmation: Confirmation) -> Result<(), AmqpError> {
    let not_confirmed = |why: String| AmqpError::NotConfirmed {
        queue: queue.to_owned(),
        why,
    };
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(AmqpError::Unroutable {
            queue: queue.to_owned(),
            reply_code: returned.reply_code,
            reply_text: returned.reply_text.to_string(),
        }),
        Confirmation::Nack(_) => Err(not_confirmed("nacked by the broker".into())),
        Confirmation::NotRequested => {
            Err(not_confirmed("the channel is not in confirm mode".into()))
        }
    }
}

/// Publishes awaiting their confirm, oldest first, with what each one settles.
pub(crate) struct ConfirmWindow<T> {
    queue: String,
    routing_key: ShortString,
    capacity: usize,
    pending: VecDeque<(PublisherConfirm, T)>,
}

/// A confirm that came back: the tag, and whether the broker took the message and routed it.
pub(crate) type Settled<T> = (T, Result<(), AmqpError>);

impl<T> ConfirmWindow<T> {
    /// A window for publishes to `queue` (named in errors), at most `capacity` outstanding.
    pub(crate) fn new(queue: &str, capacity: usize) -> Result<ConfirmWindow<T>, AmqpError> {
        let capacity = capacity.max(1);
        Ok(ConfirmWindow {
            queue: queue.to_owned(),
            routing_key: queue_name(queue)?,
            capacity,
            pending: VecDeque::with_capacity(capacity),
        })
    }

    /// Publishes to the queue through the default exchange with `mandatory` (an unroutable message
    /// is an error, not a silent drop) on a channel in confirm mode. Callers settle what
    /// [`ConfirmWindow::make_room`] returns first, so the window stays bounded.
    pub(crate) async fn publish(
        &mut self,
        channel: &Channel,
        body: &[u8],
        properties: BasicProperties,
        tag: T,
    ) -> Result<(), AmqpError> {
        let confirm =
            publish_mandatory(channel, self.routing_key.clone(), body, properties).await?;
        self.push(confirm, tag);
        Ok(())
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() >= self.capacity
    }

    /// Adds a publish made elsewhere; settle [`ConfirmWindow::make_room`] first.
    pub(crate) fn push(&mut self, confirm: PublisherConfirm, tag: T) {
        self.pending.push_back((confirm, tag));
    }

    /// Awaits the oldest outstanding confirm; `None` when nothing is outstanding.
    pub(crate) async fn oldest(&mut self) -> Option<Settled<T>> {
        let (confirm, tag) = self.pending.pop_front()?;
        Some((tag, confirmed(&self.queue, confirm).await))
    }

    /// Makes room for one more publish: awaits the oldest confirm when the window is full.
    pub(crate) async fn make_room(&mut self) -> Option<Settled<T>> {
        if self.is_full() {
            self.oldest().await
        } else {
            None
        }
    }
}

/// Publishes through the default exchange with `mandatory`: a message no queue takes comes back as
/// an error instead of vanishing. The confirm is the caller's to await.
pub(crate) async fn publish_mandatory(
    channel: &Channel,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, lapin::Error> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish("".into(), routing_key, options, body, properties)
        .await
}

/// Publishes to a named exchange without `mandatory`: for fan-out to whoever bound a queue, where
/// a message nobody bound is routine. The confirm is the caller's to await.
pub(crate) async fn publish_to_exchange(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
}

/// Awaits one confirm: whether the broker took the message (and, `mandatory`, routed it) for
/// `target` (named in errors).
pub(crate) async fn confirmed(target: &str, confirm: PublisherConfirm) -> Result<(), AmqpError> {
    match confirm.await {
        Ok(confirmation) => check_confirmation(target, confirmation),
        Err(error) => Err(AmqpError::Broker(error)),
    }
}
