use anyhow::Context;
use clap::Parser;
use clipstash_api::{Application, Cli, Command};
use clipstash_runtime::{cancel_on_signal, init_tracing, migrate_command};
use metrics_core::{Component, Exporter};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Migrate(db) => migrate_command(&db).await,
        Command::Keys(cmd) => clipstash_api::auth::keys::run(cmd).await,
        Command::Serve(settings) => {
            let exporter =
                Exporter::install(Component::Api).context("installing the metrics recorder")?;
            let app = Application::build(*settings, exporter).await?;
            tracing::info!(api = %app.addr(), metrics = %app.metrics_addr(), "clipstash-api listening");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            app.run(shutdown).await
        }
    }
}
