//! The clipstash metrics catalogue, shared by the API and the worker.
//!
//! Every metric clipstash exports is named, described, given its unit and bucketed here
//! ([`catalogue::CATALOGUE`]), and nowhere else. Binaries call [`Exporter::install`] once;
//! code records through the RAII trackers in [`trackers`] so that early returns, `?`,
//! cancellation and panics are counted as failures instead of vanishing.

pub mod catalogue;
pub mod exporter;
pub mod process;
pub mod trackers;

pub use catalogue::{Component, Kind, MetricDef, CATALOGUE};
pub use exporter::Exporter;
pub use trackers::{TaskOutcome, 
    record_error, DownloadTracker, HttpTracker, SourceCallTracker, TaskTracker, UploadTracker,
};
