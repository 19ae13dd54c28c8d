//! The settings groups both binaries read, in one place. Each group is defined by the crate
//! it configures (`DatabaseArgs` in clipstash-db, `RedisArgs` in clipstash-queue, ...);
//! [`CommonArgs`] gathers them so each binary flattens one field instead of five.

use std::time::Duration;

use clipstash_db::DatabaseArgs;
use clipstash_queue::RedisArgs;
use clipstash_sources::NetworkArgs;
use clipstash_storage::StorageArgs;
use secrecy::SecretString;

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

/// `CLIPSTASH_SECRET_KEY`: the server's own secret. Webhook signing secrets are derived from
/// it (`clipstash_domain::webhook`), so the database holds only a salt per key. Read by the
/// `keys` commands that issue secrets and by every worker that signs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecretKeyArgs {
    /// Server secret (at least 32 characters, e.g. `openssl rand -base64 32`) from which each
    /// API key's webhook signing secret is derived, so a database dump alone does not hold
    /// them. Unset: new webhook secrets are stored as they are. Every worker and the `keys`
    /// commands need the same value; changing it invalidates secrets derived from it.
    #[arg(long, env = "CLIPSTASH_SECRET_KEY", value_name = "CLIPSTASH_SECRET_KEY", hide_env_values = true, value_parser = secret_key)]
    pub secret_key: Option<SecretString>,
}

fn secret_key(s: &str) -> Result<SecretString, String> {
    if s.len() < 32 {
        return Err(format!(
            "must be at least 32 characters (got {}); e.g. openssl rand -base64 32",
            s.len()
        ));
    }
    Ok(SecretString::from(s))
}

impl SecretKeyArgs {
    /// The key's bytes, if set.
    pub fn bytes(&self) -> Option<&[u8]> {
        use secrecy::ExposeSecret;
        self.secret_key
            .as_ref()
            .map(|k| k.expose_secret().as_bytes())
    }
}

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
}
