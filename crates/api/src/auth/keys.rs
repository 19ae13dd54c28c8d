//! API keys: generating, hashing, and the `clipstash-api keys` command.
//!
//! A key is `cs_` followed by 32 bytes from the operating system's CSPRNG (`getrandom`) in
//! hex: 256 bits, so it cannot be guessed and a plain SHA-256 is a safe way to store it (a
//! slow, salted hash only matters for low-entropy secrets such as passwords).

use clipstash_db::keys::{self, CreateKeyError, NewKey};
use clipstash_db::{DatabaseArgs, KeyRow};
use sha2::{Digest, Sha256};

/// What every key starts with, so it is recognisable (and greppable by secret scanners).
pub const KEY_PREFIX: &str = "cs_";
/// Characters of a key shown by `keys list`: `cs_` and 8 hex digits.
const SHOWN_PREFIX_LEN: usize = 11;

/// A new random key.
pub fn generate_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// The SHA-256 a key is stored and looked up by.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `clipstash-api keys`: create, list and revoke API keys.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (it is stored only as a hash).
    Create(CreateArgs),
    /// List keys: name, prefix, dates and limits; never the key.
    List(DbOnly),
    /// Revoke the live key with this name (API replicas refuse it within CLIPSTASH_AUTH_CACHE_TTL).
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A unique name for the key (who or what uses it).
    #[arg(long)]
    pub name: String,
    /// Requests per minute for this key (default: the server's CLIPSTASH_RATE_PER_MINUTE).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub rate: Option<i32>,
    /// Jobs queued, running or retrying at once (default: the server's CLIPSTASH_MAX_ACTIVE_JOBS).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub max_active: Option<i32>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, clap::Args)]
pub struct DbOnly {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Name of the key to revoke.
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Runs a `keys` subcommand, printing to stdout.
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let db = match &cmd {
        KeysCommand::Create(a) => &a.database,
        KeysCommand::List(a) => &a.database,
        KeysCommand::Revoke(a) => &a.database,
    };
    let pool = clipstash_db::connect(&db.database_url, 2)
        .await
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot connect to Postgres: {e}"))?;
    let result = match cmd {
        KeysCommand::Create(a) => {
            let name = a.name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let key = generate_key()?;
            let row = keys::create_key(
                &pool,
                &NewKey {
                    name,
                    key_hash: &hash_key(&key),
                    prefix: &key[..SHOWN_PREFIX_LEN],
                    rate_per_minute: a.rate,
                    max_active_jobs: a.max_active,
                },
            )
            .await
            .map_err(|e| match e {
                CreateKeyError::NameTaken(_) => anyhow::anyhow!("{e}"),
                CreateKeyError::Db(d) => anyhow::anyhow!("creating the key: {d}"),
            })?;
            eprintln!(
                "created key {:?} ({}); it is shown once, store it now:",
                row.name, row.prefix
            );
            println!("{key}");
            Ok(())
        }
        KeysCommand::List(_) => {
            let rows = keys::list_keys(&pool).await?;
            print!("{}", render_list(&rows));
            Ok(())
        }
        KeysCommand::Revoke(a) => {
            if keys::revoke_key(&pool, &a.name).await? {
                println!("revoked {:?}", a.name);
                Ok(())
            } else {
                Err(anyhow::anyhow!("no live key named {:?}", a.name))
            }
        }
    };
    pool.close().await;
    result
}

fn render_list(rows: &[KeyRow]) -> String {
    let limit = |v: Option<i32>| v.map_or_else(|| "default".to_string(), |n| n.to_string());
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    let mut out = format!(
        "{:<24} {:<12} {:<21} {:<21} {:>9} {:>10} {}\n",
        "NAME", "PREFIX", "CREATED", "LAST USED", "RATE/MIN", "MAX ACTIVE", "STATE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<12} {:<21} {:<21} {:>9} {:>10} {}\n",
            r.name,
            r.prefix,
            when(Some(r.created_at)),
            when(r.last_used_at),
            limit(r.rate_per_minute),
            limit(r.max_active_jobs),
            if r.revoked_at.is_some() {
                "revoked"
            } else {
                "live"
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_stably() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }
}
