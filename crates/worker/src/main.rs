use clap::Parser;
use clipstash_core::runtime::{cancel_on_signal, init_tracing, migrate_command};
use clipstash_worker::{Cli, Command, Worker};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Migrate(db) => migrate_command(&db).await,
        Command::Run(settings) => {
            let worker = Worker::build(*settings).await?;
            tracing::info!(name = worker.name(), metrics = %worker.metrics_addr(), "clipstash-worker started");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            worker.run(shutdown).await
        }
    }
}
