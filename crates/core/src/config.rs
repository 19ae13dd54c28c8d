//! Settings shared by both binaries, as clap argument groups read from flags or environment.
//! A missing or malformed value stops start-up with clap's message naming the flag and variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Postgres connection settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL, e.g. postgres://user@127.0.0.1:5432/clipstash
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true, value_parser = parse_postgres_url)]
    pub database_url: String,

    /// Maximum Postgres connections in this process's pool.
    #[arg(long, env = "CLIPSTASH_DB_MAX_CONNECTIONS", value_name = "CLIPSTASH_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

/// Redis and queue settings.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis connection URL, e.g. redis://127.0.0.1:6379
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true, value_parser = parse_redis_url)]
    pub redis_url: String,

    /// Name of the job queue; the prefix of every Redis key it uses.
    #[arg(
        long,
        env = "CLIPSTASH_QUEUE",
        value_name = "CLIPSTASH_QUEUE",
        default_value = "clipstash:downloads"
    )]
    pub queue: String,

    /// How often workers heartbeat into Redis.
    #[arg(long, env = "CLIPSTASH_HEARTBEAT_INTERVAL", value_name = "CLIPSTASH_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Missed heartbeats after which a worker counts as dead and its jobs are re-enqueued by
    /// live workers (orphan timeout = interval x this).
    #[arg(long, env = "CLIPSTASH_MISSED_HEARTBEATS", value_name = "CLIPSTASH_MISSED_HEARTBEATS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub missed_heartbeats: u32,
}

impl RedisArgs {
    /// How long after its last heartbeat a worker's jobs are recovered by others.
    pub fn orphan_timeout(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }
}

/// Object storage settings.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Root folder of the local-disk storage provider (created if missing).
    #[arg(
        long,
        env = "CLIPSTASH_STORAGE_DIR",
        value_name = "CLIPSTASH_STORAGE_DIR",
        default_value = ".data/storage"
    )]
    pub storage_dir: PathBuf,

    /// Storage quota in bytes, exported as storage_quota_bytes for alerting; 0 = none.
    #[arg(
        long,
        env = "CLIPSTASH_STORAGE_QUOTA_BYTES",
        value_name = "CLIPSTASH_STORAGE_QUOTA_BYTES",
        default_value_t = 0
    )]
    pub storage_quota_bytes: u64,
}

/// Settings for the gauges every process samples from Postgres and Redis.
#[derive(Debug, Clone, Args)]
pub struct GaugeArgs {
    /// How often storage gauges are refreshed from Postgres (e.g. 60s, 500ms).
    #[arg(long, env = "CLIPSTASH_STORAGE_REFRESH", value_name = "CLIPSTASH_STORAGE_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub storage_refresh: Duration,

    /// How often queue gauges are sampled from Redis.
    #[arg(long, env = "CLIPSTASH_QUEUE_REFRESH", value_name = "CLIPSTASH_QUEUE_REFRESH", default_value = "15s", value_parser = parse_duration)]
    pub queue_refresh: Duration,
}

/// Reserved for the SSRF guard: when true, fetching from loopback and private addresses is
/// allowed (local runs and tests). Parsed strictly so a typo does not silently mean false.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Allow fetching from loopback and private networks (local runs and tests only).
    #[arg(long, env = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", value_name = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_networks: bool,
}

fn parse_postgres_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match u.scheme() {
        "postgres" | "postgresql" => Ok(s.to_string()),
        other => Err(format!("scheme must be postgres://, not {other}://")),
    }
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match u.scheme() {
        "redis" | "rediss" => Ok(s.to_string()),
        other => Err(format!(
            "scheme must be redis:// or rediss://, not {other}://"
        )),
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 30s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}': unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_postgres_url("postgres://127.0.0.1/x").is_ok());
        assert!(parse_postgres_url("mysql://127.0.0.1/x").is_err());
        assert!(parse_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_redis_url("127.0.0.1:6379").is_err());
    }
}
