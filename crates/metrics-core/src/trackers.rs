//! RAII trackers: the original's `MetricsTracker` context managers as values whose `Drop`
//! records the outcome. A tracker that is dropped without being marked successful records a
//! failure, so `?`, early returns, timeouts, cancellation and panics are all counted.

use std::borrow::Cow;
use std::time::Instant;

use metrics::{counter, gauge, histogram};

use crate::catalogue::*;

const SUCCESS: &str = "success";
const FAILED: &str = "failed";
const RETRIED: &str = "retried";

/// Counts one error in `errors_total{error_code, error_type}`; both come from closed enums.
pub fn record_error(error_code: &'static str, error_type: &'static str) {
    counter!(ERRORS_TOTAL, "error_code" => error_code, "error_type" => error_type).increment(1);
}

/// Records the enqueue-to-first-start latency of a task in `task_queue_wait_seconds`.
pub fn record_queue_wait(task_name: &'static str, seconds: f64) {
    histogram!(TASK_QUEUE_WAIT_SECONDS, "task_name" => task_name).record(seconds.max(0.0));
}

/// Tracks one download attempt: `downloads_in_progress`, `download_duration_seconds`,
/// `downloads_total{status, provider}`.
#[must_use = "the download is recorded when the tracker is dropped"]
pub struct DownloadTracker {
    provider: &'static str,
    start: Instant,
    ok: bool,
}

impl DownloadTracker {
    pub fn start(provider: &'static str) -> Self {
        gauge!(DOWNLOADS_IN_PROGRESS).increment(1.0);
        Self {
            provider,
            start: Instant::now(),
            ok: false,
        }
    }

    /// Marks the download successful; without this, dropping records a failure.
    pub fn success(mut self) {
        self.ok = true;
    }
}

impl Drop for DownloadTracker {
    fn drop(&mut self) {
        gauge!(DOWNLOADS_IN_PROGRESS).decrement(1.0);
        histogram!(DOWNLOAD_DURATION_SECONDS).record(self.start.elapsed().as_secs_f64());
        let status = if self.ok { SUCCESS } else { FAILED };
        counter!(DOWNLOADS_TOTAL, "status" => status, "provider" => self.provider).increment(1);
    }
}

/// Tracks one upload into storage: `storage_upload_duration_seconds{provider}` and
/// `storage_uploads_total{provider, status}`.
#[must_use = "the upload is recorded when the tracker is dropped"]
pub struct UploadTracker {
    provider: &'static str,
    start: Instant,
    ok: bool,
}

impl UploadTracker {
    pub fn start(provider: &'static str) -> Self {
        Self {
            provider,
            start: Instant::now(),
            ok: false,
        }
    }

    pub fn success(mut self) {
        self.ok = true;
    }
}

impl Drop for UploadTracker {
    fn drop(&mut self) {
        histogram!(STORAGE_UPLOAD_DURATION_SECONDS, "provider" => self.provider)
            .record(self.start.elapsed().as_secs_f64());
        let status = if self.ok { SUCCESS } else { FAILED };
        counter!(STORAGE_UPLOADS_TOTAL, "provider" => self.provider, "status" => status)
            .increment(1);
    }
}

/// Tracks one call to the video source (`youtube_api_*{operation}`, names kept from the
/// original so its dashboards work).
#[must_use = "the call is recorded when the tracker is dropped"]
pub struct SourceCallTracker {
    operation: &'static str,
    start: Instant,
    ok: bool,
}

impl SourceCallTracker {
    pub fn start(operation: &'static str) -> Self {
        Self {
            operation,
            start: Instant::now(),
            ok: false,
        }
    }

    pub fn success(mut self) {
        self.ok = true;
    }
}

impl Drop for SourceCallTracker {
    fn drop(&mut self) {
        histogram!(YOUTUBE_API_DURATION_SECONDS, "operation" => self.operation)
            .record(self.start.elapsed().as_secs_f64());
        let status = if self.ok { SUCCESS } else { FAILED };
        counter!(YOUTUBE_API_CALLS_TOTAL, "operation" => self.operation, "status" => status)
            .increment(1);
    }
}

/// Outcome of a task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Success,
    /// Failed, will be tried again.
    Retried,
    /// Failed for good.
    Failed,
}

/// Tracks one task attempt: `tasks_in_progress`, `task_duration_seconds`, `tasks_total`
/// (Celery's `celery_tasks_total` / `celery_task_duration_seconds`).
#[must_use = "the task is recorded when the tracker is dropped"]
pub struct TaskTracker {
    task_name: &'static str,
    start: Instant,
    outcome: TaskOutcome,
}

impl TaskTracker {
    pub fn start(task_name: &'static str) -> Self {
        gauge!(TASKS_IN_PROGRESS, "task_name" => task_name).increment(1.0);
        Self {
            task_name,
            start: Instant::now(),
            outcome: TaskOutcome::Failed,
        }
    }

    /// Sets the outcome recorded at drop; the default is `Failed`.
    pub fn finish(mut self, outcome: TaskOutcome) {
        self.outcome = outcome;
    }
}

impl Drop for TaskTracker {
    fn drop(&mut self) {
        gauge!(TASKS_IN_PROGRESS, "task_name" => self.task_name).decrement(1.0);
        histogram!(TASK_DURATION_SECONDS, "task_name" => self.task_name)
            .record(self.start.elapsed().as_secs_f64());
        let status = match self.outcome {
            TaskOutcome::Success => SUCCESS,
            TaskOutcome::Retried => RETRIED,
            TaskOutcome::Failed => FAILED,
        };
        counter!(TASKS_TOTAL, "task_name" => self.task_name, "status" => status).increment(1);
    }
}

/// Tracks one HTTP request: `http_requests_in_flight`, `http_request_duration_seconds` and
/// `http_requests_total`. Latency by route and count by status are separate metrics so
/// their labels do not multiply. A request dropped before a response (client gone,
/// cancelled) is counted with status 499.
#[must_use = "the request is recorded when the tracker is dropped"]
pub struct HttpTracker {
    method: &'static str,
    endpoint: Cow<'static, str>,
    start: Instant,
    status: u16,
}

impl HttpTracker {
    /// `endpoint` must be a route template (or [`ENDPOINT_UNMATCHED`]), never a raw path.
    pub fn start(method: &str) -> Self {
        gauge!(HTTP_REQUESTS_IN_FLIGHT).increment(1.0);
        Self {
            method: bounded_method(method),
            endpoint: Cow::Borrowed(ENDPOINT_UNMATCHED),
            start: Instant::now(),
            status: 499,
        }
    }

    /// Seconds since the request started (for `X-Process-Time`).
    pub fn elapsed_seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records the matched route template and the response status.
    pub fn finish(mut self, endpoint: Option<String>, status: u16) {
        if let Some(e) = endpoint {
            self.endpoint = Cow::Owned(e);
        }
        self.status = status;
    }
}

impl Drop for HttpTracker {
    fn drop(&mut self) {
        gauge!(HTTP_REQUESTS_IN_FLIGHT).decrement(1.0);
        let endpoint = self.endpoint.clone();
        histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => self.method, "endpoint" => endpoint.clone())
            .record(self.start.elapsed().as_secs_f64());
        counter!(
            HTTP_REQUESTS_TOTAL,
            "method" => self.method,
            "endpoint" => endpoint,
            "status" => status_label(self.status)
        )
        .increment(1);
    }
}

/// Maps a request method onto a closed set, so arbitrary verbs cannot add series.
fn bounded_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_label(status: u16) -> &'static str {
    // Status codes are a small closed set; leak-free static strings for the common ones.
    const CODES: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (499, "499"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    CODES
        .iter()
        .find(|(c, _)| *c == status)
        .map(|(_, s)| *s)
        .unwrap_or(match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::prometheus_builder;

    /// Runs `f` against a fresh local recorder and returns the rendered exposition.
    fn render_with(f: impl FnOnce()) -> String {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }

    #[test]
    fn dropped_tracker_counts_as_failure() {
        let text = render_with(|| {
            let ok = DownloadTracker::start("direct");
            ok.success();
            let _failed = DownloadTracker::start("direct");
            // `_failed` is dropped at the end of scope without success(): a failure.
        });
        assert_eq!(
            value(
                &text,
                r#"downloads_total{status="success",provider="direct"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"downloads_total{status="failed",provider="direct"}"#
            ),
            1.0
        );
        assert_eq!(value(&text, "downloads_in_progress"), 0.0);
        assert_eq!(value(&text, "download_duration_seconds_count"), 2.0);
        assert!(
            text.contains(r#"download_duration_seconds_bucket{le="1800"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn panic_inside_tracked_work_is_a_failure() {
        let text = render_with(|| {
            let r = std::panic::catch_unwind(|| {
                let t = TaskTracker::start(TASK_PROCESS_DOWNLOAD);
                if t.start.elapsed().as_secs() < 1_000 {
                    panic!("boom");
                }
                t.finish(TaskOutcome::Success);
            });
            assert!(r.is_err());
            TaskTracker::start(TASK_PROCESS_DOWNLOAD).finish(TaskOutcome::Retried);
        });
        assert_eq!(
            value(
                &text,
                r#"tasks_total{task_name="process_download",status="failed"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"tasks_total{task_name="process_download",status="retried"}"#
            ),
            1.0
        );
        assert_eq!(
            value(&text, r#"tasks_in_progress{task_name="process_download"}"#),
            0.0
        );
        assert!(
            text.contains("# TYPE task_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn http_tracker_bounds_labels() {
        let text = render_with(|| {
            HttpTracker::start("GET").finish(Some("/v1/downloads/{id}".into()), 200);
            HttpTracker::start("BREW").finish(None, 404);
            let _abandoned = HttpTracker::start("POST");
        });
        assert_eq!(
            value(
                &text,
                r#"http_requests_total{method="GET",endpoint="/v1/downloads/{id}",status="200"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"http_requests_total{method="OTHER",endpoint="unmatched",status="404"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"http_requests_total{method="POST",endpoint="unmatched",status="499"}"#
            ),
            1.0
        );
        assert_eq!(value(&text, "http_requests_in_flight"), 0.0);
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }

    #[test]
    fn upload_and_source_call_trackers_record_outcomes() {
        let text = render_with(|| {
            UploadTracker::start("local").success();
            drop(UploadTracker::start("local"));
            SourceCallTracker::start("download_video").success();
            record_error("source_not_found", "permanent");
        });
        assert_eq!(
            value(
                &text,
                r#"storage_uploads_total{provider="local",status="success"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"storage_uploads_total{provider="local",status="failed"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"youtube_api_calls_total{operation="download_video",status="success"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"errors_total{error_code="source_not_found",error_type="permanent"}"#
            ),
            1.0
        );
    }
}
