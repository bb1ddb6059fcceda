//! Getting ended spans to the collector without ever holding up a close: a bounded queue that
//! ending a span only tries to push onto (a full queue drops the span and counts it), emptied by
//! one task on the worker's tokio runtime that exports in batches.
//!
//! Rejected: the SDK's `BatchSpanProcessor`. It runs its own thread and blocks on each export,
//! which wants a blocking HTTP client (a second reqwest stack, or a runtime per thread), and it
//! keeps its count of dropped spans to itself, where an operator needs it as a metric
//! (`job_closer_trace_spans_dropped_total`). Its async-runtime variant is behind an experimental
//! feature and does not expose the count either. What is kept of it: the bounded queue, batches
//! of at most [`MAX_BATCH`] sent at least every [`EXPORT_EVERY`], one export at a time, each with a
//! deadline ([`EXPORT_TIMEOUT`]) — so an unreachable collector costs a dropped span, never a wait.

use crate::logging::Every;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// Spans waiting to be exported, at most; more are dropped (and counted).
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// Spans per export request, at most.
pub(crate) const MAX_BATCH: usize = 512;
/// How long an ended span waits for a batch to fill before it is sent anyway.
pub(crate) const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take before its spans count as dropped.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failing exports in this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The span processor: ending a span is a `try_send`.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    /// Taken on shutdown: the exporting task sends what is queued, then ends.
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    dropped: Counter,
}

impl QueueProcessor {
    /// A processor whose spans `exporter` sends from a task on the current tokio runtime; the
    /// task's handle ends once the processor shut down and the queue is empty.
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        dropped: Counter,
    ) -> (QueueProcessor, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(export_loop(exporter, receiver, dropped.clone()));
        let processor = QueueProcessor {
            queue: Mutex::new(Some(sender)),
            dropped,
        };
        (processor, task)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        // A poisoned lock holds a plain Option: still usable.
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let queued = queue
            .as_ref()
            .is_some_and(|sender| sender.try_send(span).is_ok());
        if !queued {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Spans go within EXPORT_EVERY anyway; shutdown sends the rest.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Closing the queue ends the task once it sent what is queued (its handle is awaited,
        // with a deadline, by whoever shuts tracing down: blocking here would stall the runtime).
        let taken = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(_) => Ok(()),
            None => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut queue: mpsc::Receiver<SpanData>,
    dropped: Counter,
) {
    let failing = Every::new(WARN_EVERY);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for a first span, then fill the batch until it is full or EXPORT_EVERY passed.
        let Some(first) = queue.recv().await else {
            break;
        };
        batch.push(first);
        let due = Instant::now() + EXPORT_EVERY;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(due, queue.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        export(&exporter, std::mem::take(&mut batch), &dropped, &failing).await;
        if closed {
            break;
        }
    }
    // Shutdown: the queue is closed; send what is left in it.
    while let Ok(span) = queue.try_recv() {
        batch.push(span);
        if batch.len() == MAX_BATCH {
            export(&exporter, std::mem::take(&mut batch), &dropped, &failing).await;
        }
    }
    if !batch.is_empty() {
        export(&exporter, batch, &dropped, &failing).await;
    }
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    dropped: &Counter,
    failing: &Every,
) {
    let spans = batch.len() as u64;
    let error = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} s", EXPORT_TIMEOUT.as_secs()),
    };
    dropped.inc_by(spans);
    if let Some(held_back) = failing.due(Instant::now()) {
        warn!(
            spans,
            dropped_total = dropped.get(),
            earlier_failures = held_back,
            %error,
            "Could not export spans; they are dropped (job_closer_trace_spans_dropped_total), closes go on."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// Counts what it is given; fails every export when told to.
    #[derive(Debug, Clone)]
    struct Counting {
        exported: Arc<AtomicUsize>,
        fail: bool,
    }

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail {
                return Err(OTelSdkError::InternalFailure("connection refused".into()));
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[tokio::test]
    async fn queued_spans_are_exported_and_shutdown_sends_the_rest() {
        let exported = Arc::new(AtomicUsize::new(0));
        let exporter = Counting {
            exported: exported.clone(),
            fail: false,
        };
        let dropped = Counter::default();
        let (processor, task) = QueueProcessor::start(exporter, dropped.clone());
        for _ in 0..1000 {
            processor.on_end(span());
        }
        processor.shutdown().unwrap();
        task.await.unwrap();
        assert_eq!(exported.load(Ordering::SeqCst), 1000);
        assert_eq!(dropped.get(), 0);
        processor.on_end(span());
        assert_eq!(dropped.get(), 1, "after shutdown a span is dropped");
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_waiting_and_failed_exports_count_as_dropped() {
        let exporter = Counting {
            exported: Arc::new(AtomicUsize::new(0)),
            fail: true,
        };
        let dropped = Counter::default();
        let (processor, task) = QueueProcessor::start(exporter, dropped.clone());
        let started = std::time::Instant::now();
        // Pushed on this thread without yielding: the exporting task cannot drain meanwhile.
        let total = QUEUE_CAPACITY + 100;
        for _ in 0..total {
            processor.on_end(span());
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "ending spans never waits"
        );
        assert_eq!(dropped.get(), 100, "what did not fit is dropped at once");
        processor.shutdown().unwrap();
        task.await.unwrap();
        assert_eq!(
            dropped.get(),
            total as u64,
            "and every failed export counts"
        );
    }
}
