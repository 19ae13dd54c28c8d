//! Postgres access: the pool, embedded migrations and every query on jobs and storage usage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error_code::ErrorCode;
use crate::model::JobStatus;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool lazily checked on first use; `connect_timeout` bounds every acquire.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("clipstash"))
        .await
}

/// Runs pending migrations; the `migrate` subcommand calls it once per rollout.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A job row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub url: String,
    pub source: String,
    pub status: String,
    pub attempts: i32,
    pub provider: Option<String>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn status(&self) -> JobStatus {
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Failed)
    }
}

const JOB_COLUMNS: &str = "id, url, source, status, attempts, provider, object_key, size_bytes, sha256, \
    content_type, error_code, error_message, created_at, started_at, finished_at, deleted_at";

/// Inserts a new queued job and returns it.
pub async fn insert_job(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    source: &str,
) -> Result<JobRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, url, source) VALUES ($1, $2, $3) RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .bind(url)
    .bind(source)
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
    .bind(status.map(JobStatus::as_str))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What a DELETE did to a job.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Was queued or retrying: now cancelled, the worker will skip it.
    Cancelled(JobRow),
    /// Had a stored object: its record and usage are removed; delete `object_key` from
    /// `provider` next.
    ObjectReleased {
        job: JobRow,
        provider: String,
        object_key: String,
    },
    /// Running right now: nothing changed.
    Running(JobRow),
    /// Nothing to do (already cancelled, failed, or its object already deleted).
    Unchanged(JobRow),
    NotFound,
}

/// Cancels a waiting job, or releases a succeeded job's object from the accounting, in one
/// transaction that locks the row so a worker cannot claim it meanwhile.
pub async fn delete_job(pool: &PgPool, id: Uuid) -> Result<DeleteOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = row else {
        return Ok(DeleteOutcome::NotFound);
    };
    let outcome = match job.status() {
        JobStatus::Queued | JobStatus::Retrying => {
            let job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now() \
                 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            DeleteOutcome::Cancelled(job)
        }
        JobStatus::Running => DeleteOutcome::Running(job),
        JobStatus::Succeeded if job.deleted_at.is_none() => {
            let file: Option<(String, String, i64)> = sqlx::query_as(
                "DELETE FROM stored_files WHERE job_id = $1 RETURNING provider, object_key, size_bytes",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((provider, _, size)) = &file {
                sqlx::query(
                    "UPDATE storage_usage SET bytes_used = bytes_used - $2, file_count = file_count - 1, \
                     updated_at = now() WHERE provider = $1",
                )
                .bind(provider)
                .bind(size)
                .execute(&mut *tx)
                .await?;
            }
            let job: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET deleted_at = now(), updated_at = now() WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            match file {
                Some((provider, object_key, _)) => DeleteOutcome::ObjectReleased {
                    job,
                    provider,
                    object_key,
                },
                None => DeleteOutcome::Unchanged(job),
            }
        }
        _ => DeleteOutcome::Unchanged(job),
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Bytes and objects per storage provider.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Usage {
    pub provider: String,
    pub bytes_used: i64,
    pub file_count: i64,
}

pub async fn storage_usage(pool: &PgPool) -> Result<Vec<Usage>, sqlx::Error> {
    sqlx::query_as("SELECT provider, bytes_used, file_count FROM storage_usage ORDER BY provider")
        .fetch_all(pool)
        .await
}

/// Postgres advisory-lock key of a job: the job runs only while its worker holds this lock
/// on a live session, so a duplicate delivery cannot run it twice at once and a killed
/// worker's lock vanishes with its connection.
fn lock_key(id: Uuid) -> i64 {
    let b = id.as_u128();
    ((b >> 64) as i64) ^ (b as i64)
}

/// Result of trying to start an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The job is ours; `attempts` counts this attempt; `first_start` is true when the job
    /// had never started before.
    Claimed { attempts: i32, first_start: bool },
    /// Another live worker is running it right now.
    Busy,
    /// Cancelled, finished or unknown: nothing to do.
    NotRunnable,
}

/// Takes the job's lock on `conn` and marks it running, counting the attempt. A job left
/// `running` by a dead worker is claimable again (its lock died with it).
pub async fn claim(conn: &mut PgConnection, id: Uuid) -> Result<Claim, sqlx::Error> {
    let row: Option<(bool, Option<i32>, Option<bool>)> = sqlx::query_as(
        "WITH l AS (SELECT pg_try_advisory_lock($2) AS got), \
         u AS (UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                 started_at = COALESCE(started_at, now()), updated_at = now() \
               FROM l WHERE l.got AND id = $1 AND status IN ('queued', 'retrying', 'running') \
               RETURNING attempts, (attempts = 1) AS first) \
         SELECT l.got, u.attempts, u.first FROM l LEFT JOIN u ON true",
    )
    .bind(id)
    .bind(lock_key(id))
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((true, Some(attempts), first)) => Ok(Claim::Claimed {
            attempts,
            first_start: first.unwrap_or(false),
        }),
        Some((true, None, _)) => {
            release(conn, id).await?;
            Ok(Claim::NotRunnable)
        }
        _ => Ok(Claim::Busy),
    }
}

/// Releases the job's lock; call when the attempt loop is over.
pub async fn release(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_key(id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a failed attempt: `retrying` when another attempt follows, else the job's final
/// failure. Takes any executor: the job's locked connection, or the pool from outside the
/// attempt loop (a failed enqueue, a panic).
pub async fn record_failure<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    code: ErrorCode,
    message: &str,
    will_retry: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = $4, error_code = $2, error_message = $3, updated_at = now(), \
         finished_at = CASE WHEN $4 = 'failed' THEN now() ELSE finished_at END WHERE id = $1",
    )
    .bind(id)
    .bind(code.as_str())
    .bind(message)
    .bind(if will_retry { "retrying" } else { "failed" })
    .execute(executor)
    .await?;
    Ok(())
}

/// Starts the next attempt of a job this worker holds; returns the attempt count, or `None`
/// when the job was cancelled during the backoff.
pub async fn next_attempt(conn: &mut PgConnection, id: Uuid) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND status = 'retrying' RETURNING attempts",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A stored object's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub provider: String,
    pub object_key: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub content_type: String,
}

/// Records success: the file, the provider's usage and the job, in one transaction. The
/// file row's primary key makes this idempotent: usage grows once per job whatever the
/// number of deliveries. Returns the provider's usage after the change.
pub async fn complete(
    conn: &mut PgConnection,
    id: Uuid,
    obj: &StoredObject,
) -> Result<Usage, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let inserted = sqlx::query(
        "INSERT INTO stored_files (job_id, provider, object_key, size_bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(id)
    .bind(&obj.provider)
    .bind(&obj.object_key)
    .bind(obj.size_bytes)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let usage: Usage = sqlx::query_as(
        "INSERT INTO storage_usage (provider, bytes_used, file_count) VALUES ($1, $2, $3) \
         ON CONFLICT (provider) DO UPDATE SET bytes_used = storage_usage.bytes_used + EXCLUDED.bytes_used, \
         file_count = storage_usage.file_count + EXCLUDED.file_count, updated_at = now() \
         RETURNING provider, bytes_used, file_count",
    )
    .bind(&obj.provider)
    .bind(if inserted == 1 { obj.size_bytes } else { 0 })
    .bind(inserted as i64)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', provider = $2, object_key = $3, size_bytes = $4, sha256 = $5, \
         content_type = $6, error_code = NULL, error_message = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&obj.provider)
    .bind(&obj.object_key)
    .bind(obj.size_bytes)
    .bind(&obj.sha256)
    .bind(&obj.content_type)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(usage)
}
