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
    /// buffers grow between scrapes.
    pub fn spawn_upkeep(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => handle.run_upkeep(),
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
