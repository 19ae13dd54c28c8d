//! Reading and creating job rows.

use chrono::{DateTime, Utc};
use clipstash_domain::{ErrorCode, JobStatus, VideoSource};
use sqlx::PgPool;
use uuid::Uuid;

/// A job row as stored. `status`, `source` and `error_code` decode into their enums: a row
/// holding an unknown value is a decode error, never a silent default.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub url: String,
    pub source: VideoSource,
    pub status: JobStatus,
    pub attempts: i32,
    pub provider: Option<String>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub(crate) const JOB_COLUMNS: &str = "id, url, source, status, attempts, provider, object_key, size_bytes, sha256, \
    content_type, error_code, error_message, created_at, started_at, finished_at, deleted_at";

/// Whose jobs a request may see: every job (auth off), or one API key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Any,
    Key(Uuid),
}

impl Owner {
    /// The `api_key_id` filter bound as `($n::uuid IS NULL OR api_key_id = $n)`.
    pub(crate) fn filter(self) -> Option<Uuid> {
        match self {
            Owner::Any => None,
            Owner::Key(id) => Some(id),
        }
    }
}

/// Inserts a new queued job and returns it.
pub async fn insert_job(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    source: VideoSource,
) -> Result<JobRow, sqlx::Error> {
    insert(pool, id, url, source, None).await
}

async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    url: &str,
    source: VideoSource,
    api_key_id: Option<Uuid>,
) -> Result<JobRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, url, source, status, api_key_id) VALUES ($1, $2, $3, $4, $5) \
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .bind(url)
    .bind(source)
    .bind(JobStatus::Queued)
    .bind(api_key_id)
    .fetch_one(executor)
    .await
}

/// The job was not inserted: the key already has `active` jobs queued, running or retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyActive {
    pub active: i64,
}

/// Inserts a new queued job owned by `api_key_id` unless that key already has
/// `max_active` jobs queued, running or retrying. The key's row is locked for the count and
/// the insert, so concurrent submits of one key (on any replica) are serialised and the
/// cap cannot be overshot.
pub async fn insert_job_capped(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    source: VideoSource,
    api_key_id: Uuid,
    max_active: i64,
) -> Result<Result<JobRow, TooManyActive>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(api_key_id)
        .execute(&mut *tx)
        .await?;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE api_key_id = $1 AND status IN ('queued', 'running', 'retrying')",
    )
    .bind(api_key_id)
    .fetch_one(&mut *tx)
    .await?;
    if active >= max_active {
        tx.rollback().await?;
        return Ok(Err(TooManyActive { active }));
    }
    let job = insert(&mut *tx, id, url, source, Some(api_key_id)).await?;
    tx.commit().await?;
    Ok(Ok(job))
}

pub async fn get_job(pool: &PgPool, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    get_job_of(pool, id, Owner::Any).await
}

/// The job if `owner` may see it: another key's job is `None`, like a missing one.
pub async fn get_job_of(
    pool: &PgPool,
    id: Uuid,
    owner: Owner,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR api_key_id = $2)"
    )))
    .bind(id)
    .bind(owner.filter())
    .fetch_optional(pool)
    .await
}

/// Newest first (ids are UUIDv7), strictly older than `before` when given.
pub async fn list_jobs(
    pool: &PgPool,
    owner: Owner,
    status: Option<JobStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id < $2) \
         AND ($4::uuid IS NULL OR api_key_id = $4) \
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(status)
    .bind(before)
    .bind(limit)
    .bind(owner.filter())
    .fetch_all(pool)
    .await
}
