//! Probing a queue: whether it exists, how many messages it holds ready and how many consumers it
//! has, learnt by a passive declare, which never creates the queue. `check` inspects the queues this
//! way, the worker observes their depths, and the `dlq` walks count what they will read and wait for
//! what they gave back.
//!
//! A missing queue is [`AmqpError::MissingQueue`], not a broken connection: the caller decides
//! whether that is fine (`check`: `run` declares it), a reason to declare it (`dlq replay` into a
//! close queue nobody declared yet), or an error naming the setting (a `dlq` walk). A failed passive
//! declare closes its channel, so [`probe_queue`] uses a throwaway channel of its own; callers that
//! probe repeatedly on one channel ([`probe_queue_on`]) lose it with the first missing queue.

use super::{AmqpError, queue_name};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// What a passive declare says about a queue that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Probed {
    /// Messages ready for delivery (not those delivered and not yet acked).
    pub(crate) ready: u32,
    pub(crate) consumers: u32,
}

/// Probes `queue` on `channel` (passive declare); the channel is closed by the broker if the queue
/// is missing.
pub(crate) async fn probe_queue_on(channel: &Channel, queue: &str) -> Result<Probed, AmqpError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue_name(queue)?, options, FieldTable::default())
        .await
        .map_err(|error| AmqpError::from_lapin(error, queue))?;
    Ok(Probed {
        ready: declared.message_count(),
        consumers: declared.consumer_count(),
    })
}

/// Probes `queue` on a channel of its own, closed afterwards.
pub(crate) async fn probe_queue(connection: &Connection, queue: &str) -> Result<Probed, AmqpError> {
    let channel = connection.create_channel().await?;
    let probed = probe_queue_on(&channel, queue).await;
    if probed.is_ok() {
        let _ = channel.close(200, "probed".into()).await;
    }
    probed
}
