//! API keys: created, listed and revoked by `clipstash-api keys`, looked up by the API's
//! auth layer. Only the SHA-256 of a key is stored.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor, PgPool};
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
    /// Whether the key has a webhook signing secret (keys made before webhooks have none
    /// until `keys rotate-webhook-secret`).
    pub has_webhook_secret: bool,
}

const KEY_COLUMNS: &str = "id, name, prefix, rate_per_minute, max_active_jobs, created_at, last_used_at, revoked_at, \
     (webhook_secret IS NOT NULL OR webhook_secret_salt IS NOT NULL) AS has_webhook_secret";

/// How a key's webhook secret is stored: its bytes, or only the salt it is derived from
/// with `CLIPSTASH_SECRET_KEY` (`clipstash_domain::webhook`).
#[derive(Debug, Clone)]
pub enum StoredWebhookSecret {
    Plain(Vec<u8>),
    Salt(Vec<u8>),
}

impl StoredWebhookSecret {
    fn columns(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        match self {
            Self::Plain(b) => (Some(b), None),
            Self::Salt(b) => (None, Some(b)),
        }
    }
}

/// What [`create_key`] stores.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a [u8; 32],
    pub prefix: &'a str,
    pub rate_per_minute: Option<i32>,
    pub max_active_jobs: Option<i32>,
    pub webhook_secret: &'a StoredWebhookSecret,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("a live key named {0:?} already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Stores a new key with id `id` (a UUIDv7; a derived webhook secret needs it beforehand)
/// and returns its row.
pub async fn create_key(
    pool: &PgPool,
    id: Uuid,
    key: &NewKey<'_>,
) -> Result<KeyRow, CreateKeyError> {
    let (plain, salt) = key.webhook_secret.columns();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, name, key_hash, prefix, rate_per_minute, max_active_jobs, \
         webhook_secret, webhook_secret_salt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
    )))
    .bind(id)
    .bind(key.name)
    .bind(&key.key_hash[..])
    .bind(key.prefix)
    .bind(key.rate_per_minute)
    .bind(key.max_active_jobs)
    .bind(plain)
    .bind(salt)
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

/// The id of the live key named `name`, if any.
pub async fn live_key_id(pool: &PgPool, name: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM api_keys WHERE name = $1 AND revoked_at IS NULL")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Replaces key `id`'s webhook secret (the old one stops signing at once, including
/// deliveries already queued); returns whether the key is live.
pub async fn set_webhook_secret(
    pool: &PgPool,
    id: Uuid,
    secret: &StoredWebhookSecret,
) -> Result<bool, sqlx::Error> {
    let (plain, salt) = secret.columns();
    let n = sqlx::query(
        "UPDATE api_keys SET webhook_secret = $2, webhook_secret_salt = $3 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(plain)
    .bind(salt)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The live key whose SHA-256 is `key_hash`, if any.
pub async fn find_live_key<'e>(
    db: impl PgExecutor<'e>,
    key_hash: &[u8; 32],
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(&key_hash[..])
    .fetch_optional(db)
    .await
}

/// A live key with the SHA-256 it is looked up by.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HashedKey {
    pub key_hash: Vec<u8>,
    #[sqlx(flatten)]
    pub row: KeyRow,
}

/// Of `hashes`, the ones that are live keys, with their rows: one statement however many.
pub async fn find_live_keys(
    pool: &PgPool,
    hashes: &[[u8; 32]],
) -> Result<Vec<HashedKey>, sqlx::Error> {
    let hashes: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT key_hash, {KEY_COLUMNS} FROM api_keys \
         WHERE key_hash = ANY($1) AND revoked_at IS NULL"
    )))
    .bind(hashes)
    .fetch_all(pool)
    .await
}

/// At most `limit` live keys, the most recently used first (never used last).
pub async fn recent_live_keys(pool: &PgPool, limit: i64) -> Result<Vec<HashedKey>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT key_hash, {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL \
         ORDER BY last_used_at DESC NULLS LAST, created_at DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Prepares [`find_live_key`]'s statement on a new connection (a [`crate::Warm`]): the
/// API's first request with each key looks its key up, on whichever connection is free.
/// It looks up a hash no key has, through the same code, so the statement, its parameter
/// types and the catalog entries it reads are the request's own.
pub fn warm_key_lookup(conn: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move { find_live_key(conn, &[0; 32]).await.map(drop) })
}

/// Records that the keys were used, except those recorded less than a minute ago (so many
/// replicas write each key's row at most about once a minute). One statement however many
/// keys: their rows are locked in id order first, the order a batch of submits locks them
/// in, so the two cannot deadlock.
pub async fn touch_last_used(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH t AS (SELECT id FROM api_keys WHERE id = ANY($1) \
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') \
           ORDER BY id FOR NO KEY UPDATE) \
         UPDATE api_keys k SET last_used_at = now() FROM t WHERE k.id = t.id",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}
