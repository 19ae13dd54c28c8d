//! The per-process Prometheus recorder and its text rendering.

use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::catalogue::{self, Component};
use crate::process;

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Handle to this process's metrics: renders `/metrics` and keeps histograms trimmed.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the global recorder (once per process; later calls share the first one),
    /// describes the catalogue and sets `app_info`.
    pub fn install(component: Component) -> Result<Self, BuildError> {
        let handle = {
            let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(h) => h.clone(),
                None => slot
                    .insert(catalogue::prometheus_builder().install_recorder()?)
                    .clone(),
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
