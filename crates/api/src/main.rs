use clap::Parser;
use clipstash_api::{Application, Cli, Command};
use clipstash_core::runtime::{cancel_on_signal, init_tracing, migrate_command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Migrate(db) => migrate_command(&db).await,
        Command::Serve(settings) => {
            let app = Application::build(*settings).await?;
            tracing::info!(api = %app.addr(), metrics = %app.metrics_addr(), "clipstash-api listening");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            app.run(shutdown).await
        }
    }
}
