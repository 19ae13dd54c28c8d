//! clipstash's fault suite (`just chaos`, issue 9): the real `clipstash-api` and
//! `clipstash-worker` binaries against a Postgres and a Redis of their own, a steady stream
//! of jobs, and one fault per scenario; then the promise of docs/RELIABILITY.md is checked
//! against Postgres, the stored objects and the workers' metrics.
//!
//! - [`cluster`]: the processes and their upkeep (a process that exits is started again);
//! - [`load`]: the job stream and a client that retries with its `Idempotency-Key`;
//! - [`scenarios`]: the faults;
//! - [`check`]: the verdict and the table.

pub mod check;
pub mod cluster;
pub mod load;
pub mod scenarios;

pub use check::{Verdict, table};
pub use scenarios::{ALL, Options, run};
