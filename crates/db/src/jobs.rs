//! Reading and creating job rows.

use chrono::{DateTime, Utc};
use clipstash_domain::{ErrorCode, JobStatus, RequestedSource, VideoSource};
use sqlx::PgPool;
use uuid::Uuid;

/// A job row as stored. `status`, `source` and `error_code` decode into their enums: a row
/// holding an unknown value is a decode error, never a silent default.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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
    /// The source the submit asked for; `source` is the one that runs.
    pub requested_source: RequestedSource,
    pub format: Option<String>,
    pub max_height: Option<i32>,
    pub extractor: Option<String>,
    pub video_id: Option<String>,
    pub title: Option<String>,
    pub callback_url: Option<String>,
}

pub(crate) const JOB_COLUMNS: &str = "id, url, source, status, attempts, provider, object_key, size_bytes, sha256, \
    content_type, error_code, error_message, created_at, started_at, finished_at, deleted_at, \
    requested_source, format, max_height, extractor, video_id, title, callback_url";

/// Records the source that runs a job and, for yt-dlp, what it said about the video (`None`
/// leaves a field as it is).
pub async fn record_source<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    source: VideoSource,
    extractor: Option<&str>,
    video_id: Option<&str>,
    title: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET source = $2, extractor = COALESCE($3, extractor), \
         video_id = COALESCE($4, video_id), title = COALESCE($5, title), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(source)
    .bind(extractor)
    .bind(video_id)
    .bind(title)
    .execute(executor)
    .await?;
    Ok(())
}

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

/// A job to insert: its URL and what the submit asked for.
#[derive(Clone)]
pub struct NewJob<'a> {
    pub id: Uuid,
    pub url: &'a str,
    /// The source planned to run (from `requested` and the URL's host).
    pub source: VideoSource,
    pub requested: RequestedSource,
    pub format: Option<&'a str>,
    pub max_height: Option<i32>,
    /// The client's cookies, sealed by the API (`clipstash_sources::cookies`); erased by a
    /// trigger when the job ends.
    pub cookies_sealed: Option<&'a [u8]>,
    /// Where the job's end is POSTed (signed), if anywhere.
    pub callback_url: Option<&'a str>,
}

impl<'a> NewJob<'a> {
    /// A job with the defaults: `auto`, no format, no height limit, no cookies.
    pub fn new(id: Uuid, url: &'a str, source: VideoSource) -> Self {
        Self {
            id,
            url,
            source,
            requested: RequestedSource::Auto,
            format: None,
            max_height: None,
            cookies_sealed: None,
            callback_url: None,
        }
    }
}

// Never prints the sealed cookies, not even their length.
impl std::fmt::Debug for NewJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("requested", &self.requested)
            .field("format", &self.format)
            .field("max_height", &self.max_height)
            .field("cookies", &self.cookies_sealed.map(|_| "[SEALED]"))
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

/// Inserts a new queued job and returns it.
pub async fn insert_job(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    source: VideoSource,
) -> Result<JobRow, sqlx::Error> {
    insert(pool, &NewJob::new(id, url, source)).await
}

/// Inserts a new queued job with the submit's options and returns it.
pub async fn insert_new_job(pool: &PgPool, job: &NewJob<'_>) -> Result<JobRow, sqlx::Error> {
    insert(pool, job).await
}

/// A job without an API key: one with a key is inserted only by the batch statement, which
/// checks the key's cap and adds the job to its count (`crate::batch`).
async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    job: &NewJob<'_>,
) -> Result<JobRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, url, source, status, requested_source, format, max_height, \
         cookies_sealed, callback_url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {JOB_COLUMNS}"
    )))
    .bind(job.id)
    .bind(job.url)
    .bind(job.source)
    .bind(JobStatus::Queued)
    .bind(job.requested)
    .bind(job.format)
    .bind(job.max_height)
    .bind(job.cookies_sealed)
    .bind(job.callback_url)
    .fetch_one(executor)
    .await
}

/// The sealed cookies of a job that has not ended (the worker opens them for yt-dlp).
pub async fn sealed_cookies<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<Vec<u8>>>("SELECT cookies_sealed FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
        .map(Option::flatten)
}

/// The statuses that count against a key's cap: those not yet terminal. Postgres has the
/// same list as `job_is_active(status)`, which the triggers keeping `api_keys.active_jobs`
/// use (a test holds the two together).
pub fn active_statuses() -> Vec<&'static str> {
    use strum::VariantArray;
    JobStatus::VARIANTS
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

pub async fn get_job(pool: &PgPool, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    get_job_of(pool, id, Owner::Any).await
}

/// Which of `ids` are `cancelled`: a worker's periodic check on the jobs it runs, so a
/// cancel takes effect even when its pub/sub message was missed.
pub async fn cancelled_among(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) AND status = $2")
        .bind(ids)
        .bind(JobStatus::Cancelled)
        .fetch_all(pool)
        .await
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

/// An `Idempotency-Key` and the SHA-256 (hex) of the canonical request body it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_sha256: &'a str,
}

/// A live job (`queued`, `retrying` or `running`) not updated for a while: what the sweeper
/// checks against Redis.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaleJob {
    pub id: Uuid,
    pub url: String,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
}

/// Up to `limit` jobs, ids after `after` in id order (keyset pages), that are
/// `queued`/`retrying` and not updated for `grace`, or `running` and not updated for
/// `orphan_after`.
pub async fn stale_live_jobs(
    pool: &PgPool,
    grace: std::time::Duration,
    orphan_after: std::time::Duration,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<StaleJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, url, status, created_at FROM jobs \
         WHERE ((status IN ($1, $2) AND updated_at < now() - make_interval(secs => $4)) \
             OR (status = $3 AND updated_at < now() - make_interval(secs => $5))) \
           AND ($6::uuid IS NULL OR id > $6) \
         ORDER BY id LIMIT $7",
    )
    .bind(JobStatus::Queued)
    .bind(JobStatus::Retrying)
    .bind(JobStatus::Running)
    .bind(grace.as_secs_f64())
    .bind(orphan_after.as_secs_f64())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Deletes up to `limit` finished jobs that finished more than `older_than` ago, keeping
/// every job whose object is still stored (it has a `stored_files` row). Returns how many
/// rows went.
pub async fn delete_finished_before(
    pool: &PgPool,
    older_than: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    use strum::VariantArray;
    let terminal: Vec<&str> = JobStatus::VARIANTS
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    let done = sqlx::query(
        "DELETE FROM jobs WHERE id IN ( \
           SELECT j.id FROM jobs j \
           WHERE j.status = ANY($1) AND j.finished_at < now() - make_interval(secs => $2) \
             AND NOT EXISTS (SELECT 1 FROM stored_files f WHERE f.job_id = j.id) \
           LIMIT $3)",
    )
    .bind(terminal)
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done)
}
