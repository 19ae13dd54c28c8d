//! The settings groups both binaries read, in one place. Each group is defined by the crate
//! it configures (`DatabaseArgs` in clipstash-db, `RedisArgs` in clipstash-queue, ...);
//! [`CommonArgs`] gathers them so each binary flattens one field instead of five.

use std::time::Duration;

use clipstash_db::DatabaseArgs;
use clipstash_queue::RedisArgs;
use clipstash_sources::{NetworkArgs, SecretArgs, YtdlpArgs};
use clipstash_storage::StorageArgs;

/// Settings for the gauges every process samples from Postgres and Redis.
#[derive(Debug, Clone, clap::Args)]
pub struct GaugeArgs {
    /// How often storage gauges are refreshed from Postgres (e.g. 60s, 500ms).
    #[arg(long, env = "CLIPSTASH_STORAGE_REFRESH", value_name = "CLIPSTASH_STORAGE_REFRESH", default_value = "60s", value_parser = humantime::parse_duration)]
    pub storage_refresh: Duration,

    /// How often queue gauges are sampled from Redis.
    #[arg(long, env = "CLIPSTASH_QUEUE_REFRESH", value_name = "CLIPSTASH_QUEUE_REFRESH", default_value = "15s", value_parser = humantime::parse_duration)]
    pub queue_refresh: Duration,
}

/// `CLIPSTASH_SECRET_KEY`, as the `keys` commands read it: the same setting as
/// `CommonArgs::secrets` (`clipstash_sources::SecretArgs`).
pub type SecretKeyArgs = SecretArgs;

/// Every settings group the API and the worker share.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
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
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub ytdlp: YtdlpArgs,
}
