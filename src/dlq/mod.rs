//! `job-closer dlq ...`: the operator's tools for the dead-letter queue — see what failed (`list`),
//! why (`stats`), send it back once the cause is fixed, edited if need be (`replay`), archive it and
//! put it back (`export`, `import`), or throw it away (`purge`).
//!
//! One command per file; each drives the one [`walk::Walk`] (filters, limit, progress, shutdown) over
//! the [`scan::Scan`], which reads messages in order while holding them and gives back whatever a
//! command did not remove, exactly where it was (the scan explains why that design). Whatever moves
//! a dead letter somewhere else acks it only once the other place has it: `replay` and `import` after
//! the broker confirmed the copy ([`crate::amqp::confirm`]), `export --delete` after the record is
//! on disk. An interruption between the two leaves the message in both places (a duplicate), never in
//! neither. Messages a command does not select stay put, in order. Two commands at once cannot take
//! the same message twice, since a held message is invisible to the other walk.
//!
//! Exit codes are the command line's (`cli.rs`): 0 done; 1 the broker or a queue failed (or the
//! command was interrupted); 2 bad arguments or bad input (an edit that would make a dead letter
//! invalid, a bad line in an import).

pub(crate) mod amqp_json;
pub(crate) mod archive;
pub(crate) mod edit;
pub(crate) mod export;
pub(crate) mod filter;
pub(crate) mod group;
mod import;
pub(crate) mod list;
pub(crate) mod output;
pub(crate) mod purge;
pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod scan;
pub(crate) mod stats;
pub(crate) mod table;
pub(crate) mod walk;

use self::scan::ready_count;
use crate::amqp::{self, AmqpError, QueueRole};
use crate::config::AmqpArgs;
use clap::Subcommand;
use lapin::Connection;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(crate) use self::export::ExportArgs;
pub(crate) use self::import::ImportArgs;
pub(crate) use self::list::ListArgs;
pub(crate) use self::purge::PurgeArgs;
pub(crate) use self::replay::ReplayArgs;
pub(crate) use self::stats::StatsArgs;

/// Each command's settings are boxed: with the broker settings and the filters, they are large.
#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// Show the dead letters without removing or reordering them.
    List(Box<ListArgs>),
    /// Group the dead letters by failure (status + folded message), with counts, oldest and newest.
    Stats(Box<StatsArgs>),
    /// Move matching dead letters back to the close queue (failure headers removed,
    /// x-replay-count incremented), optionally with their body edited; the others stay where they are.
    Replay(Box<ReplayArgs>),
    /// Write the dead letters as JSON lines (the records of `list --json`); with --delete, remove
    /// each once it is on disk.
    Export(Box<ExportArgs>),
    /// Publish records written by `export` back to the dead-letter queue (or, with
    /// --to-close-queue, replay them).
    Import(Box<ImportArgs>),
    /// Delete (matching) dead letters; asks first on a terminal.
    Purge(Box<PurgeArgs>),
}

/// How a `dlq` command failed, by what the operator does next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DlqError {
    /// Bad arguments or input: fix the command line or the file (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The broker or a queue failed; [`AmqpError`] says whether to retry or reconcile (exit 1).
    #[error(transparent)]
    Broker(#[from] AmqpError),
    /// The records could not be written: free the disk or choose another file (exit 1).
    #[error("cannot write to {target}: {source}")]
    Output {
        target: String,
        source: std::io::Error,
    },
    /// SIGTERM/SIGINT stopped the command; the message says what was done (exit 1).
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl From<lapin::Error> for DlqError {
    fn from(error: lapin::Error) -> Self {
        DlqError::Broker(error.into())
    }
}

impl DlqError {
    pub(crate) fn is_usage(&self) -> bool {
        matches!(self, DlqError::Usage(_))
    }
}

pub(crate) async fn execute(
    command: DlqCommand,
    shutdown: CancellationToken,
) -> Result<(), DlqError> {
    match command {
        DlqCommand::List(args) => list::list(*args, shutdown).await,
        DlqCommand::Stats(args) => stats::stats(*args, shutdown).await,
        DlqCommand::Replay(args) => replay::replay(*args, shutdown).await,
        DlqCommand::Export(args) => export::export(*args, shutdown).await,
        DlqCommand::Import(args) => import::import(*args, shutdown).await,
        DlqCommand::Purge(args) => purge::purge(*args, shutdown).await,
    }
}

async fn connect(amqp: &AmqpArgs, command: &str) -> Result<Connection, DlqError> {
    Ok(amqp::connect(amqp, &format!("job-closer dlq {command}")).await?)
}

/// Closes the connection; a failure to say goodbye changes nothing that was done.
async fn disconnect(connection: Connection, why: &str) {
    let _ = connection.close(200, why.into()).await;
}

/// ", matching status 403" for summaries; nothing without filters.
fn matching(filter: &filter::Filter) -> String {
    if filter.is_empty() {
        String::new()
    } else {
        format!(" matching {}", filter.summary())
    }
}

/// A queue must exist to publish into it: use it as it is, or declare it the way `run` does.
async fn ensure_queue(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    role: QueueRole,
) -> Result<(), DlqError> {
    let (queue, setting) = match role {
        QueueRole::Close => (&amqp_args.close_queue, "CLOSE_QUEUE"),
        QueueRole::DeadLetter => (&amqp_args.dead_letter_queue, scan::DEAD_LETTER_SETTING),
    };
    match ready_count(connection, queue, setting).await {
        Ok(_) => Ok(()),
        Err(AmqpError::MissingQueue { .. }) => {
            info!(%queue, "Declaring the queue.");
            amqp::declare_queue(connection, queue, amqp::queue_arguments(amqp_args, role)).await?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Refuses to replay into the queue being read.
fn distinct_queues(amqp_args: &AmqpArgs, command: &str) -> Result<(), DlqError> {
    if amqp_args.dead_letter_queue == amqp_args.close_queue {
        return Err(DlqError::Usage(format!(
            "CLOSE_QUEUE and DEAD_LETTER_QUEUE are both '{}': {command} would send the dead letters back to where they are",
            amqp_args.close_queue
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueType;

    #[test]
    fn summaries_name_the_filters_and_a_replay_needs_two_queues() {
        assert_eq!(matching(&filter::Filter::default()), "");
        let by_status = filter::Filter {
            status: Some(403),
            ..filter::Filter::default()
        };
        assert_eq!(matching(&by_status), " matching status 403");
        let mut args = amqp::test_args(QueueType::Classic, false);
        assert!(distinct_queues(&args, "replay").is_ok());
        args.dead_letter_queue = args.close_queue.clone();
        let refused = distinct_queues(&args, "replay").unwrap_err();
        assert!(refused.is_usage(), "{refused:?}");
        assert!(refused.to_string().contains("both 'close'"), "{refused}");
        let broker = DlqError::from(AmqpError::BadQueueName("q".into()));
        assert!(!broker.is_usage() && !DlqError::Interrupted("x".into()).is_usage());
    }
}
