//! job-closer: closes LinkedIn job postings from a RabbitMQ queue, reliably and at scale.
//!
//! The parts, in the order a close request meets them:
//! - [`config`]: settings — flags with environment fallbacks, secrets that never print.
//! - [`amqp`]: connecting (a cluster's node list in rotation, TLS with a private CA and client
//!   certificates), declaring the queues with explicit arguments, confirmed publishing.
//! - [`close_request`]: what a close request is and whether it may be sent.
//! - [`batch`]: which elements may share a request, and when a request is due.
//! - [`linkedin`]: building and sending `batch_create`, the shared token, and [`linkedin::classify`],
//!   which turns each answer into an action.
//! - [`retry`] and [`rate_limit`]: when to try again, and how fast the worker may send.
//! - [`worker`]: the daemon tying these together, and settling every delivery.
//! - [`tasks`]: verifying that each accepted close's LinkedIn task succeeded, with the pending checks
//!   kept in RabbitMQ.
//! - [`dead_letter`]: the dead-letter format the worker writes and `dlq` reads.
//! - [`dlq`]: the operator's tools for the dead-letter queue: list, stats, replay, export, purge.
//! - [`publish`]: putting close requests onto the queue.
//! - [`metrics`]: counters and the health/metrics listener; [`logging`]: text or JSON logs that never
//!   carry a secret.
//! - [`sandbox`]: the project's own LinkedIn stand-in, for tests and local trials.
//! - [`http_proxy`]: which proxy an HTTP request takes (never one for loopback).
//! - [`cli`]: the command line and exit codes; [`check`]: `job-closer check`, the pre-flight.

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
