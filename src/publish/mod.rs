//! `job-closer publish`: puts close requests from newline-delimited JSON onto the close queue.
//!
//! Every line is checked with the worker's own validator before anything is published, so a file with
//! a bad line publishes nothing (unless told to skip the bad lines): half a file in the queue is worse
//! than none. Each message is persistent, `mandatory`, and confirmed by the broker. Each carries a
//! `traceparent`: the span of the run (tracing on; the child of `TRACEPARENT` in the environment,
//! when set), or `TRACEPARENT` itself passed on (tracing off).
//!
//! With `--wait`, every request names a reply queue of this command's own as `reply_to`, and the
//! command then waits for each one's outcome message ([`wait`]).

pub(crate) mod wait;

use crate::amqp::confirm::ConfirmWindow;
use crate::amqp::{self, AmqpError};
use crate::close_request::{self, Invalid};
use crate::config::AmqpArgs;
use crate::telemetry::{propagation, spans};
use clap::Args;
use lapin::BasicProperties;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

/// Confirms awaited at most this far behind the newest publish: pipelined, but bounded.
const CONFIRM_WINDOW: usize = 1024;
/// Inputs larger than this get a progress bar on a terminal.
const PROGRESS_FROM: usize = 2_000;

#[derive(Args, Clone, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Newline-delimited JSON close requests; `-` or nothing reads standard input.
    pub(crate) file: Option<PathBuf>,
    /// Publish the valid lines and report the invalid ones, instead of publishing nothing.
    #[arg(long)]
    pub(crate) skip_invalid: bool,
    /// Then wait for each request's outcome (a reply queue of this command's own is each one's
    /// reply_to), print one line per outcome, and exit 0 when all closed or were already closed, 3
    /// when any was dead-lettered, 4 when --timeout passed with outcomes missing.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: how long to wait for the outcomes once every request is published.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "wait")]
    pub(crate) timeout: u64,
    /// With --wait: print each outcome's body (one JSON object per line) instead of a line.
    #[arg(long, requires = "wait")]
    pub(crate) json: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{} invalid line(s); nothing was published (use --skip-invalid to publish the valid ones)", .0.len())]
    InvalidLines(Vec<(usize, Invalid)>),
    #[error("{error} (after {published} of {total} were published and confirmed)")]
    Broker {
        error: AmqpError,
        published: usize,
        total: usize,
    },
    /// Everything was published, but the outcomes could not be awaited to the end.
    #[error("{error} while waiting for outcomes; still waiting for {}: {}", .waiting.len(), .waiting.join(", "))]
    Waiting {
        error: Box<AmqpError>,
        waiting: Vec<String>,
    },
}

/// What a publish did.
pub(crate) struct PublishReport {
    pub(crate) published: usize,
    pub(crate) skipped: Vec<(usize, Invalid)>,
    /// With `--wait`: the outcomes to wait for.
    pub(crate) waiter: Option<wait::Waiter>,
}

/// One valid line: its number, its body, and its `externalJobPostingId`.
pub(crate) type ValidLine = (usize, Vec<u8>, String);

/// Lines of the input by line number: the valid bodies, and why the others are invalid.
pub(crate) type ReadRequests = (Vec<ValidLine>, Vec<(usize, Invalid)>);

/// Reads and validates every line; returns the valid bodies with their line numbers.
pub(crate) fn read_requests(input: impl BufRead, path: &str) -> Result<ReadRequests, PublishError> {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for (index, line) in input.split(b'\n').enumerate() {
        let mut line = line.map_err(|source| PublishError::Read {
            path: path.to_owned(),
            source,
        })?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let number = index + 1;
        match close_request::validate(&line) {
            Ok(request) => valid.push((number, line, request.external_id)),
            Err(why) => invalid.push((number, why)),
        }
    }
    Ok((valid, invalid))
}

pub(crate) async fn publish(args: &PublishArgs) -> Result<PublishReport, PublishError> {
    let (path, input): (String, Box<dyn BufRead>) = match &args.file {
        None => ("standard input".into(), Box::new(std::io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => {
            ("standard input".into(), Box::new(std::io::stdin().lock()))
        }
        Some(p) => {
            let file = std::fs::File::open(p).map_err(|source| PublishError::Read {
                path: p.display().to_string(),
                source,
            })?;
            (
                p.display().to_string(),
                Box::new(std::io::BufReader::new(file)),
            )
        }
    };
    let (valid, invalid) = read_requests(input, &path)?;
    if !invalid.is_empty() && !args.skip_invalid {
        return Err(PublishError::InvalidLines(invalid));
    }
    let total = valid.len();
    let broker_error = |error, published| PublishError::Broker {
        error,
        published,
        total,
    };
    let connection = amqp::connect(&args.amqp, "job-closer publish")
        .await
        .map_err(|e| broker_error(e, 0))?;
    amqp::declare_queues(&connection, &args.amqp)
        .await
        .map_err(|e| broker_error(e, 0))?;
    let channel = amqp::confirm_channel(&connection)
        .await
        .map_err(|e| broker_error(e, 0))?;
    let mut window: ConfirmWindow<()> = ConfirmWindow::new(&args.amqp.close_queue, CONFIRM_WINDOW)
        .map_err(|e| broker_error(e, 0))?;
    // Consuming before the first publish: no outcome can come back before its queue exists.
    let mut waiter = if args.wait {
        let waiter = wait::Waiter::open(&connection, args.json);
        Some(waiter.await.map_err(|e| broker_error(e, 0))?)
    } else {
        None
    };

    // Every message carries the run's span as its parent (with tracing off, the context this
    // command was started in, passed on unchanged, when there is one).
    let run = spans::publish(&args.amqp.close_queue);
    let trace =
        spans::context_of(&run).or_else(|| propagation::inherited(|name| std::env::var(name).ok()));
    let progress = progress_bar(total);
    let mut confirmed = 0usize;
    for (_, body, external_id) in valid {
        if let Some(((), outcome)) = window.make_room().await {
            outcome.map_err(|e| broker_error(e, confirmed))?;
            confirmed += 1;
            progress.set_position(confirmed as u64);
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let mut properties = propagation::onto(
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(message_id.as_str().into()),
            trace.as_ref(),
        );
        if let Some(waiter) = &mut waiter {
            properties = properties.with_reply_to(waiter.reply_to().into());
            waiter.expect(message_id, external_id);
            waiter.take_arrived();
        }
        window
            .publish(&channel, &body, properties, ())
            .await
            .map_err(|e| broker_error(e, confirmed))?;
    }
    while let Some(((), outcome)) = window.oldest().await {
        outcome.map_err(|e| broker_error(e, confirmed))?;
        confirmed += 1;
        progress.set_position(confirmed as u64);
    }
    progress.finish_and_clear();
    spans::batch(&run, confirmed);
    drop(run);
    match &mut waiter {
        Some(waiter) => waiter.hold(connection),
        None => {
            let _ = connection.close(200, "published".into()).await;
        }
    }
    Ok(PublishReport {
        published: confirmed,
        skipped: invalid,
        waiter,
    })
}

/// A bar on a terminal for large inputs; a hidden one otherwise, so pipes and logs stay clean.
pub(crate) fn progress_bar(total: usize) -> indicatif::ProgressBar {
    if total < PROGRESS_FROM || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_blank_lines_skipped_and_crlf_accepted() {
        let good = r#"{"companyApplyUrl":"https://jobs.example.com/a","externalJobPostingId":"a","description":"d","title":"t","listedAt":1,"location":"l"}"#;
        let input = format!("{good}\r\n\n   \n{{\"title\":\"x\"}}\n{good}");
        let (valid, invalid) = read_requests(input.as_bytes(), "test").unwrap();
        assert_eq!(
            valid.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
            vec![1, 5]
        );
        assert_eq!(valid[0].1, good.as_bytes());
        assert_eq!(valid[0].2, "a", "the external id, for --wait");
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0, 4);
        assert_eq!(invalid[0].1, Invalid::Missing("companyApplyUrl"));
    }

    #[test]
    fn invalid_utf8_is_reported_not_fatal() {
        let input: &[u8] = b"\xff\xfe\n";
        let (valid, invalid) = read_requests(input, "test").unwrap();
        assert!(valid.is_empty());
        assert!(matches!(invalid[0], (1, Invalid::NotJson(_))));
    }
}
