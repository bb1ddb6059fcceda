//! `dlq import FILE|-`: puts records written by `export` back — into the dead-letter queue with body,
//! properties and headers as they were, or (`--to-close-queue`) into the close queue as `replay`
//! would send them. Each publish is confirmed; filters select records the way they select dead
//! letters.
//!
//! Like `publish`, it reads the whole input before publishing anything, so a bad line (reported with
//! its number) publishes nothing — half an archive restored is worse than none — unless
//! `--skip-invalid`. A file is read twice (check, then publish), so memory stays bounded whatever its
//! size; standard input cannot be read twice and is kept in memory between the passes. Killed
//! mid-way, some records are published and the rest are not: the file is still there, and importing
//! it again doubles only what was published already.

use super::archive::{Restored, restore};
use super::filter::{Candidate, Filter};
use super::{DlqError, connect, disconnect, distinct_queues, ensure_queue, matching};
use crate::amqp::confirm::ConfirmWindow;
use crate::amqp::{self, QueueRole};
use crate::config::AmqpArgs;
use crate::dead_letter::replay_properties;
use crate::publish::progress_bar;
use clap::Args;
use lapin::Connection;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Imported messages awaiting their confirm at most.
const IMPORT_CONFIRM_WINDOW: usize = 1024;

#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Records written by `dlq export`; `-` reads standard input.
    #[arg(value_name = "FILE|-")]
    pub(crate) file: PathBuf,
    /// Replay the records to the close queue (failure headers removed, x-replay-count incremented)
    /// instead of restoring them to the dead-letter queue.
    #[arg(long)]
    pub(crate) to_close_queue: bool,
    /// Publish the valid records and report the bad lines, instead of publishing nothing.
    #[arg(long)]
    pub(crate) skip_invalid: bool,
    #[command(flatten)]
    pub(crate) filter: Filter,
}

/// A numbered line of the input, read back into a dead letter or with why it cannot be.
type NumberedRecord = (usize, Result<Restored, String>);

/// Where the records come from; a file is opened once per pass.
enum Input {
    File(PathBuf),
    Held(Vec<String>),
}

impl Input {
    fn open(path: &Path) -> Result<Input, DlqError> {
        if path.as_os_str() != "-" {
            return Ok(Input::File(path.to_path_buf()));
        }
        let lines = std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DlqError::Usage(format!("cannot read standard input: {e}")))?;
        Ok(Input::Held(lines))
    }

    /// Numbered records (blank lines skipped), each read back or with why it cannot be.
    fn records(&self) -> Result<Box<dyn Iterator<Item = NumberedRecord> + '_>, DlqError> {
        let parse = |(index, line): (usize, std::io::Result<String>)| {
            let record = line.map_err(|e| format!("cannot read: {e}")).and_then(|l| {
                if l.trim().is_empty() {
                    Err(String::new())
                } else {
                    restore(&l)
                }
            });
            (index + 1, record)
        };
        let skip_blank =
            |(_, record): &NumberedRecord| !matches!(record, Err(why) if why.is_empty());
        Ok(match self {
            Input::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| DlqError::Usage(format!("cannot read {}: {e}", path.display())))?;
                Box::new(
                    BufReader::new(file)
                        .lines()
                        .enumerate()
                        .map(parse)
                        .filter(skip_blank),
                )
            }
            Input::Held(lines) => Box::new(
                lines
                    .iter()
                    .map(|l| Ok(l.clone()))
                    .enumerate()
                    .map(parse)
                    .filter(skip_blank),
            ),
        })
    }
}

pub(crate) async fn import(args: ImportArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    if args.to_close_queue {
        distinct_queues(&args.amqp, "import --to-close-queue")?;
    }
    let input = Input::open(&args.file)?;
    let (valid, bad) = check(&input)?;
    if bad > 0 && !args.skip_invalid {
        return Err(DlqError::Usage(format!(
            "{bad} bad line(s); nothing was published (use --skip-invalid to publish the valid records)"
        )));
    }
    let connection = connect(&args.amqp, "import").await?;
    let outcome = publish_records(&connection, &args, &input, valid, &shutdown).await;
    disconnect(connection, "imported").await;
    let (published, interrupted) = outcome?;
    let queue = destination(&args);
    let skipped = if bad > 0 {
        format!(" (skipped {bad} bad line(s))")
    } else {
        String::new()
    };
    if interrupted {
        return Err(DlqError::Interrupted(format!(
            "published {published} record(s) to '{queue}' before stopping"
        )));
    }
    let verb = if args.to_close_queue {
        "Replayed"
    } else {
        "Imported"
    };
    println!(
        "{verb} {published} record(s){} to '{queue}'{skipped}.",
        matching(&args.filter)
    );
    Ok(())
}

fn destination(args: &ImportArgs) -> &str {
    if args.to_close_queue {
        &args.amqp.close_queue
    } else {
        &args.amqp.dead_letter_queue
    }
}

/// The first pass: every line read back; the bad ones reported. Returns (valid, bad) counts.
fn check(input: &Input) -> Result<(u64, u64), DlqError> {
    let (mut valid, mut bad) = (0u64, 0u64);
    for (line, record) in input.records()? {
        match record {
            Ok(_) => valid += 1,
            Err(why) => {
                eprintln!("line {line}: {why}");
                bad += 1;
            }
        }
    }
    Ok((valid, bad))
}

/// The second pass: each valid, selected record published and confirmed. Returns how many, and
/// whether a shutdown stopped it.
async fn publish_records(
    connection: &Connection,
    args: &ImportArgs,
    input: &Input,
    valid: u64,
    shutdown: &CancellationToken,
) -> Result<(u64, bool), DlqError> {
    let role = if args.to_close_queue {
        QueueRole::Close
    } else {
        QueueRole::DeadLetter
    };
    ensure_queue(connection, &args.amqp, role).await?;
    let channel = amqp::confirm_channel(connection).await?;
    let mut window: ConfirmWindow<()> =
        ConfirmWindow::new(destination(args), IMPORT_CONFIRM_WINDOW)?;
    let progress = progress_bar(usize::try_from(valid).unwrap_or(usize::MAX));
    let mut confirmed = 0u64;
    for (_, record) in input.records()? {
        if shutdown.is_cancelled() {
            break;
        }
        let Ok(Restored { body, properties }) = record else {
            continue;
        };
        if !args.filter.matches(Candidate {
            body: &body,
            properties: &properties,
        }) {
            continue;
        }
        if let Some(((), outcome)) = window.make_room().await {
            outcome?;
            confirmed += 1;
            progress.set_position(confirmed);
        }
        let properties = if args.to_close_queue {
            replay_properties(&properties, &[])
        } else {
            properties
        };
        window.publish(&channel, &body, properties, ()).await?;
    }
    while let Some(((), outcome)) = window.oldest().await {
        outcome?;
        confirmed += 1;
    }
    progress.finish_and_clear();
    // Closed before the connection: lapin reports a confirm channel left open then as an error.
    let _ = channel.close(200, "imported".into()).await;
    Ok((confirmed, shutdown.is_cancelled()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_numbered_by_line_and_blank_lines_skipped() {
        let good = r#"{"body":{"externalJobPostingId":"J-1"},"headers":{"x-error-status":403}}"#;
        let input = Input::Held(vec![
            good.to_owned(),
            String::new(),
            "   ".to_owned(),
            "[1]".to_owned(),
            good.to_owned(),
        ]);
        let records: Vec<NumberedRecord> = input.records().unwrap().collect();
        let numbers: Vec<usize> = records.iter().map(|(line, _)| *line).collect();
        assert_eq!(numbers, [1, 4, 5]);
        assert!(records[0].1.is_ok() && records[2].1.is_ok());
        assert!(
            records[1]
                .1
                .as_ref()
                .is_err_and(|why| why.contains("not a record")),
            "{:?}",
            records[1].1
        );
        assert_eq!(check(&input).unwrap(), (2, 1));
        let missing = Input::File("/nonexistent/job-closer/export.jsonl".into());
        assert!(missing.records().is_err_and(|error| error.is_usage()));
    }
}
