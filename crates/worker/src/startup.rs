//! Building and running a worker process: connect, bind `/metrics`, take jobs, drain.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use clipstash_queue::Queue;
use clipstash_runtime::gauges;
use clipstash_sources::{DirectHttp, EgressPolicy, FetchLimits, Ytdlp, YtdlpLimits, YtdlpProgram};
use clipstash_storage::Storage;
use metrics_core::Exporter;
use tokio_util::sync::CancellationToken;

use crate::job::{Cancels, JobContext, LockSession};
use crate::settings::Settings;
use crate::supervisor::{supervise, unique_name};
use crate::sweeper::Sweeper;
use crate::webhooks::Deliverer;
use clipstash_queue::events::{EventNames, Publisher};

/// A worker process, built and bound but not yet taking jobs.
pub struct Worker {
    settings: Settings,
    ctx: Arc<JobContext>,
    deliverer: Deliverer,
    queue: Queue,
    exporter: Exporter,
    metrics_server: Server,
    metrics_addr: SocketAddr,
    name: String,
}

impl Worker {
    /// Connects and starts serving `/metrics` on `metrics_listener`; takes no job until
    /// [`run`](Worker::run). `exporter` renders `/metrics`; whether it is the process's
    /// installed recorder is the caller's decision (`main` installs it; tests may not).
    pub async fn build(
        settings: Settings,
        exporter: Exporter,
        metrics_listener: TcpListener,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let common = &settings.common;
        // One connection, the lock session, holds every running job's lock; jobs take pool
        // connections only for single statements (quota reservations, retries, yt-dlp's
        // findings), at most one each at a time, plus room for the sampler and the sweeper.
        let pool = common
            .database
            .connect(settings.concurrency + 4)
            .await
            .context("DATABASE_URL: cannot connect to Postgres")?;
        clipstash_db::check_schema(&pool).await?;
        let queue = Queue::connect(&common.redis).await?;
        let storage = Storage::from_args(&common.storage)?;
        let egress = EgressPolicy::new(&common.network);
        if !egress.is_enabled() {
            tracing::warn!(
                "egress guard off (CLIPSTASH_ALLOW_PRIVATE_NETWORKS=true): jobs may fetch from loopback and private networks"
            );
        }
        let deliverer = Deliverer::new(
            pool.clone(),
            egress.clone(),
            settings.webhooks.clone(),
            common.secrets.secret_key.clone(),
        )?;
        let direct = DirectHttp::new(
            FetchLimits {
                idle_timeout: settings.idle_timeout,
                connect_timeout: settings.connect_timeout,
            },
            egress.clone(),
        )?;
        let ytdlp = match &common.ytdlp.ytdlp {
            YtdlpProgram::Off => {
                tracing::warn!(
                    "yt-dlp off (CLIPSTASH_YTDLP=off): jobs for YouTube and other sites fail with ytdlp_unavailable"
                );
                None
            }
            YtdlpProgram::Program(program) => {
                // Our watchdog never fires before yt-dlp's own socket timeout would.
                let quiet = settings.idle_timeout.max(settings.connect_timeout);
                let limits = YtdlpLimits {
                    socket_timeout: quiet,
                    idle_timeout: quiet,
                    wall_timeout: settings.attempt_timeout,
                };
                let ytdlp = Ytdlp::probe(program, limits, egress).await?;
                tracing::info!(version = ytdlp.version(), program = %program.display(), "yt-dlp ready");
                exporter.scoped(|| metrics_core::catalogue::record_ytdlp_info(ytdlp.version()));
                Some(ytdlp)
            }
        };

        let listener = metrics_listener;
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

        // Its own connection: progress never queues behind the queue's commands.
        let events_conn = clipstash_queue::connect(&common.redis.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: cannot connect: {e}"))?;
        let events = Publisher::spawn(events_conn, EventNames::new(&common.redis.queue));

        let name = unique_name(&settings.worker_name);
        let shutdown = CancellationToken::new();
        let ctx = Arc::new(JobContext {
            pool: pool.clone(),
            storage,
            direct,
            ytdlp,
            secret_key: settings.common.secrets.secret_key.clone(),
            max_file_bytes: settings.max_file_bytes,
            max_attempts: settings.max_retries as i32 + 1,
            retry_base: settings.retry_base,
            attempt_timeout: settings.attempt_timeout,
            shutdown,
            events,
            cancels: Arc::new(Cancels::default()),
            session: LockSession::spawn(pool),
        });
        Ok(Self {
            settings,
            ctx,
            deliverer,
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
            self.settings.common.gauges.storage_refresh,
            self.settings.common.gauges.queue_refresh,
            background.clone(),
        );
        let sweeper = Sweeper {
            pool: self.ctx.pool.clone(),
            queue: self.queue.clone(),
            interval: self.settings.sweep_interval,
            grace: self.settings.sweep_grace,
            orphan_after: self.settings.common.redis.orphan_timeout(),
            retention: self.settings.job_retention,
        }
        .spawn(background.clone());
        let webhooks = self.deliverer.spawn(background.clone());
        // Cancels of running jobs: the message (fast) and the rows (if a message was missed).
        let cancel_listener = tokio::spawn(self.ctx.cancels.clone().listen(
            self.settings.common.redis.redis_url.clone(),
            EventNames::new(&self.settings.common.redis.queue),
            background.clone(),
        ));
        let cancel_poller = tokio::spawn(
            self.ctx
                .cancels
                .clone()
                .poll(self.ctx.pool.clone(), background.clone()),
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

        supervise(
            &self.queue,
            &self.name,
            &self.ctx,
            &self.settings,
            shutdown.clone(),
        )
        .await;

        forward.abort();
        background.cancel();
        metrics_handle.stop(true).await;
        let _ = tokio::join!(
            upkeep,
            sampler,
            sweeper,
            webhooks,
            metrics_task,
            cancel_listener,
            cancel_poller
        );
        self.ctx.pool.close().await;
        tracing::info!(worker = %self.name, "stopped");
        Ok(())
    }
}
