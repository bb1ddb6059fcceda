//! RabbitMQ plumbing shared by every command: connecting, declaring the two queues with explicit
//! arguments, and publishing with publisher confirms.
//!
//! The queue arguments are spelled out (`x-queue-type`, delivery limit, dead-letter target, single
//! active consumer) rather than left to a broker version's defaults, because users run RabbitMQ 3.10
//! to 4.x and the defaults moved between them. A declaration that clashes with an existing queue is
//! turned into an error that names the argument and the way out.

pub mod connector;
pub mod tls;

pub use connector::{Connected, Connector};

use crate::config::{AmqpArgs, QueueType};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// Broker failures, by what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker is unreachable or the connection broke: try again later.
    #[error("cannot reach RabbitMQ at {url}: {source} (check AMQP_URL)")]
    Connect { url: String, source: lapin::Error },
    /// No node of `AMQP_URL` could be reached; `failures` says why for each, with what probably
    /// caused it when that is known (TLS alerts say little).
    #[error("cannot reach RabbitMQ {failures} (check AMQP_URL)")]
    Unreachable { failures: String },
    /// The broker settings cannot be used (a file, a PEM): exit 2 where it surfaces.
    #[error(transparent)]
    Config(Box<crate::config::ConfigError>),
    /// A queue exists with other arguments: an operator must reconcile them; retrying will not help.
    #[error("queue '{queue}' already exists with different arguments: {detail}. {hint}", hint = mismatch_hint(.detail))]
    QueueMismatch { queue: String, detail: String },
    /// The broker refused to take a message (nack, or unroutable with `mandatory`).
    #[error("RabbitMQ did not take the message for '{queue}': {why}")]
    NotConfirmed { queue: String, why: String },
    /// A queue name that AMQP cannot carry.
    #[error("queue name '{0}' is longer than AMQP's 255 bytes")]
    BadQueueName(String),
    /// Any other channel or connection failure: the connection is probably gone.
    #[error("RabbitMQ error: {0}")]
    Broker(#[from] lapin::Error),
}

impl AmqpError {
    /// A mismatch or a bad name will not go away by reconnecting.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            AmqpError::QueueMismatch { .. } | AmqpError::BadQueueName(_) | AmqpError::Config(_)
        )
    }
}

/// The broker says which argument differs (`inequivalent arg 'x-delivery-limit' for queue 'q' in
/// vhost '/': received the value '20' of type 'long' but current is none`); this turns that into the
/// setting that controls it and the way out.
///
/// The broker checks the arguments in its own order, and for a classic queue redeclared as quorum it
/// names a dead-letter argument before `x-queue-type`. Since job-closer sets those only on quorum
/// queues, one that is present on one side only means the queue types differ, and the hint says so.
pub fn mismatch_hint(detail: &str) -> String {
    const WAY_OUT: &str = "or drain and delete the queue so that job-closer declares it anew (see \"Upgrading\" in the operations guide)";
    let Some(argument) = detail
        .split_once("inequivalent arg '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(argument, _)| argument)
    else {
        return format!(
            "To fix it, set QUEUE_TYPE / SINGLE_ACTIVE_CONSUMER / DELIVERY_LIMIT to match the existing queue, {WAY_OUT}"
        );
    };
    let existing_lacks_it = detail.ends_with("but current is none");
    let we_lack_it = detail.contains("received none but current is");
    let quorum_only = matches!(
        argument,
        "x-delivery-limit"
            | "x-dead-letter-exchange"
            | "x-dead-letter-routing-key"
            | "x-dead-letter-strategy"
            | "x-overflow"
    );
    let fix = match argument {
        _ if quorum_only && existing_lacks_it => "job-closer sets it only on quorum queues, so the existing queue is most likely classic while QUEUE_TYPE=quorum asks for x-queue-type quorum: set QUEUE_TYPE=classic to use it as it is".to_owned(),
        _ if quorum_only && we_lack_it => "the existing queue has it, as quorum queues declared by job-closer do, while QUEUE_TYPE=classic asks for x-queue-type classic: set QUEUE_TYPE=quorum to use it as it is".to_owned(),
        "x-queue-type" => "set QUEUE_TYPE to the existing queue's type".to_owned(),
        "x-single-active-consumer" => {
            "set SINGLE_ACTIVE_CONSUMER as the existing queue has it".to_owned()
        }
        "x-delivery-limit" => "set DELIVERY_LIMIT to the existing queue's delivery limit".to_owned(),
        "x-dead-letter-exchange" | "x-dead-letter-routing-key" => {
            "set DEAD_LETTER_QUEUE to the queue the existing close queue dead-letters into".to_owned()
        }
        _ => "job-closer does not set it from a setting: the queue was declared by another tool or by hand".to_owned(),
    };
    format!("The argument that differs is '{argument}': {fix}, {WAY_OUT}")
}

pub fn queue_name(name: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(name).map_err(|_| AmqpError::BadQueueName(name.to_owned()))
}

/// One connection for a command that connects once: each node of `AMQP_URL` is tried in turn.
pub async fn connect(args: &AmqpArgs, connection_name: &str) -> Result<Connection, AmqpError> {
    Ok(Connector::from_args(args, connection_name)
        .map_err(|error| AmqpError::Config(Box::new(error)))?
        .connect()
        .await?
        .connection)
}

/// Which of the two queues an argument table is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRole {
    Close,
    DeadLetter,
}

/// The arguments each queue is declared with.
pub fn queue_arguments(args: &AmqpArgs, role: QueueRole) -> FieldTable {
    let mut table = FieldTable::default();
    let queue_type = match args.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    table.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    if role == QueueRole::Close {
        if args.queue_type == QueueType::Quorum {
            // A message that crashes consumers again and again ends in the dead-letter queue
            // instead of circling forever.
            table.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(args.delivery_limit).unwrap_or(i32::MAX)),
            );
            dead_letter_into(&mut table, &args.dead_letter_queue, args.queue_type);
        }
        if args.single_active_consumer {
            table.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
    } else if args.queue_type == QueueType::Quorum {
        // RabbitMQ 4.x gives quorum queues a delivery limit of 20 by default and the dead-letter
        // queue dead-letters nowhere: every `dlq list` walk counts as a delivery, so the default would
        // eventually drop dead letters. A limit no walk reaches keeps them (3.x has no default).
        table.insert("x-delivery-limit".into(), AMQPValue::LongInt(i32::MAX));
    }
    table
}

/// Makes a queue dead-letter into `target` through the default exchange. For quorum queues, at least
/// once: without it the broker may drop a message it dead-letters, and RabbitMQ only allows that
/// strategy together with the reject-publish overflow.
pub fn dead_letter_into(table: &mut FieldTable, target: &str, queue_type: QueueType) {
    table.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    table.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(target.into()),
    );
    if queue_type == QueueType::Quorum {
        table.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        table.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
}

/// Declares one queue (durable) with its arguments; a clash becomes [`AmqpError::QueueMismatch`].
/// A clash closes the channel, so callers declare on a channel they can afford to lose.
pub async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<lapin::Queue, AmqpError> {
    channel
        .queue_declare(queue_name(name)?, QueueDeclareOptions::durable(), arguments)
        .await
        .map_err(|error| match protocol_error(&error) {
            Some((AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED), message)) => {
                AmqpError::QueueMismatch {
                    queue: name.to_owned(),
                    detail: message,
                }
            }
            _ => AmqpError::Broker(error),
        })
}

/// Declares the close queue and the dead-letter queue, each on a throwaway channel.
pub async fn declare_queues(
    connection: &Connection,
    args: &AmqpArgs,
) -> Result<(lapin::Queue, lapin::Queue), AmqpError> {
    let mut declared = Vec::with_capacity(2);
    for (name, role) in [
        (&args.dead_letter_queue, QueueRole::DeadLetter),
        (&args.close_queue, QueueRole::Close),
    ] {
        let channel = connection.create_channel().await?;
        declared.push(declare_queue(&channel, name, queue_arguments(args, role)).await?);
        let _ = channel.close(200, "declared".into()).await;
    }
    let close = declared.pop().expect("two declared");
    let dead = declared.pop().expect("two declared");
    Ok((close, dead))
}

/// The broker's own words for a channel or connection error, when it sent any.
pub fn protocol_error(error: &lapin::Error) -> Option<(AMQPErrorKind, String)> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            Some((amqp.kind().clone(), amqp.get_message().to_string()))
        }
        _ => None,
    }
}

/// A channel in confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes to a queue through the default exchange with `mandatory`, and waits for the broker's
/// confirm: only then is the message the broker's responsibility.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue_name(queue)?,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    check_confirmation(queue, confirm.await?)
}

/// Turns a confirmation into success only when the broker took the message and routed it.
pub fn check_confirmation(queue: &str, confirmation: Confirmation) -> Result<(), AmqpError> {
    let not_confirmed = |why: String| AmqpError::NotConfirmed {
        queue: queue.to_owned(),
        why,
    };
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(not_confirmed(format!(
            "returned as unroutable ({} {}); does the queue exist?",
            returned.reply_code, returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(not_confirmed("nacked by the broker".into())),
        Confirmation::NotRequested => {
            Err(not_confirmed("the channel is not in confirm mode".into()))
        }
    }
}

/// Reads a header as text, whatever string type the publisher used.
pub fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Reads a header as an integer, whatever integer type the publisher used.
pub fn header_int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => s.to_string().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(queue_type: QueueType, single_active_consumer: bool) -> AmqpArgs {
        AmqpArgs {
            amqp_url: crate::config::DEFAULT_AMQP_URL.parse().unwrap(),
            files: Default::default(),
            close_queue: "close".into(),
            dead_letter_queue: "dead".into(),
            queue_type,
            single_active_consumer,
            delivery_limit: 7,
        }
    }

    #[test]
    fn a_mismatch_names_the_argument_and_the_setting() {
        let error = AmqpError::QueueMismatch {
            queue: "close".into(),
            detail: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'close' in vhost '/': received the value 'quorum' of type 'longstr' but current is none".into(),
        };
        let text = error.to_string();
        assert!(text.contains("'x-queue-type'"), "{text}");
        assert!(text.contains("set QUEUE_TYPE"), "{text}");
        assert!(text.contains("drain and delete"), "{text}");
        let classic_as_quorum = mismatch_hint(
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': received the value '' of type 'longstr' but current is none",
        );
        assert!(
            classic_as_quorum.contains("QUEUE_TYPE=classic"),
            "{classic_as_quorum}"
        );
        let quorum_as_classic = mismatch_hint(
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received none but current is the value '20' of type 'long'",
        );
        assert!(
            quorum_as_classic.contains("QUEUE_TYPE=quorum"),
            "{quorum_as_classic}"
        );
        let limit = mismatch_hint(
            "inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received the value '5' of type 'long' but current is the value '20' of type 'long'",
        );
        assert!(limit.contains("set DELIVERY_LIMIT"), "{limit}");
        let sac = mismatch_hint("inequivalent arg 'x-single-active-consumer' for queue 'q'");
        assert!(sac.contains("SINGLE_ACTIVE_CONSUMER"), "{sac}");
        let durable = mismatch_hint("inequivalent arg 'durable' for queue 'q'");
        assert!(
            durable.contains("'durable'") && durable.contains("another tool"),
            "{durable}"
        );
        assert!(mismatch_hint("something else").contains("QUEUE_TYPE"));
    }

    #[test]
    fn classic_queues_say_so_explicitly() {
        let table = queue_arguments(&args(QueueType::Classic, false), QueueRole::Close);
        let inner = table.inner();
        assert_eq!(
            inner.get("x-queue-type").and_then(header_text).as_deref(),
            Some("classic")
        );
        assert_eq!(inner.len(), 1);
    }

    #[test]
    fn quorum_close_queue_dead_letters_into_the_dead_letter_queue() {
        let table = queue_arguments(&args(QueueType::Quorum, true), QueueRole::Close);
        let inner = table.inner();
        assert_eq!(inner.get("x-delivery-limit").and_then(header_int), Some(7));
        assert_eq!(
            inner
                .get("x-dead-letter-routing-key")
                .and_then(header_text)
                .as_deref(),
            Some("dead")
        );
        assert_eq!(
            inner.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        let dead = queue_arguments(&args(QueueType::Quorum, true), QueueRole::DeadLetter);
        let dead = dead.inner();
        assert!(
            !dead.contains_key("x-dead-letter-routing-key"),
            "the dead-letter queue dead-letters nowhere"
        );
        assert_eq!(
            dead.get("x-delivery-limit").and_then(header_int),
            Some(i64::from(i32::MAX)),
            "and never drops a dead letter for being read too often"
        );
    }
}
