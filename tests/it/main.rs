//! The integration tests, one binary over the one harness in `tests/common`: a module per area,
//! each driving the built `job-closer` against the real RabbitMQ (and, where a test needs them,
//! extra nodes it starts itself) and the LinkedIn sandbox. One binary links the crate and its
//! dependencies once instead of once per file, which was most of CI's time (see docs/testing.md).
//! Run one area with `cargo nextest run --cargo-profile ci cluster::` (or `cargo test --profile ci --test it
//! cluster::`), one test by its full name.

#[path = "../common/mod.rs"]
mod common;

mod alarm;
mod answers;
mod cluster;
mod compose;
mod console;
mod credentials;
mod deploy;
mod dlq;
mod docs;
mod faults;
mod isolation;
mod ops;
mod outcomes;
mod pipeline;
mod producer_outcomes;
mod producers;
mod proxy;
mod schema;
mod secrets;
mod tasks;
mod tls;
mod tracing;
