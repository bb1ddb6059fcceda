//! Settling deliveries: every delivery ends acked after LinkedIn took it, acked after its dead letter
//! was confirmed by the broker, or given back to the queue. Nothing else acks.
//!
//! The settler belongs to one broker session: its ackers and its confirm channel die with the
//! connection, and then every settle fails harmlessly — the broker redelivers what was not acked.
//! Acks go out in runs ([`AckRuns`]): settle a batch inside [`Settler::together`] and it costs one
//! frame.

use super::ack_runs::AckRuns;
use crate::amqp::{self, AmqpError};
use crate::dead_letter::{self, Failure, Reason};
use crate::metrics::Metrics;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// A pause before giving back a message whose dead letter failed, so a missing dead-letter queue does
/// not turn into a redelivery storm.
const GIVE_BACK_PAUSE: Duration = Duration::from_secs(1);

pub struct Settler {
    dead_letter_channel: Channel,
    close_queue: String,
    dead_letter_queue: String,
    metrics: Arc<Metrics>,
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
            acks: AckRuns::new(),
        }
    }

    /// LinkedIn accepted the close.
    pub async fn closed(&self, delivery: &Delivery, external_id: &str, task_id: Option<&str>) {
        info!(external_id, task_id, "Closed.");
        self.metrics.closed.inc();
        self.ack(delivery).await;
    }

    /// Publishes the dead letter, and acks the original only once the broker confirmed it.
    pub async fn dead_letter(
        &self,
        delivery: &Delivery,
        external_id: Option<&str>,
        failure: Failure,
    ) {
        let properties = dead_letter::properties(&delivery.properties, &self.close_queue, &failure);
        let published = amqp::publish_confirmed(
            &self.dead_letter_channel,
            &self.dead_letter_queue,
            &delivery.data,
            properties,
        )
        .await;
        match published {
            Ok(()) => {
                warn!(
                    external_id = external_id.unwrap_or("-"),
                    status = failure.status,
                    reason = %failure.reason,
                    attempts = failure.attempts,
                    message = %failure.message,
                    "Dead-lettered."
                );
                self.metrics
                    .dead_letter(failure.reason.as_str(), failure.status);
                self.ack(delivery).await;
            }
            Err(error) => {
                self.failed_dead_letter(delivery, external_id, failure.reason, &error)
                    .await
            }
        }
    }

    async fn failed_dead_letter(
        &self,
        delivery: &Delivery,
        external_id: Option<&str>,
        reason: Reason,
        error: &AmqpError,
    ) {
        error!(
            external_id = external_id.unwrap_or("-"),
            reason = %reason,
            %error,
            "Could not dead-letter; the message goes back to the queue."
        );
        tokio::time::sleep(GIVE_BACK_PAUSE).await;
        self.give_back(delivery).await;
    }

    /// Acks a settled delivery, with the run it belongs to.
    pub async fn ack(&self, delivery: &Delivery) {
        self.acks.ack(delivery).await;
    }

    /// Settles deliveries one by one inside `settling`, and acks them together at its end.
    pub async fn together<F: Future>(&self, settling: F) -> F::Output {
        self.acks.together(settling).await
    }

    /// Returns a delivery to the queue for another consumer or a later attempt.
    pub async fn give_back(&self, delivery: &Delivery) {
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
