//! The clipstash domain shared by the API and the worker: the job model and its error codes,
//! Postgres access, the apalis-redis queue, object storage and fetching from sources.

pub mod config;
pub mod db;
pub mod error_code;
pub mod fetch;
pub mod gauges;
pub mod model;
pub mod queue;
pub mod runtime;
pub mod storage;

pub use error_code::{ErrorCode, ErrorType};
pub use model::{DownloadJob, JobStatus};

/// `/v1` routes and jobs are versioned together; bump on a breaking change of either.
pub const API_VERSION: &str = "v1";
