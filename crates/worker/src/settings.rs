//! The command line and settings of `clipstash-worker` (flags or environment).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use clipstash_db::DatabaseArgs;
use clipstash_domain::config::byte_size;
use clipstash_runtime::CommonArgs;
use clipstash_storage::StorageArgs;

use crate::webhooks::WebhookArgs;

/// Command line of `clipstash-worker`.
#[derive(Debug, Parser)]
#[command(
    name = "clipstash-worker",
    version,
    about = "clipstash job worker: downloads queued videos into storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take jobs from the queue and run them until SIGINT/SIGTERM.
    Run(Box<Settings>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Check or reconcile the configured storage providers.
    #[command(subcommand)]
    Storage(StorageCommand),
}

/// `clipstash-worker storage ...`
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Write, read, list and delete a probe object on every provider; print a table. Exits 1
    /// when any provider fails.
    Check(StorageArgs),
    /// Compare each provider's objects under downloads/ with Postgres: objects with no row
    /// (orphans, e.g. from a crash mid-upload) and rows with no object. Exits 1 when any
    /// difference is found and not fixed.
    Reconcile(ReconcileArgs),
}

/// Settings of `storage reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Delete orphans older than the grace period and recompute usage from the files rows.
    #[arg(long)]
    pub fix: bool,
    /// Orphans younger than this are left alone (an upload may be completing right now).
    #[arg(long, env = "CLIPSTASH_RECONCILE_GRACE", value_name = "CLIPSTASH_RECONCILE_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Settings of one worker process.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of this worker's /metrics endpoint; give each worker on a host its own port.
    #[arg(
        long,
        env = "CLIPSTASH_METRICS_LISTEN",
        value_name = "CLIPSTASH_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: SocketAddr,

    /// Jobs run at once by this process.
    #[arg(long, env = "CLIPSTASH_CONCURRENCY", value_name = "CLIPSTASH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Prefix of this worker's name in Redis; a unique suffix (host, pid, random) is always added.
    #[arg(
        long,
        env = "CLIPSTASH_WORKER_NAME",
        value_name = "CLIPSTASH_WORKER_NAME",
        default_value = "clipstash-worker"
    )]
    pub worker_name: String,

    /// How often an idle worker polls Redis for new jobs.
    #[arg(long, env = "CLIPSTASH_POLL_INTERVAL", value_name = "CLIPSTASH_POLL_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Retries after the first attempt for transient failures (connection errors, 5xx, timeouts).
    #[arg(long, env = "CLIPSTASH_MAX_RETRIES", value_name = "CLIPSTASH_MAX_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_retries: u32,

    /// Delay before the first retry; doubles for each further one, and each delay is
    /// stretched by a random 0-100% (jitter) so jobs failing together do not retry together.
    #[arg(long, env = "CLIPSTASH_RETRY_BASE", value_name = "CLIPSTASH_RETRY_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base: Duration,

    /// Wall-clock limit of one download attempt.
    #[arg(long, env = "CLIPSTASH_ATTEMPT_TIMEOUT", value_name = "CLIPSTASH_ATTEMPT_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub attempt_timeout: Duration,

    /// Longest wait for the next bytes from a source before the attempt fails as a timeout.
    #[arg(long, env = "CLIPSTASH_IDLE_TIMEOUT", value_name = "CLIPSTASH_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Longest wait to connect to a source.
    #[arg(long, env = "CLIPSTASH_CONNECT_TIMEOUT", value_name = "CLIPSTASH_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Largest file accepted (bytes, or with a unit: 2GiB); larger fails as file_too_large.
    #[arg(long, env = "CLIPSTASH_MAX_FILE_BYTES", value_name = "CLIPSTASH_MAX_FILE_BYTES", default_value = "2GiB", value_parser = byte_size)]
    pub max_file_bytes: u64,

    /// On SIGTERM, how long running jobs may finish before they are handed back to the queue.
    /// Must be shorter than the orphan timeout (heartbeat interval x missed heartbeats).
    #[arg(long, env = "CLIPSTASH_SHUTDOWN_GRACE", value_name = "CLIPSTASH_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often this worker's sweeper re-enqueues jobs Postgres says must run but Redis no
    /// longer holds, and prunes finished jobs from Redis.
    #[arg(long, env = "CLIPSTASH_SWEEP_INTERVAL", value_name = "CLIPSTASH_SWEEP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Age (since last update) before a queued or retrying job missing from Redis is
    /// re-enqueued; keeps the sweeper from racing the API's own push.
    #[arg(long, env = "CLIPSTASH_SWEEP_GRACE", value_name = "CLIPSTASH_SWEEP_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_grace: Duration,

    /// Delete finished jobs (succeeded, failed, cancelled) from Postgres this long after they
    /// finished, e.g. 30d; a job whose object is still stored is always kept. Unset: keep forever.
    #[arg(long, env = "CLIPSTASH_JOB_RETENTION", value_name = "CLIPSTASH_JOB_RETENTION", value_parser = humantime::parse_duration)]
    pub job_retention: Option<Duration>,

    #[command(flatten)]
    pub webhooks: WebhookArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Settings {
    /// Checks settings that only make sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        // apalis sends no heartbeat while draining: a longer drain gets this worker's jobs
        // re-run elsewhere while it still runs them.
        anyhow::ensure!(
            self.shutdown_grace < self.common.redis.orphan_timeout(),
            "CLIPSTASH_SHUTDOWN_GRACE ({:?}) must be shorter than the orphan timeout \
             CLIPSTASH_HEARTBEAT_INTERVAL x CLIPSTASH_MISSED_HEARTBEATS ({:?})",
            self.shutdown_grace,
            self.common.redis.orphan_timeout()
        );
        anyhow::ensure!(
            !self.sweep_interval.is_zero(),
            "CLIPSTASH_SWEEP_INTERVAL must be longer than 0"
        );
        Ok(())
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_parses_its_flags_and_reads_each_variable_once() {
        clipstash_runtime::settings::assert_cli_sound(super::Cli::command());
    }
}
