//! Postgres access. Every job transition is one function in [`transitions`], guarded by
//! the legal `from` states of [`clipstash_domain::Transition`]; reads are in [`jobs`]; the
//! stored files and per-provider usage in [`usage`]; API keys in [`keys`]; the job view
//! ([`view`]) and the webhook outbox ([`webhooks`]).

pub mod batch;
pub mod jobs;
pub mod keys;
pub mod transitions;
pub mod usage;
pub mod view;
pub mod webhooks;

use std::time::Duration;

use clipstash_domain::config::secret_url;
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

pub use jobs::{JobRow, Owner};
pub use keys::KeyRow;
pub use transitions::{Claim, DeleteOutcome};
pub use usage::Usage;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Postgres connection settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL, e.g. postgres://user@127.0.0.1:5432/clipstash
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true, value_parser = |s: &str| secret_url(s, &["postgres", "postgresql"]))]
    pub database_url: SecretString,

    /// Maximum Postgres connections in this process's pool (`clipstash-api serve` opens them
    /// all before it serves).
    #[arg(long, env = "CLIPSTASH_DB_MAX_CONNECTIONS", value_name = "CLIPSTASH_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    /// Opens a pool of at least `min_connections` (the worker asks for one per running job,
    /// for their short statements outside the lock session, plus a few).
    pub async fn connect(&self, min_connections: u32) -> Result<PgPool, sqlx::Error> {
        self.connect_warmed(min_connections, None).await
    }

    /// [`connect`](Self::connect), with `warm` run on every connection the pool opens.
    pub async fn connect_warmed(
        &self,
        min_connections: u32,
        warm: Option<Warm>,
    ) -> Result<PgPool, sqlx::Error> {
        connect_warmed(
            &self.database_url,
            self.db_max_connections.max(min_connections),
            warm,
        )
        .await
    }
}

/// Statements a process runs on each new connection before the pool hands it out, so the
/// first request on a connection does not pay for preparing them: a statement's first use
/// on a Postgres backend parses and plans it while that backend fills its catalog caches
/// (0.6-3 ms each, measured), and a process that opens its whole pool at start has as many
/// cold backends as connections, all hit by the first burst. sqlx keeps what `warm` prepared
/// in the connection's statement cache, where the real request finds it. A warm-up that
/// fails is logged and the connection is used as it is.
pub type Warm = for<'c> fn(&'c mut PgConnection) -> BoxFuture<'c, Result<(), sqlx::Error>>;

/// Opens a pool; `acquire_timeout` bounds every acquire.
pub async fn connect(url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_warmed(url, max_connections, None).await
}

/// [`connect`], with `warm` run on every connection the pool opens ([`Warm`]).
pub async fn connect_warmed(
    url: &SecretString,
    max_connections: u32,
    warm: Option<Warm>,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.expose_secret().parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5));
    let pool = match warm {
        None => pool,
        Some(warm) => pool.after_connect(move |conn, _| {
            Box::pin(async move {
                if let Err(e) = warm(conn).await {
                    tracing::warn!(error = %e, "could not prepare statements on a new Postgres connection");
                }
                Ok(())
            })
        }),
    };
    pool.connect_with(options.application_name("clipstash"))
        .await
}

/// Opens every connection `pool` may hold and leaves them idle in it, so that the first burst
/// of requests does not open them all at once (a process forked by Postgres and a
/// handshake each, on a server that is busy with the burst). The pool closes idle ones
/// again after its idle timeout (10 minutes). On an error, the connections opened so far
/// stay in the pool.
pub async fn open_all(pool: &PgPool) -> Result<(), sqlx::Error> {
    let n = pool.options().get_max_connections();
    let held = futures_util::future::try_join_all((0..n).map(|_| pool.acquire())).await?;
    drop(held);
    Ok(())
}

/// Runs pending migrations; the `migrate` subcommand calls it once per rollout.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Refuses a database that lacks a migration this build has: `serve` and `run` do not
/// migrate, and this build's statements count on its schema (since migration 12, a submit
/// on the schema before it would count its jobs twice). A database ahead of the build (the
/// next version migrated, this one not yet stopped) is accepted: that is a rolling upgrade.
pub async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| {
                anyhow::anyhow!("reading the applied migrations ({e}): run `migrate` first")
            })?;
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the database lacks {} migration(s) this build needs ({}): run `clipstash-api migrate` (or `clipstash-worker migrate`) first",
        missing.len(),
        missing.join(", ")
    );
    Ok(())
}
