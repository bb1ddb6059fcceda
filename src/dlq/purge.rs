//! `dlq purge`: deletes the selected dead letters (all of them without filters, in one broker call),
//! after asking on a terminal; anywhere else it refuses without `--yes`. `--older-than AGE` is
//! `--until AGE`: "purge what is older than 30 days" is `purge --older-than 30d --yes`.

use super::filter::{Filter, parse_time_arg};
use super::scan::{DEAD_LETTER_SETTING, ready_count};
use super::walk::{Selection, Walk, Walked};
use super::{DlqError, connect, disconnect};
use crate::amqp;
use crate::config::AmqpArgs;
use clap::Args;
use lapin::Connection;
use lapin::options::QueuePurgeOptions;
use std::io::{IsTerminal, Write};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    #[command(flatten)]
    pub(crate) filter: Filter,
    /// Only dead letters older than AGE (30d, 12h) or dead-lettered before an RFC 3339 time: the same
    /// as --until.
    #[arg(long, value_name = "AGE", value_parser = parse_time_arg, conflicts_with = "until")]
    pub(crate) older_than: Option<OffsetDateTime>,
    /// Delete without asking (required when standard input is not a terminal).
    #[arg(long)]
    pub(crate) yes: bool,
}

pub(crate) async fn purge(
    mut args: PurgeArgs,
    shutdown: CancellationToken,
) -> Result<(), DlqError> {
    if args.older_than.is_some() {
        args.filter.until = args.older_than;
    }
    let queue = &args.amqp.dead_letter_queue;
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(DlqError::Usage(format!(
            "refusing to purge '{queue}' without --yes: standard input is not a terminal, so nobody can confirm"
        )));
    }
    let connection = connect(&args.amqp, "purge").await?;
    let scope = if args.filter.is_empty() {
        String::new()
    } else {
        format!(" ({})", args.filter.summary())
    };
    if !args.yes && !asked_and_agreed(&connection, &args, &scope, &shutdown).await? {
        disconnect(connection, "nothing purged").await;
        return Ok(());
    }
    if args.filter.is_empty() {
        ready_count(&connection, queue, DEAD_LETTER_SETTING).await?;
        let channel = connection.create_channel().await?;
        let purged = channel
            .queue_purge(amqp::queue_name(queue)?, QueuePurgeOptions::default())
            .await?;
        disconnect(connection, "purged").await;
        println!("Deleted {purged} dead letter(s) from '{queue}'.");
        return Ok(());
    }
    let selection = Selection::new(&args.filter, None);
    let walked = delete_selected(&connection, &args.amqp, selection, &shutdown, false).await;
    disconnect(connection, "purged").await;
    let walked = walked?;
    let deleted = walked.selected;
    let left = walked.total.saturating_sub(deleted);
    println!("Deleted {deleted} dead letter(s){scope} from '{queue}'; left {left}.");
    walked.completed(|_| format!("deleted {deleted} before stopping"))?;
    Ok(())
}

/// Deletes the selected dead letters one by one (the others stay, in order); how the walk ended,
/// `selected` being how many went. The filtered `dlq purge` and the console's purge button.
pub(crate) async fn delete_selected(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    selection: Selection<'_>,
    shutdown: &CancellationToken,
    without_progress_bar: bool,
) -> Result<Walked, DlqError> {
    let mut walk = Walk::start(
        connection,
        amqp_args,
        selection,
        shutdown,
        without_progress_bar,
    )
    .await?;
    let mut deleted = Ok(());
    while let Some(letter) = walk.next().await? {
        if let Err(error) = walk.ack(letter.held).await {
            deleted = Err(error);
            break;
        }
    }
    let walked = walk.finish().await?;
    deleted?;
    Ok(walked)
}

/// Counts what would go and asks on the terminal; `false` when there is nothing or the answer is no.
async fn asked_and_agreed(
    connection: &Connection,
    args: &PurgeArgs,
    scope: &str,
    shutdown: &CancellationToken,
) -> Result<bool, DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let count = if args.filter.is_empty() {
        u64::from(ready_count(connection, queue, DEAD_LETTER_SETTING).await?)
    } else {
        let selection = Selection::new(&args.filter, None);
        let mut walk = Walk::start(connection, &args.amqp, selection, shutdown, false).await?;
        while walk.next().await?.is_some() {}
        let walked = walk.finish().await?;
        walked.completed(|_| "nothing was deleted".into())?.selected
    };
    if count == 0 {
        println!("No dead letters{scope} in '{queue}'; nothing to delete.");
        return Ok(false);
    }
    if !confirm(format!(
        "Delete {count} dead letters{scope} from {queue}? [y/N] "
    ))
    .await?
    {
        println!("Nothing deleted.");
        return Ok(false);
    }
    Ok(true)
}

/// Asks on the terminal; anything but y/yes is a no.
async fn confirm(question: String) -> Result<bool, DlqError> {
    let answer = tokio::task::spawn_blocking(move || {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map(|_| answer)
    })
    .await
    .map_err(|error| DlqError::Usage(format!("cannot read the answer: {error}")))?
    .map_err(|error| DlqError::Usage(format!("cannot read the answer: {error}")))?;
    Ok(agrees(&answer))
}

/// Whether an answer to the prompt is a yes: `y` or `yes`, in any case; anything else is a no.
fn agrees(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::agrees;

    #[test]
    fn only_y_or_yes_agrees() {
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(agrees(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yeah", "y y", "ja"] {
            assert!(!agrees(no), "{no:?}");
        }
    }
}
