//! Process plumbing shared by `clipstash-api` and `clipstash-worker`: the settings both
//! read ([`settings`]), signal handling, logging, the `migrate` subcommand, and the global
//! gauges every process samples ([`gauges`]).

pub mod gauges;
pub mod settings;
pub mod test_hooks;

use anyhow::Context;
use clipstash_db::DatabaseArgs;
use tokio_util::sync::CancellationToken;

pub use settings::{CommonArgs, GaugeArgs, SecretKeyArgs};

/// The `migrate` subcommand: applies pending migrations and returns.
pub async fn migrate_command(args: &DatabaseArgs) -> anyhow::Result<()> {
    let pool = clipstash_db::connect(&args.database_url, 2)
        .await
        .context("DATABASE_URL: cannot connect to Postgres")?;
    clipstash_db::migrate(&pool)
        .await
        .context("applying migrations")?;
    pool.close().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM, then cancels `token`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; only SIGINT stops this process");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
    token.cancel();
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or journal gets plain `key=value` text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
