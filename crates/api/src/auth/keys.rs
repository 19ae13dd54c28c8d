//! API keys: generating, hashing, and the `clipstash-api keys` command.
//!
//! A key is `cs_` followed by 32 bytes from the operating system's CSPRNG (`getrandom`) in
//! hex: 256 bits, so it cannot be guessed and a plain SHA-256 is a safe way to store it (a
//! slow, salted hash only matters for low-entropy secrets such as passwords).

use clipstash_db::keys::{self, CreateKeyError, NewKey, StoredWebhookSecret};
use clipstash_db::{DatabaseArgs, KeyRow};
use clipstash_domain::webhook::{SALT_LEN, SECRET_LEN, WebhookSecret};
use clipstash_runtime::SecretKeyArgs;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What every key starts with, so it is recognisable (and greppable by secret scanners).
pub const KEY_PREFIX: &str = "cs_";
/// Characters of a key shown by `keys list`: `cs_` and 8 hex digits.
const SHOWN_PREFIX_LEN: usize = 11;

/// A new random key.
pub fn generate_key() -> anyhow::Result<String> {
    let bytes: [u8; 32] = random()?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(bytes)
}

/// A new webhook signing secret for key `key_id`: derived from `CLIPSTASH_SECRET_KEY` and a
/// random salt when the server key is set (only the salt is stored), else random bytes
/// stored as they are.
pub fn new_webhook_secret(
    key_id: Uuid,
    server: &SecretKeyArgs,
) -> anyhow::Result<(WebhookSecret, StoredWebhookSecret)> {
    Ok(match server.bytes() {
        Some(server_key) => {
            let salt: [u8; SALT_LEN] = random()?;
            (
                WebhookSecret::derive(server_key, key_id, &salt),
                StoredWebhookSecret::Salt(salt.to_vec()),
            )
        }
        None => {
            let bytes: [u8; SECRET_LEN] = random()?;
            (
                WebhookSecret::from_bytes(bytes),
                StoredWebhookSecret::Plain(bytes.to_vec()),
            )
        }
    })
}

/// The SHA-256 a key is stored and looked up by.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `clipstash-api keys`: create, list and revoke API keys; rotate their webhook secrets.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (it is stored only as a hash), then on a second line
    /// its webhook signing secret (whsec_...).
    Create(CreateArgs),
    /// List keys: name, prefix, dates and limits; never the key.
    List(DbOnly),
    /// Revoke the live key with this name (API replicas refuse it within CLIPSTASH_AUTH_CACHE_TTL).
    Revoke(RevokeArgs),
    /// Give the live key with this name a new webhook signing secret and print it once; the
    /// old one stops signing at once (keys made before webhooks have none until this).
    RotateWebhookSecret(RotateArgs),
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
    #[command(flatten)]
    pub secret: SecretKeyArgs,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Name of the key.
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
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
        KeysCommand::RotateWebhookSecret(a) => &a.database,
    };
    let pool = clipstash_db::connect(&db.database_url, 2)
        .await
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot connect to Postgres: {e}"))?;
    let result = match cmd {
        KeysCommand::Create(a) => {
            let name = a.name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let key = generate_key()?;
            let id = Uuid::now_v7();
            let (secret, stored) = new_webhook_secret(id, &a.secret)?;
            let row = keys::create_key(
                &pool,
                id,
                &NewKey {
                    name,
                    key_hash: &hash_key(&key),
                    prefix: &key[..SHOWN_PREFIX_LEN],
                    rate_per_minute: a.rate,
                    max_active_jobs: a.max_active,
                    webhook_secret: &stored,
                },
            )
            .await
            .map_err(|e| match e {
                CreateKeyError::NameTaken(_) => anyhow::anyhow!("{e}"),
                CreateKeyError::Db(d) => anyhow::anyhow!("creating the key: {d}"),
            })?;
            eprintln!(
                "created key {:?} ({}); it is shown once, store it now (line 1: the API key, line 2: its webhook signing secret{}):",
                row.name,
                row.prefix,
                stored_note(&stored)
            );
            println!("{key}");
            println!("{}", secret.to_whsec());
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
        KeysCommand::RotateWebhookSecret(a) => {
            let id = keys::live_key_id(&pool, &a.name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no live key named {:?}", a.name))?;
            let (secret, stored) = new_webhook_secret(id, &a.secret)?;
            anyhow::ensure!(
                keys::set_webhook_secret(&pool, id, &stored).await?,
                "the key {:?} was revoked meanwhile",
                a.name
            );
            eprintln!(
                "new webhook signing secret of {:?}; it is shown once, store it now{}:",
                a.name,
                stored_note(&stored)
            );
            println!("{}", secret.to_whsec());
            Ok(())
        }
    };
    pool.close().await;
    result
}

fn stored_note(stored: &StoredWebhookSecret) -> &'static str {
    match stored {
        StoredWebhookSecret::Salt(_) => {
            "; derived from CLIPSTASH_SECRET_KEY, which every worker needs"
        }
        StoredWebhookSecret::Plain(_) => {
            "; stored as is in Postgres: set CLIPSTASH_SECRET_KEY to keep it out of the database"
        }
    }
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
        "{:<24} {:<12} {:<21} {:<21} {:>9} {:>10} {:<14} {}\n",
        "NAME",
        "PREFIX",
        "CREATED",
        "LAST USED",
        "RATE/MIN",
        "MAX ACTIVE",
        "WEBHOOK SECRET",
        "STATE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<12} {:<21} {:<21} {:>9} {:>10} {:<14} {}\n",
            r.name,
            r.prefix,
            when(Some(r.created_at)),
            when(r.last_used_at),
            limit(r.rate_per_minute),
            limit(r.max_active_jobs),
            if r.has_webhook_secret { "yes" } else { "none" },
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
    fn webhook_secrets_are_random_or_derived_from_the_server_key() {
        let id = Uuid::now_v7();
        let (a, stored) = new_webhook_secret(id, &SecretKeyArgs::default()).unwrap();
        let (b, _) = new_webhook_secret(id, &SecretKeyArgs::default()).unwrap();
        assert_ne!(a, b);
        let StoredWebhookSecret::Plain(bytes) = stored else {
            panic!("no server key: stored as is")
        };
        assert_eq!(
            WebhookSecret::parse(&a.to_whsec()).unwrap(),
            WebhookSecret::from_bytes(bytes.try_into().unwrap())
        );
        let server = SecretKeyArgs {
            secret_key: Some(clipstash_testkit::settings::secret_key()),
        };
        let (c, stored) = new_webhook_secret(id, &server).unwrap();
        let StoredWebhookSecret::Salt(salt) = stored else {
            panic!("server key: only a salt is stored")
        };
        assert_eq!(c, WebhookSecret::derive(server.bytes().unwrap(), id, &salt));
    }

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
