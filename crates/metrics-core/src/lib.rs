//! The clipstash metrics catalogue, shared by the API and the worker.
//!
//! Every metric clipstash exports is named, described, given its unit and bucketed here
//! ([`catalogue::CATALOGUE`]), and nowhere else. Binaries call [`Exporter::install`] once;
//! code records through the RAII trackers in [`trackers`] so that early returns, `?`,
//! cancellation and panics are counted as failures instead of vanishing.

pub mod catalogue;
pub mod exporter;
#[cfg(feature = "actix")]
pub mod http;
pub mod process;
pub mod trackers;

pub use catalogue::{CATALOGUE, Component, Kind, MetricDef};
pub use exporter::Exporter;
pub use trackers::{
    DownloadTracker, HttpTracker, SourceCallTracker, TaskOutcome, TaskTracker, UploadTracker,
    record_error,
};
