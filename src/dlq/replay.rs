//! `dlq replay`: moves the selected dead letters back to the close queue — failure headers removed,
//! `x-replay-count` incremented, the body edited when asked (`--set`, `--unset`; see [`super::edit`])
//! — acking each dead letter only after the broker confirmed its copy.
//!
//! # Edited replays check everything first
//! Every edited body goes through the worker's own validator ([`close_request::validate`]) before
//! anything moves: a first walk edits and checks each selected dead letter, gives them all back, and
//! if any would be invalid it prints each (position and reason) and stops, exit 2. Only then does a
//! second walk move them, reading no further into the queue than the first one did, so what arrived
//! in between is neither moved nor unchecked. Rejected: checking while moving (half a group would be
//! replayed before the first invalid one showed up) and holding every edited body in memory between
//! the passes (100,000 of them). Should a dead letter change between the passes (a concurrent purge
//! and a new arrival taking its place), the second walk checks again and leaves an invalid one where
//! it is, exit 2.
//!
//! # A dry run, then the real one: the same dead letters
//! Two guards keep a real replay to what its dry run showed. A replay only ever walks the messages
//! that were in the queue when it started (the scan's cap), so nothing arriving during it is moved.
//! And the dry run ends by printing the newest `x-dead-lettered-at` among what it selected, as an
//! `--until` to add: dead letters arriving after the dry run are newer (the worker stamps them to the
//! millisecond), so the real run with that bound selects what the dry run showed and nothing that
//! arrived in between. Rejected: a selection fingerprint the real run must match (it would have to
//! read everything once more before moving, or refuse after half), and a queue position (positions
//! shift as soon as anything ahead is removed).

use super::edit::{Change, Edit, FieldEdit, parse_set, parse_unset};
use super::filter::Filter;
use super::list::{list_printer, list_row};
use super::output::Output;
use super::record::{Described, describe};
use super::scan::{DEAD_LETTER_SETTING, DeadLetter, Held, ready_count};
use super::walk::{Selection, Walk, Walked};
use super::{DlqError, connect, disconnect, distinct_queues, ensure_queue};
use crate::amqp::confirm::{ConfirmWindow, Settled};
use crate::amqp::{self, QueueRole};
use crate::close_request;
use crate::config::AmqpArgs;
use crate::dead_letter::replay_properties;
use clap::Args;
use lapin::Connection;
use std::borrow::Cow;
use std::io::IsTerminal;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Replayed messages awaiting their confirm at most: pipelined, but bounded. Well below the walk's
/// window, so that copies awaiting a confirm never fill it and force a new channel.
pub(crate) const REPLAY_CONFIRM_WINDOW: usize = 256;

#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Move at most this many matching dead letters (the first ones in the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
    #[command(flatten)]
    pub(crate) filter: Filter,
    /// Show what would move (and, with --set/--unset, each change), and move nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Set a top-level body field on the way back (repeatable); VALUE is read as JSON when it parses
    /// as JSON, else as a string: --set title="Night Nurse" --set listedAt=1700000000000.
    #[arg(long = "set", value_name = "FIELD=VALUE", value_parser = parse_set)]
    pub(crate) set: Vec<FieldEdit>,
    /// Remove a top-level body field on the way back (repeatable).
    #[arg(long = "unset", value_name = "FIELD", value_parser = parse_unset)]
    pub(crate) unset: Vec<FieldEdit>,
}

pub(crate) async fn replay(args: ReplayArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    distinct_queues(&args.amqp, "replay")?;
    let edit = Edit::new(args.set.clone(), args.unset.clone()).map_err(DlqError::Usage)?;
    let connection = connect(&args.amqp, "replay").await?;
    let outcome = if args.dry_run {
        dry_run(&connection, &args, &edit, &shutdown).await
    } else if edit.is_empty() {
        move_selected(&connection, &args, &edit, None, &shutdown).await
    } else {
        match check_edits(&connection, &args, &edit, &shutdown).await {
            Ok(within) => move_selected(&connection, &args, &edit, Some(within), &shutdown).await,
            Err(error) => Err(error),
        }
    };
    disconnect(connection, "replayed").await;
    outcome
}

/// The body a dead letter goes back with: as it is, or edited and accepted by the worker's validator.
fn prepare<'l>(
    letter: &'l DeadLetter,
    edit: &Edit,
) -> Result<(Cow<'l, [u8]>, Vec<Change>), String> {
    if edit.is_empty() {
        return Ok((Cow::Borrowed(&letter.body), Vec::new()));
    }
    let edited = edit.apply(&letter.body)?;
    close_request::validate(&edited.body).map_err(|invalid| invalid.to_string())?;
    Ok((Cow::Owned(edited.body), edited.changes))
}

/// `position 3 (JOB-301): ERROR :: /title :: ...`
fn invalid_line(letter: &DeadLetter, why: &str) -> String {
    let id = describe(letter).external_id.unwrap_or_else(|| "-".into());
    format!("position {} ({id}): {}", letter.position, why.trim_end())
}

/// The first pass of an edited replay: every selected dead letter edited and checked, nothing moved.
/// Returns how many queue messages the check covered, to bound the moving pass.
async fn check_edits(
    connection: &Connection,
    args: &ReplayArgs,
    edit: &Edit,
    shutdown: &CancellationToken,
) -> Result<u64, DlqError> {
    let selection = Selection::new(&args.filter, args.limit);
    let mut walk = Walk::start(connection, &args.amqp, selection, shutdown, false).await?;
    let mut invalid = 0u64;
    while let Some(letter) = walk.next().await? {
        if let Err(why) = prepare(&letter, edit) {
            eprintln!("{}", invalid_line(&letter, &why));
            invalid += 1;
        }
    }
    let walked = walk.finish().await?.completed(|walked| {
        format!(
            "checked {} edited dead letter(s); nothing was moved",
            walked.selected
        )
    })?;
    if invalid > 0 {
        return Err(DlqError::Usage(format!(
            "{invalid} of {} selected dead letter(s) would be invalid after the edit; nothing was moved",
            walked.selected
        )));
    }
    Ok(walked.read)
}

/// What a replay did.
#[derive(Default)]
pub(crate) struct Moved {
    pub(crate) moved: u64,
    /// Edited dead letters found invalid while moving (changed since the check): left in place.
    pub(crate) left_invalid: u64,
    /// The first publish the broker did not take; nothing is published after it.
    pub(crate) failure: Option<DlqError>,
}

impl Moved {
    /// Acks the dead letter only if its copy is the broker's now.
    async fn settle(&mut self, settled: Settled<Held>, walk: &mut Walk<'_>) {
        let (held, confirmed) = settled;
        let acked = match confirmed {
            Ok(()) => walk.ack(held).await.map_err(DlqError::from),
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

async fn move_selected(
    connection: &Connection,
    args: &ReplayArgs,
    edit: &Edit,
    within: Option<u64>,
    shutdown: &CancellationToken,
) -> Result<(), DlqError> {
    let selection = Selection {
        within,
        ..Selection::new(&args.filter, args.limit)
    };
    let (done, walked) = replay_selected(connection, &args.amqp, selection, edit, shutdown).await?;
    let fields = edit.fields();
    report_moved(connection, &args.amqp, &fields, &done, walked.total).await;
    if let Some(failure) = done.failure {
        return Err(failure);
    }
    walked.completed(|_| {
        format!(
            "moved {} before stopping; the rest are still in '{}'",
            done.moved, args.amqp.dead_letter_queue
        )
    })?;
    if done.left_invalid > 0 {
        return Err(DlqError::Usage(format!(
            "{} dead letter(s) changed since the check and would be invalid after the edit; they were left in '{}'",
            done.left_invalid, args.amqp.dead_letter_queue
        )));
    }
    Ok(())
}

/// Moves the selected dead letters to the close queue (edited when `edit` says so), each acked once
/// the broker confirmed its copy; what this replay did, and how the walk ended. The one moving pass
/// of `dlq replay` and of the console's replay button.
pub(crate) async fn replay_selected(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    selection: Selection<'_>,
    edit: &Edit,
    shutdown: &CancellationToken,
) -> Result<(Moved, Walked), DlqError> {
    distinct_queues(amqp_args, "replay")?;
    let mut walk = Walk::start(connection, amqp_args, selection, shutdown, false).await?;
    ensure_queue(connection, amqp_args, QueueRole::Close).await?;
    let channel = amqp::confirm_channel(connection).await?;
    let mut window = ConfirmWindow::new(&amqp_args.close_queue, REPLAY_CONFIRM_WINDOW)?;
    let fields = edit.fields();
    let mut done = Moved::default();
    while done.failure.is_none() {
        let Some(letter) = walk.next().await? else {
            break;
        };
        let body = match prepare(&letter, edit) {
            Ok((body, _)) => body,
            Err(why) => {
                eprintln!("{}", invalid_line(&letter, &why));
                done.left_invalid += 1;
                continue;
            }
        };
        if let Some(settled) = window.make_room().await {
            done.settle(settled, &mut walk).await;
        }
        let properties = replay_properties(&letter.properties, &fields);
        if let Err(error) = window
            .publish(&channel, &body, properties, letter.held)
            .await
        {
            done.failure = Some(error.into());
        }
    }
    // Every confirmed copy gets its dead letter acked before the walk gives the rest back.
    while let Some(settled) = window.oldest().await {
        done.settle(settled, &mut walk).await;
    }
    // Closed before the connection: lapin reports a confirm channel left open at that point as an
    // error, which would read as a failed replay.
    let _ = channel.close(200, "replayed".into()).await;
    let walked = walk.finish().await?;
    Ok((done, walked))
}

async fn report_moved(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    fields: &[String],
    done: &Moved,
    total: u64,
) {
    let (dead_queue, close_queue) = (&amqp_args.dead_letter_queue, &amqp_args.close_queue);
    let moved = done.moved;
    // What is there now, not `total - moved`: with two replays at once, each moved only part.
    let left = match ready_count(connection, dead_queue, DEAD_LETTER_SETTING).await {
        Ok(ready) => u64::from(ready),
        Err(_) => total.saturating_sub(moved),
    };
    println!("Moved {moved} dead letter(s) to '{close_queue}'; left {left} in '{dead_queue}'.");
    if !fields.is_empty() {
        println!(
            "Edited: {} (listed in x-edited-fields on each copy).",
            fields.join(", ")
        );
    }
    info!(moved, left, "Replay finished.");
}

/// What a dry run saw of the times of what it selected, for the bound of the real run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Selected dead letters that record no time.
    pub(crate) untimed: u64,
    pub(crate) newest: Option<(OffsetDateTime, String)>,
}

impl Seen {
    fn note_time(&mut self, dead_lettered_at: Option<&str>) {
        let Some((at, text)) = dead_lettered_at
            .and_then(|text| Some((OffsetDateTime::parse(text, &Rfc3339).ok()?, text)))
        else {
            self.untimed += 1;
            return;
        };
        if self.newest.as_ref().is_none_or(|(newest, _)| at > *newest) {
            self.newest = Some((at, text.to_owned()));
        }
    }

    /// The `--until` that keeps the real run to what the dry run selected: the newest time seen,
    /// unless some selected dead letter records none (then no bound can keep it in) or the filter
    /// already ends there.
    pub(crate) fn until_bound(&self, filter: &Filter) -> Option<&str> {
        if self.untimed > 0 {
            return None;
        }
        let (_, newest) = self.newest.as_ref()?;
        let already = filter
            .until
            .is_some_and(|until| until.format(&Rfc3339).ok().as_ref() == Some(newest));
        (!already).then_some(newest.as_str())
    }
}

/// Walks the selection without moving anything, handing each selected dead letter to `each` (which
/// returns `false` to stop: the reader went away), and notes the times for the bound. The dry run
/// of `dlq replay` and the confirmation page of the console's actions.
pub(crate) async fn survey(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    selection: Selection<'_>,
    shutdown: &CancellationToken,
    without_progress_bar: bool,
    mut each: impl FnMut(&DeadLetter, &Described) -> Result<bool, DlqError>,
) -> Result<(Walked, Seen), DlqError> {
    let mut walk = Walk::start(
        connection,
        amqp_args,
        selection,
        shutdown,
        without_progress_bar,
    )
    .await?;
    let mut seen = Seen::default();
    let mut outcome = Ok(());
    while let Some(letter) = walk.next().await? {
        let described = describe(&letter);
        seen.note_time(described.dead_lettered_at.as_deref());
        match each(&letter, &described) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    // Whatever `each` said, the walk gives everything back first.
    let walked = walk.finish().await?;
    outcome?;
    Ok((walked, seen))
}

async fn dry_run(
    connection: &Connection,
    args: &ReplayArgs,
    edit: &Edit,
    shutdown: &CancellationToken,
) -> Result<(), DlqError> {
    let selection = Selection::new(&args.filter, args.limit);
    let on_terminal = std::io::stdout().is_terminal();
    let mut printer = edit.is_empty().then(list_printer);
    let mut output = Output::stdout();
    let mut invalid = 0u64;
    let (walked, seen) = survey(
        connection,
        &args.amqp,
        selection,
        shutdown,
        on_terminal,
        |letter, described| {
            let lines = match &mut printer {
                Some(printer) => printer.push(list_row(letter.position, &letter.body, described)),
                None => edit_lines(letter, edit, &mut invalid),
            };
            output.lines(&lines)
        },
    )
    .await?;
    output.finish(printer.as_mut())?;
    let walked = walked.completed(|_| "nothing was moved".into())?;
    let (close_queue, dead_queue) = (&args.amqp.close_queue, &args.amqp.dead_letter_queue);
    println!(
        "Dry run: would move {} dead letter(s) to '{close_queue}' and leave {} in '{dead_queue}'; nothing was moved.",
        walked.selected,
        walked.total.saturating_sub(walked.selected)
    );
    if invalid > 0 {
        return Err(DlqError::Usage(format!(
            "{invalid} of {} selected dead letter(s) would be invalid after the edit; the replay would move nothing",
            walked.selected
        )));
    }
    print_bound(&seen, &args.filter);
    Ok(())
}

/// `    3  JOB-301  title: (absent) -> "Night Nurse"`, one line per changed field; counts in `invalid`
/// the dead letters the edit would leave invalid.
fn edit_lines(letter: &DeadLetter, edit: &Edit, invalid: &mut u64) -> Vec<String> {
    let id = describe(letter).external_id.unwrap_or_else(|| "-".into());
    let prefix = format!("{:>5}  {id}", letter.position);
    match prepare(letter, edit) {
        Ok((_, changes)) if changes.is_empty() => vec![format!("{prefix}  (no change)")],
        Ok((_, changes)) => changes.iter().map(|c| format!("{prefix}  {c}")).collect(),
        Err(why) => {
            *invalid += 1;
            eprintln!("{}", invalid_line(letter, &why));
            vec![format!(
                "{prefix}  invalid after the edit: {}",
                why.trim_end()
            )]
        }
    }
}

/// The `--until` that keeps the real run to what the dry run selected.
fn print_bound(seen: &Seen, filter: &Filter) {
    if seen.untimed > 0 {
        println!(
            "{} of them record no dead-letter time; the real replay moves only what is in the queue when it starts.",
            seen.untimed
        );
    } else if let Some(newest) = seen.until_bound(filter) {
        println!(
            "To move exactly these, and nothing dead-lettered after this dry run, run the same replay with --until {newest}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    const VALID: &str = r#"{"companyApplyUrl":"https://jobs.example.com/1","externalJobPostingId":"J-1","description":"d","title":"t","listedAt":1700000000000,"location":"l"}"#;

    fn letter(body: &str) -> DeadLetter {
        DeadLetter::at(3, body.as_bytes(), BasicProperties::default())
    }

    #[test]
    fn a_body_goes_back_as_it_was_or_edited_and_valid() {
        let dead = letter(VALID);
        let (body, changes) = prepare(&dead, &Edit::default()).unwrap();
        assert!(matches!(body, Cow::Borrowed(_)) && changes.is_empty());
        let (body, changes) = prepare(&dead, &Edit::of(&["title=Night Nurse"], &[])).unwrap();
        assert!(String::from_utf8_lossy(&body).contains(r#""title":"Night Nurse""#));
        assert_eq!(changes.len(), 1);
        let why = prepare(&dead, &Edit::of(&[], &["title"])).unwrap_err();
        assert!(why.contains("/title"), "{why}");
        assert_eq!(
            invalid_line(&dead, "ERROR :: /title :: missing\n"),
            "position 3 (J-1): ERROR :: /title :: missing"
        );
        assert!(invalid_line(&letter("[1]"), "x").starts_with("position 3 (-): "));
        let lines = edit_lines(&dead, &Edit::of(&["title=t"], &[]), &mut 0);
        assert_eq!(lines, ["    3  J-1  (no change)"]);
        let mut invalid = 0;
        let lines = edit_lines(&dead, &Edit::of(&[], &["title"]), &mut invalid);
        assert!(
            lines[0].starts_with("    3  J-1  invalid after the edit: "),
            "{lines:?}"
        );
        assert_eq!(invalid, 1);
    }

    #[test]
    fn a_dry_run_keeps_the_newest_time_and_counts_the_untimed() {
        let mut seen = Seen::default();
        for at in [
            Some("2026-12-01T14:00:05.120Z"),
            None,
            Some("2026-12-01T14:00:05.121Z"),
            Some("not a time"),
            Some("2026-12-01T13:00:00Z"),
        ] {
            seen.note_time(at);
        }
        assert_eq!(seen.untimed, 2);
        assert_eq!(
            seen.newest.as_ref().map(|(_, text)| text.as_str()),
            Some("2026-12-01T14:00:05.121Z")
        );
        assert_eq!(seen.until_bound(&Filter::default()), None, "untimed ones");
        let timed = Seen { untimed: 0, ..seen };
        assert_eq!(
            timed.until_bound(&Filter::default()),
            Some("2026-12-01T14:00:05.121Z")
        );
        let already = Filter {
            until: Some(time::macros::datetime!(2026-12-01 14:00:05.121 UTC)),
            ..Filter::default()
        };
        assert_eq!(timed.until_bound(&already), None);
        assert_eq!(Seen::default().until_bound(&Filter::default()), None);
    }
}
