//! API keys: created, listed and revoked by `clipstash-api keys`, looked up by the API's
//! auth layer. Only the SHA-256 of a key is stored.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// An API key row, never the key itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, to tell keys apart in listings.
    pub prefix: String,
    /// Requests per minute; `None` uses the server's default.
    pub rate_per_minute: Option<i32>,
    /// Jobs queued, running or retrying at once; `None` uses the server's default.
    pub max_active_jobs: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str =
    "id, name, prefix, rate_per_minute, max_active_jobs, created_at, last_used_at, revoked_at";

/// What [`create_key`] stores.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a [u8; 32],
    pub prefix: &'a str,
    pub rate_per_minute: Option<i32>,
    pub max_active_jobs: Option<i32>,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("a live key named {0:?} already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Stores a new key (id = UUIDv7) and returns its row.
pub async fn create_key(pool: &PgPool, key: &NewKey<'_>) -> Result<KeyRow, CreateKeyError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, name, key_hash, prefix, rate_per_minute, max_active_jobs) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(key.name)
    .bind(&key.key_hash[..])
    .bind(key.prefix)
    .bind(key.rate_per_minute)
    .bind(key.max_active_jobs)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            CreateKeyError::NameTaken(key.name.to_string())
        }
        _ => CreateKeyError::Db(e),
    })
}

/// Every key, live and revoked, oldest first.
pub async fn list_keys(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await
}

/// Revokes the live key named `name`; returns whether there was one.
pub async fn revoke_key(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The live key whose SHA-256 is `key_hash`, if any.
pub async fn find_live_key(
    pool: &PgPool,
    key_hash: &[u8; 32],
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(&key_hash[..])
    .fetch_optional(pool)
    .await
}

/// Records that the key was used, unless that was recorded less than a minute ago (so many
/// replicas write each key's row at most about once a minute).
pub async fn touch_last_used(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
