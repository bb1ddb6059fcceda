//! Broker flow control: what RabbitMQ says about a connection's publishing (`connection.blocked`
//! during a memory or disk alarm, `connection.unblocked` when it clears) and the end of the
//! connection, as one sequence of [`FlowEvent`]s ([`FlowWatch`]); and the probe `check` uses to
//! tell whether an alarm blocks publishers right now ([`probe_publishing`]).
//!
//! What RabbitMQ 3.10 was seen to do (a node of the test's own, `rabbitmqctl
//! set_vm_memory_high_watermark 0`): it says nothing to a connection that has not published. A
//! fresh connection, or one that only consumes, is neither notified nor slowed during the alarm: it
//! opens channels, declares, consumes and acks as usual. The first publish makes the broker send
//! `connection.blocked` with its reason ("low on memory") and stop reading that socket right after
//! the publish's content header, so a message with a body is not taken (nor confirmed) until the
//! alarm clears — one without a body is complete at its header and may still be confirmed, racing
//! the notice; lapin, for its part, then writes nothing at all on the blocked connection, acks
//! included. Hence the worker publishes on a connection of its own, so that acks are never stuck
//! behind a blocked publish; and hence `check` must publish to learn anything: a one-byte message, to
//! a routing key no queue is bound to, without `mandatory`, which the broker drops when it is not
//! blocked.
//!
//! Rejected for `check`: the management API (`/api/nodes`, `mem_alarm`), which needs the
//! management plugin, its port and a user with the monitoring tag; `rabbitmq-diagnostics alarms`,
//! which runs only beside a node. And for the session's end: lapin's events alone, which say
//! nothing when the broker closes a connection (`rabbitmqctl close_connection`) — the connection's
//! state is looked at every second as well.

use super::{AmqpError, queue_name};
use futures_util::{Stream, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionStatus, Event};
use std::pin::Pin;
use std::time::Duration;

/// How often a watched connection's state is looked at, besides its events.
const STATE_POLL: Duration = Duration::from_secs(1);

/// How long `check`'s probe waits for the broker to confirm its message or block the connection.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to a watched connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlowEvent {
    /// The broker blocks publishing on it; `reason` is the broker's own ("low on memory").
    Blocked { reason: String },
    /// The broker takes publishes again.
    Unblocked,
    /// The connection is gone (an I/O error, a missed heartbeat, closed by the broker).
    Lost { why: String },
}

/// Follows one connection: its flow-control notices and its loss.
pub(crate) struct FlowWatch {
    events: Pin<Box<dyn Stream<Item = Event> + Send>>,
    status: ConnectionStatus,
    poll: tokio::time::Interval,
    lost: bool,
}

impl FlowWatch {
    /// Watches `connection` from now on: make it right after connecting, since lapin drops events
    /// nobody listens to.
    pub(crate) fn of(connection: &Connection) -> FlowWatch {
        let mut poll = tokio::time::interval(STATE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FlowWatch {
            events: Box::pin(connection.events_listener()),
            status: connection.status().clone(),
            poll,
            lost: false,
        }
    }

    /// The next event; after [`FlowEvent::Lost`] it never returns.
    pub(crate) async fn next(&mut self) -> FlowEvent {
        if self.lost {
            return std::future::pending().await;
        }
        let event = loop {
            tokio::select! {
                event = self.events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => break FlowEvent::Blocked { reason },
                    Some(Event::ConnectionUnblocked) => break FlowEvent::Unblocked,
                    // A channel's error is an event too; only a connection that is no longer
                    // connected is lost.
                    Some(Event::Error(error)) if !self.status.connected() => {
                        break FlowEvent::Lost { why: error.to_string() };
                    }
                    Some(_) => {}
                    None => break FlowEvent::Lost { why: "the connection is gone".into() },
                },
                _ = self.poll.tick() => {
                    if !self.status.connected() {
                        break FlowEvent::Lost { why: lost_state(&self.status).into() };
                    }
                }
            }
        };
        self.lost = matches!(event, FlowEvent::Lost { .. });
        event
    }
}

/// What a connection that is no longer connected is.
fn lost_state(status: &ConnectionStatus) -> &'static str {
    if status.errored() {
        "the connection failed"
    } else if status.closing() || status.closed() {
        "the connection was closed"
    } else {
        "the connection is not connected"
    }
}

/// Whether the broker blocks publishers now: `Ok(Some(reason))` when it does, `Ok(None)` when a
/// message published on `connection` was confirmed. Publishes a one-byte message (a body, so that a
/// blocked broker cannot take it: see the module doc) to a routing key no queue has (the broker
/// drops it); when the broker blocks, `connection` stays blocked (it can no
/// longer be closed politely) until the alarm clears.
pub(crate) async fn probe_publishing(connection: &Connection) -> Result<Option<String>, AmqpError> {
    let mut watch = FlowWatch::of(connection);
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let nowhere = format!("job-closer.check.alarm-probe.{}", uuid::Uuid::new_v4());
    let confirm = channel
        .basic_publish(
            "".into(),
            queue_name(&nowhere)?,
            BasicPublishOptions::default(),
            b"?",
            BasicProperties::default(),
        )
        .await?;
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        tokio::select! {
            confirmed = confirm => confirmed.map(|_| None).map_err(AmqpError::Broker),
            event = watch.next() => match event {
                FlowEvent::Blocked { reason } => Ok(Some(reason)),
                FlowEvent::Unblocked => Ok(None),
                FlowEvent::Lost { why } => Err(AmqpError::Lost { why }),
            },
        }
    })
    .await;
    match answer {
        Ok(answer) => answer,
        // Neither a confirm nor a notice: a broker this slow to take one message is as good as
        // blocked, but it did not say why.
        Err(_) => Ok(Some(format!(
            "no confirm within {} s and no reason given",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}
