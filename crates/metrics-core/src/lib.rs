//! The clipstash metrics catalogue, shared by the API and the worker.
//!
//! Every metric clipstash exports is named, described, given its unit and bucketed here
//! ([`catalogue::CATALOGUE`]), and nowhere else. A binary builds one [`Exporter`] and decides
//! whether to install it as the process's recorder; code records through the RAII
//! [`Tracker`] so that early returns, `?`, cancellation and panics are counted as failures
//! instead of vanishing.

pub mod catalogue;
pub mod exporter;
#[cfg(feature = "actix")]
pub mod http;
pub mod trackers;

pub use catalogue::{CATALOGUE, Component, Kind, MetricDef};
pub use exporter::Exporter;
pub use trackers::{
    DOWNLOADS, EgressVia, Family, HttpTracker, Outcome, SOURCE_CALLS, Task, Tracked, Tracker,
    UPLOADS, record_egress_refused, record_error, record_queue_wait, record_requeue,
    record_task_outcome,
};
