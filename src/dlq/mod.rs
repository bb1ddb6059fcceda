//! `job-closer dlq ...`: the operator's tools for the dead-letter queue — see what failed (`list`,
//! `export`), why (`stats`), send it back once the cause is fixed (`replay`), or throw it away
//! (`purge`).
//!
//! Every command walks the queue with [`scan::Walk`], which reads messages in order while holding them
//! and gives back whatever it did not remove, exactly where it was (the module explains why that
//! design). `replay` publishes each message to the close queue and acks its dead letter only after
//! the broker confirmed the copy: an interruption between the two leaves the message in both queues
//! (a duplicate close request), never in neither. Messages a command does
//! not match stay put, in order. Two replays at once cannot move the same message twice, since a
//! held message is invisible to the other walk.
//!
//! Exit codes follow [`crate::cli`]: 0 done; 1 the broker or a queue failed (or the command was
//! interrupted); 2 bad arguments.

pub mod group;
pub mod record;
pub mod scan;
mod table;

use self::group::Stats;
use self::record::{Described, Filter, describe, json_record, replay_properties};
use self::scan::{DEAD_LETTER_SETTING, DeadLetter, Held, ScanError, Walk, ready_count};
use self::table::{Column, Printer, Row, Table, output_width, short_time};
use crate::amqp::{self, AmqpError, QueueRole};
use crate::config::AmqpArgs;
use crate::publish::progress_bar;
use clap::{Args, Subcommand};
use lapin::options::{BasicPublishOptions, QueuePurgeOptions};
use lapin::{Connection, PublisherConfirm};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Replayed messages awaiting their confirm at most: pipelined, but bounded. Well below the walk's
/// window, so that copies awaiting a confirm never fill it and force a new channel.
const REPLAY_CONFIRM_WINDOW: usize = 256;
const CLOSE_SETTING: &str = "CLOSE_QUEUE";

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Show the dead letters without removing or reordering them.
    List(ListArgs),
    /// Group the dead letters by failure (status + folded message), with counts, oldest and newest.
    Stats(StatsArgs),
    /// Move matching dead letters back to the close queue (failure headers removed,
    /// x-replay-count incremented); the others stay where they are.
    Replay(ReplayArgs),
    /// Write every dead letter as a JSON line (the records of `list --json`), removing nothing.
    Export(ExportArgs),
    /// Delete (matching) dead letters; asks first on a terminal.
    Purge(PurgeArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Show at most this many (the first ones in the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// One JSON object per message per line: position, body, headers, properties, group.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: Filter,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// One JSON object per group per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Move at most this many matching dead letters (the first ones in the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub filter: Filter,
    /// Show what would move, and move nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Where to write; `-` or nothing writes to standard output.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub filter: Filter,
    /// Delete without asking (required when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Bad arguments: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("cannot write to {target}: {source}")]
    Output {
        target: String,
        source: std::io::Error,
    },
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl From<AmqpError> for DlqError {
    fn from(error: AmqpError) -> Self {
        DlqError::Scan(ScanError::Amqp(error))
    }
}

impl From<lapin::Error> for DlqError {
    fn from(error: lapin::Error) -> Self {
        DlqError::Scan(error.into())
    }
}

impl DlqError {
    pub fn is_usage(&self) -> bool {
        matches!(self, DlqError::Usage(_))
    }
}

pub async fn execute(args: DlqArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    match args.command {
        DlqCommand::List(args) => list(args, shutdown).await,
        DlqCommand::Stats(args) => stats(args, shutdown).await,
        DlqCommand::Replay(args) => replay(args, shutdown).await,
        DlqCommand::Export(args) => export(args, shutdown).await,
        DlqCommand::Purge(args) => purge(args, shutdown).await,
    }
}

async fn connect(amqp: &AmqpArgs, command: &str) -> Result<Connection, DlqError> {
    Ok(amqp::connect(amqp, &format!("job-closer dlq {command}")).await?)
}

/// Where records and rows go. A reader that went away (`| head`) ends the walk quietly: what it
/// did not read stays in the queue anyway.
struct Output {
    writer: Box<dyn Write>,
    target: String,
    reader_gone: bool,
}

impl Output {
    fn stdout() -> Output {
        Output {
            writer: Box::new(std::io::BufWriter::new(std::io::stdout())),
            target: "standard output".into(),
            reader_gone: false,
        }
    }

    fn file(path: &std::path::Path) -> Result<Output, DlqError> {
        let file = std::fs::File::create(path).map_err(|source| {
            DlqError::Usage(format!("cannot create {}: {source}", path.display()))
        })?;
        Ok(Output {
            writer: Box::new(std::io::BufWriter::new(file)),
            target: path.display().to_string(),
            reader_gone: false,
        })
    }

    /// Writes one line; `false` when nobody reads any more.
    fn line(&mut self, text: &str) -> Result<bool, DlqError> {
        match writeln!(self.writer, "{text}") {
            Ok(()) => Ok(true),
            Err(error) => self.failed(error),
        }
    }

    /// Writes several lines; `false` when nobody reads any more.
    fn lines(&mut self, lines: &[String]) -> Result<bool, DlqError> {
        for line in lines {
            if !self.line(line)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<bool, DlqError> {
        match self.writer.flush() {
            Ok(()) => Ok(!self.reader_gone),
            Err(error) => self.failed(error),
        }
    }

    fn failed(&mut self, source: std::io::Error) -> Result<bool, DlqError> {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            self.reader_gone = true;
            return Ok(false);
        }
        Err(DlqError::Output {
            target: self.target.clone(),
            source,
        })
    }
}

/// The `list` table: position, externalJobPostingId, status, reason, attempts, when, message.
fn list_printer() -> Printer {
    Printer::new(
        vec![
            Column::new("POS", 7, 3).right(),
            Column::new("EXTERNAL ID", 24, 12),
            Column::new("STATUS", 6, 6).right(),
            Column::new("REASON", 21, 10),
            Column::new("ATTEMPTS", 8, 8).right(),
            Column::new("WHEN (UTC)", 19, 19),
        ],
        "MESSAGE",
        output_width(),
    )
}

fn list_row(letter: &DeadLetter, described: &Described) -> Row {
    let dash = || "-".to_owned();
    let recorded = &described.recorded;
    (
        vec![
            letter.position.to_string(),
            described.external_id.clone().unwrap_or_else(dash),
            recorded.status.map_or_else(dash, |s| s.to_string()),
            recorded.reason.clone().unwrap_or_else(dash),
            recorded.attempts.map_or_else(dash, |a| a.to_string()),
            described
                .dead_lettered_at
                .as_deref()
                .map_or_else(dash, short_time),
        ],
        row_message(letter, described),
    )
}

/// The error message; for messages that carry none, what is known instead, and the start of a body
/// that has no `externalJobPostingId` to recognise it by.
fn row_message(letter: &DeadLetter, described: &Described) -> String {
    if let Some(message) = &described.recorded.message {
        return message.clone();
    }
    let stand_in = &described.group.message;
    if described.external_id.is_some() {
        return stand_in.clone();
    }
    let body = String::from_utf8_lossy(&letter.body);
    let preview: String = body.chars().take(200).collect();
    format!("{stand_in} body: {preview}")
}

/// A progress bar for walks whose output does not go to the terminal the bar would draw on.
fn walk_progress(cap: u64, output_on_terminal: bool) -> indicatif::ProgressBar {
    if output_on_terminal {
        indicatif::ProgressBar::hidden()
    } else {
        progress_bar(usize::try_from(cap).unwrap_or(usize::MAX))
    }
}

async fn list(args: ListArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let connection = connect(&args.amqp, "list").await?;
    // Without a filter the first N messages are the N to show: fetch no more than that.
    let fetch_limit = if args.filter.is_empty() {
        args.limit
    } else {
        None
    };
    let mut walk = Walk::dead_letters(&connection, &args.amqp, fetch_limit).await?;
    let total = walk.total();
    let mut printer = (!args.json).then(list_printer);
    let mut output = Output::stdout();
    let progress = walk_progress(walk.cap(), std::io::stdout().is_terminal());
    let mut shown = 0u64;
    while let Some(letter) = walk.next().await? {
        progress.inc(1);
        if shutdown.is_cancelled() {
            break;
        }
        if !args.filter.matches(&letter) {
            continue;
        }
        let described = describe(&letter);
        let lines = match &mut printer {
            Some(printer) => printer.push(list_row(&letter, &described)),
            None => vec![json_record(&letter, &described)],
        };
        if !output.lines(&lines)? {
            break;
        }
        shown += 1;
        if args.limit.is_some_and(|limit| shown >= limit) {
            break;
        }
    }
    progress.finish_and_clear();
    if let Some(printer) = &mut printer {
        output.lines(&printer.finish())?;
    }
    output.flush()?;
    walk.finish().await?;
    let _ = connection.close(200, "listed".into()).await;
    if shutdown.is_cancelled() {
        return Err(DlqError::Interrupted(format!(
            "listed {shown} of {total}; '{queue}' is unchanged"
        )));
    }
    let matching = if args.filter.is_empty() {
        String::new()
    } else {
        format!(" matching {}", args.filter.summary())
    };
    eprintln!(
        "Listed {shown} dead letter(s){matching} of {total} in '{queue}'; nothing was removed or reordered."
    );
    Ok(())
}

/// A line of `stats --json`, fields in this order.
#[derive(Serialize)]
struct GroupRecord<'a> {
    group: &'a str,
    count: u64,
    status: Option<i64>,
    reasons: &'a std::collections::BTreeSet<String>,
    message: &'a str,
    oldest: Option<&'a str>,
    newest: Option<&'a str>,
}

async fn stats(args: StatsArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let connection = connect(&args.amqp, "stats").await?;
    let mut walk = Walk::dead_letters(&connection, &args.amqp, None).await?;
    let progress = walk_progress(walk.cap(), false);
    let mut stats = Stats::default();
    while let Some(letter) = walk.next().await? {
        progress.inc(1);
        if shutdown.is_cancelled() {
            break;
        }
        let described = describe(&letter);
        stats.add(
            described.group,
            described.recorded.reason.as_deref(),
            described.dead_lettered_at.as_deref(),
            letter.position,
        );
    }
    progress.finish_and_clear();
    walk.finish().await?;
    let _ = connection.close(200, "counted".into()).await;
    if shutdown.is_cancelled() {
        return Err(DlqError::Interrupted(format!(
            "counted {} dead letter(s); '{queue}' is unchanged",
            stats.total()
        )));
    }
    let total = stats.total();
    let groups = stats.into_groups();
    let mut output = Output::stdout();
    if args.json {
        for group in &groups {
            let record = GroupRecord {
                group: &group.id,
                count: group.count,
                status: group.key.status,
                reasons: &group.reasons,
                message: &group.key.message,
                oldest: group.oldest.as_deref(),
                newest: group.newest.as_deref(),
            };
            if !output.line(&serde_json::to_string(&record).unwrap_or_default())? {
                break;
            }
        }
    } else {
        let dash = || "-".to_owned();
        let rows: Vec<Row> = groups
            .iter()
            .map(|group| {
                let reasons = group.reasons.iter().cloned().collect::<Vec<_>>().join(",");
                (
                    vec![
                        group.id.clone(),
                        group.count.to_string(),
                        group.key.status.map_or_else(dash, |s| s.to_string()),
                        if reasons.is_empty() { dash() } else { reasons },
                        group.oldest.as_deref().map_or_else(dash, short_time),
                        group.newest.as_deref().map_or_else(dash, short_time),
                    ],
                    group.key.message.clone(),
                )
            })
            .collect();
        let table = Table::new(
            vec![
                Column::new("GROUP", 8, 8),
                Column::new("COUNT", 12, 5).right(),
                Column::new("STATUS", 6, 6).right(),
                Column::new("REASON", 30, 10),
                Column::new("OLDEST (UTC)", 19, 19),
                Column::new("NEWEST (UTC)", 19, 19),
            ],
            "MESSAGE (variable parts folded)",
            &rows,
            output_width(),
        );
        let mut lines = vec![table.header()];
        lines.extend(
            rows.iter()
                .map(|(cells, message)| table.row(cells, message)),
        );
        output.lines(&lines)?;
    }
    output.flush()?;
    eprintln!(
        "{total} dead letter(s) in {} group(s) in '{queue}'. Replay a group with: job-closer dlq replay --group GROUP",
        groups.len()
    );
    Ok(())
}

async fn export(args: ExportArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let to_stdout = args
        .file
        .as_ref()
        .is_none_or(|file| file.as_os_str() == "-");
    let connection = connect(&args.amqp, "export").await?;
    let mut walk = Walk::dead_letters(&connection, &args.amqp, None).await?;
    // Created once the queue is known to exist, so a broker failure leaves no empty file behind.
    let mut output = match &args.file {
        Some(file) if !to_stdout => Output::file(file)?,
        _ => Output::stdout(),
    };
    let total = walk.total();
    let progress = walk_progress(walk.cap(), to_stdout && std::io::stdout().is_terminal());
    let mut exported = 0u64;
    while let Some(letter) = walk.next().await? {
        progress.inc(1);
        if shutdown.is_cancelled() {
            break;
        }
        let record = json_record(&letter, &describe(&letter));
        if !output.line(&record)? {
            break;
        }
        exported += 1;
    }
    progress.finish_and_clear();
    output.flush()?;
    walk.finish().await?;
    let _ = connection.close(200, "exported".into()).await;
    if shutdown.is_cancelled() {
        return Err(DlqError::Interrupted(format!(
            "exported {exported} of {total} to {}; '{queue}' is unchanged",
            output.target
        )));
    }
    eprintln!(
        "Exported {exported} dead letter(s) from '{queue}' to {}; nothing was removed.",
        output.target
    );
    Ok(())
}

/// The close queue must exist to replay into it: use it as it is, or declare it the way `run` does.
async fn ensure_close_queue(connection: &Connection, amqp_args: &AmqpArgs) -> Result<(), DlqError> {
    match ready_count(connection, &amqp_args.close_queue, CLOSE_SETTING).await {
        Ok(_) => Ok(()),
        Err(ScanError::MissingQueue { .. }) => {
            info!(queue = %amqp_args.close_queue, "Declaring the close queue.");
            let channel = connection.create_channel().await?;
            amqp::declare_queue(
                &channel,
                &amqp_args.close_queue,
                amqp::queue_arguments(amqp_args, QueueRole::Close),
            )
            .await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// A replayed copy awaiting its confirm, and the dead letter to ack once it comes.
struct InFlight {
    confirm: PublisherConfirm,
    held: Held,
}

/// What a replay did so far.
#[derive(Default)]
struct ReplayProgress {
    moved: u64,
    /// The first publish the broker did not take; nothing is published after it.
    failure: Option<DlqError>,
}

impl ReplayProgress {
    /// Awaits one confirm; acks the dead letter only if the copy is the broker's now.
    async fn settle(&mut self, in_flight: InFlight, walk: &mut Walk<'_>, close_queue: &str) {
        let confirmed = match in_flight.confirm.await {
            Ok(confirmation) => amqp::check_confirmation(close_queue, confirmation),
            Err(error) => Err(AmqpError::Broker(error)),
        };
        let acked = match confirmed {
            Ok(()) => walk.ack(in_flight.held).await.map_err(DlqError::from),
            Err(error) => Err(error.into()),
        };
        match acked {
            Ok(()) => self.moved += 1,
            // The dead letter stays (not acked): the walk gives it back.
            Err(error) => {
                if self.failure.is_none() {
                    warn!(%error, "A replayed message was not confirmed; stopping.");
                    self.failure = Some(error);
                }
            }
        }
    }
}

async fn replay(args: ReplayArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let dead_queue = &args.amqp.dead_letter_queue;
    let close_queue = &args.amqp.close_queue;
    if dead_queue == close_queue {
        return Err(DlqError::Usage(format!(
            "CLOSE_QUEUE and DEAD_LETTER_QUEUE are both '{close_queue}': replay would send the dead letters back to where they are"
        )));
    }
    let connection = connect(&args.amqp, "replay").await?;
    let fetch_limit = if args.filter.is_empty() {
        args.limit
    } else {
        None
    };
    let mut walk = Walk::dead_letters(&connection, &args.amqp, fetch_limit).await?;
    let total = walk.total();
    let publisher = if args.dry_run {
        None
    } else {
        ensure_close_queue(&connection, &args.amqp).await?;
        Some(amqp::confirm_channel(&connection).await?)
    };
    let close_name = amqp::queue_name(close_queue)?;
    let mut printer = args.dry_run.then(list_printer);
    let mut output = Output::stdout();
    let progress = walk_progress(walk.cap(), args.dry_run && std::io::stdout().is_terminal());
    let mut matched = 0u64;
    let mut pending: VecDeque<InFlight> = VecDeque::with_capacity(REPLAY_CONFIRM_WINDOW);
    let mut done = ReplayProgress::default();
    while done.failure.is_none() && !shutdown.is_cancelled() {
        let Some(letter) = walk.next().await? else {
            break;
        };
        progress.inc(1);
        if !args.filter.matches(&letter) {
            continue;
        }
        matched += 1;
        match (&publisher, &mut printer) {
            (Some(publisher), _) => {
                if pending.len() == REPLAY_CONFIRM_WINDOW {
                    let oldest = pending.pop_front().expect("the window is full");
                    done.settle(oldest, &mut walk, close_queue).await;
                }
                let confirm = publisher
                    .basic_publish(
                        "".into(),
                        close_name.clone(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &letter.body,
                        replay_properties(&letter.properties),
                    )
                    .await;
                match confirm {
                    Ok(confirm) => pending.push_back(InFlight {
                        confirm,
                        held: letter.held,
                    }),
                    Err(error) => done.failure = Some(error.into()),
                }
            }
            (None, Some(printer)) => {
                if !output.lines(&printer.push(list_row(&letter, &describe(&letter))))? {
                    break;
                }
            }
            (None, None) => unreachable!("a dry run has a printer"),
        }
        if args.limit.is_some_and(|limit| matched >= limit) {
            break;
        }
    }
    // Every confirmed copy gets its dead letter acked before the walk gives the rest back.
    while let Some(in_flight) = pending.pop_front() {
        done.settle(in_flight, &mut walk, close_queue).await;
    }
    progress.finish_and_clear();
    if let Some(printer) = &mut printer {
        output.lines(&printer.finish())?;
    }
    output.flush()?;
    walk.finish().await?;
    let moved = done.moved;
    if args.dry_run {
        let _ = connection.close(200, "replayed".into()).await;
        println!(
            "Dry run: would move {matched} dead letter(s) to '{close_queue}' and leave {} in '{dead_queue}'; nothing was moved.",
            total.saturating_sub(matched)
        );
        return Ok(());
    }
    // What is there now, not `total - moved`: with two replays at once, each moved only part.
    let left = match ready_count(&connection, dead_queue, DEAD_LETTER_SETTING).await {
        Ok(ready) => u64::from(ready),
        Err(_) => total.saturating_sub(moved),
    };
    let _ = connection.close(200, "replayed".into()).await;
    println!("Moved {moved} dead letter(s) to '{close_queue}'; left {left} in '{dead_queue}'.");
    info!(moved, left, "Replay finished.");
    if let Some(failure) = done.failure {
        return Err(failure);
    }
    if shutdown.is_cancelled() {
        return Err(DlqError::Interrupted(format!(
            "moved {moved} before stopping; the rest are still in '{dead_queue}'"
        )));
    }
    Ok(())
}

async fn purge(args: PurgeArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
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
    if !args.yes {
        let count = if args.filter.is_empty() {
            u64::from(ready_count(&connection, queue, DEAD_LETTER_SETTING).await?)
        } else {
            count_matching(&connection, &args.amqp, &args.filter, &shutdown).await?
        };
        if count == 0 {
            println!("No dead letters{scope} in '{queue}'; nothing to delete.");
            return Ok(());
        }
        if !confirm(format!(
            "Delete {count} dead letters{scope} from {queue}? [y/N] "
        ))
        .await?
        {
            println!("Nothing deleted.");
            return Ok(());
        }
    }
    if args.filter.is_empty() {
        ready_count(&connection, queue, DEAD_LETTER_SETTING).await?;
        let channel = connection.create_channel().await?;
        let purged = channel
            .queue_purge(amqp::queue_name(queue)?, QueuePurgeOptions::default())
            .await?;
        let _ = connection.close(200, "purged".into()).await;
        println!("Deleted {purged} dead letter(s) from '{queue}'.");
        return Ok(());
    }
    let mut walk = Walk::dead_letters(&connection, &args.amqp, None).await?;
    let total = walk.total();
    let progress = walk_progress(walk.cap(), false);
    let mut deleted = 0u64;
    while let Some(letter) = walk.next().await? {
        progress.inc(1);
        if shutdown.is_cancelled() {
            break;
        }
        if args.filter.matches(&letter) {
            walk.ack(letter.held).await?;
            deleted += 1;
        }
    }
    progress.finish_and_clear();
    walk.finish().await?;
    let _ = connection.close(200, "purged".into()).await;
    let left = total.saturating_sub(deleted);
    println!("Deleted {deleted} dead letter(s){scope} from '{queue}'; left {left}.");
    if shutdown.is_cancelled() {
        return Err(DlqError::Interrupted(format!(
            "deleted {deleted} before stopping"
        )));
    }
    Ok(())
}

async fn count_matching(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    filter: &Filter,
    shutdown: &CancellationToken,
) -> Result<u64, DlqError> {
    let mut walk = Walk::dead_letters(connection, amqp_args, None).await?;
    let mut count = 0u64;
    while let Some(letter) = walk.next().await? {
        if shutdown.is_cancelled() {
            walk.finish().await?;
            return Err(DlqError::Interrupted("nothing was deleted".into()));
        }
        if filter.matches(&letter) {
            count += 1;
        }
    }
    walk.finish().await?;
    Ok(count)
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
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
