//! `job-closer publish --wait`: publish, then wait for each request's outcome message and say how
//! every close ended — the producer's side of [`crate::outcome`], for an operator at a terminal or a
//! script that must know.
//!
//! Before the first publish a reply queue of this command's own is declared (server-named,
//! exclusive, auto-delete: it goes with the connection, so nothing is left behind even when the
//! command is killed) and consumed; every request names it as `reply_to`. Outcomes are matched to
//! requests by `correlation_id` (the worker copies the request's `message_id` there, `publish` sets
//! no correlation id of its own), falling back to the body's `requestMessageId`. A request's first
//! outcome is the one that counts: a repeat (same request, after a worker crash) or a later one
//! (`already-closed` after `closed`, when a crash redelivered an accepted close) changes nothing.
//!
//! The tally and its verdict are pure ([`Tally`]): exit 0 when every request ended `closed` or
//! `already-closed`, 3 when any was dead-lettered, 4 when the timeout passed with outcomes missing
//! (4 wins over 3: an incomplete answer is the first thing a script must hear). Rejected: polling
//! the dead-letter queue for the ids (it says nothing of what closed, and races with `dlq replay`).

use super::PublishError;
use crate::amqp::{self, AmqpError};
use crate::outcome::{Kind, Outcome};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;

/// How a wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every request ended closed or already closed.
    AllClosed,
    /// Every request ended, these (external ids) dead-lettered.
    DeadLettered(Vec<String>),
    /// The timeout passed; these (external ids) had no outcome yet.
    Missing(Vec<String>),
}

/// One request waited for.
#[derive(Debug)]
struct Waited {
    external_id: String,
    ended: Option<Kind>,
}

/// The requests waited for, in publish order, and how each ended.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    requests: Vec<Waited>,
    /// Position in `requests` by the request's message id.
    by_message_id: HashMap<String, usize>,
    ended: BTreeMap<Kind, usize>,
}

impl Tally {
    /// A request published with `message_id` for `external_id`, whose outcome is awaited.
    pub(crate) fn expect(&mut self, message_id: String, external_id: String) {
        self.by_message_id.insert(message_id, self.requests.len());
        self.requests.push(Waited {
            external_id,
            ended: None,
        });
    }

    /// An outcome for the request published with `message_id` arrived: the external id it is
    /// about when it is that request's first; `None` for a repeat or a request not waited for.
    pub(crate) fn record(&mut self, message_id: &str, kind: Kind) -> Option<&str> {
        let index = *self.by_message_id.get(message_id)?;
        let waited = self.requests.get_mut(index)?;
        if waited.ended.is_some() {
            return None;
        }
        waited.ended = Some(kind);
        *self.ended.entry(kind).or_default() += 1;
        Some(&waited.external_id)
    }

    pub(crate) fn total(&self) -> usize {
        self.requests.len()
    }

    pub(crate) fn ended(&self) -> usize {
        self.ended.values().sum()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.ended() == self.total()
    }

    /// The external ids still waiting, in publish order.
    pub(crate) fn waiting(&self) -> Vec<String> {
        self.ids(|ended| ended.is_none())
    }

    fn ids(&self, which: impl Fn(Option<Kind>) -> bool) -> Vec<String> {
        let chosen = self.requests.iter().filter(|w| which(w.ended));
        chosen.map(|w| w.external_id.clone()).collect()
    }

    /// `closed 98, already-closed 1, dead-lettered 1, waiting 0`.
    pub(crate) fn summary(&self) -> String {
        let mut parts: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| format!("{kind} {}", self.ended.get(kind).copied().unwrap_or(0)))
            .collect();
        parts.push(format!("waiting {}", self.total() - self.ended()));
        parts.join(", ")
    }

    pub(crate) fn verdict(&self) -> Verdict {
        let waiting = self.waiting();
        if !waiting.is_empty() {
            return Verdict::Missing(waiting);
        }
        let dead = self.ids(|ended| ended == Some(Kind::DeadLettered));
        if dead.is_empty() {
            Verdict::AllClosed
        } else {
            Verdict::DeadLettered(dead)
        }
    }
}

/// One line per outcome: `JOB-1  closed  urn:li:jobPosting:123`, `JOB-2  dead-lettered  rejected
/// 403 Caller is not authorized ...`.
pub(crate) fn line(external_id: &str, outcome: &Outcome) -> String {
    let said = |status: Option<u16>, message: &Option<String>| {
        let status = status.map(|s| s.to_string());
        let parts = [status.as_deref(), message.as_deref()];
        parts.into_iter().flatten().collect::<Vec<_>>().join(" ")
    };
    let detail = match outcome.outcome {
        Kind::Closed => match (&outcome.job_posting, outcome.verified) {
            (Some(urn), _) => urn.clone(),
            (None, Some(true)) => "verified".to_owned(),
            (None, _) => "not verified".to_owned(),
        },
        Kind::AlreadyClosed => said(outcome.status, &outcome.message),
        Kind::DeadLettered => {
            let reason = outcome.reason.as_deref().unwrap_or("-");
            format!("{reason} {}", said(outcome.status, &outcome.message))
        }
    };
    format!("{external_id}  {}  {}", outcome.outcome, detail.trim_end())
}

/// The reply queue and what has come back to it.
pub(crate) struct Waiter {
    /// Holds the exclusive reply queue, which lives as long as this connection (given by
    /// [`Waiter::hold`] once publishing is over).
    connection: Option<Connection>,
    queue: String,
    consumer: Consumer,
    tally: Tally,
    /// Print each outcome body instead of a line.
    json: bool,
    progress: indicatif::ProgressBar,
}

impl Waiter {
    /// Declares and consumes a reply queue of this command's own on `connection`.
    pub(crate) async fn open(connection: &Connection, json: bool) -> Result<Waiter, AmqpError> {
        let channel = connection.create_channel().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare("".into(), options, FieldTable::default())
            .await?;
        let queue = declared.name().to_string();
        let consume = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(
                amqp::queue_name(&queue)?,
                "job-closer-publish-wait".into(),
                consume,
                FieldTable::default(),
            )
            .await?;
        Ok(Waiter {
            connection: None,
            queue,
            consumer,
            tally: Tally::default(),
            json,
            progress: indicatif::ProgressBar::hidden(),
        })
    }

    /// Keeps the connection the reply queue lives on until the wait is over.
    pub(crate) fn hold(&mut self, connection: Connection) {
        self.connection = Some(connection);
    }

    /// The queue requests name as `reply_to`.
    pub(crate) fn reply_to(&self) -> &str {
        &self.queue
    }

    /// A request about to be published, whose outcome is awaited.
    pub(crate) fn expect(&mut self, message_id: String, external_id: String) {
        self.tally.expect(message_id, external_id);
    }

    /// Takes what has already arrived, without waiting (between publishes).
    pub(crate) fn take_arrived(&mut self) {
        use futures_util::FutureExt;
        while let Some(Some(Ok(delivery))) = self.consumer.next().now_or_never() {
            self.arrived(&delivery);
        }
    }

    /// Waits up to `timeout` for the outcomes still missing, printing each as it arrives, then the
    /// summary; returns the tally's verdict.
    pub(crate) async fn wait(mut self, timeout: Duration) -> Result<Verdict, PublishError> {
        if std::io::stderr().is_terminal() && !self.tally.is_done() {
            self.progress = progress_bar(&self.tally);
        }
        let deadline = Instant::now() + timeout;
        while !self.tally.is_done() {
            tokio::select! {
                delivery = self.consumer.next() => match delivery {
                    Some(Ok(delivery)) => self.arrived(&delivery),
                    Some(Err(error)) => return Err(self.lost(AmqpError::Broker(error))),
                    None => return Err(self.lost(AmqpError::NotConfirmed {
                        queue: self.queue.clone(),
                        why: "the broker cancelled the reply queue's consumer".into(),
                    })),
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.progress.finish_and_clear();
        if let Some(connection) = &self.connection {
            let _ = connection.close(200, "outcomes awaited".into()).await;
        }
        let verdict = self.tally.verdict();
        if !self.json {
            for id in self.tally.waiting() {
                println!("{id}  waiting");
            }
        }
        self.print_summary();
        Ok(verdict)
    }

    fn lost(&self, error: AmqpError) -> PublishError {
        self.progress.finish_and_clear();
        self.print_summary();
        PublishError::Waiting {
            error: Box::new(error),
            waiting: self.tally.waiting(),
        }
    }

    fn print_summary(&self) {
        let summary = self.tally.summary();
        if self.json {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    }

    fn arrived(&mut self, delivery: &Delivery) {
        let Ok(outcome) = serde_json::from_slice::<Outcome>(&delivery.data) else {
            tracing::warn!(
                queue = %self.queue,
                "A message that is not an outcome arrived in the reply queue; ignored."
            );
            return;
        };
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
            .or_else(|| outcome.request_message_id.clone());
        let Some(correlation) = correlation else {
            return;
        };
        let Some(external_id) = self.tally.record(&correlation, outcome.outcome) else {
            return;
        };
        let printed = if self.json {
            String::from_utf8_lossy(&delivery.data).into_owned()
        } else {
            let id = outcome
                .external_job_posting_id
                .as_deref()
                .unwrap_or(external_id);
            line(id, &outcome)
        };
        self.progress.suspend(|| println!("{printed}"));
        self.progress.set_position(self.tally.ended() as u64);
    }
}

fn progress_bar(tally: &Tally) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(tally.total() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} outcomes ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.set_position(tally.ended() as u64);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome with only its required fields, as a consumer may read one.
    fn outcome(kind: Kind) -> Outcome {
        serde_json::from_value(serde_json::json!({
            "externalJobPostingId": "JOB-1",
            "outcome": kind,
            "attempts": 1,
            "closeQueue": "close",
            "at": "2026-12-01T14:00:05.120Z",
        }))
        .unwrap()
    }

    fn tally(ids: &[&str]) -> Tally {
        let mut tally = Tally::default();
        for id in ids {
            tally.expect(format!("m-{id}"), (*id).to_owned());
        }
        tally
    }

    #[test]
    fn the_first_outcome_of_each_request_counts_and_repeats_change_nothing() {
        let mut tally = tally(&["JOB-1", "JOB-2", "JOB-3"]);
        assert_eq!(tally.record("m-JOB-1", Kind::Closed), Some("JOB-1"));
        assert_eq!(tally.record("m-JOB-1", Kind::Closed), None, "a repeat");
        assert_eq!(
            tally.record("m-JOB-1", Kind::AlreadyClosed),
            None,
            "a later one"
        );
        assert_eq!(tally.record("m-other", Kind::Closed), None, "not ours");
        assert_eq!(tally.waiting(), ["JOB-2", "JOB-3"]);
        assert_eq!(
            tally.summary(),
            "closed 1, already-closed 0, dead-lettered 0, waiting 2"
        );
        assert_eq!(
            tally.verdict(),
            Verdict::Missing(vec!["JOB-2".into(), "JOB-3".into()])
        );
        tally.record("m-JOB-3", Kind::DeadLettered);
        assert_eq!(
            tally.verdict(),
            Verdict::Missing(vec!["JOB-2".into()]),
            "4 wins over 3"
        );
        tally.record("m-JOB-2", Kind::AlreadyClosed);
        assert!(tally.is_done());
        assert_eq!(tally.verdict(), Verdict::DeadLettered(vec!["JOB-3".into()]));
        assert_eq!(
            tally.summary(),
            "closed 1, already-closed 1, dead-lettered 1, waiting 0"
        );
    }

    #[test]
    fn closed_and_already_closed_are_success() {
        let mut tally = tally(&["a", "b"]);
        tally.record("m-a", Kind::Closed);
        tally.record("m-b", Kind::AlreadyClosed);
        assert_eq!(tally.verdict(), Verdict::AllClosed);
        assert_eq!(
            Tally::default().verdict(),
            Verdict::AllClosed,
            "nothing to wait for"
        );
    }

    #[test]
    fn a_line_says_how_it_ended_and_what_linkedin_said() {
        let mut closed = outcome(Kind::Closed);
        closed.verified = Some(true);
        closed.job_posting = Some("urn:li:jobPosting:123".into());
        assert_eq!(
            line("JOB-1", &closed),
            "JOB-1  closed  urn:li:jobPosting:123"
        );
        closed.job_posting = None;
        assert_eq!(line("JOB-1", &closed), "JOB-1  closed  verified");
        closed.verified = Some(false);
        assert_eq!(line("JOB-1", &closed), "JOB-1  closed  not verified");
        let mut already = outcome(Kind::AlreadyClosed);
        already.status = Some(409);
        already.message = Some("Cannot close job which is already closed or does not exist".into());
        assert_eq!(
            line("JOB-1", &already),
            "JOB-1  already-closed  409 Cannot close job which is already closed or does not exist"
        );
        let mut dead = outcome(Kind::DeadLettered);
        dead.reason = Some("rejected".into());
        dead.status = Some(403);
        dead.message = Some("Caller is not authorized".into());
        assert_eq!(
            line("JOB-1", &dead),
            "JOB-1  dead-lettered  rejected 403 Caller is not authorized"
        );
    }
}
