//! The one walk every `dlq` command drives: the [`Scan`] of the dead-letter queue plus what each
//! command used to repeat — the filter, the limit, the progress bar, stopping on SIGTERM/SIGINT, and
//! saying afterwards whether it was interrupted. A command asks for the next *selected* dead letter,
//! does its own thing with it (print, count, publish, write, ack), and finishes the walk, which gives
//! back everything it did not ack.
//!
//! The limit counts selected dead letters. Without a filter the first N messages are the N selected,
//! so the scan fetches no more than that; with one, it reads on until N matched. A walk can also be
//! bounded by a number of queue messages (`within`): a second pass over the queue then reads no
//! further than the first one did, so what arrived in between is not touched (the edited replay
//! checks, then moves).

use super::DlqError;
use super::filter::Filter;
use super::scan::{DeadLetter, Held, Scan};
use crate::amqp::AmqpError;
use crate::config::AmqpArgs;
use crate::publish::progress_bar;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

/// What a walk selects.
#[derive(Clone, Copy)]
pub(crate) struct Selection<'f> {
    pub(crate) filter: &'f Filter,
    /// Selected dead letters at most.
    pub(crate) limit: Option<u64>,
    /// Queue messages read at most (from the head).
    pub(crate) within: Option<u64>,
}

impl<'f> Selection<'f> {
    pub(crate) fn new(filter: &'f Filter, limit: Option<u64>) -> Selection<'f> {
        Selection {
            filter,
            limit,
            within: None,
        }
    }

    /// How many messages the scan needs to read at most.
    pub(crate) fn fetch_limit(&self) -> Option<u64> {
        let by_limit = if self.filter.is_empty() {
            self.limit
        } else {
            None
        };
        match (by_limit, self.within) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether `selected` dead letters are all a selection with this `limit` wants.
fn limit_reached(limit: Option<u64>, selected: u64) -> bool {
    limit.is_some_and(|limit| selected >= limit)
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Messages in the queue when the walk started.
    pub(crate) total: u64,
    /// Messages the walk read.
    pub(crate) read: u64,
    /// Dead letters it selected.
    pub(crate) selected: u64,
    /// Stopped by SIGTERM/SIGINT before the end.
    pub(crate) interrupted: bool,
}

impl Walked {
    /// The walk as it ended, or — when SIGTERM/SIGINT stopped it — [`DlqError::Interrupted`] with
    /// what `done` says was done.
    pub(crate) fn completed(
        self,
        done: impl FnOnce(&Walked) -> String,
    ) -> Result<Walked, DlqError> {
        if self.interrupted {
            Err(DlqError::Interrupted(done(&self)))
        } else {
            Ok(self)
        }
    }
}

pub(crate) struct Walk<'a> {
    scan: Scan<'a>,
    filter: Filter,
    limit: Option<u64>,
    shutdown: CancellationToken,
    progress: indicatif::ProgressBar,
    read: u64,
    selected: u64,
    interrupted: bool,
}

impl<'a> Walk<'a> {
    /// Starts a walk over the dead-letter queue. `output_on_terminal`: the command prints to the
    /// terminal the progress bar would draw on, so there is no bar.
    pub(crate) async fn start(
        connection: &'a Connection,
        amqp_args: &AmqpArgs,
        selection: Selection<'_>,
        shutdown: &CancellationToken,
        output_on_terminal: bool,
    ) -> Result<Walk<'a>, AmqpError> {
        let scan = Scan::dead_letters(connection, amqp_args, selection.fetch_limit()).await?;
        let progress = if output_on_terminal {
            indicatif::ProgressBar::hidden()
        } else {
            progress_bar(usize::try_from(scan.cap()).unwrap_or(usize::MAX))
        };
        Ok(Walk {
            scan,
            filter: selection.filter.clone(),
            limit: selection.limit,
            shutdown: shutdown.clone(),
            progress,
            read: 0,
            selected: 0,
            interrupted: false,
        })
    }

    /// The next selected dead letter, held until acked or until the walk finishes; `None` at the end
    /// of the queue, at the limit, or when a shutdown was asked for.
    pub(crate) async fn next(&mut self) -> Result<Option<DeadLetter>, AmqpError> {
        loop {
            if limit_reached(self.limit, self.selected) {
                return Ok(None);
            }
            if self.shutdown.is_cancelled() {
                self.interrupted = true;
                return Ok(None);
            }
            let Some(letter) = self.scan.next().await? else {
                return Ok(None);
            };
            self.read += 1;
            self.progress.inc(1);
            if self.filter.matches(letter.candidate()) {
                self.selected += 1;
                return Ok(Some(letter));
            }
        }
    }

    /// Queue messages read so far, of those the walk will read at most.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.read, self.scan.cap())
    }

    /// Removes a held dead letter from the queue for good.
    pub(crate) async fn ack(&mut self, held: Held) -> Result<(), AmqpError> {
        self.scan.ack(held).await
    }

    /// Ends the walk: everything not acked goes back where it was.
    pub(crate) async fn finish(self) -> Result<Walked, AmqpError> {
        self.progress.finish_and_clear();
        let walked = Walked {
            total: self.scan.total(),
            read: self.read,
            selected: self.selected,
            interrupted: self.interrupted || self.shutdown.is_cancelled(),
        };
        self.scan.finish().await?;
        Ok(walked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_reads_no_further_than_the_selection_needs() {
        let none = Filter::default();
        let some = Filter {
            status: Some(403),
            ..Filter::default()
        };
        assert_eq!(Selection::new(&none, None).fetch_limit(), None);
        assert_eq!(Selection::new(&none, Some(3)).fetch_limit(), Some(3));
        assert_eq!(Selection::new(&some, Some(3)).fetch_limit(), None);
        let within = |filter, limit, within| {
            Selection {
                filter,
                limit,
                within: Some(within),
            }
            .fetch_limit()
        };
        assert_eq!(within(&none, Some(3), 10), Some(3));
        assert_eq!(within(&none, Some(30), 10), Some(10));
        assert_eq!(within(&some, Some(3), 10), Some(10));
        assert_eq!(within(&some, None, 10), Some(10));
        assert!(limit_reached(Some(2), 2));
        assert!(!limit_reached(Some(2), 1));
        assert!(!limit_reached(None, u64::MAX));
    }

    #[test]
    fn an_interrupted_walk_says_what_was_done() {
        let walked = Walked {
            total: 5,
            read: 3,
            selected: 2,
            interrupted: false,
        };
        assert_eq!(walked.completed(|_| unreachable!()).unwrap(), walked);
        let stopped = Walked {
            interrupted: true,
            ..walked
        };
        let error = stopped
            .completed(|w| format!("read {} of {}", w.read, w.total))
            .unwrap_err();
        assert_eq!(error.to_string(), "interrupted: read 3 of 5");
    }
}
