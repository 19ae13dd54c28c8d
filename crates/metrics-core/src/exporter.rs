//! The per-process Prometheus recorder and its text rendering.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::catalogue::{self, Component};
use crate::process;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Handle to this process's metrics: renders `/metrics` and keeps histograms trimmed.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the global recorder (once per process; later calls share the first one),
    /// describes the catalogue and sets `app_info`.
    pub fn install(component: Component) -> Result<Self, BuildError> {
        let handle = match HANDLE.get() {
            Some(h) => h.clone(),
            None => {
                let h = catalogue::prometheus_builder().install_recorder()?;
                HANDLE.get_or_init(|| h).clone()
            }
        };
        catalogue::describe_all();
        catalogue::record_app_info(component);
        Ok(Self { handle })
    }

    /// The Prometheus text exposition: the catalogue's metrics plus this process's own.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        process::render_into(&mut out);
        out
    }

    /// Runs the recorder's upkeep every 5 s until `shutdown` fires; `install_recorder`
    /// does not, and without it histogram buffers grow between scrapes.
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
