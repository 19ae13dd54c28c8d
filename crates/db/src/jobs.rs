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

/// Inserts a new queued job and returns it.
pub async fn insert_job(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    source: VideoSource,
) -> Result<JobRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, url, source, status) VALUES ($1, $2, $3, $4) RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .bind(url)
    .bind(source)
    .bind(JobStatus::Queued)
    .fetch_one(pool)
    .await
}

pub async fn get_job(pool: &PgPool, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Newest first (ids are UUIDv7), strictly older than `before` when given.
pub async fn list_jobs(
    pool: &PgPool,
    status: Option<JobStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(status)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
