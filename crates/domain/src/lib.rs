//! What every clipstash crate agrees on, with no I/O: a job's states and which transitions
//! are legal ([`job`]), the stable error codes with their HTTP status and retry class
//! ([`error`]), and the enums behind bounded metric labels ([`labels`]).

pub mod config;
pub mod error;
pub mod job;
pub mod labels;
pub mod media;
pub mod progress;
pub mod webhook;

pub use error::{ErrorCode, ErrorType, JobError};
pub use job::{DownloadJob, JobStatus, Transition};
pub use labels::{RequestedSource, SourceOperation, StorageProvider, VideoSource};
pub use media::{Media, StoredObject};
pub use progress::{JobEvent, Progress};

/// `/v1` routes and jobs are versioned together; bump on a breaking change of either.
pub const API_VERSION: &str = "v1";
