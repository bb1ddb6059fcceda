//! Verifying closes. LinkedIn answers a close with a 202 and a task id: the close is queued, not
//! done, and a task can still end `FAILED` with the job left open. This module closes that loop: each
//! accepted close becomes a *pending check* in RabbitMQ (the original request plus its task id) that
//! waits in a delay queue, comes due in the verification queue, and is looked up with many others in
//! one `simpleJobPostingTasks` call — until its task `SUCCEEDED`, `FAILED` (dead-lettered as
//! `task-failed`) or outlived its id (dead-lettered as `task-unknown`).
//!
//! The broker is the only state: no pending check lives only in memory, so a SIGKILL or a lost
//! connection delays verifications but never loses one.
//!
//! - [`queues`]: the delay tiers and the verification queue, their names and arguments.
//! - [`pending`]: the pending-check message and how to get the original request back from it.
//! - [`lookup`]: the batched status lookup and what each task status means.
//! - [`check`]: the verifier, which consumes due checks and settles each one.

pub mod check;
pub mod lookup;
pub mod pending;
pub mod queues;

pub use check::Verifier;
pub use pending::PendingCheck;
pub use queues::Schedule;
