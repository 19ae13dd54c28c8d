//! Names, help texts, units and histogram buckets of every clipstash metric.

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Which binary is exporting; the `component` label of `app_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Api,
    Worker,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Api => "api",
            Component::Worker => "worker",
        }
    }
}

/// Metric type as Prometheus renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One entry of the catalogue.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Upper bounds; non-empty exactly for histograms (without them the exporter renders summaries).
    pub buckets: &'static [f64],
}

pub const APP_INFO: &str = "app_info";
pub const DOWNLOADS_TOTAL: &str = "downloads_total";
pub const DOWNLOADS_IN_PROGRESS: &str = "downloads_in_progress";
pub const DOWNLOAD_DURATION_SECONDS: &str = "download_duration_seconds";
pub const STORAGE_UPLOADS_TOTAL: &str = "storage_uploads_total";
pub const STORAGE_UPLOAD_DURATION_SECONDS: &str = "storage_upload_duration_seconds";
pub const STORAGE_USAGE_BYTES: &str = "storage_usage_bytes";
pub const STORAGE_FILES: &str = "storage_files";
pub const STORAGE_QUOTA_BYTES: &str = "storage_quota_bytes";
pub const ERRORS_TOTAL: &str = "errors_total";
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";
pub const HTTP_REQUESTS_REJECTED_TOTAL: &str = "http_requests_rejected_total";
pub const YOUTUBE_API_CALLS_TOTAL: &str = "youtube_api_calls_total";
pub const YOUTUBE_API_DURATION_SECONDS: &str = "youtube_api_duration_seconds";
pub const TASKS_TOTAL: &str = "tasks_total";
pub const TASK_DURATION_SECONDS: &str = "task_duration_seconds";
pub const TASKS_IN_PROGRESS: &str = "tasks_in_progress";
pub const TASK_QUEUE_WAIT_SECONDS: &str = "task_queue_wait_seconds";
pub const TASKS_ENQUEUED_TOTAL: &str = "tasks_enqueued_total";
pub const QUEUE_LENGTH: &str = "queue_length";
pub const WORKERS_LIVE: &str = "workers_live";
pub const JOBS_REQUEUED_TOTAL: &str = "jobs_requeued_total";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "webhook_deliveries_total";
pub const WEBHOOK_DELIVERY_DURATION_SECONDS: &str = "webhook_delivery_duration_seconds";
pub const JOBS_STALE_SECONDS: &str = "jobs_stale_seconds";
pub const EGRESS_REFUSED_TOTAL: &str = "egress_refused_total";
pub const YTDLP_INFO: &str = "ytdlp_info";

/// The one task type clipstash runs; the original's Celery task name.
pub const TASK_PROCESS_DOWNLOAD: &str = "process_download";
/// `endpoint` label of every request that matched no route: one series, whatever the path.
pub const ENDPOINT_UNMATCHED: &str = "unmatched";

/// Every metric clipstash exports through the `metrics` facade (process metrics are in
/// [`crate::process`]). Buckets keep the original plan's bounds and add finer low ones.
pub static CATALOGUE: &[MetricDef] = &[
    MetricDef {
        name: APP_INFO,
        kind: Kind::Gauge,
        unit: None,
        labels: &["name", "version", "component"],
        help: "Application information; always 1.",
        buckets: &[],
    },
    MetricDef {
        name: DOWNLOADS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["status", "provider"],
        help: "Downloads finished, by outcome (success/failed/cancelled) and the video source that ran (direct, youtube, ytdlp).",
        buckets: &[],
    },
    MetricDef {
        name: DOWNLOADS_IN_PROGRESS,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Downloads currently running in this worker.",
        buckets: &[],
    },
    MetricDef {
        name: DOWNLOAD_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time from the first request to the source until the media is stored, per attempt.",
        buckets: &[
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
        ],
    },
    MetricDef {
        name: STORAGE_UPLOADS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["provider", "status"],
        help: "Uploads into object storage, by storage provider and outcome.",
        buckets: &[],
    },
    MetricDef {
        name: STORAGE_UPLOAD_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["provider"],
        help: "Time spent writing one object into storage (streamed while downloading).",
        buckets: &[
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ],
    },
    MetricDef {
        name: STORAGE_USAGE_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &["provider"],
        help: "Bytes stored per storage provider, from Postgres (global: aggregate with max).",
        buckets: &[],
    },
    MetricDef {
        name: STORAGE_FILES,
        kind: Kind::Gauge,
        unit: None,
        labels: &["provider"],
        help: "Objects stored per storage provider, from Postgres (global: aggregate with max).",
        buckets: &[],
    },
    MetricDef {
        name: STORAGE_QUOTA_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &["provider"],
        help: "Configured storage quota per provider in bytes; 0 means no quota.",
        buckets: &[],
    },
    MetricDef {
        name: ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["error_code", "error_type"],
        help: "Errors by stable error code and error type.",
        buckets: &[],
    },
    MetricDef {
        name: HTTP_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["method", "endpoint", "status"],
        help: "HTTP requests by method, route template and status code.",
        buckets: &[],
    },
    MetricDef {
        name: HTTP_REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["method", "endpoint"],
        help: "HTTP request duration by method and route template.",
        buckets: &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    },
    MetricDef {
        name: HTTP_REQUESTS_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "HTTP requests being served right now.",
        buckets: &[],
    },
    MetricDef {
        name: HTTP_REQUESTS_REJECTED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "API requests refused by access control: reason is unauthenticated (no, unknown or revoked key), rate_limited, too_many_active_jobs or too_many_streams.",
        buckets: &[],
    },
    MetricDef {
        name: YOUTUBE_API_CALLS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["operation", "status"],
        help: "yt-dlp runs (download_video in workers, get_video_info in the API), by operation and outcome; direct links are not counted.",
        buckets: &[],
    },
    MetricDef {
        name: YOUTUBE_API_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["operation"],
        help: "Duration of yt-dlp runs: until the media starts to flow (download_video), or the whole info run (get_video_info).",
        buckets: &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
    },
    MetricDef {
        name: TASKS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["task_name", "status"],
        help: "Task attempts ended in this worker: success, failed (final), retried, cancelled (by the client), or interrupted (shutdown or a lost dependency; the job runs again).",
        buckets: &[],
    },
    MetricDef {
        name: TASK_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["task_name"],
        help: "Task execution time per attempt.",
        buckets: &[
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ],
    },
    MetricDef {
        name: TASKS_IN_PROGRESS,
        kind: Kind::Gauge,
        unit: None,
        labels: &["task_name"],
        help: "Tasks executing in this worker right now.",
        buckets: &[],
    },
    MetricDef {
        name: TASK_QUEUE_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["task_name"],
        help: "Time from enqueue by the API to the first start in a worker.",
        buckets: &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
        ],
    },
    MetricDef {
        name: TASKS_ENQUEUED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["task_name"],
        help: "Tasks enqueued by the API.",
        buckets: &[],
    },
    MetricDef {
        name: QUEUE_LENGTH,
        kind: Kind::Gauge,
        unit: None,
        labels: &["queue", "state"],
        help: "Tasks in the Redis queue by state (pending, scheduled, running, dead); global: aggregate with max.",
        buckets: &[],
    },
    MetricDef {
        name: WORKERS_LIVE,
        kind: Kind::Gauge,
        unit: None,
        labels: &["queue"],
        help: "Workers whose heartbeat in Redis is recent; global: aggregate with max.",
        buckets: &[],
    },
    MetricDef {
        name: JOBS_REQUEUED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Jobs the sweeper enqueued again because Redis no longer held them: reason not_in_queue (queued or retrying in Postgres) or orphaned (running, its worker gone).",
        buckets: &[],
    },
    MetricDef {
        name: WEBHOOK_DELIVERIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["outcome"],
        help: "Webhook delivery attempts by outcome: delivered (2xx), retried (another attempt follows), failed (given up: 410, out of attempts or time, or unsignable), refused (the egress guard refused the callback's address; not retried).",
        buckets: &[],
    },
    MetricDef {
        name: WEBHOOK_DELIVERY_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time of one webhook delivery attempt, from the request until the receiver's answer or the failure.",
        buckets: &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
    },
    MetricDef {
        name: JOBS_STALE_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &["status"],
        help: "Age of the oldest unchanged live job per status (queued, running, retrying; 0 when none), from Postgres; global: aggregate with max. Grows without bound for a stuck job.",
        buckets: &[],
    },
    MetricDef {
        name: EGRESS_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["via"],
        help: "Destinations the egress guard refused (loopback, private, link-local, ... and not allowlisted), by path: direct (the worker's HTTP client, each request and redirect hop) or proxy (the egress proxy yt-dlp goes through, each CONNECT or request).",
        buckets: &[],
    },
    MetricDef {
        name: YTDLP_INFO,
        kind: Kind::Gauge,
        unit: None,
        labels: &["version"],
        help: "The yt-dlp this process runs (its --version); always 1. Absent when yt-dlp is off.",
        buckets: &[],
    },
];

/// Looks a metric up by name.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// A Prometheus builder with every histogram's buckets set, so none renders as a summary.
pub fn prometheus_builder() -> PrometheusBuilder {
    CATALOGUE.iter().filter(|m| m.kind == Kind::Histogram).fold(
        PrometheusBuilder::new(),
        |builder, m| {
            builder
                .set_buckets_for_metric(Matcher::Full(m.name.to_string()), m.buckets)
                .expect("catalogue histograms have buckets")
        },
    )
}

/// Describes every metric to the current recorder (help text and unit).
pub fn describe_all() {
    for m in CATALOGUE {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Sets `app_info{name, version, component} = 1`.
pub fn record_app_info(component: Component) {
    metrics::gauge!(
        APP_INFO,
        "name" => "clipstash",
        "version" => env!("CARGO_PKG_VERSION"),
        "component" => component.as_str()
    )
    .set(1.0);
}

/// Sets `ytdlp_info{version} = 1`. The version is what the configured yt-dlp printed at
/// start-up (one value per process), so the label stays bounded.
pub fn record_ytdlp_info(version: &str) {
    metrics::gauge!(YTDLP_INFO, "version" => version.to_string()).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            // promtool lints: counters end in _total, nothing else does.
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            assert!(
                m.buckets.windows(2).all(|w| w[0] < w[1]),
                "{} buckets unsorted",
                m.name
            );
        }
    }

    #[test]
    fn buckets_keep_the_original_plan_bounds() {
        let original: &[(&str, &[f64])] = &[
            (
                DOWNLOAD_DURATION_SECONDS,
                &[5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0],
            ),
            (
                STORAGE_UPLOAD_DURATION_SECONDS,
                &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
            ),
            (
                HTTP_REQUEST_DURATION_SECONDS,
                &[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            (
                YOUTUBE_API_DURATION_SECONDS,
                &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            (
                TASK_DURATION_SECONDS,
                &[5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0],
            ),
        ];
        for (name, bounds) in original {
            let def = find(name).unwrap();
            for b in *bounds {
                assert!(
                    def.buckets.contains(b),
                    "{name} lost the original bucket {b}"
                );
            }
        }
    }
}
