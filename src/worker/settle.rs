//! Settling deliveries, one idea: publish if needed, then ack on the delivery's own channel. Every
//! delivery ends acked once what it became is the broker's (a pending check, the next check, a dead
//! letter — each confirmed by the broker first), acked when nothing needs publishing, or given back
//! to the queue. Nothing else acks.
//!
//! A close request that ended — closed ([`Settler::finish`]) or dead-lettered
//! ([`Settler::dead_letter`]) — also tells its producer how, through the session's outbox: its
//! outcome message ([`crate::outcome`]) is published and confirmed after the dead letter's confirm
//! and before the ack, so a crash in between repeats the outcome (same message id) and never loses
//! it. A request that asked for none (no `reply_to`, no `OUTCOME_EXCHANGE`) costs nothing more.
//!
//! A [`Settler`] belongs to one consumer channel of one broker session: it owns that channel's ack
//! runs ([`AckRuns`]: a batch settled inside [`Settler::together`] costs one frame) and shares the
//! session's confirm channel with the settlers of its other channels ([`Settler::for_another_channel`]).
//! The confirm channel is on the session's publishing connection and the acks go on the consuming
//! one ([`super::flow`]): while a broker alarm holds a publish, acks that need none still go.
//! A multiple ack counts the tags of one channel, so a delivery is settled by its own channel's
//! settler, and that is the only rule a caller has to follow. When the connection dies, every settle
//! fails harmlessly — the broker redelivers what was not acked.
//!
//! Settling runs inside the span of the delivery it settles (the caller instruments it): that span
//! is ended with how the delivery ended ([`spans::ended`], [`spans::dead_lettered`]), and the
//! outcome message carries its trace context.
//!
//! Rejected: one settler for the session whose methods took a `Source` flag (close queue: acked in
//! runs; any other channel: acked one by one) — eleven methods and four free functions for one idea,
//! and a wrong flag would have mixed two channels' tags in one run. What an accepted close becomes
//! (a pending check or an ack) is the sender's business (`send`), not the settler's; how each kind
//! of dead letter is recorded is [`dead_letter::Failure`]'s.

use super::ack_runs::AckRuns;
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{self, Failure};
use crate::metrics::Metrics;
use crate::outcome::{Ended, Outcomes, Request};
use crate::telemetry::spans;
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, warn};

/// A pause before giving back a message whose copy could not be published, so that a missing queue
/// does not turn into a redelivery storm.
const GIVE_BACK_PAUSE: Duration = Duration::from_secs(1);

/// What the settlers of one session publish with.
struct Outbox {
    confirm_channel: Channel,
    /// Recorded in every dead letter as `x-original-queue`.
    close_queue: String,
    dead_letter_queue: String,
    metrics: Arc<Metrics>,
    /// Where outcomes go besides each request's `reply_to`.
    outcomes: Arc<Outcomes>,
}

/// Settles the deliveries of one consumer channel.
pub(crate) struct Settler {
    outbox: Arc<Outbox>,
    acks: AckRuns,
}

impl Settler {
    /// A settler publishing on `confirm_channel` (in confirm mode), for one consumer channel.
    pub(crate) fn new(
        confirm_channel: Channel,
        close_queue: String,
        dead_letter_queue: String,
        metrics: Arc<Metrics>,
        outcomes: Arc<Outcomes>,
    ) -> Self {
        let outbox = Outbox {
            confirm_channel,
            close_queue,
            dead_letter_queue,
            metrics,
            outcomes,
        };
        Settler {
            outbox: Arc::new(outbox),
            acks: AckRuns::new(),
        }
    }

    /// A settler for another consumer channel of the same session: same confirm channel, its own
    /// ack runs.
    pub(crate) fn for_another_channel(&self) -> Settler {
        Settler {
            outbox: self.outbox.clone(),
            acks: AckRuns::new(),
        }
    }

    /// The session's confirm channel, to close on shutdown.
    pub(crate) fn confirm_channel(&self) -> &Channel {
        &self.outbox.confirm_channel
    }

    /// Whether a request with these properties gets an outcome message when it ends.
    pub(crate) fn wants_outcome(&self, request: &BasicProperties) -> bool {
        self.outbox.outcomes.wanted(request)
    }

    /// Ends a delivery whose close is done — closed, or already closed — with `original` the
    /// request's properties (a pending check's original's): its outcome, when one is wanted, is
    /// confirmed by the broker before the delivery is acked; if it cannot be published, the
    /// delivery goes back after a pause, to end again. Dead letters end in [`Settler::dead_letter`].
    pub(crate) async fn finish(
        &self,
        delivery: &Delivery,
        original: &BasicProperties,
        external_id: &str,
        attempts: u32,
        ended: Ended<'_>,
    ) {
        let request = Request {
            body: &delivery.data,
            properties: original,
            external_id: Some(external_id),
            attempts,
        };
        spans::ended(&spans::current(), ended.kind().as_str());
        if self.tell(request, ended).await {
            self.ack(delivery).await;
        } else {
            self.give_back_after_pause(delivery).await;
        }
    }

    /// Publishes the outcome, when one is wanted, and counts it; whether the broker has it (or no
    /// outcome was wanted).
    async fn tell(&self, request: Request<'_>, ended: Ended<'_>) -> bool {
        let outbox = &self.outbox;
        let channel = &outbox.confirm_channel;
        match outbox.outcomes.publish(channel, request, ended).await {
            Ok(None) => true,
            Ok(Some(sent)) => {
                outbox.metrics.outcome(sent.kind);
                if sent.unroutable {
                    outbox.metrics.outcome_unroutable.inc();
                }
                true
            }
            Err(error) => {
                error!(
                    externalJobPostingId = request.external_id.unwrap_or("-"),
                    outcome = %ended.kind(),
                    %error,
                    "Could not publish the outcome; the message goes back to the queue and will end again."
                );
                false
            }
        }
    }

    /// Acks a settled delivery, with the run it belongs to.
    pub(crate) async fn ack(&self, delivery: &Delivery) {
        self.acks.ack(delivery).await;
    }

    /// Settles deliveries inside `settling`, and acks them together at its end.
    pub(crate) async fn together<F: Future>(&self, settling: F) -> F::Output {
        self.acks.together(settling).await
    }

    /// Returns a delivery to its queue for another consumer or a later attempt.
    pub(crate) async fn give_back(&self, delivery: &Delivery) {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        if let Err(error) = delivery.acker.nack(options).await {
            debug!(%error, delivery_tag = delivery.delivery_tag, "Give-back failed; the broker will redeliver anyway.");
        }
        // Only now, with the nack on its way, may a run of acks pass this delivery.
        self.acks.settled_elsewhere(delivery).await;
    }

    /// Gives a delivery back after a pause, for failures that would repeat at once.
    pub(crate) async fn give_back_after_pause(&self, delivery: &Delivery) {
        tokio::time::sleep(GIVE_BACK_PAUSE).await;
        self.give_back(delivery).await;
    }

    /// Publishes `delivery`'s body with `properties` to `queue`, and acks the delivery only once the
    /// broker confirmed the copy. On failure nothing is settled; the caller decides what to do.
    pub(crate) async fn hand_on(
        &self,
        delivery: &Delivery,
        queue: &str,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        self.publish(queue, delivery, properties).await?;
        self.ack(delivery).await;
        Ok(())
    }

    /// Publishes the dead letter of `delivery`'s body with the `original` request's properties (a
    /// pending check carries the request's body but not its properties), then its outcome when one
    /// is wanted, and acks the delivery once the broker confirmed both; if either fails, gives the
    /// delivery back after a pause.
    pub(crate) async fn dead_letter(
        &self,
        delivery: &Delivery,
        original: &BasicProperties,
        external_id: Option<&str>,
        failure: Failure,
    ) {
        let outbox = &self.outbox;
        let properties = dead_letter::properties(original, &outbox.close_queue, &failure);
        let published = self
            .publish(&outbox.dead_letter_queue, delivery, properties)
            .await;
        if let Err(error) = published {
            error!(
                externalJobPostingId = external_id.unwrap_or("-"),
                reason = %failure.reason,
                %error,
                "Could not dead-letter; the message goes back to the queue."
            );
            return self.give_back_after_pause(delivery).await;
        }
        // An invalid message has no validated id, but usually still names one.
        let named_id = external_id
            .map(str::to_owned)
            .or_else(|| dead_letter::external_id(&delivery.data));
        warn!(
            externalJobPostingId = named_id.as_deref().unwrap_or("-"),
            task_id = failure.task_id.as_deref(),
            status = failure.status,
            reason = %failure.reason,
            attempts = failure.attempts,
            error_message = %failure.message,
            "Dead-lettered."
        );
        outbox
            .metrics
            .dead_letter(failure.reason.as_str(), failure.status);
        spans::dead_lettered(
            &spans::current(),
            failure.reason.as_str(),
            failure.status,
            &failure.message,
        );
        let request = Request {
            body: &delivery.data,
            properties: original,
            external_id: named_id.as_deref(),
            attempts: failure.attempts,
        };
        if !self.tell(request, Ended::DeadLettered(&failure)).await {
            return self.give_back_after_pause(delivery).await;
        }
        self.ack(delivery).await;
    }

    async fn publish(
        &self,
        queue: &str,
        delivery: &Delivery,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        let channel = &self.outbox.confirm_channel;
        amqp::publish_confirmed(channel, queue, &delivery.data, properties).await
    }
}
