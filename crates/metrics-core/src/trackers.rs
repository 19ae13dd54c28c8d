//! RAII trackers: the original's `MetricsTracker` context managers as values whose `Drop`
//! records the outcome. A tracker that is dropped without being marked successful records a
//! failure, so `?`, early returns, timeouts, cancellation and panics are all counted.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Instant;

use metrics::{Label, SharedString, counter, gauge, histogram};

use crate::catalogue::*;

/// Counts one error in `errors_total{error_code, error_type}`; both come from closed enums.
pub fn record_error(error_code: &'static str, error_type: &'static str) {
    counter!(ERRORS_TOTAL, "error_code" => error_code, "error_type" => error_type).increment(1);
}

/// Where the egress guard refused a destination: the `via` label of `egress_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressVia {
    /// The worker's own HTTP client (direct links and their redirects).
    Direct,
    /// The egress proxy that yt-dlp's traffic goes through.
    Proxy,
}

impl EgressVia {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressVia::Direct => "direct",
            EgressVia::Proxy => "proxy",
        }
    }
}

/// Counts one destination the egress guard refused in `egress_refused_total{via}`.
pub fn record_egress_refused(via: EgressVia) {
    counter!(EGRESS_REFUSED_TOTAL, "via" => via.as_str()).increment(1);
}

/// Records the enqueue-to-first-start latency of a task in `task_queue_wait_seconds`.
pub fn record_queue_wait(task: Task, seconds: f64) {
    histogram!(TASK_QUEUE_WAIT_SECONDS, "task_name" => task.as_str()).record(seconds.max(0.0));
}

/// Counts one job the sweeper enqueued again in `jobs_requeued_total{reason}`; `reason` is
/// one of a closed set (`not_in_queue`, `orphaned`).
pub fn record_requeue(reason: &'static str) {
    counter!(JOBS_REQUEUED_TOTAL, "reason" => reason).increment(1);
}

/// Counts one ended attempt of `task` without timing it: for an outcome decided after its
/// tracker is gone (a job whose attempt panicked is recorded as failed).
pub fn record_task_outcome(task: Task, outcome: Outcome) {
    counter!(TASKS.total, TASKS.label => task.as_str(), "status" => outcome.as_str()).increment(1);
}

/// How an operation ended: the `status` label of its `*_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Failed, will be tried again.
    Retried,
    /// Failed for good.
    Failed,
    /// Stopped without an outcome (the process is shutting down, or lost Redis or Postgres
    /// mid-job); the job runs again. What a task tracker records when dropped unfinished.
    Interrupted,
    /// Stopped because the client cancelled the job.
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The metrics one kind of tracked operation records into.
#[derive(Debug)]
pub struct Family {
    /// Counter labelled `{label, status}`.
    pub total: &'static str,
    /// Histogram of the operation's seconds.
    pub duration: &'static str,
    /// Gauge of operations under way, if the family has one.
    pub in_progress: Option<&'static str>,
    /// Name of the label the tracked subject fills in.
    pub label: &'static str,
    /// What a tracker dropped without [`Tracker::finish`] records: `Failed` for a download
    /// or an upload (the operation did not complete), `Interrupted` for a task (it runs
    /// again; only the job's own outcome is a success or a failure).
    pub unfinished: Outcome,
    /// Whether `duration` and `in_progress` carry the label too (the original's
    /// `download_duration_seconds` and `downloads_in_progress` do not).
    pub label_everywhere: bool,
}

/// `downloads_total{provider, status}`, `download_duration_seconds`, `downloads_in_progress`:
/// `provider` is the video source.
pub static DOWNLOADS: Family = Family {
    total: DOWNLOADS_TOTAL,
    duration: DOWNLOAD_DURATION_SECONDS,
    in_progress: Some(DOWNLOADS_IN_PROGRESS),
    label: "provider",
    label_everywhere: false,
    unfinished: Outcome::Failed,
};

/// `storage_uploads_total{provider, status}`, `storage_upload_duration_seconds{provider}`:
/// `provider` is the storage backend.
pub static UPLOADS: Family = Family {
    total: STORAGE_UPLOADS_TOTAL,
    duration: STORAGE_UPLOAD_DURATION_SECONDS,
    in_progress: None,
    label: "provider",
    label_everywhere: true,
    unfinished: Outcome::Failed,
};

/// `youtube_api_calls_total{operation, status}`, `youtube_api_duration_seconds{operation}`:
/// names kept from the original so its dashboards work.
pub static SOURCE_CALLS: Family = Family {
    total: YOUTUBE_API_CALLS_TOTAL,
    duration: YOUTUBE_API_DURATION_SECONDS,
    in_progress: None,
    label: "operation",
    label_everywhere: true,
    unfinished: Outcome::Failed,
};

/// `tasks_total{task_name, status}`, `task_duration_seconds{task_name}`,
/// `tasks_in_progress{task_name}`: Celery's task metrics.
pub static TASKS: Family = Family {
    total: TASKS_TOTAL,
    duration: TASK_DURATION_SECONDS,
    in_progress: Some(TASKS_IN_PROGRESS),
    label: "task_name",
    label_everywhere: true,
    unfinished: Outcome::Interrupted,
};

/// A subject whose operations are tracked: its type picks the metric family, so a video
/// source can never be recorded as a storage provider or the other way round.
pub trait Tracked {
    const FAMILY: &'static Family;
    /// The label value: from a closed enum or from configuration, never from user input.
    fn label_value(&self) -> SharedString;
}

/// The one task type clipstash runs (the original's Celery task name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    ProcessDownload,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::ProcessDownload => TASK_PROCESS_DOWNLOAD,
        }
    }
}

impl Tracked for Task {
    const FAMILY: &'static Family = &TASKS;
    fn label_value(&self) -> SharedString {
        self.as_str().into()
    }
}

/// Tracks one operation of a [`Tracked`] subject from start to drop. Dropped without
/// [`finish`](Tracker::finish) or [`success`](Tracker::success), it records a failure.
#[must_use = "the operation is recorded when the tracker is dropped"]
pub struct Tracker<T: Tracked> {
    label: SharedString,
    start: Instant,
    outcome: Outcome,
    _subject: PhantomData<fn(T)>,
}

impl<T: Tracked> Tracker<T> {
    pub fn start(subject: &T) -> Self {
        let tracker = Self {
            label: subject.label_value(),
            start: Instant::now(),
            outcome: T::FAMILY.unfinished,
            _subject: PhantomData,
        };
        if let Some(g) = T::FAMILY.in_progress {
            gauge!(g, tracker.scoped_labels()).increment(1.0);
        }
        tracker
    }

    /// Sets the outcome recorded at drop.
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// Records the operation under `subject` instead (a download that turned out to run on
    /// another source than planned, e.g. a direct link handed to yt-dlp).
    pub fn relabel(&mut self, subject: &T) {
        let label = subject.label_value();
        if label == self.label {
            return;
        }
        if let Some(g) = T::FAMILY.in_progress {
            gauge!(g, self.scoped_labels()).decrement(1.0);
            self.label = label;
            gauge!(g, self.scoped_labels()).increment(1.0);
        } else {
            self.label = label;
        }
    }

    /// Shorthand for `finish(Outcome::Success)`.
    pub fn success(self) {
        self.finish(Outcome::Success)
    }

    /// Labels of the duration and in-progress metrics: the subject's label, if the family
    /// puts it there.
    fn scoped_labels(&self) -> Vec<Label> {
        if T::FAMILY.label_everywhere {
            vec![Label::new(T::FAMILY.label, self.label.clone())]
        } else {
            Vec::new()
        }
    }
}

impl<T: Tracked> Drop for Tracker<T> {
    fn drop(&mut self) {
        let f = T::FAMILY;
        if let Some(g) = f.in_progress {
            gauge!(g, self.scoped_labels()).decrement(1.0);
        }
        histogram!(f.duration, self.scoped_labels()).record(self.start.elapsed().as_secs_f64());
        counter!(f.total, f.label => self.label.clone(), "status" => self.outcome.as_str())
            .increment(1);
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

    /// The value of the one series `name` with exactly `labels` (in any order).
    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = text
            .lines()
            .filter_map(|l| {
                let (series, v) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
                let pairs: Vec<&str> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .collect();
                let wanted: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                (n == name
                    && pairs.len() == wanted.len()
                    && wanted.iter().all(|w| pairs.contains(&w.as_str())))
                .then(|| v.parse().unwrap())
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?} in\n{text}");
        found[0]
    }

    /// A video source, as the domain crate defines them.
    struct Source(&'static str);
    impl Tracked for Source {
        const FAMILY: &'static Family = &DOWNLOADS;
        fn label_value(&self) -> SharedString {
            self.0.into()
        }
    }

    /// A storage provider, named by configuration.
    struct Provider(String);
    impl Tracked for Provider {
        const FAMILY: &'static Family = &UPLOADS;
        fn label_value(&self) -> SharedString {
            self.0.clone().into()
        }
    }

    #[test]
    fn dropped_tracker_counts_as_failure() {
        let text = render_with(|| {
            Tracker::start(&Source("direct")).success();
            let _failed = Tracker::start(&Source("direct"));
            // `_failed` is dropped at the end of scope without success(): a failure.
        });
        let ok = [("provider", "direct"), ("status", "success")];
        let failed = [("provider", "direct"), ("status", "failed")];
        assert_eq!(value(&text, DOWNLOADS_TOTAL, &ok), 1.0);
        assert_eq!(value(&text, DOWNLOADS_TOTAL, &failed), 1.0);
        // The original's download gauge and histogram carry no label.
        assert_eq!(value(&text, DOWNLOADS_IN_PROGRESS, &[]), 0.0);
        assert_eq!(value(&text, "download_duration_seconds_count", &[]), 2.0);
        assert_eq!(
            value(&text, "download_duration_seconds_bucket", &[("le", "1800")]),
            2.0
        );
    }

    /// A task whose future is dropped (shutdown, apalis restarting its worker after a Redis
    /// error, a lost Postgres connection) runs again: `interrupted`, never a final `failed`
    /// (the chaos suite's redis-restart found it counted as failed). A panic unwinds the
    /// same way; its handler records the final failure with `record_task_outcome`.
    #[test]
    fn a_dropped_or_panicking_task_is_interrupted_not_failed() {
        let text = render_with(|| {
            let r = std::panic::catch_unwind(|| {
                let t = Tracker::start(&Task::ProcessDownload);
                if t.start.elapsed().as_secs() < 1_000 {
                    panic!("boom");
                }
                t.success();
            });
            assert!(r.is_err());
            record_task_outcome(Task::ProcessDownload, Outcome::Failed);
            drop(Tracker::start(&Task::ProcessDownload));
            Tracker::start(&Task::ProcessDownload).finish(Outcome::Retried);
        });
        let task = ("task_name", "process_download");
        assert_eq!(
            value(&text, TASKS_TOTAL, &[task, ("status", "failed")]),
            1.0
        );
        assert_eq!(
            value(&text, TASKS_TOTAL, &[task, ("status", "interrupted")]),
            2.0
        );
        assert_eq!(
            value(&text, TASKS_TOTAL, &[task, ("status", "retried")]),
            1.0
        );
        assert_eq!(value(&text, TASKS_IN_PROGRESS, &[task]), 0.0);
        assert_eq!(value(&text, "task_duration_seconds_count", &[task]), 3.0);
        assert!(
            text.contains("# TYPE task_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn families_label_their_own_metrics_only() {
        let text = render_with(|| {
            Tracker::start(&Provider("s3-eu".into())).success();
            drop(Tracker::start(&Provider("s3-eu".into())));
            record_error("source_not_found", "permanent");
        });
        let p = ("provider", "s3-eu");
        assert_eq!(
            value(&text, STORAGE_UPLOADS_TOTAL, &[p, ("status", "success")]),
            1.0
        );
        assert_eq!(
            value(&text, STORAGE_UPLOADS_TOTAL, &[p, ("status", "failed")]),
            1.0
        );
        assert_eq!(
            value(&text, "storage_upload_duration_seconds_count", &[p]),
            2.0
        );
        assert!(!text.contains(DOWNLOADS_TOTAL), "{text}");
        assert_eq!(
            value(
                &text,
                ERRORS_TOTAL,
                &[
                    ("error_code", "source_not_found"),
                    ("error_type", "permanent")
                ]
            ),
            1.0
        );
    }

    #[test]
    fn http_tracker_bounds_labels() {
        let text = render_with(|| {
            HttpTracker::start("GET").finish(Some("/v1/downloads/{id}".into()), 200);
            HttpTracker::start("BREW").finish(None, 404);
            let _abandoned = HttpTracker::start("POST");
        });
        let total = |m, e, s| {
            value(
                &text,
                HTTP_REQUESTS_TOTAL,
                &[("method", m), ("endpoint", e), ("status", s)],
            )
        };
        assert_eq!(total("GET", "/v1/downloads/{id}", "200"), 1.0);
        assert_eq!(total("OTHER", "unmatched", "404"), 1.0);
        assert_eq!(total("POST", "unmatched", "499"), 1.0);
        assert_eq!(value(&text, HTTP_REQUESTS_IN_FLIGHT, &[]), 0.0);
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }
}
