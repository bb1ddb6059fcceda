//! `dlq list`: the selected dead letters in queue order, as a table or as JSON records, leaving the
//! queue as it was.

use super::filter::Filter;
use super::output::Output;
use super::record::{Described, describe, json_record};
use super::table::{Column, Printer, Row, output_width, short_time};
use super::walk::{Selection, Walk};
use super::{DlqError, connect, disconnect, matching};
use crate::config::AmqpArgs;
use clap::Args;
use std::io::IsTerminal;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Show at most this many (the first ones in the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
    /// One JSON object per message per line: position, body, headers, properties, group, and the
    /// exact copy (`amqp`) that `import` restores.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) filter: Filter,
}

/// The `list` table: position, externalJobPostingId, status, reason, attempts, replays, when, message.
pub(crate) fn list_printer() -> Printer {
    Printer::new(
        vec![
            Column::new("POS", 7, 3).right(),
            Column::new("EXTERNAL ID", 24, 12),
            Column::new("STATUS", 6, 6).right(),
            Column::new("REASON", 21, 10),
            Column::new("ATTEMPTS", 8, 8).right(),
            Column::new("REPLAYS", 7, 7).right(),
            Column::new("WHEN (UTC)", 23, 19),
        ],
        "MESSAGE",
        output_width(),
    )
}

/// A dead letter's row: its queue position, its body and what [`describe`] made of it.
pub(crate) fn list_row(position: u64, body: &[u8], described: &Described) -> Row {
    let dash = || "-".to_owned();
    let recorded = &described.recorded;
    (
        vec![
            position.to_string(),
            described.external_id.clone().unwrap_or_else(dash),
            recorded.status.map_or_else(dash, |s| s.to_string()),
            recorded.reason.clone().unwrap_or_else(dash),
            recorded.attempts.map_or_else(dash, |a| a.to_string()),
            recorded.replay_count.unwrap_or(0).to_string(),
            described
                .dead_lettered_at
                .as_deref()
                .map_or_else(dash, short_time),
        ],
        row_message(body, described),
    )
}

/// The error message; for messages that carry none, what is known instead, and the start of a body
/// that has no `externalJobPostingId` to recognise it by.
fn row_message(body: &[u8], described: &Described) -> String {
    if let Some(message) = &described.recorded.message {
        return message.clone();
    }
    let stand_in = &described.group.message;
    if described.external_id.is_some() {
        return stand_in.clone();
    }
    let body = String::from_utf8_lossy(body);
    let preview: String = body.chars().take(200).collect();
    format!("{stand_in} body: {preview}")
}

pub(crate) async fn list(args: ListArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let connection = connect(&args.amqp, "list").await?;
    let selection = Selection::new(&args.filter, args.limit);
    let on_terminal = std::io::stdout().is_terminal();
    let mut walk = Walk::start(&connection, &args.amqp, selection, &shutdown, on_terminal).await?;
    let mut printer = (!args.json).then(list_printer);
    let mut output = Output::stdout();
    while let Some(letter) = walk.next().await? {
        let described = describe(&letter);
        let lines = match &mut printer {
            Some(printer) => printer.push(list_row(letter.position, &letter.body, &described)),
            None => vec![json_record(&letter, &described)],
        };
        if !output.lines(&lines)? {
            break;
        }
    }
    output.finish(printer.as_mut())?;
    let walked = walk.finish().await?;
    disconnect(connection, "listed").await;
    let (shown, total) = (walked.selected, walked.total);
    walked.completed(|_| format!("listed {shown} of {total}; '{queue}' is unchanged"))?;
    eprintln!(
        "Listed {shown} dead letter(s){} of {total} in '{queue}'; nothing was removed or reordered.",
        matching(&args.filter)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::{self, Failure, Reason};
    use crate::dlq::scan::DeadLetter;
    use lapin::BasicProperties;

    fn letter(body: &[u8], properties: BasicProperties) -> DeadLetter {
        DeadLetter::at(12, body, properties)
    }

    #[test]
    fn rows_show_the_failure_record_and_stand_ins_for_what_is_missing() {
        let failure = Failure {
            reason: Reason::RetriesExhausted,
            status: 503,
            message: "HTTP 503 with an empty body".into(),
            attempts: 9,
            task_id: None,
        };
        let properties = dead_letter::properties(&BasicProperties::default(), "close", &failure);
        let dead = letter(br#"{"externalJobPostingId":"J-7"}"#, properties);
        let (cells, message) = list_row(dead.position, &dead.body, &describe(&dead));
        assert_eq!(
            cells[..6],
            ["12", "J-7", "503", "retries-exhausted", "9", "0"]
        );
        assert!(
            !cells[6].contains('T') && !cells[6].ends_with('Z'),
            "{}",
            cells[6]
        );
        assert_eq!(message, "HTTP 503 with an empty body");

        let bare = letter(b"hand-made \xff", BasicProperties::default());
        let (cells, message) = list_row(bare.position, &bare.body, &describe(&bare));
        assert_eq!(cells, ["12", "-", "-", "-", "-", "0", "-"]);
        assert_eq!(message, "(no failure recorded) body: hand-made \u{fffd}");
        let named = letter(
            br#"{"externalJobPostingId":"J-8"}"#,
            BasicProperties::default(),
        );
        assert_eq!(
            row_message(&named.body, &describe(&named)),
            "(no failure recorded)"
        );
        let long = letter(&[b'x'; 500], BasicProperties::default());
        let preview = row_message(&long.body, &describe(&long));
        assert_eq!(preview.len(), "(no failure recorded) body: ".len() + 200);
    }
}
