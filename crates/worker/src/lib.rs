//! clipstash worker: takes download jobs from Redis (apalis-redis) and streams each source
//! into object storage, recording states, attempts and storage usage in Postgres.
//!
//! - [`settings`]: the command line; [`startup`]: connect, bind `/metrics`, run, drain;
//! - [`supervisor`]: the apalis monitor, restarts and hand-back; [`poll`]: its wake-up timer;
//! - [`job`]: one job: claim, the attempt loop with backoff, the outcome;
//! - [`sweeper`]: re-enqueues what Redis lost, prunes finished jobs, applies retention;
//! - [`webhooks`]: delivers the webhook outbox, signed, with retries.
//!
//! Retries happen here, not in apalis: apalis-redis 1.0 retries failed tasks up to a
//! hard-coded 25 times with a linear delay, so the handler keeps its own bounded, exponential
//! attempt loop and reports every job outcome to apalis as done.

pub mod job;
pub mod poll;
pub mod settings;
pub mod startup;
pub mod storage_cmd;
pub mod supervisor;
pub mod sweeper;
pub mod webhooks;

pub use job::JobContext;
pub use settings::{Cli, Command, Settings};
pub use startup::Worker;
