//! clipstash HTTP API: validates download requests, records jobs in Postgres and enqueues
//! them in Redis. [`Application::build`] binds first so tests can use port 0.

pub mod error;
pub mod middleware;
pub mod routes;

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use clap::{Parser, Subcommand};
use clipstash_core::config::{DatabaseArgs, GaugeArgs, NetworkArgs, RedisArgs, StorageArgs};
use clipstash_core::queue::Queue;
use clipstash_core::storage::Storage;
use clipstash_core::{db, gauges};
use metrics_core::{Component, Exporter};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Command line of `clipstash-api`.
#[derive(Debug, Parser)]
#[command(
    name = "clipstash-api",
    version,
    about = "clipstash HTTP API: submit and follow video download jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(Box<Settings>),
    /// Apply pending database migrations and exit (run once per rollout, before the API).
    Migrate(DatabaseArgs),
}

/// Settings of the API server.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address the API listens on.
    #[arg(
        long,
        env = "CLIPSTASH_LISTEN",
        value_name = "CLIPSTASH_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Serve /metrics on this separate internal address instead of on the API listener.
    #[arg(
        long,
        env = "CLIPSTASH_METRICS_LISTEN",
        value_name = "CLIPSTASH_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// HTTP worker threads (default: one per core).
    #[arg(
        long,
        env = "CLIPSTASH_HTTP_WORKERS",
        value_name = "CLIPSTASH_HTTP_WORKERS"
    )]
    pub http_workers: Option<usize>,

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

/// Shared state of every request handler.
pub struct AppState {
    pub pool: PgPool,
    pub queue: Queue,
    pub storage: Storage,
}

/// A bound, not yet running API.
pub struct Application {
    server: Server,
    metrics_server: Option<Server>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: web::Data<AppState>,
    exporter: Exporter,
    gauges: GaugeArgs,
}

impl Application {
    /// Connects to Postgres and Redis and binds the listeners; nothing is served until [`run`].
    ///
    /// [`run`]: Application::run
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let exporter =
            Exporter::install(Component::Api).context("installing the metrics recorder")?;
        let pool = db::connect(
            &settings.database.database_url,
            settings.database.db_max_connections,
        )
        .await
        .context("DATABASE_URL: cannot connect to Postgres")?;
        let queue = Queue::connect(&settings.redis).await?;
        let storage = Storage::from_args(&settings.storage)?;
        let state = web::Data::new(AppState {
            pool,
            queue,
            storage,
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
            let app = app.configure(routes_config);
            let app = if serve_metrics_on_api {
                app.configure(metrics_core::http::configure(api_exporter.clone()))
            } else {
                app
            };
            app.default_service(web::to(routes::unmatched))
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
            gauges: settings.gauges,
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
        let api_handle = self.server.handle();
        let metrics_handle = self.metrics_server.as_ref().map(Server::handle);
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
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
        let _ = tokio::join!(upkeep, sampler);
        self.state.pool.close().await;
        result.context("HTTP server")
    }
}

/// The versioned API routes; each resource answers 405 in the common JSON format for
/// methods it does not serve.
fn routes_config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/downloads")
            .route(web::post().to(routes::create_download))
            .route(web::get().to(routes::list_downloads))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/downloads/{id}")
            .route(web::get().to(routes::get_download))
            .route(web::delete().to(routes::delete_download))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/storage")
            .route(web::get().to(routes::storage))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .route("/healthz", web::get().to(routes::healthz))
    .route("/readyz", web::get().to(routes::readyz));
}
