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

/// Panics if a binary's command line is unsound: clap's own checks (duplicate ids or flags,
/// which make the binary panic at start-up, not at build time), plus one clap does not make:
/// two arguments of one command reading the same environment variable (merging two
/// features' settings did that once). Each binary's tests call it on its `Cli`.
pub fn assert_cli_sound(cmd: clap::Command) {
    fn walk(cmd: &clap::Command, path: &str) {
        let mut seen = std::collections::HashSet::new();
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                assert!(
                    seen.insert(env.to_owned()),
                    "`{path}`: two arguments read {env:?}"
                );
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    let mut cmd = cmd;
    cmd.build();
    walk(&cmd, cmd.get_name());
    cmd.debug_assert();
}
