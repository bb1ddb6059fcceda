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
use super::walk::{Selection, Walk, Walked};
use super::{DlqError, connect, disconnect, matching};
use crate::config::AmqpArgs;
use clap::Args;
use lapin::Connection;
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
    let open = || match file {
        Some(file) if args.delete => Output::create_archive(file),
        Some(file) => Output::create(file),
        None => Ok(Output::stdout()),
    };
    let exported = export_to(
        &connection,
        &args.amqp,
        selection,
        &shutdown,
        on_terminal,
        open,
        args.delete,
    )
    .await;
    disconnect(connection, "exported").await;
    let Exported {
        written,
        walked,
        target,
    } = exported?;
    let total = walked.total;
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

/// What an export wrote, and where.
pub(crate) struct Exported {
    /// Records written (with `delete`, also removed from the queue).
    pub(crate) written: u64,
    pub(crate) walked: Walked,
    /// The file's path, or "standard output".
    pub(crate) target: String,
}

/// Walks the selection and writes its records to what `open` creates — once the queue is known to
/// exist, so a broker failure leaves no empty file behind; with `delete`, each dead letter goes
/// once its record is on disk. The one export of `dlq export` and of the console's export button.
pub(crate) async fn export_to(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    selection: Selection<'_>,
    shutdown: &CancellationToken,
    without_progress_bar: bool,
    open: impl FnOnce() -> Result<Output, DlqError>,
    delete: bool,
) -> Result<Exported, DlqError> {
    let mut walk = Walk::start(
        connection,
        amqp_args,
        selection,
        shutdown,
        without_progress_bar,
    )
    .await?;
    let written = match open() {
        Ok(mut output) => write_records(&mut walk, &mut output, delete)
            .await
            .map(|written| (written, output.target)),
        Err(error) => Err(error),
    };
    let walked = walk.finish().await?;
    let (written, target) = written?;
    Ok(Exported {
        written,
        walked,
        target,
    })
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
