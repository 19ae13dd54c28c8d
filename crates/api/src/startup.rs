//! Building and running the API: connect, bind, serve, drain.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use clipstash_queue::Queue;
use clipstash_runtime::{GaugeArgs, gauges};
use clipstash_sources::{
    EgressPolicy, SecretKey, Ytdlp, YtdlpLimits, YtdlpProgram, ytdlp::YtdlpHosts,
};
use clipstash_storage::Storage;
use futures_util::future::BoxFuture;
use metrics_core::Exporter;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, AuthMode, KeyCache, RateLimiter, StreamLimiter};
use crate::events::Live;
use crate::settings::Settings;
use crate::{MAX_BODY_BYTES, error, middleware, routes};
use clipstash_db::batch::JobInserter;

/// Shared state of every request handler.
pub struct AppState {
    pub pool: PgPool,
    /// Group-commits the inserts of submits without an `Idempotency-Key`, keyed or not
    /// (`clipstash_db::batch`).
    pub inserter: JobInserter,
    pub queue: Queue,
    pub storage: Storage,
    pub access: Access,
    /// Refuses URLs whose host is a literal forbidden address at submit time.
    pub egress: EgressPolicy,
    /// Live progress and job events (Redis), for the job view and event streams.
    pub live: Live,
    /// Seals a submit's cookies; without it, cookies are refused (`cookies_disabled`).
    pub secret_key: Option<SecretKey>,
    /// Which hosts `source: auto` sends to yt-dlp.
    pub ytdlp_hosts: YtdlpHosts,
    /// `GET /v1/videos/info`: yt-dlp (None when off), its limit and its cache.
    pub video_info: routes::videos::VideoInfoService,
}

/// Submit batches in flight, each written and then enqueued (see where the inserter starts
/// in [`Application::build`]).
const SUBMIT_BATCHES_IN_FLIGHT: usize = 1;

/// A bound, not yet running API.
pub struct Application {
    server: Server,
    metrics_server: Option<Server>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: web::Data<AppState>,
    exporter: Exporter,
    gauges: GaugeArgs,
    redis: clipstash_queue::RedisArgs,
}

/// What every connection of the API's pool prepares before it serves a request
/// ([`clipstash_db::Warm`]): the key look-up each request with a new key runs, and the
/// batch inserts the submit writer runs on whichever connection is free.
fn warm(conn: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        clipstash_db::keys::warm_key_lookup(conn).await?;
        clipstash_db::batch::warm_inserts(conn).await
    })
}

impl Application {
    /// Connects to Postgres and Redis and binds the listeners; nothing is served until [`run`].
    ///
    /// [`run`]: Application::run
    /// `exporter` renders `/metrics`; whether it is the process's installed recorder is the
    /// caller's decision (`main` installs it; tests may not).
    pub async fn build(settings: Settings, exporter: Exporter) -> anyhow::Result<Self> {
        let common = &settings.common;
        // The batch writer keeps a connection of its own: the rest serve everything else.
        let pool = common
            .database
            .connect_warmed(SUBMIT_BATCHES_IN_FLIGHT as u32 + 1, Some(warm))
            .await
            .context("DATABASE_URL: cannot connect to Postgres")?;
        clipstash_db::check_schema(&pool).await?;
        // Best effort: a server that cannot give all of them now (its max_connections, a
        // proxy's limit, a rolling deploy) still gets an API that opens them as needed.
        if let Err(e) = clipstash_db::open_all(&pool).await {
            tracing::warn!(error = %e, size = pool.size(), "could not open the whole Postgres pool at start");
        }
        let queue = Queue::connect(&common.redis).await?;
        let storage = Storage::from_args(&common.storage)?;
        let access = &settings.access;
        if access.auth == AuthMode::Off {
            tracing::warn!(
                "CLIPSTASH_AUTH=off: /v1 is open to anyone who can reach {} with no API key and \
                 no per-key limit. Use this for local runs only",
                settings.listen
            );
        }
        // Its own connection: a slow rate-limit script never queues behind an enqueue.
        let limiter_conn = clipstash_queue::connect(&common.redis.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: cannot connect: {e}"))?;
        let access = Access {
            mode: access.auth,
            cache: KeyCache::new(access.auth_cache_ttl, pool.clone()),
            limiter: RateLimiter::new(limiter_conn.clone(), &common.redis.queue),
            default_rate_per_minute: access.rate_per_minute,
            default_max_active_jobs: access.max_active_jobs,
            streams: StreamLimiter::new(limiter_conn, &common.redis.queue),
            max_streams_per_key: access.max_streams_per_key,
        };
        // The first request of each key after a start finds it cached (auth/cache.rs).
        if access.mode == AuthMode::Required {
            match access.cache.preload(&pool).await {
                Ok(n) => tracing::debug!(keys = n, "API keys loaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "loading API keys; each is looked up at its first request")
                }
            }
        }
        // Events: its own connection for progress reads and publishing.
        let events_conn = clipstash_queue::connect(&common.redis.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: cannot connect: {e}"))?;
        let live = Live::new(events_conn, &common.redis.queue);
        let egress = EgressPolicy::new(&common.network);
        let info_args = &settings.video_info;
        let ytdlp = match &common.ytdlp.ytdlp {
            YtdlpProgram::Off => {
                tracing::warn!(
                    "yt-dlp off (CLIPSTASH_YTDLP=off): GET /v1/videos/info answers ytdlp_unavailable"
                );
                None
            }
            YtdlpProgram::Program(program) => {
                let limits = YtdlpLimits {
                    socket_timeout: info_args.video_info_timeout.min(Duration::from_secs(20)),
                    idle_timeout: info_args.video_info_timeout,
                    wall_timeout: info_args.video_info_timeout,
                };
                let ytdlp = Ytdlp::probe(program, limits, egress.clone()).await?;
                tracing::info!(version = ytdlp.version(), program = %program.display(), "yt-dlp ready");
                exporter.scoped(|| metrics_core::catalogue::record_ytdlp_info(ytdlp.version()));
                Some(ytdlp)
            }
        };
        let cache_conn = clipstash_queue::connect(&common.redis.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: cannot connect: {e}"))?;
        let video_info = routes::videos::VideoInfoService::new(
            ytdlp,
            info_args,
            cache_conn,
            &common.redis.queue,
        );
        // One batch at a time, written and then enqueued (one round trip to Redis, before
        // its submits are answered) before the next is taken. Fewer batches at once are
        // larger ones, and a submit's cost is mostly per batch; two concurrent keyed batches
        // also wait on each other's key locks. Against two at once this wrote keyed submits
        // 17-25% faster and keyless ones 11%; against writing the next batch while this one
        // is enqueued, keyless submits took ~10% less CPU each (docs/BENCHMARKS.md, "One
        // batch at a time" and stop 24). It takes one connection; the rest of the pool
        // serves everything else.
        let inserter = JobInserter::spawn_then(
            pool.clone(),
            SUBMIT_BATCHES_IN_FLIGHT,
            routes::downloads::enqueue_committed(queue.clone()),
        );
        let state = web::Data::new(AppState {
            inserter,
            pool,
            queue,
            storage,
            access,
            egress,
            secret_key: common.secrets.secret_key.clone(),
            ytdlp_hosts: common.ytdlp.ytdlp_hosts.clone(),
            video_info,
            live,
        });

        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("CLIPSTASH_LISTEN={}: cannot bind", settings.listen))?;
        let addr = listener.local_addr()?;
        let metrics_listener = settings
            .metrics_listen
            .map(|a| {
                TcpListener::bind(a)
                    .with_context(|| format!("CLIPSTASH_METRICS_LISTEN={a}: cannot bind"))
            })
            .transpose()?;
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let serve_metrics_on_api = metrics_listener.is_none();

        let workers = settings
            .http_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let api_state = state.clone();
        let api_exporter = exporter.clone();
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(api_state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_BODY_BYTES)
                        .error_handler(error::json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
                .wrap(actix_web::middleware::from_fn(middleware::track_http));
            let app = app.configure(routes::configure);
            let app = if serve_metrics_on_api {
                app.configure(metrics_core::http::configure(api_exporter.clone()))
            } else {
                app
            };
            app.default_service(web::to(routes::fallback::unmatched))
        })
        .workers(workers)
        .disable_signals()
        .listen(listener)?
        .run();

        let metrics_server = match metrics_listener {
            Some(l) => {
                let ex = exporter.clone();
                Some(
                    HttpServer::new(move || {
                        App::new().configure(metrics_core::http::configure(ex.clone()))
                    })
                    .workers(1)
                    .disable_signals()
                    .listen(l)?
                    .run(),
                )
            }
            None => None,
        };
        Ok(Self {
            server,
            metrics_server,
            addr,
            metrics_addr,
            state,
            exporter,
            gauges: settings.common.gauges.clone(),
            redis: settings.common.redis.clone(),
        })
    }

    /// The address the API listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where /metrics is served: the separate listener, or the API's own.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr.unwrap_or(self.addr)
    }

    /// Serves until `shutdown` fires, then stops accepting and drains in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = shutdown.child_token();
        let upkeep = self.exporter.spawn_upkeep(background.clone());
        let sampler = gauges::spawn_sampler(
            self.state.pool.clone(),
            self.state.queue.clone(),
            &self.state.storage,
            self.gauges.storage_refresh,
            self.gauges.queue_refresh,
            background.clone(),
        );
        let events = tokio::spawn(self.state.live.relay(&self.redis, background.clone()));
        let api_handle = self.server.handle();
        let metrics_handle = self.metrics_server.as_ref().map(Server::handle);
        let closing = self.state.live.closing.clone();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            // Open event streams end now, so draining does not wait for them.
            closing.cancel();
            if let Some(h) = metrics_handle {
                h.stop(true).await;
            }
            api_handle.stop(true).await;
        });
        let metrics_server = self.metrics_server;
        let result = match metrics_server {
            Some(m) => tokio::try_join!(self.server, m).map(|_| ()),
            None => self.server.await,
        };
        background.cancel();
        stopper.abort();
        let _ = tokio::join!(upkeep, sampler, events);
        self.state.pool.close().await;
        result.context("HTTP server")
    }
}
