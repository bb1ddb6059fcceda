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
//! - [`worker`]: the daemon — session open / consume / drain, one attempt at LinkedIn, the pure
//!   decision after each answer, the task verifier, holds, recent closes, settling every delivery.
//! - [`dlq`]: the operator's tools for the dead-letter queue: list, stats, replay (with edits),
//!   export (and archive), import, purge, one walk they all drive.
//! - [`publish`]: putting close requests onto the queue.
//!
//! What they speak:
//! - [`linkedin`]: every request LinkedIn sees (`batch_create`, task lookups), the shared token, and
//!   [`linkedin::classify`], which turns each answer into an outcome.
//! - [`amqp`]: the broker — a cluster's node list in rotation, TLS, declaring with explicit
//!   arguments, probing a queue, classifying broker errors, the publisher-confirm window.
//! - [`tasks`]: the pending task checks kept in RabbitMQ (message and delay queues).
//! - [`dead_letter`]: the dead-letter format, written by the worker and read by `dlq`.
//! - [`metrics`]: counters and the health/metrics listener; [`logging`]: text or JSON logs that never
//!   carry a secret; [`http_proxy`]: which proxy an HTTP request takes (never one for loopback).
//!
//! The pure core:
//! - [`config`]: settings — flags with environment fallbacks, secrets that never print.
//! - [`close_request`]: what a close request is and whether it may be sent.
//! - [`batch`]: which elements may share a request, and when a request is due.
//! - [`retry`] and [`rate_limit`]: when to try again, and how fast the worker may send.
//!
//! Beside them, depending on nothing of the worker: [`sandbox`], the project's own LinkedIn
//! stand-in, for tests and local trials (it shares only `close_request`'s URL rule).

pub mod amqp;
pub mod batch;
pub mod check;
pub mod cli;
pub mod close_request;
pub mod config;
pub mod dead_letter;
pub mod dlq;
pub mod http_proxy;
pub mod linkedin;
pub mod logging;
pub mod metrics;
pub mod publish;
pub mod rate_limit;
pub mod retry;
pub mod sandbox;
pub mod tasks;
pub mod worker;
