//! The SQL of every job transition. Each guards on the transition's legal `from` states
//! ([`Transition::from`]) and writes its `to` state, so the states diagram in
//! `clipstash_domain::job` is enforced here and nowhere else.

use clipstash_domain::{ErrorCode, JobStatus, StoredObject, Transition};
use sqlx::{FromRow, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::jobs::{JOB_COLUMNS, JobRow, Owner};
use crate::usage::{Usage, shard_of};

/// Postgres advisory-lock key of a job: the job runs only while its worker holds this lock
/// on a live session, so a duplicate delivery cannot run it twice at once and a killed
/// worker's lock vanishes with its connection.
pub fn lock_key(id: Uuid) -> i64 {
    let b = id.as_u128();
    ((b >> 64) as i64) ^ (b as i64)
}

/// Whether a live session holds the job's lock (its worker is running it). Tries the lock on
/// `conn` and releases it at once; `conn` must not be one that runs jobs.
pub async fn is_locked(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(id))
        .fetch_one(&mut *conn)
        .await?;
    if got {
        release(conn, id).await?;
    }
    Ok(!got)
}

/// Result of trying to start an attempt.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The job is ours; `attempts` counts this attempt; `first_start` is true when the job
    /// had never started before; `job` is its row as the claim left it.
    Claimed {
        attempts: i32,
        first_start: bool,
        job: Box<JobRow>,
    },
    /// Another live session holds the job's lock: it is running elsewhere right now.
    Busy,
    /// Cancelled, finished or unknown: nothing to do.
    NotRunnable,
}

/// [`Transition::Claim`]: takes the job's lock on `conn` and marks it running, counting the
/// attempt, and returns the row (what the submit asked for) in the same round trip. A job
/// left `running` by a dead worker is claimable again (its lock died with it).
pub async fn claim(conn: &mut PgConnection, id: Uuid) -> Result<Claim, sqlx::Error> {
    let t = Transition::Claim;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH l AS (SELECT pg_try_advisory_lock($2) AS got), \
         u AS (UPDATE jobs SET status = $3, attempts = attempts + 1, \
                 started_at = COALESCE(started_at, now()), updated_at = now() \
               FROM l WHERE l.got AND id = $1 AND status = ANY($4) \
               RETURNING {JOB_COLUMNS}, (attempts = 1) AS first) \
         SELECT l.got, u.first, {JOB_COLUMNS} FROM l LEFT JOIN u ON true"
    )))
    .bind(id)
    .bind(lock_key(id))
    .bind(t.to())
    .bind(t.from_names())
    .fetch_one(&mut *conn)
    .await?;
    let got: bool = row.try_get("got")?;
    let attempts: Option<i32> = row.try_get("attempts")?;
    match (got, attempts) {
        (true, Some(attempts)) => Ok(Claim::Claimed {
            attempts,
            first_start: row.try_get::<Option<bool>, _>("first")?.unwrap_or(false),
            job: Box::new(JobRow::from_row(&row)?),
        }),
        (true, None) => {
            release(conn, id).await?;
            Ok(Claim::NotRunnable)
        }
        (false, _) => Ok(Claim::Busy),
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

/// [`Transition::Retry`] when another attempt follows, else [`Transition::Fail`]: records a
/// failed attempt. Takes any executor: the job's locked connection, or the pool from outside
/// the attempt loop (a failed enqueue, a panic). Returns whether the row moved.
pub async fn record_failure<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    code: ErrorCode,
    message: &str,
    will_retry: bool,
) -> Result<bool, sqlx::Error> {
    let t = if will_retry {
        Transition::Retry
    } else {
        Transition::Fail
    };
    // A failed attempt gives back the space it reserved, and a final one queues the job's
    // webhook, in the same statement.
    let moved: i64 = sqlx::query_scalar(
        "WITH r AS (DELETE FROM storage_reservations WHERE job_id = $1), \
         u AS (UPDATE jobs SET status = $4, error_code = $2, error_message = $3, updated_at = now(), \
               finished_at = CASE WHEN $5 THEN now() ELSE finished_at END \
               WHERE id = $1 AND status = ANY($6) RETURNING id, callback_url), \
         w AS (INSERT INTO webhook_deliveries (id, job_id, url) \
               SELECT $7, id, callback_url FROM u WHERE $5 AND callback_url IS NOT NULL) \
         SELECT count(*) FROM u",
    )
    .bind(id)
    .bind(code)
    .bind(message)
    .bind(t.to())
    .bind(t.to().is_terminal())
    .bind(t.from_names())
    .bind(Uuid::now_v7())
    .fetch_one(executor)
    .await?;
    Ok(moved == 1)
}

/// [`Transition::Resume`]: starts the next attempt of a job this worker holds; returns the
/// attempt count, or `None` when the job was cancelled during the backoff.
pub async fn next_attempt(conn: &mut PgConnection, id: Uuid) -> Result<Option<i32>, sqlx::Error> {
    let t = Transition::Resume;
    sqlx::query_scalar(
        "UPDATE jobs SET status = $2, attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND status = ANY($3) RETURNING attempts",
    )
    .bind(id)
    .bind(t.to())
    .bind(t.from_names())
    .fetch_optional(conn)
    .await
}

/// [`Transition::Succeed`]: records the file, the provider's usage, the job and its webhook (if
/// it has a callback URL) in one statement, turning the job's quota reservation into usage.
/// The file row's primary key makes this idempotent: usage grows once per job whatever the
/// number of deliveries. Usage is counted in the job's shard, so completions of different
/// jobs touch different rows. Returns the provider's usage after the change, or `None` when
/// the job is in no state to succeed (nothing is written then).
///
/// When the job moved, the same statement also releases the job's advisory lock held by
/// `conn`'s session (one round trip fewer per job): the caller must not release it again.
/// A claim racing the commit takes the lock, then waits on the row and finds it succeeded.
pub async fn complete(
    conn: &mut PgConnection,
    id: Uuid,
    obj: &StoredObject,
) -> Result<Option<Usage>, sqlx::Error> {
    let t = Transition::Succeed;
    // One statement, so one round trip and one commit: move the job, queue its webhook,
    // record the file (once), turn the reservation into usage in the job's shard, and
    // return the provider's total (the other shards as they were, plus ours as it is now).
    // Every part hangs off `u`: when the job did not move (cancelled meanwhile), nothing is
    // written and no row comes back.
    sqlx::query_as(
        "WITH u AS (UPDATE jobs SET status = $7, provider = $2, object_key = $3, size_bytes = $4, \
                sha256 = $5, content_type = $6, error_code = NULL, error_message = NULL, \
                finished_at = COALESCE(finished_at, now()), updated_at = now() \
                WHERE id = $1 AND status = ANY($8) RETURNING id, callback_url), \
         w AS (INSERT INTO webhook_deliveries (id, job_id, url) \
               SELECT $9, id, callback_url FROM u WHERE callback_url IS NOT NULL), \
         f AS (INSERT INTO stored_files (job_id, provider, object_key, size_bytes) \
               SELECT id, $2, $3, $4 FROM u ON CONFLICT (job_id) DO NOTHING RETURNING size_bytes), \
         r AS (DELETE FROM storage_reservations WHERE job_id = $1 AND EXISTS (SELECT 1 FROM u)), \
         up AS (INSERT INTO storage_usage (provider, shard, bytes_used, file_count) \
                SELECT $2, $10, COALESCE((SELECT SUM(size_bytes) FROM f), 0), (SELECT count(*) FROM f) FROM u \
                ON CONFLICT (provider, shard) DO UPDATE SET bytes_used = storage_usage.bytes_used + EXCLUDED.bytes_used, \
                file_count = storage_usage.file_count + EXCLUDED.file_count, updated_at = now() \
                RETURNING bytes_used, file_count) \
         SELECT $2::text AS provider, \
                (up.bytes_used + (SELECT COALESCE(SUM(bytes_used), 0) FROM storage_usage WHERE provider = $2 AND shard <> $10))::bigint AS bytes_used, \
                (up.file_count + (SELECT COALESCE(SUM(file_count), 0) FROM storage_usage WHERE provider = $2 AND shard <> $10))::bigint AS file_count, \
                pg_advisory_unlock($11) AS unlocked \
         FROM up",
    )
    .bind(id)
    .bind(obj.provider.as_str())
    .bind(&obj.object_key)
    .bind(obj.size_bytes)
    .bind(&obj.sha256)
    .bind(&obj.content_type)
    .bind(t.to())
    .bind(t.from_names())
    .bind(Uuid::now_v7())
    .bind(shard_of(id))
    .bind(lock_key(id))
    .fetch_optional(conn)
    .await
}

/// What a DELETE did to a job.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Was queued, retrying or running: now cancelled. The worker skips it, or stops it
    /// when it notices (`was` tells which state it left).
    Cancelled {
        job: JobRow,
        was: JobStatus,
    },
    /// Had a stored object: its record and usage are removed; delete `object_key` from
    /// `provider` next.
    ObjectReleased {
        job: JobRow,
        provider: String,
        object_key: String,
    },
    /// Nothing to do (already cancelled, failed, or its object already deleted).
    Unchanged(JobRow),
    NotFound,
}

/// [`Transition::Cancel`] for a queued, retrying or running job (its quota reservation goes
/// with it), or, for a succeeded one, releases its object from the accounting; in one
/// transaction that locks the row so no worker claims or completes it meanwhile.
pub async fn delete_job(pool: &PgPool, id: Uuid) -> Result<DeleteOutcome, sqlx::Error> {
    delete_job_of(pool, id, Owner::Any).await
}

/// [`delete_job`] for `owner`: another owner's job is [`DeleteOutcome::NotFound`].
pub async fn delete_job_of(
    pool: &PgPool,
    id: Uuid,
    owner: Owner,
) -> Result<DeleteOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR api_key_id = $2) \
         FOR UPDATE"
    )))
    .bind(id)
    .bind(owner.filter())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = row else {
        return Ok(DeleteOutcome::NotFound);
    };
    let outcome = match job.status {
        s if Transition::Cancel.allowed_from(s) => {
            let job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH r AS (DELETE FROM storage_reservations WHERE job_id = $1) \
                 UPDATE jobs SET status = $2, finished_at = now(), updated_at = now() \
                 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(id)
            .bind(Transition::Cancel.to())
            .fetch_one(&mut *tx)
            .await?;
            crate::webhooks::enqueue(&mut tx, id).await?;
            DeleteOutcome::Cancelled { job, was: s }
        }
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
                     updated_at = now() WHERE provider = $1 AND shard = $3",
                )
                .bind(provider)
                .bind(size)
                .bind(shard_of(id))
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
