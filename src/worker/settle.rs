//! Settling deliveries: every delivery ends acked after LinkedIn took it (and, with task checks on,
//! after its pending check was confirmed by the broker), acked after its dead letter was confirmed by
//! the broker, or given back to the queue. Nothing else acks.
//!
//! The settler belongs to one broker session: its ackers and its confirm channel die with the
//! connection, and then every settle fails harmlessly — the broker redelivers what was not acked.
//!
//! Deliveries of the close queue are acked in runs ([`AckRuns`]): settle a batch inside
//! [`Settler::together`] and it costs one frame. Deliveries of any other channel (the task
//! verifier's) must never enter those runs — a multiple ack counts tags of one channel — so the
//! methods taking a [`Source`] ack those one by one.

use super::ack_runs::AckRuns;
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{self, Failure, Reason};
use crate::metrics::Metrics;
use crate::tasks::{PendingCheck, Schedule};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug, error, info, warn};

/// A pause before giving back a message whose dead letter failed, so a missing dead-letter queue does
/// not turn into a redelivery storm.
const GIVE_BACK_PAUSE: Duration = Duration::from_secs(1);

/// Which channel a delivery came from, which decides how it is acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The close queue's consumer channel: acked in runs.
    CloseQueue,
    /// Another channel (the task verifier's): acked on its own.
    Other,
}

pub struct Settler {
    dead_letter_channel: Channel,
    close_queue: String,
    dead_letter_queue: String,
    metrics: Arc<Metrics>,
    /// Where accepted closes wait for their task check; `None` with TASK_CHECK=off.
    task_checks: Option<Arc<Schedule>>,
    acks: AckRuns,
}

impl Settler {
    pub fn new(
        dead_letter_channel: Channel,
        close_queue: String,
        dead_letter_queue: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Settler {
            dead_letter_channel,
            close_queue,
            dead_letter_queue,
            metrics,
            task_checks: None,
            acks: AckRuns::new(),
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.dead_letter_channel
    }

    /// Accepted closes are verified: each gets a pending check in `schedule`'s first tier.
    pub fn with_task_checks(mut self, schedule: Arc<Schedule>) -> Self {
        self.task_checks = Some(schedule);
        self
    }

    /// LinkedIn accepted the close. With task checks on, a 202 is not yet a close: the pending check
    /// (the original request plus the task id) must be the broker's before the original is acked.
    pub async fn closed(&self, delivery: &Delivery, external_id: &str, task_id: Option<&str>) {
        match (&self.task_checks, task_id) {
            (Some(schedule), Some(task_id)) => {
                let tier = schedule.tier_after(0);
                let check = PendingCheck::accepted(task_id, external_id, SystemTime::now());
                let properties = check.properties(&delivery.properties);
                if let Err(error) = self
                    .hand_on_from(Source::CloseQueue, delivery, &tier.queue, properties)
                    .await
                {
                    error!(externalJobPostingId = external_id, task_id, %error,
                        "Could not schedule the task check; the message goes back to the queue and will be sent again.");
                    tokio::time::sleep(GIVE_BACK_PAUSE).await;
                    self.give_back(delivery).await;
                    return;
                }
                info!(
                    externalJobPostingId = external_id,
                    task_id,
                    task_check_in_ms = tier.delay.as_millis() as u64,
                    "Closed."
                );
            }
            (Some(_), None) => {
                warn!(
                    externalJobPostingId = external_id,
                    "Closed, but LinkedIn gave no task id to verify."
                );
                self.ack(delivery).await;
            }
            (None, _) => {
                info!(externalJobPostingId = external_id, task_id, "Closed.");
                self.ack(delivery).await;
            }
        }
        self.metrics.closed.inc();
    }

    /// Publishes `delivery`'s body with `properties` to `queue`, and acks the delivery only once the
    /// broker confirmed the copy. On failure nothing is acked; the caller decides what to do.
    /// For deliveries of another channel than the close queue's (the task verifier's).
    pub async fn hand_on(
        &self,
        delivery: &Delivery,
        queue: &str,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        self.hand_on_from(Source::Other, delivery, queue, properties)
            .await
    }

    async fn hand_on_from(
        &self,
        source: Source,
        delivery: &Delivery,
        queue: &str,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        amqp::publish_confirmed(&self.dead_letter_channel, queue, &delivery.data, properties)
            .await?;
        self.ack_from(source, delivery).await;
        Ok(())
    }

    /// Publishes the dead letter, and acks the original only once the broker confirmed it.
    pub async fn dead_letter(
        &self,
        delivery: &Delivery,
        external_id: Option<&str>,
        failure: Failure,
    ) {
        self.dead_letter_from(
            Source::CloseQueue,
            delivery,
            &delivery.properties,
            external_id,
            failure,
        )
        .await
    }

    /// Like [`Settler::dead_letter`], for a delivery of another channel that carries the original
    /// request's body but not its properties (a pending task check): the dead letter gets `original`.
    pub async fn dead_letter_original(
        &self,
        delivery: &Delivery,
        original: &BasicProperties,
        external_id: Option<&str>,
        failure: Failure,
    ) {
        self.dead_letter_from(Source::Other, delivery, original, external_id, failure)
            .await
    }

    async fn dead_letter_from(
        &self,
        source: Source,
        delivery: &Delivery,
        original: &BasicProperties,
        external_id: Option<&str>,
        failure: Failure,
    ) {
        let properties = dead_letter::properties(original, &self.close_queue, &failure);
        let published = amqp::publish_confirmed(
            &self.dead_letter_channel,
            &self.dead_letter_queue,
            &delivery.data,
            properties,
        )
        .await;
        match published {
            Ok(()) => {
                // An invalid message has no validated id, but usually still names one.
                let named_id = external_id
                    .map(str::to_owned)
                    .or_else(|| external_id_in(&delivery.data));
                warn!(
                    externalJobPostingId = named_id.as_deref().unwrap_or("-"),
                    task_id = failure.task_id.as_deref(),
                    status = failure.status,
                    reason = %failure.reason,
                    attempts = failure.attempts,
                    error_message = %failure.message,
                    "Dead-lettered."
                );
                self.metrics
                    .dead_letter(failure.reason.as_str(), failure.status);
                self.ack_from(source, delivery).await;
            }
            Err(error) => {
                self.failed_dead_letter(source, delivery, external_id, failure.reason, &error)
                    .await
            }
        }
    }

    async fn failed_dead_letter(
        &self,
        source: Source,
        delivery: &Delivery,
        external_id: Option<&str>,
        reason: Reason,
        error: &AmqpError,
    ) {
        error!(
            externalJobPostingId = external_id.unwrap_or("-"),
            reason = %reason,
            %error,
            "Could not dead-letter; the message goes back to the queue."
        );
        tokio::time::sleep(GIVE_BACK_PAUSE).await;
        match source {
            Source::CloseQueue => self.give_back(delivery).await,
            Source::Other => give_back(delivery).await,
        }
    }

    async fn ack_from(&self, source: Source, delivery: &Delivery) {
        match source {
            Source::CloseQueue => self.ack(delivery).await,
            Source::Other => ack(delivery).await,
        }
    }

    /// Acks a settled close-queue delivery, with the run it belongs to.
    pub async fn ack(&self, delivery: &Delivery) {
        self.acks.ack(delivery).await;
    }

    /// Settles close-queue deliveries inside `settling`, and acks them together at its end.
    pub async fn together<F: Future>(&self, settling: F) -> F::Output {
        self.acks.together(settling).await
    }

    /// Returns a close-queue delivery to the queue for another consumer or a later attempt.
    pub async fn give_back(&self, delivery: &Delivery) {
        give_back(delivery).await;
        // Only now, with the nack on its way, may a run of acks pass this delivery.
        self.acks.settled_elsewhere(delivery).await;
    }
}

/// Acks a delivery of a channel other than the close queue's, on its own.
pub async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel is gone: the broker will redeliver, which is the safe side.
        debug!(%error, delivery_tag = delivery.delivery_tag, "Ack failed; the message will be redelivered.");
    }
}

/// Gives a delivery back after [`GIVE_BACK_PAUSE`], for failures that would repeat at once.
pub async fn give_back_after_pause(delivery: &Delivery) {
    tokio::time::sleep(GIVE_BACK_PAUSE).await;
    give_back(delivery).await;
}

/// Returns a delivery to the queue for another consumer or a later attempt.
pub async fn give_back(delivery: &Delivery) {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    if let Err(error) = delivery.acker.nack(options).await {
        debug!(%error, delivery_tag = delivery.delivery_tag, "Give-back failed; the broker will redeliver anyway.");
    }
}

/// The `externalJobPostingId` a body names, if it is JSON with a string id; for logs only.
fn external_id_in(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "externalJobPostingId")]
        id: String,
    }
    serde_json::from_slice::<Named>(body)
        .ok()
        .map(|named| named.id)
}

/// Dead letters a message that never reached LinkedIn because it failed validation.
pub fn invalid_failure(message: String) -> Failure {
    Failure {
        reason: Reason::Invalid,
        status: 422,
        message,
        attempts: 0,
        task_id: None,
    }
}
