use std::net::TcpListener;

use anyhow::Context;
use clap::Parser;
use clipstash_runtime::{cancel_on_signal, init_tracing, migrate_command};
use clipstash_worker::settings::StorageCommand;
use clipstash_worker::{Cli, Command, Worker, storage_cmd};
use metrics_core::{Component, Exporter};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Migrate(db) => migrate_command(&db).await,
        Command::Storage(cmd) => {
            let ok = match cmd {
                StorageCommand::Check(args) => storage_cmd::check(&args).await?,
                StorageCommand::Reconcile(args) => storage_cmd::reconcile(&args).await?,
            };
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Run(settings) => {
            let exporter =
                Exporter::install(Component::Worker).context("installing the metrics recorder")?;
            let addr = settings.metrics_listen;
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("CLIPSTASH_METRICS_LISTEN={addr}: cannot bind"))?;
            let worker = Worker::build(*settings, exporter, listener).await?;
            tracing::info!(name = worker.name(), metrics = %worker.metrics_addr(), "clipstash-worker started");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            worker.run(shutdown).await
        }
    }
}
