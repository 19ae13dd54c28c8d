//! Settings for in-process servers, built in one place so every test starts from the same
//! values (fast heartbeats, retries and timeouts; loopback sources allowed).

use std::path::Path;
use std::time::Duration;

use clipstash_api::auth::{AccessArgs, AuthMode};
use clipstash_runtime::{CommonArgs, GaugeArgs};
use clipstash_sources::egress::Allowlist;
use clipstash_sources::{NetworkArgs, SecretArgs, SecretKey, YtdlpArgs, YtdlpProgram};
use clipstash_storage::{Placement, StorageArgs};
use clipstash_worker::webhooks::WebhookArgs;

use crate::{TestDb, TestQueue};

/// The groups both binaries share, pointing at the test's database, queue and folder.
pub fn common(db: &TestDb, queue: &TestQueue, storage_dir: &Path) -> CommonArgs {
    CommonArgs {
        database: db.args(),
        redis: queue.args(),
        storage: StorageArgs {
            storage: Vec::new(),
            placement: Placement::Random,
            storage_dir: storage_dir.to_path_buf(),
            storage_quota_bytes: 0,
        },
        gauges: GaugeArgs {
            storage_refresh: Duration::from_secs(60),
            queue_refresh: Duration::from_secs(1),
        },
        network: NetworkArgs {
            allow_private_networks: true,
            egress_allow: Allowlist::default(),
        },
        secrets: SecretArgs {
            secret_key: Some(secret_key()),
        },
        // Off unless a test asks for it ([`with_ytdlp`]): probing it costs a second per start.
        ytdlp: YtdlpArgs {
            ytdlp: YtdlpProgram::Off,
            ytdlp_hosts: clipstash_sources::ytdlp::DEFAULT_HOSTS.parse().unwrap(),
        },
    }
}

/// The `CLIPSTASH_SECRET_KEY` of test processes: a fixed key, so an API and a worker built
/// from separate settings share it.
pub fn secret_key() -> SecretKey {
    SecretKey::parse(&SECRET_KEY_TEXT.to_string().into()).unwrap()
}

/// [`secret_key`] as the setting's text (for spawned binaries).
pub const SECRET_KEY_TEXT: &str = "Y2xpcHN0YXNoLXRlc3Qta2V5LW5vdC1hLXNlY3JldCE=";
/// The pinned yt-dlp `deploy/ytdlp/ensure.sh` installed: `CLIPSTASH_YTDLP` (just test sets
/// it), else the default install location. Panics with the fix when there is none.
pub fn ytdlp_path() -> std::path::PathBuf {
    let path = std::env::var_os("CLIPSTASH_YTDLP")
        .filter(|p| !p.is_empty() && p != "off")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("CLIPSTASH_YTDLP_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/clipstash-ytdlp")
                });
            home.join("venv/bin/yt-dlp")
        });
    assert!(
        path.exists(),
        "no yt-dlp at {}: run deploy/ytdlp/ensure.sh (just test does) or set CLIPSTASH_YTDLP",
        path.display()
    );
    path
}

/// `common` with the real pinned yt-dlp on.
pub fn with_ytdlp(mut common: CommonArgs) -> CommonArgs {
    common.ytdlp.ytdlp = YtdlpProgram::Program(ytdlp_path());
    common
}

/// API settings on a port from the OS, with auth off (suites that are not about access
/// need no key); [`access`] gives the settings with auth on.
pub fn api(common: CommonArgs) -> clipstash_api::Settings {
    clipstash_api::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        http_workers: Some(2),
        // Tests run the API on their own runtime: this setting is read by `main` only.
        runtime_threads: 1,
        access: AccessArgs {
            auth: AuthMode::Off,
            ..access()
        },
        video_info: clipstash_api::routes::videos::VideoInfoArgs {
            video_info_timeout: Duration::from_secs(30),
            video_info_concurrency: 2,
            video_info_cache_ttl: Duration::from_secs(300),
        },
        common,
    }
}

/// Access settings with auth required and a 1 s key cache (revocation tests wait that long).
pub fn access() -> AccessArgs {
    AccessArgs {
        auth: AuthMode::Required,
        rate_per_minute: 10_000,
        max_active_jobs: 1_000,
        max_streams_per_key: 10,
        auth_cache_ttl: Duration::from_secs(1),
    }
}

/// Worker settings with fast retries and timeouts.
pub fn worker(common: CommonArgs) -> clipstash_worker::Settings {
    clipstash_worker::Settings {
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        concurrency: 4,
        worker_name: "test".into(),
        poll_interval: Duration::from_millis(20),
        max_retries: 3,
        retry_base: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        max_file_bytes: 200 * 1024 * 1024,
        shutdown_grace: Duration::from_millis(500),
        // Sweeps often, so recovery tests take seconds; the grace still covers the time
        // between a test's insert and its push.
        sweep_interval: Duration::from_millis(200),
        sweep_grace: Duration::from_secs(1),
        job_retention: None,
        webhooks: webhooks(),
        common,
    }
}

/// Webhook delivery settings with a fast poll and fast retries (50 ms, doubling).
pub fn webhooks() -> WebhookArgs {
    WebhookArgs {
        webhook_poll: Duration::from_millis(20),
        webhook_concurrency: 8,
        webhook_timeout: Duration::from_secs(5),
        webhook_retry_base: Duration::from_millis(50),
        webhook_retry_max_delay: Duration::from_secs(1),
        webhook_max_attempts: 5,
        webhook_max_age: Duration::from_secs(60),
    }
}

/// An API built and served in this process with a metrics recorder of its own; it stops, and
/// its storage folder goes, when dropped.
pub struct RunningApi {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shutdown: tokio_util::sync::CancellationToken,
    storage_dir: std::path::PathBuf,
}

impl RunningApi {
    pub async fn start(settings: clipstash_api::Settings, storage_dir: std::path::PathBuf) -> Self {
        let app = clipstash_api::Application::build(
            settings,
            metrics_core::Exporter::detached(metrics_core::Component::Api),
        )
        .await
        .unwrap();
        let base = format!("http://{}", app.addr());
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        Self {
            base,
            shutdown,
            storage_dir,
        }
    }
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}
