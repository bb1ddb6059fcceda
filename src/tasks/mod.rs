//! Pending task checks in RabbitMQ: their message format and the queues they wait in. LinkedIn
//! answers a close with a 202 and a task id: the close is queued, not done, and a task can still end
//! `FAILED` with the job left open. So each accepted close becomes a *pending check* (the original
//! request plus its task id) that waits in a delay queue, comes due in the verification queue, and is
//! looked up — until its task `SUCCEEDED`, `FAILED` (dead-lettered as `task-failed`) or outlived its
//! id (dead-lettered as `task-unknown`).
//!
//! The broker is the only state: no pending check lives only in memory, so a SIGKILL or a lost
//! connection delays verifications but never loses one.
//!
//! - [`queues`]: the delay tiers and the verification queue, their names and arguments.
//! - [`pending`]: the pending-check message and how to get the original request back from it.
//!
//! Only formats and plumbing live here, and nothing here knows the worker: the verifier that
//! consumes the due checks is part of the daemon (`worker::verify`), and the status lookup is a
//! LinkedIn request ([`crate::linkedin::lookup`]). (The verifier used to be `tasks::check`, calling
//! back into the worker's settler while the worker called into `tasks`: a loop in the module graph.)

pub mod pending;
pub(crate) mod queues;

pub(crate) use pending::PendingCheck;
pub use queues::Schedule;
