//! `dlq export`: the selected dead letters as JSON records (those of `list --json`), to a file or
//! standard output; with `--delete`, an archive: each dead letter is removed once its record is on
//! disk.
//!
//! `--delete` writes records, forces them to disk (fsync), and only then acks their dead letters —
//! in batches of [`SYNC_EVERY`], because an fsync per record would make 100,000 dead letters take
//! minutes instead of seconds. Killed at any moment, every dead letter is in the file (written and
//! synced), in the queue (not acked yet), or both (synced, ack not yet received by the broker);
//! `import` puts such a file back. It needs a real file (standard output cannot be synced) and does
//! not overwrite one that holds anything, which could be the only copy of an earlier archive.

use super::filter::Filter;
use super::output::Output;
use super::record::{describe, json_record};
use super::scan::Held;
use super::walk::{Selection, Walk};
use super::{DlqError, connect, disconnect, matching};
use crate::config::AmqpArgs;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Records written between two fsyncs (and their acks) with `--delete`.
pub(crate) const SYNC_EVERY: usize = 500;

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Where to write; `-` or nothing writes to standard output.
    #[arg(value_name = "FILE|-")]
    pub(crate) file: Option<PathBuf>,
    /// Remove each exported dead letter from the queue once its record is on disk (needs FILE).
    #[arg(long)]
    pub(crate) delete: bool,
    #[command(flatten)]
    pub(crate) filter: Filter,
}

pub(crate) async fn export(args: ExportArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let file = args.file.as_ref().filter(|file| file.as_os_str() != "-");
    if args.delete && file.is_none() {
        return Err(DlqError::Usage(
            "export --delete needs a FILE: standard output cannot be synced to disk before the dead letters are removed".into(),
        ));
    }
    let connection = connect(&args.amqp, "export").await?;
    let selection = Selection::new(&args.filter, None);
    let on_terminal = file.is_none() && std::io::stdout().is_terminal();
    let mut walk = Walk::start(&connection, &args.amqp, selection, &shutdown, on_terminal).await?;
    // Created once the queue is known to exist, so a broker failure leaves no empty file behind.
    let mut output = match file {
        Some(file) if args.delete => Output::create_archive(file)?,
        Some(file) => Output::create(file)?,
        None => Output::stdout(),
    };
    let written = write_records(&mut walk, &mut output, args.delete).await;
    let walked = walk.finish().await?;
    disconnect(connection, "exported").await;
    let written = written?;
    let (target, total) = (&output.target, walked.total);
    let removed = if args.delete {
        format!("removed them from '{queue}'")
    } else {
        "nothing was removed".to_owned()
    };
    walked.completed(|_| {
        format!(
            "exported {written} of {total} to {target}; {removed}, the rest are still in '{queue}'"
        )
    })?;
    eprintln!(
        "Exported {written} dead letter(s){} from '{queue}' to {target}; {removed}.",
        matching(&args.filter)
    );
    Ok(())
}

/// Writes every selected record; with `delete`, syncs and acks them in batches. Returns how many
/// were written (and, with `delete`, removed).
async fn write_records(
    walk: &mut Walk<'_>,
    output: &mut Output,
    delete: bool,
) -> Result<u64, DlqError> {
    let mut unsynced: Vec<Held> = Vec::with_capacity(if delete { SYNC_EVERY } else { 0 });
    let mut written = 0u64;
    while let Some(letter) = walk.next().await? {
        if !output.line(&json_record(&letter, &describe(&letter)))? {
            break;
        }
        written += 1;
        if delete {
            unsynced.push(letter.held);
            if unsynced.len() >= SYNC_EVERY {
                sync_then_ack(walk, output, &mut unsynced).await?;
            }
        }
    }
    if delete {
        sync_then_ack(walk, output, &mut unsynced).await?;
    } else {
        output.flush()?;
    }
    Ok(written)
}

/// The records are on disk: now, and only now, their dead letters may go.
async fn sync_then_ack(
    walk: &mut Walk<'_>,
    output: &mut Output,
    unsynced: &mut Vec<Held>,
) -> Result<(), DlqError> {
    output.sync()?;
    for held in unsynced.drain(..) {
        walk.ack(held).await?;
    }
    Ok(())
}
