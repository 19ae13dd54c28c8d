//! clipstash worker: takes download jobs from Redis (apalis-redis) and streams each source
//! into object storage, recording states, attempts and storage usage in Postgres.
//!
//! Retries happen here, not in apalis: apalis-redis 1.0 retries failed tasks up to a
//! hard-coded 25 times with a linear delay, so the handler keeps its own bounded, exponential
//! attempt loop and reports every job outcome to apalis as done.

pub mod job;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use apalis::prelude::*;
use clap::{Parser, Subcommand};
use clipstash_core::config::{
    DatabaseArgs, GaugeArgs, NetworkArgs, RedisArgs, StorageArgs, parse_duration,
};
use clipstash_core::fetch::{FetchLimits, Fetcher};
use clipstash_core::queue::Queue;
use clipstash_core::storage::Storage;
use clipstash_core::{db, gauges};
use metrics_core::{Component, Exporter};
use tokio_util::sync::CancellationToken;

pub use job::JobContext;

/// Command line of `clipstash-worker`.
#[derive(Debug, Parser)]
#[command(
    name = "clipstash-worker",
    version,
    about = "clipstash job worker: downloads queued videos into storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take jobs from the queue and run them until SIGINT/SIGTERM.
    Run(Box<Settings>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
}

/// Settings of one worker process.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of this worker's /metrics endpoint; give each worker on a host its own port.
    #[arg(
        long,
        env = "CLIPSTASH_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: SocketAddr,

    /// Jobs run at once by this process.
    #[arg(long, env = "CLIPSTASH_CONCURRENCY", value_name = "CLIPSTASH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Prefix of this worker's name in Redis; a unique suffix (host, pid, random) is always added.
    #[arg(
        long,
        env = "CLIPSTASH_WORKER_NAME",
        default_value = "clipstash-worker"
    )]
    pub worker_name: String,

    /// How often an idle worker polls Redis for new jobs.
    #[arg(long, env = "CLIPSTASH_POLL_INTERVAL", value_name = "CLIPSTASH_POLL_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Retries after the first attempt for transient failures (connection errors, 5xx, timeouts).
    #[arg(long, env = "CLIPSTASH_MAX_RETRIES", value_name = "CLIPSTASH_MAX_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_retries: u32,

    /// Delay before the first retry; doubles for each further one.
    #[arg(long, env = "CLIPSTASH_RETRY_BASE", value_name = "CLIPSTASH_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Wall-clock limit of one download attempt.
    #[arg(long, env = "CLIPSTASH_ATTEMPT_TIMEOUT", value_name = "CLIPSTASH_ATTEMPT_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub attempt_timeout: Duration,

    /// Longest wait for the next bytes from a source before the attempt fails as a timeout.
    #[arg(long, env = "CLIPSTASH_IDLE_TIMEOUT", value_name = "CLIPSTASH_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest wait to connect to a source.
    #[arg(long, env = "CLIPSTASH_CONNECT_TIMEOUT", value_name = "CLIPSTASH_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Largest file accepted, in bytes; larger fails as file_too_large.
    #[arg(long, env = "CLIPSTASH_MAX_FILE_BYTES", value_name = "CLIPSTASH_MAX_FILE_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_file_bytes: u64,

    /// On SIGTERM, how long running jobs may finish before they are handed back to the queue.
    /// Must be shorter than the orphan timeout (heartbeat interval x missed heartbeats).
    #[arg(long, env = "CLIPSTASH_SHUTDOWN_GRACE", value_name = "CLIPSTASH_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub gauges: GaugeArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl Settings {
    /// Checks settings that only make sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        // apalis sends no heartbeat while draining: a longer drain gets this worker's jobs
        // re-run elsewhere while it still runs them.
        anyhow::ensure!(
            self.shutdown_grace < self.redis.orphan_timeout(),
            "CLIPSTASH_SHUTDOWN_GRACE ({:?}) must be shorter than the orphan timeout \
             CLIPSTASH_HEARTBEAT_INTERVAL x CLIPSTASH_MISSED_HEARTBEATS ({:?})",
            self.shutdown_grace,
            self.redis.orphan_timeout()
        );
        Ok(())
    }
}

/// A worker process, built and bound but not yet taking jobs.
pub struct Worker {
    settings: Settings,
    ctx: Arc<JobContext>,
    queue: Queue,
    exporter: Exporter,
    metrics_server: Server,
    metrics_addr: SocketAddr,
    name: String,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let exporter =
            Exporter::install(Component::Worker).context("installing the metrics recorder")?;
        // One connection per running job holds its lock, plus room for the sampler.
        let pool_size = settings
            .database
            .db_max_connections
            .max(settings.concurrency + 2);
        let pool = db::connect(&settings.database.database_url, pool_size)
            .await
            .context("DATABASE_URL: cannot connect to Postgres")?;
        let queue = Queue::connect(&settings.redis).await?;
        let storage = Storage::from_args(&settings.storage)?;
        let fetcher = Fetcher::new(FetchLimits {
            max_bytes: settings.max_file_bytes,
            idle_timeout: settings.idle_timeout,
            connect_timeout: settings.connect_timeout,
        })?;

        let listener = TcpListener::bind(settings.metrics_listen).with_context(|| {
            format!(
                "CLIPSTASH_METRICS_LISTEN={}: cannot bind",
                settings.metrics_listen
            )
        })?;
        let metrics_addr = listener.local_addr()?;
        let ex = exporter.clone();
        let metrics_server = HttpServer::new(move || {
            let ex = ex.clone();
            App::new()
                .configure(metrics_core::http::configure(ex.clone()))
                .route(
                    "/healthz",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();

        let name = unique_name(&settings.worker_name);
        let shutdown = CancellationToken::new();
        let ctx = Arc::new(JobContext {
            pool,
            storage,
            fetcher,
            max_attempts: settings.max_retries as i32 + 1,
            retry_base: settings.retry_base,
            attempt_timeout: settings.attempt_timeout,
            shutdown,
        });
        Ok(Self {
            settings,
            ctx,
            queue,
            exporter,
            metrics_server,
            metrics_addr,
            name,
        })
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// This process's unique worker name in Redis (a restart count is appended per run).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes jobs until `shutdown` fires; then stops taking jobs, lets running ones finish
    /// within the grace period, and hands back whatever is left.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        let upkeep = self.exporter.spawn_upkeep(background.clone());
        let sampler = gauges::spawn_sampler(
            self.ctx.pool.clone(),
            self.queue.clone(),
            &self.ctx.storage,
            self.settings.gauges.storage_refresh,
            self.settings.gauges.queue_refresh,
            background.clone(),
        );
        let metrics_handle = self.metrics_server.handle();
        let metrics_task = tokio::spawn(self.metrics_server);
        // Jobs see the shutdown too: a job waiting to retry hands itself back at once.
        let job_shutdown = self.ctx.shutdown.clone();
        let forward = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                job_shutdown.cancel();
            })
        };

        let concurrency = self.settings.concurrency as usize;
        let mut restarts = 0u32;
        loop {
            // apalis leaves a worker's name registered after it stops, and re-registering a
            // name still within its heartbeat window fails: every run gets a new name.
            let name = format!("{}-r{restarts}", self.name);
            let storage = self.queue.worker_storage(concurrency);
            let ctx = self.ctx.clone();
            let poll = self.settings.poll_interval;
            let worker_name = name.clone();
            let monitor = Monitor::new()
                .register(move |_| {
                    WorkerBuilder::new(worker_name.clone())
                        .backend(storage.clone().poll_with_interval(poll))
                        .data(ctx.clone())
                        .concurrency(concurrency)
                        .build(job::handle)
                })
                .shutdown_timeout(self.settings.shutdown_grace);
            tracing::info!(worker = %name, queue = self.queue.name(), concurrency, "taking jobs");
            let signal = shutdown.clone();
            let result = monitor
                .run_with_signal(async move {
                    signal.cancelled().await;
                    Ok(())
                })
                .await;
            match self.queue.hand_back(&name).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(worker = %name, jobs = n, "handed unfinished jobs back to the queue")
                }
                Err(e) => {
                    tracing::warn!(worker = %name, error = %e, "handing jobs back; they return after the orphan timeout")
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            // apalis ends a worker on any Redis error (a blip, a timeout): start a new one.
            restarts += 1;
            tracing::warn!(worker = %name, ?result, restarts, "worker stopped unexpectedly; restarting");
            let delay = Duration::from_millis(250 * u64::from(restarts.min(20)));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }

        forward.abort();
        background.cancel();
        metrics_handle.stop(true).await;
        let _ = tokio::join!(upkeep, sampler, metrics_task);
        self.ctx.pool.close().await;
        tracing::info!(worker = %self.name, "stopped");
        Ok(())
    }
}

/// `prefix-host-pid-random`: unique per process so a dead worker's jobs are recovered by
/// others and replicas never share a name.
fn unique_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{host}-{}-{}", std::process::id(), &random[..8])
}
