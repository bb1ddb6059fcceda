//! Broker flow control as the worker follows it. A session has two connections: one consumes and
//! acks (named `AMQP_CONNECTION_NAME`), the other publishes — dead letters, pending task checks,
//! the next check tier — (the same name with [`PUBLISHING_SUFFIX`]), as RabbitMQ advises: during a
//! memory or disk alarm the broker blocks a connection that publishes and stops reading from it,
//! and an ack queued behind a blocked publish on the same socket would wait for the alarm too. Apart,
//! closes that need nothing published (`TASK_CHECK=off`, nothing to dead-letter) go on during an
//! alarm and free the broker's memory, while whatever must publish waits, unacked, and loses
//! nothing.
//!
//! [`SessionFlow`] watches both connections ([`FlowWatch`]) and [`Blocks::follow`], a pure function,
//! turns each notice into what the worker reports: one WARN with the broker's reason when publishing
//! is first blocked, `job_closer_broker_blocked` 1 and `/readyz` 503 meanwhile, one INFO when the
//! last block lifts; or the end of the session when either connection is lost.
//!
//! Rejected: one connection with a publishing channel (today's shape before this): the broker blocks
//! connections, not channels, and lapin writes nothing on a blocked connection, acks included; and
//! reading the alarm from the management API, which needs a plugin and credentials the worker does
//! not have, and would not say which connection the broker stopped reading.

use crate::amqp::{FlowEvent, FlowWatch};
use crate::metrics::Metrics;
use lapin::Connection;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Appended to `AMQP_CONNECTION_NAME` for the session's publishing connection.
pub(crate) const PUBLISHING_SUFFIX: &str = " (publishing)";

/// The name of the publishing connection beside the consuming one named `consuming`.
pub(crate) fn publishing_connection_name(consuming: &str) -> String {
    format!("{consuming}{PUBLISHING_SUFFIX}")
}

/// Which of a session's connections an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    Consuming,
    Publishing,
}

/// What a flow event changes for the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Publishing is blocked now, and was not before.
    Blocked { link: Link, reason: String },
    /// The last block lifted, after `blocked_for`.
    Unblocked { blocked_for: Duration },
    /// Nothing to report: a repeated notice, or another connection still blocked.
    Nothing,
    /// A connection is gone: the session is over.
    Lost { link: Link, why: String },
}

/// Which connections the broker blocks, with its reason and since when.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    consuming: Option<(String, Instant)>,
    publishing: Option<(String, Instant)>,
}

impl Blocks {
    fn slot(&mut self, link: Link) -> &mut Option<(String, Instant)> {
        match link {
            Link::Consuming => &mut self.consuming,
            Link::Publishing => &mut self.publishing,
        }
    }

    /// The broker's reason, while it blocks any connection of the session.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.publishing
            .as_ref()
            .or(self.consuming.as_ref())
            .map(|(reason, _)| reason.as_str())
    }

    /// What `event` on `link`, at `now`, changes.
    pub(crate) fn follow(&mut self, link: Link, event: FlowEvent, now: Instant) -> Change {
        let was_blocked = self.reason().is_some();
        match event {
            FlowEvent::Lost { why } => Change::Lost { link, why },
            FlowEvent::Blocked { reason } => {
                let slot = self.slot(link);
                if slot.is_none() {
                    *slot = Some((reason.clone(), now));
                }
                if was_blocked {
                    Change::Nothing
                } else {
                    Change::Blocked { link, reason }
                }
            }
            FlowEvent::Unblocked => {
                let Some((_, since)) = self.slot(link).take() else {
                    return Change::Nothing;
                };
                if self.reason().is_some() {
                    return Change::Nothing;
                }
                Change::Unblocked {
                    blocked_for: now.saturating_duration_since(since),
                }
            }
        }
    }
}

/// Both connections of a session, watched.
pub(crate) struct SessionFlow {
    consuming: FlowWatch,
    publishing: FlowWatch,
    blocks: Blocks,
    consuming_name: String,
}

impl SessionFlow {
    /// Watches the session's connections; make it right after they connected.
    pub(crate) fn new(
        consuming: &Connection,
        publishing: &Connection,
        consuming_name: &str,
    ) -> SessionFlow {
        SessionFlow {
            consuming: FlowWatch::of(consuming),
            publishing: FlowWatch::of(publishing),
            blocks: Blocks::default(),
            consuming_name: consuming_name.to_owned(),
        }
    }

    /// Waits for the next change worth reporting.
    pub(crate) async fn next(&mut self) -> Change {
        loop {
            let (link, event) = tokio::select! {
                event = self.consuming.next() => (Link::Consuming, event),
                event = self.publishing.next() => (Link::Publishing, event),
            };
            let change = self.blocks.follow(link, event, Instant::now());
            if change != Change::Nothing {
                return change;
            }
        }
    }

    /// Logs `change` and sets the gauge and readiness; for a lost connection, the reason the
    /// session ends.
    pub(crate) fn report(&self, change: Change, metrics: &Metrics) -> Option<String> {
        match change {
            Change::Blocked { link, reason } => {
                metrics.set_broker_blocked(Some(&reason));
                warn!(
                    reason = %reason,
                    connection = %self.name(link),
                    "RabbitMQ blocks publishing (a memory or disk alarm): dead letters and task checks wait, unacknowledged, until it clears; closes that need nothing published go on."
                );
                None
            }
            Change::Unblocked { blocked_for } => {
                metrics.set_broker_blocked(None);
                info!(
                    blocked_ms = blocked_for.as_millis() as u64,
                    "RabbitMQ unblocked publishing."
                );
                None
            }
            Change::Nothing => None,
            Change::Lost { link, why } => Some(format!(
                "the {} connection was lost: {why}",
                match link {
                    Link::Consuming => "consuming",
                    Link::Publishing => "publishing",
                }
            )),
        }
    }

    fn name(&self, link: Link) -> String {
        match link {
            Link::Consuming => self.consuming_name.clone(),
            Link::Publishing => publishing_connection_name(&self.consuming_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blocked(reason: &str) -> FlowEvent {
        FlowEvent::Blocked {
            reason: reason.into(),
        }
    }

    #[test]
    fn one_block_is_reported_once_and_its_end_once() {
        let start = Instant::now();
        let mut blocks = Blocks::default();
        assert_eq!(
            blocks.follow(Link::Publishing, blocked("low on memory"), start),
            Change::Blocked {
                link: Link::Publishing,
                reason: "low on memory".into()
            }
        );
        assert_eq!(blocks.reason(), Some("low on memory"));
        assert_eq!(
            blocks.follow(Link::Publishing, blocked("low on memory"), start),
            Change::Nothing
        );
        let later = start + Duration::from_secs(3);
        assert_eq!(
            blocks.follow(Link::Publishing, FlowEvent::Unblocked, later),
            Change::Unblocked {
                blocked_for: Duration::from_secs(3)
            }
        );
        assert_eq!(blocks.reason(), None);
        assert_eq!(
            blocks.follow(Link::Publishing, FlowEvent::Unblocked, later),
            Change::Nothing
        );
    }

    #[test]
    fn publishing_stays_blocked_while_either_connection_is() {
        let now = Instant::now();
        let mut blocks = Blocks::default();
        blocks.follow(Link::Publishing, blocked("low on disk space"), now);
        assert_eq!(
            blocks.follow(Link::Consuming, blocked("low on disk space"), now),
            Change::Nothing
        );
        assert_eq!(
            blocks.follow(Link::Publishing, FlowEvent::Unblocked, now),
            Change::Nothing
        );
        assert!(matches!(
            blocks.follow(Link::Consuming, FlowEvent::Unblocked, now),
            Change::Unblocked { .. }
        ));
    }

    #[test]
    fn a_lost_connection_ends_the_session_whichever_it_is() {
        let mut blocks = Blocks::default();
        for link in [Link::Consuming, Link::Publishing] {
            let lost = FlowEvent::Lost { why: "cut".into() };
            assert_eq!(
                blocks.follow(link, lost, Instant::now()),
                Change::Lost {
                    link,
                    why: "cut".into()
                }
            );
        }
    }

    #[test]
    fn the_publishing_connection_is_named_after_the_consuming_one() {
        assert_eq!(
            publishing_connection_name("job-closer worker@pod-1"),
            "job-closer worker@pod-1 (publishing)"
        );
    }

    proptest! {
        /// Over any sequence of notices: publishing reads as blocked exactly while the last notice
        /// of some connection was a block, and WARNs and INFOs alternate, one per episode.
        #[test]
        fn reports_follow_the_notices(
            // (on the publishing connection?, a block rather than an unblock?)
            events in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..40)
        ) {
            let mut blocks = Blocks::default();
            let mut last = [false, false];
            let mut reported_blocked = false;
            let now = Instant::now();
            for (on_publishing, block) in events {
                let link = if on_publishing { Link::Publishing } else { Link::Consuming };
                let event = if block { blocked("low on memory") } else { FlowEvent::Unblocked };
                last[usize::from(on_publishing)] = block;
                match blocks.follow(link, event, now) {
                    Change::Blocked { .. } => {
                        prop_assert!(!reported_blocked, "a second WARN within one episode");
                        reported_blocked = true;
                    }
                    Change::Unblocked { .. } => {
                        prop_assert!(reported_blocked, "an INFO without a WARN before it");
                        reported_blocked = false;
                    }
                    Change::Nothing => {}
                    Change::Lost { .. } => prop_assert!(false, "no loss was notified"),
                }
                prop_assert_eq!(reported_blocked, last[0] || last[1]);
                prop_assert_eq!(blocks.reason().is_some(), reported_blocked);
            }
        }
    }
}
