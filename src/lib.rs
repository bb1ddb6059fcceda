//! job-closer: closes LinkedIn job postings from a RabbitMQ queue.
//!
//! The parts, from the queue to LinkedIn and back:
//! - [`sandbox`]: the project's own LinkedIn stand-in, for tests and local trials.

pub mod sandbox;
