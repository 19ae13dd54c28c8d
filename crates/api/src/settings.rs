//! The command line and settings of `clipstash-api` (flags or environment).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use clipstash_db::DatabaseArgs;
use clipstash_runtime::CommonArgs;

use crate::auth::AccessArgs;
use crate::auth::keys::KeysCommand;
use crate::routes::videos::VideoInfoArgs;

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
    /// Create, list or revoke API keys, or rotate their webhook signing secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
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

    /// Threads of the API's own runtime, which runs the submit batch writer and its enqueue,
    /// the background tasks, and the socket readiness of every Postgres and Redis connection
    /// (requests run on the HTTP workers). One cost ~14% less CPU per submit than one per core
    /// on 2 cores: the writer is one batch at a time, and a second thread mostly traded its
    /// tasks back and forth (docs/BENCHMARKS.md, stop 24).
    #[arg(
        long,
        env = "CLIPSTASH_RUNTIME_THREADS",
        value_name = "CLIPSTASH_RUNTIME_THREADS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub runtime_threads: u16,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub video_info: VideoInfoArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_parses_its_flags_and_reads_each_variable_once() {
        clipstash_runtime::settings::assert_cli_sound(super::Cli::command());
    }
}
