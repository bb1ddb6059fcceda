//! job-closer: closes LinkedIn job postings from a RabbitMQ queue, reliably and at scale.
//!
//! The parts in dependency order, top to bottom; each uses only parts below it (the module graph is
//! acyclic):
//!
//! The face:
//! - [`cli`]: the command line and exit codes (`main.rs` only parses, logs, installs signals);
//!   [`check`]: `job-closer check`, the pre-flight.
//!
//! The daemon and the tools:
//! - [`worker`]: the daemon — session open / consume / drain (on a consuming and a publishing
//!   connection, following the broker's flow control), one attempt at LinkedIn, the pure decision
//!   after each answer, the task verifier, holds, recent closes, settling every delivery.
//! - [`dlq`]: the operator's tools for the dead-letter queue: list, stats, replay (with edits),
//!   export (and archive), import, purge, one walk they all drive.
//! - [`console`]: `dlq serve`, the dead-letter console — `dlq`'s walk, groups and records as web
//!   pages and JSON, and its replay, export and purge behind a token (built on [`dlq`]).
//! - [`publish`]: putting close requests onto the queue, and with `--wait` waiting for how each
//!   one ended.
//!
//! What they speak:
//! - [`linkedin`]: every request LinkedIn sees (`batch_create`, task lookups), the shared token, and
//!   [`linkedin::classify`], which turns each answer into an outcome.
//! - [`amqp`]: the broker — a cluster's node list in rotation, TLS, declaring with explicit
//!   arguments, probing a queue, classifying broker errors, the publisher-confirm window, a
//!   connection's flow control (blocked, unblocked, lost).
//! - [`tasks`]: the pending task checks kept in RabbitMQ (message and delay queues).
//! - [`outcome`]: the outcome message — how a close request ended, told to its producer through
//!   `reply_to` and `OUTCOME_EXCHANGE` — written by the worker's settler, read by `publish --wait`.
//! - [`dead_letter`]: the dead-letter format, written by the worker and read by `dlq`.
//! - [`metrics`]: counters and the health/metrics listener; [`logging`]: text or JSON logs that never
//!   carry a secret (with the trace ids of the span they are written in);
//!   [`telemetry`]: OpenTelemetry traces over OTLP when the `OTEL_*` settings ask for them, and the
//!   W3C trace context on every message; [`http_proxy`]: which proxy an HTTP request takes (never
//!   one for loopback).
//!
//! The pure core:
//! - [`config`]: settings — flags with environment fallbacks, secrets that never print;
//!   [`secret_file`]: the settings kept in files, read again while running (a rotated secret is a
//!   file change), the last good value kept when a file goes bad.
//! - [`close_request`]: what a close request is and whether it may be sent.
//! - [`batch`]: which elements may share a request, and when a request is due.
//! - [`retry`] and [`rate_limit`]: when to try again, and how fast the worker may send.
//!
//! Beside them, depending on nothing of the worker: [`sandbox`], the project's own LinkedIn
//! stand-in, for tests and local trials (it shares only `close_request`'s URL rule).
//!
//! The public surface is small and declared here, at the bottom of this file: what `main.rs`, the
//! end-to-end tests and the benchmark use, re-exported from the private modules, plus four formats
//! kept as public modules because other programs speak them ([`close_request`], [`dead_letter`],
//! [`outcome`], [`tasks`]'s pending-check headers). Everything else is `pub(crate)`, so `dead_code`
//! names any item nothing uses. These docs are for the crate's developers: build them with
//! `cargo doc --document-private-items` (CI does, with warnings as errors), which is why links to
//! private modules are allowed.

#![allow(rustdoc::private_intra_doc_links)]

mod amqp;
mod batch;
mod check;
mod cli;
pub mod close_request;
mod config;
mod console;
pub mod dead_letter;
mod dlq;
mod http_proxy;
mod linkedin;
mod logging;
mod metrics;
pub mod outcome;
mod publish;
mod rate_limit;
mod retry;
mod sandbox;
mod secret_file;
pub mod tasks;
mod telemetry;
mod worker;

// The public surface (see the crate doc): nothing here is for a library user, only for this
// crate's binary, tests and benchmark.

/// Broker plumbing the tests set queues up and publish with, as the worker does.
pub use amqp::{
    check_confirmation, confirm_channel, declare_queues, header_int, header_text, publish_confirmed,
};
/// The command line, as `main.rs` runs it.
pub use cli::{CLOSE_REQUEST_SCHEMA, Cli, CliError, Command, default_log_directives, execute};
/// The settings read from the environment without a flag (`tests/it/docs.rs` checks the docs against
/// them and the clap definitions).
pub use config::ENVIRONMENT_ONLY;
/// Settings the tests and the benchmark build a worker's environment from.
pub use config::{AmqpArgs, BatchArgs, QueueType, redact_url_password};
/// Logging set up once per process.
pub use logging::{LogFormat, TracingLayer, init as init_logging};
/// The LinkedIn stand-in the tests and local trials run against.
pub use sandbox::{
    ALREADY_CLOSED_MESSAGE, Fault, RandomFaults, RecloseAnswer, Sandbox, SandboxConfig, TaskRule,
};
/// Tracing, started before logging (whose subscriber takes its layer) and flushed at exit.
pub use telemetry::{TelemetryError, Tracing, start as start_tracing};
