//! The per-process Prometheus recorder and its text rendering.
//!
//! Installing a recorder is process-global, so it is the binary's decision, never a
//! library's: `main` calls [`Exporter::install`]; a test that runs an API and a worker in one
//! process gives each an [`Exporter::detached`] one, so neither's `/metrics` shows the
//! other's series.

use std::sync::LazyLock;
use std::time::Duration;

use std::sync::Arc;

use metrics_exporter_prometheus::{BuildError, PrometheusHandle, PrometheusRecorder};
use tokio_util::sync::CancellationToken;

use crate::catalogue::{self, Component};

/// Handle to a process's metrics: renders `/metrics` and keeps histograms trimmed.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    /// The recorder of a detached exporter, for [`Exporter::scoped`].
    detached: Option<Arc<PrometheusRecorder>>,
}

impl Exporter {
    /// Installs this process's global recorder (binaries call this once, from `main`),
    /// describes the catalogue, sets `app_info` and starts collecting `process_*`.
    pub fn install(component: Component) -> Result<Self, BuildError> {
        let recorder = catalogue::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)?;
        Self::announce(component);
        Ok(Self {
            handle,
            detached: None,
        })
    }

    /// A recorder that is not installed: `/metrics` shows the catalogue's descriptions and
    /// `app_info`, and nothing recorded elsewhere in the process reaches it.
    pub fn detached(component: Component) -> Self {
        let recorder = catalogue::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || Self::announce(component));
        Self {
            handle,
            detached: Some(Arc::new(recorder)),
        }
    }

    /// Runs `f` with this exporter as the recorder: for facts set once at start-up (an info
    /// gauge) that must show on a detached exporter too. Installed: `f` runs as is.
    pub fn scoped(&self, f: impl FnOnce()) {
        match &self.detached {
            Some(recorder) => metrics::with_local_recorder(recorder.as_ref(), f),
            None => f(),
        }
    }

    fn announce(component: Component) {
        catalogue::describe_all();
        catalogue::record_app_info(component);
        process_collector().describe();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        process_collector().collect();
        self.handle.render()
    }

    /// Runs the recorder's upkeep every 5 s until `shutdown` fires; without it histogram
    /// buffers grow between scrapes. The upkeep takes the histograms' write lock, which
    /// waits for a render in progress (milliseconds at 10,000 series): it runs on the
    /// blocking pool, so that wait never holds a runtime thread (the API's runtime has one).
    pub fn spawn_upkeep(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let handle = handle.clone();
                        let _ = tokio::task::spawn_blocking(move || handle.run_upkeep()).await;
                    }
                }
            }
        })
    }
}

/// The standard `process_*` set (CPU seconds, resident and virtual memory, open and max fds,
/// threads, start time) from `metrics-process`, read at each scrape. It records through the
/// global recorder, so only an installed exporter shows it. CPU seconds are a counter of
/// whole seconds (the facade has no float counter): exact enough for `rate()` over minutes.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: LazyLock<metrics_process::Collector> =
        LazyLock::new(metrics_process::Collector::default);
    &COLLECTOR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

    /// The family of a sample line: its name without a histogram's suffix.
    fn family(line: &str) -> &str {
        let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
    }

    // The exposition's text comes from the patched metrics-exporter-prometheus
    // (crates/metrics-exporter-prometheus/CLIPSTASH.md), which prepares each series' text once
    // and orders the series; upstream's own tests there check every line's format.
    #[test]
    fn a_render_keeps_each_family_together_orders_its_series_and_shows_current_values() {
        let exporter = Exporter::detached(Component::Api);
        let record = |i: u64, n: u64| {
            exporter.scoped(|| {
                metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => "GET",
                    "endpoint" => format!("/v1/e/{i}"), "status" => "2xx")
                .increment(n);
                metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => "GET",
                    "endpoint" => format!("/v1/e/{i}"))
                .record(0.003);
            })
        };
        for i in (0..40).rev() {
            record(i, 1);
        }

        let text = exporter.render();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for line in &samples {
            let f = family(line);
            if seen.last() != Some(&f) {
                assert!(!seen.contains(&f), "{f} is split in two:\n{text}");
                seen.push(f);
            }
        }
        let counters: Vec<&str> = samples
            .iter()
            .copied()
            .filter(|l| l.starts_with("http_requests_total{"))
            .collect();
        assert_eq!(counters.len(), 40, "{text}");
        let keys: Vec<&str> = counters
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        assert!(
            keys.is_sorted(),
            "series not in order:\n{}",
            keys.join("\n")
        );
        assert_eq!(
            exporter.render(),
            text,
            "a second render of the same values differs"
        );

        record(7, 5);
        let after = exporter.render();
        let line = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("http_requests_total{") && l.contains("\"/v1/e/7\""))
                .map(str::to_owned)
        };
        assert_eq!(
            line(&text).as_deref(),
            Some(r#"http_requests_total{method="GET",endpoint="/v1/e/7",status="2xx"} 1"#)
        );
        assert_eq!(
            line(&after).as_deref(),
            Some(r#"http_requests_total{method="GET",endpoint="/v1/e/7",status="2xx"} 6"#)
        );
        assert!(
            after.contains(
                r#"http_request_duration_seconds_count{method="GET",endpoint="/v1/e/7"} 2"#
            )
        );
    }
}
