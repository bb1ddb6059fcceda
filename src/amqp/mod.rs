//! RabbitMQ plumbing shared by every command, each idea in one place: connecting ([`connector`],
//! [`tls`]), declaring queues with explicit arguments, probing a queue without creating it
//! ([`probe`]), classifying what the broker said ([`AmqpError::from_lapin`]), publishing with
//! publisher confirms ([`confirm`]), following a connection's flow control and its loss
//! ([`flow`]), and reading header values whatever type a publisher used.
//!
//! Broker errors are classified here once, by what the caller does next (retry, reconcile a queue,
//! declare it), rather than by matching lapin's protocol errors at each call site: the
//! PRECONDITION_FAILED and NOT_FOUND matches used to sit in four places in three files, each with its
//! own idea of what they meant.
//!
//! The queue arguments are spelled out (`x-queue-type`, delivery limit, dead-letter target, single
//! active consumer) rather than left to a broker version's defaults, because users run RabbitMQ 3.10
//! to 4.x and the defaults moved between them. A declaration that clashes with an existing queue is
//! turned into an error that names the argument and the way out.

pub(crate) mod confirm;
pub(crate) mod connector;
pub(crate) mod flow;
pub(crate) mod probe;
pub(crate) mod settings;
pub(crate) mod tls;

pub use confirm::{check_confirmation, confirm_channel, publish_confirmed};
pub(crate) use connector::{Connected, Connector, close_or_sever};
pub(crate) use flow::{FlowEvent, FlowWatch, probe_publishing};
pub(crate) use probe::{probe_queue, probe_queue_on};

use crate::config::{AmqpArgs, QueueType};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ExchangeKind};

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
    /// The broker refused to take a message (a nack, or a channel not in confirm mode).
    #[error("RabbitMQ did not take the message for '{queue}': {why}")]
    NotConfirmed { queue: String, why: String },
    /// A `mandatory` message no queue took: the broker returned it (before its confirm).
    #[error(
        "RabbitMQ did not take the message for '{queue}': returned as unroutable ({reply_code} {reply_text}); does the queue exist?"
    )]
    Unroutable {
        queue: String,
        reply_code: u16,
        reply_text: String,
    },
    /// An exchange exists with another type or durability: an operator must reconcile them.
    #[error(
        "exchange '{exchange}' already exists with different arguments: {detail}. {setting} must name a durable topic exchange: delete that exchange so that job-closer declares it, or choose another name"
    )]
    ExchangeMismatch {
        exchange: String,
        detail: String,
        setting: &'static str,
    },
    /// The exchange does not exist (yet).
    #[error("exchange '{exchange}' does not exist")]
    MissingExchange { exchange: String },
    /// The queue does not exist: whatever declares it has not run yet. `setting` names the setting
    /// that names the queue, when the caller knows it ([`AmqpError::named_by`]).
    #[error("queue '{queue}' does not exist ({}the worker declares it when it starts)", check_setting(*.setting))]
    MissingQueue {
        queue: String,
        setting: Option<&'static str>,
    },
    /// A queue name that AMQP cannot carry.
    #[error("queue name '{0}' is longer than AMQP's 255 bytes")]
    BadQueueName(String),
    /// The connection ended under the caller (seen by [`flow::FlowWatch`]): try again later.
    #[error("the RabbitMQ connection was lost: {why}")]
    Lost { why: String },
    /// Any other channel or connection failure: the connection is probably gone.
    #[error("RabbitMQ error: {0}")]
    Broker(#[from] lapin::Error),
}

impl AmqpError {
    /// Classifies a failed operation on `queue` (a declare, a probe, a consume) by what the broker
    /// said: NOT_FOUND is a missing queue, PRECONDITION_FAILED a queue that exists with other
    /// arguments, anything else a channel or connection that broke.
    pub(crate) fn from_lapin(error: lapin::Error, queue: &str) -> AmqpError {
        let lapin::ErrorKind::ProtocolError(said) = error.kind() else {
            return AmqpError::Broker(error);
        };
        match said.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => AmqpError::MissingQueue {
                queue: queue.to_owned(),
                setting: None,
            },
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => AmqpError::QueueMismatch {
                queue: queue.to_owned(),
                detail: said.get_message().to_string(),
            },
            _ => AmqpError::Broker(error),
        }
    }

    /// Names the setting behind a missing queue, so that the message says what to check.
    pub(crate) fn named_by(self, setting: &'static str) -> AmqpError {
        match self {
            AmqpError::MissingQueue { queue, .. } => AmqpError::MissingQueue {
                queue,
                setting: Some(setting),
            },
            other => other,
        }
    }

    /// A mismatch or a bad name will not go away by reconnecting.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            AmqpError::QueueMismatch { .. }
                | AmqpError::ExchangeMismatch { .. }
                | AmqpError::BadQueueName(_)
                | AmqpError::Config(_)
        )
    }
}

fn check_setting(setting: Option<&'static str>) -> String {
    setting.map_or_else(String::new, |setting| format!("check {setting}; "))
}

/// The broker says which argument differs (`inequivalent arg 'x-delivery-limit' for queue 'q' in
/// vhost '/': received the value '20' of type 'long' but current is none`); this turns that into the
/// setting that controls it and the way out.
///
/// The broker checks the arguments in its own order, and for a classic queue redeclared as quorum it
/// names a dead-letter argument before `x-queue-type`. Since job-closer sets those only on quorum
/// queues, one that is present on one side only means the queue types differ, and the hint says so.
pub(crate) fn mismatch_hint(detail: &str) -> String {
    const WAY_OUT: &str = "or drain and delete the queue so that job-closer declares it anew (see \"Upgrading\" in docs/operations.md)";
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
        "x-single-active-consumer" if existing_lacks_it => "the existing queue has no single active consumer (declared so before SINGLE_ACTIVE_CONSUMER defaulted to true): set SINGLE_ACTIVE_CONSUMER=false to use it as it is".to_owned(),
        "x-single-active-consumer" if we_lack_it => "the existing queue has a single active consumer: set SINGLE_ACTIVE_CONSUMER=true to use it as it is".to_owned(),
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

pub(crate) fn queue_name(name: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(name).map_err(|_| AmqpError::BadQueueName(name.to_owned()))
}

/// One connection for a command that connects once: each node of `AMQP_URL` is tried in turn.
pub(crate) async fn connect(
    args: &AmqpArgs,
    connection_name: &str,
) -> Result<Connection, AmqpError> {
    Ok(Connector::from_args(args, connection_name)
        .map_err(|error| AmqpError::Config(Box::new(error)))?
        .connect()
        .await?
        .connection)
}

/// Which of the two queues an argument table is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueRole {
    Close,
    DeadLetter,
}

/// The arguments each queue is declared with.
pub(crate) fn queue_arguments(args: &AmqpArgs, role: QueueRole) -> FieldTable {
    let mut table = queue_type_argument(args.queue_type);
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

/// `QUEUE_TYPE` as RabbitMQ (`x-queue-type`) and job-closer's messages spell it.
pub(crate) fn queue_type_name(queue_type: QueueType) -> &'static str {
    match queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    }
}

/// A table holding only `x-queue-type`: every queue job-closer declares says its type.
pub(crate) fn queue_type_argument(queue_type: QueueType) -> FieldTable {
    field_table([("x-queue-type", long_string(queue_type_name(queue_type)))])
}

/// Makes a queue dead-letter into `target` through the default exchange. For quorum queues, at least
/// once: without it the broker may drop a message it dead-letters, and RabbitMQ only allows that
/// strategy together with the reject-publish overflow.
pub(crate) fn dead_letter_into(table: &mut FieldTable, target: &str, queue_type: QueueType) {
    let mut entries = vec![
        ("x-dead-letter-exchange", long_string("")),
        ("x-dead-letter-routing-key", long_string(target)),
    ];
    if queue_type == QueueType::Quorum {
        entries.extend([
            ("x-dead-letter-strategy", long_string("at-least-once")),
            ("x-overflow", long_string("reject-publish")),
        ]);
    }
    insert_entries(table, entries);
}

/// Declares one queue (durable) with its arguments, on a throwaway channel since a clash closes
/// it; a clash becomes [`AmqpError::QueueMismatch`]. A no-op for a queue that exists with the same
/// arguments, which is how `check` tests compatibility.
pub(crate) async fn declare_queue(
    connection: &Connection,
    name: &str,
    arguments: FieldTable,
) -> Result<lapin::Queue, AmqpError> {
    let queue = queue_name(name)?;
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(queue, QueueDeclareOptions::durable(), arguments)
        .await
        .map_err(|error| AmqpError::from_lapin(error, name))?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(declared)
}

/// Declares the dead-letter queue, then the close queue (which may dead-letter into it); returns
/// the close queue as declared.
pub async fn declare_queues(
    connection: &Connection,
    args: &AmqpArgs,
) -> Result<lapin::Queue, AmqpError> {
    let dead_letter = queue_arguments(args, QueueRole::DeadLetter);
    declare_queue(connection, &args.dead_letter_queue, dead_letter).await?;
    let close = queue_arguments(args, QueueRole::Close);
    declare_queue(connection, &args.close_queue, close).await
}

/// Declares a durable exchange of `kind` without arguments, on a throwaway channel since a clash
/// closes it; a clash (another type, or not durable) becomes [`AmqpError::ExchangeMismatch`] naming
/// `setting`. A no-op for an exchange that exists as declared, which is how `check` tests
/// compatibility.
pub(crate) async fn declare_exchange(
    connection: &Connection,
    name: &str,
    kind: ExchangeKind,
    setting: &'static str,
) -> Result<(), AmqpError> {
    let exchange = queue_name(name)?;
    let channel = connection.create_channel().await?;
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(exchange, kind, options, FieldTable::default())
        .await
        .map_err(|error| exchange_error(error, name, setting))?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Whether an exchange exists (a passive declare on a throwaway channel, which a missing exchange
/// closes): [`AmqpError::MissingExchange`] when it does not.
pub(crate) async fn probe_exchange(
    connection: &Connection,
    name: &str,
    setting: &'static str,
) -> Result<(), AmqpError> {
    let exchange = queue_name(name)?;
    let channel = connection.create_channel().await?;
    let options = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|error| exchange_error(error, name, setting))?;
    let _ = channel.close(200, "probed".into()).await;
    Ok(())
}

/// What the broker said about an exchange: NOT_FOUND is a missing exchange, PRECONDITION_FAILED
/// one declared otherwise, anything else a channel or connection that broke.
fn exchange_error(error: lapin::Error, exchange: &str, setting: &'static str) -> AmqpError {
    let lapin::ErrorKind::ProtocolError(said) = error.kind() else {
        return AmqpError::Broker(error);
    };
    match said.kind() {
        AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => AmqpError::MissingExchange {
            exchange: exchange.to_owned(),
        },
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => AmqpError::ExchangeMismatch {
            exchange: exchange.to_owned(),
            detail: said.get_message().to_string(),
            setting,
        },
        _ => AmqpError::Broker(error),
    }
}

/// Sets each `(key, value)` in `table`. Queue arguments and headers are written a few entries at a
/// time; a list of pairs reads as the table it builds, where an `insert` each did not.
pub(crate) fn insert_entries<'a>(
    table: &mut FieldTable,
    entries: impl IntoIterator<Item = (&'a str, AMQPValue)>,
) {
    for (key, value) in entries {
        table.insert(ShortString::from(key), value);
    }
}

/// A table holding `entries`.
pub(crate) fn field_table<'a>(
    entries: impl IntoIterator<Item = (&'a str, AMQPValue)>,
) -> FieldTable {
    let mut table = FieldTable::default();
    insert_entries(&mut table, entries);
    table
}

/// Text as job-closer writes it into arguments and headers: an AMQP long string (what
/// [`header_text`] reads back, along with the short strings other publishers may use).
pub(crate) fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(text.into())
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

/// Broker settings for unit tests: queues `close` and `dead`, a delivery limit of 7.
#[cfg(test)]
pub(crate) fn test_args(queue_type: QueueType, single_active_consumer: bool) -> AmqpArgs {
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

/// Where a queue's arguments dead-letter into (`x-dead-letter-routing-key`), for unit tests.
#[cfg(test)]
pub(crate) fn dead_letter_target(
    arguments: &std::collections::BTreeMap<ShortString, AMQPValue>,
) -> Option<String> {
    arguments
        .get("x-dead-letter-routing-key")
        .and_then(header_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(queue_type: QueueType, single_active_consumer: bool) -> AmqpArgs {
        test_args(queue_type, single_active_consumer)
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
        // A queue from before SINGLE_ACTIVE_CONSUMER defaulted to true, and the other way round:
        // each names the setting that uses the queue as it is, and the migration.
        let older_queue = mismatch_hint(
            "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'q' in vhost '/': received the value 'true' of type 'bool' but current is none",
        );
        assert!(
            older_queue.contains("SINGLE_ACTIVE_CONSUMER=false")
                && older_queue.contains("drain and delete"),
            "{older_queue}"
        );
        let standby_queue = mismatch_hint(
            "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'q' in vhost '/': received none but current is the value 'true' of type 'bool'",
        );
        assert!(
            standby_queue.contains("SINGLE_ACTIVE_CONSUMER=true"),
            "{standby_queue}"
        );
        let durable = mismatch_hint("inequivalent arg 'durable' for queue 'q'");
        assert!(
            durable.contains("'durable'") && durable.contains("another tool"),
            "{durable}"
        );
        assert!(mismatch_hint("something else").contains("QUEUE_TYPE"));
    }

    fn broker_said(kind: AMQPSoftError, message: &str) -> lapin::Error {
        let said = lapin::protocol::AMQPError::new(AMQPErrorKind::Soft(kind), message.into());
        lapin::ErrorKind::ProtocolError(said).into()
    }

    #[test]
    fn broker_errors_are_classified_by_what_comes_next() {
        let missing = AmqpError::from_lapin(
            broker_said(AMQPSoftError::NOTFOUND, "NOT_FOUND - no queue 'dead'"),
            "dead",
        );
        assert!(
            matches!(&missing, AmqpError::MissingQueue { queue, setting: None } if queue == "dead"),
            "{missing:?}"
        );
        assert_eq!(
            missing.to_string(),
            "queue 'dead' does not exist (the worker declares it when it starts)"
        );
        assert_eq!(
            missing.named_by("DEAD_LETTER_QUEUE").to_string(),
            "queue 'dead' does not exist (check DEAD_LETTER_QUEUE; the worker declares it when it starts)"
        );
        let detail = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'close'";
        let mismatch = AmqpError::from_lapin(
            broker_said(AMQPSoftError::PRECONDITIONFAILED, detail),
            "close",
        );
        assert!(
            matches!(&mismatch, AmqpError::QueueMismatch { queue, detail: said } if queue == "close" && said == detail),
            "{mismatch:?}"
        );
        assert!(mismatch.is_permanent());
        let refused = AmqpError::from_lapin(
            broker_said(AMQPSoftError::ACCESSREFUSED, "ACCESS_REFUSED"),
            "close",
        );
        assert!(matches!(refused, AmqpError::Broker(_)), "{refused:?}");
        let gone = AmqpError::from_lapin(
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "queue_declare")
                .into(),
            "close",
        );
        assert!(matches!(gone, AmqpError::Broker(_)), "{gone:?}");
        assert!(!gone.named_by("CLOSE_QUEUE").is_permanent());
        assert_eq!(queue_type_name(QueueType::Quorum), "quorum");
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
        assert_eq!(dead_letter_target(inner).as_deref(), Some("dead"));
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
