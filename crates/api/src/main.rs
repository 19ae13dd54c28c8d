use anyhow::Context;
use clap::Parser;
use clipstash_api::{Application, Cli, Command};
use clipstash_runtime::{cancel_on_signal, init_tracing, migrate_command};
use metrics_core::{Component, Exporter};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(settings) = &cli.command {
        runtime.worker_threads(settings.runtime_threads.into());
    }
    runtime
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing();
    match cli.command {
        Command::Migrate(db) => migrate_command(&db).await,
        Command::Keys(cmd) => clipstash_api::auth::keys::run(cmd).await,
        Command::Serve(settings) => {
            let exporter =
                Exporter::install(Component::Api).context("installing the metrics recorder")?;
            let app = Application::build(*settings, exporter).await?;
            // Read off the runtime, not the setting: what `--runtime-threads` came to.
            let runtime_threads = tokio::runtime::Handle::current().metrics().num_workers();
            tracing::info!(api = %app.addr(), metrics = %app.metrics_addr(), runtime_threads, "clipstash-api listening");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            app.run(shutdown).await
        }
    }
}
