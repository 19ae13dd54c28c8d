//! The SQL of every job transition. Each guards on the transition's legal `from` states
//! ([`Transition::from`]) and writes its `to` state, so the states diagram in
//! `clipstash_domain::job` is enforced here and nowhere else.
//!
//! Every transition finds its rows by primary key, and its guard is written
//! `array_position($n::text[], status) IS NOT NULL`, not `status = ANY($n)`. With the guard's
//! states known, as they are in a plan made for the bound values, the planner may instead
//! read `jobs_live_updated_at_idx` (whose `WHERE` the guard implies) or the status index,
//! and it does whenever its statistics predate the active jobs: a burst of submits after the
//! last `ANALYZE` (on a big table, 10% of it must change before autovacuum analyses again)
//! made every claim and completion read every active job, 7 to 19 ms each with 10,000 active
//! (docs/BENCHMARKS.md). A function of `status` is no index's condition, so the primary key
//! is the only way in. Statements on many ids also give them as `id = ANY(ARRAY(...))`: an
//! array the planner cannot see into counts as about ten rows, so it does not prefer a
//! sequential scan for a batch, as it did for a 64-row one on a table it thought small.

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
    let mut claims = claim_many(conn, &[id]).await?;
    Ok(claims.pop().expect("one claim per id"))
}

/// [`claim`] for several jobs in one statement: each lock is taken on `conn`, which holds
/// all of them. Answers in the order of `ids`, which must be distinct (a session's advisory
/// locks are re-entrant, so the same id twice would be claimed twice).
pub async fn claim_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Claim>, sqlx::Error> {
    debug_assert!(
        ids.iter().collect::<std::collections::HashSet<_>>().len() == ids.len(),
        "claim_many: duplicate ids"
    );
    let t = Transition::Claim;
    let keys: Vec<i64> = ids.iter().copied().map(lock_key).collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH l AS (SELECT cid, pg_try_advisory_lock(lk) AS got \
                    FROM UNNEST($1::uuid[], $2::int8[]) AS i(cid, lk)), \
         u AS (UPDATE jobs SET status = $3, attempts = attempts + 1, \
                 started_at = COALESCE(started_at, now()), updated_at = now() \
               WHERE id = ANY(ARRAY(SELECT cid FROM l WHERE got)) \
                 AND array_position($4::text[], status) IS NOT NULL \
               RETURNING {JOB_COLUMNS}, (attempts = 1) AS first) \
         SELECT l.cid, l.got, u.first, {JOB_COLUMNS} FROM l LEFT JOIN u ON u.id = l.cid"
    )))
    .bind(ids)
    .bind(&keys)
    .bind(t.to())
    .bind(t.from_names())
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id = std::collections::HashMap::with_capacity(rows.len());
    let mut unrunnable = Vec::new();
    for row in &rows {
        let id: Uuid = row.try_get("cid")?;
        let got: bool = row.try_get("got")?;
        let attempts: Option<i32> = row.try_get("attempts")?;
        let claim = match (got, attempts) {
            (true, Some(attempts)) => Claim::Claimed {
                attempts,
                first_start: row.try_get::<Option<bool>, _>("first")?.unwrap_or(false),
                job: Box::new(JobRow::from_row(row)?),
            },
            (true, None) => {
                unrunnable.push(id);
                Claim::NotRunnable
            }
            (false, _) => Claim::Busy,
        };
        by_id.insert(id, claim);
    }
    release_many(conn, &unrunnable).await?;
    Ok(ids
        .iter()
        .map(|id| by_id.remove(id).unwrap_or(Claim::NotRunnable))
        .collect())
}

/// Releases the job's lock; call when the attempt loop is over.
pub async fn release(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    release_many(conn, &[id]).await
}

/// [`release`] for several jobs in one statement.
pub async fn release_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = ids.iter().copied().map(lock_key).collect();
    sqlx::query("SELECT pg_advisory_unlock(lk) FROM UNNEST($1::int8[]) AS k(lk)")
        .bind(&keys)
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
               WHERE id = $1 AND array_position($6::text[], status) IS NOT NULL \
               RETURNING id, callback_url), \
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
         WHERE id = $1 AND array_position($3::text[], status) IS NOT NULL RETURNING attempts",
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
    let done = complete_many(conn, &[(id, obj)]).await?;
    Ok(if done.moved[0] {
        done.usage
            .into_iter()
            .find(|u| u.provider == obj.provider.as_str())
    } else {
        None
    })
}

/// What [`complete_many`] did.
#[derive(Debug)]
pub struct Completed {
    /// Per job, in the order given: whether it moved to `succeeded` (and its lock was
    /// released). One that did not (cancelled meanwhile) keeps its lock.
    pub moved: Vec<bool>,
    /// The totals of every provider a moved job stored on, after this statement.
    pub usage: Vec<Usage>,
}

/// [`complete`] for several jobs in one statement, run on the session holding their locks.
/// Ids must be distinct.
pub async fn complete_many(
    conn: &mut PgConnection,
    done: &[(Uuid, &StoredObject)],
) -> Result<Completed, sqlx::Error> {
    let t = Transition::Succeed;
    let n = done.len();
    let (
        mut ids,
        mut providers,
        mut keys,
        mut sizes,
        mut hashes,
        mut types,
        mut hooks,
        mut shards,
        mut locks,
    ) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, obj) in done {
        ids.push(*id);
        providers.push(obj.provider.as_str());
        keys.push(obj.object_key.as_str());
        sizes.push(obj.size_bytes);
        hashes.push(obj.sha256.as_str());
        types.push(obj.content_type.as_str());
        hooks.push(Uuid::now_v7());
        shards.push(shard_of(*id));
        locks.push(lock_key(*id));
    }
    // One statement, so one round trip and one commit: move the jobs, queue their webhooks,
    // record each file (once), turn reservations into usage in each job's shard (shards
    // locked in one order, so concurrent batches cannot deadlock), release the moved jobs'
    // locks, and return each touched provider's total (the other shards as they were, plus
    // ours as they are now). Everything hangs off `u`: a job that did not move (cancelled
    // meanwhile) writes nothing and keeps its lock.
    type Row = (
        Option<Uuid>,
        Option<bool>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH i AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], \
                    $6::text[], $7::uuid[], $8::int2[], $9::int8[]) \
                    AS i(cid, c_provider, c_key, c_size, c_sha256, c_type, c_hook, c_shard, c_lock)), \
         u AS (UPDATE jobs SET status = $10, provider = c_provider, object_key = c_key, \
                size_bytes = c_size, sha256 = c_sha256, content_type = c_type, error_code = NULL, \
                error_message = NULL, finished_at = COALESCE(finished_at, now()), updated_at = now() \
                FROM i WHERE id = cid AND id = ANY(ARRAY(SELECT cid FROM i)) \
                  AND array_position($11::text[], status) IS NOT NULL \
                RETURNING id, callback_url, c_provider, c_key, c_size, c_hook, c_shard, c_lock), \
         w AS (INSERT INTO webhook_deliveries (id, job_id, url) \
               SELECT c_hook, id, callback_url FROM u WHERE callback_url IS NOT NULL), \
         f AS (INSERT INTO stored_files (job_id, provider, object_key, size_bytes) \
               SELECT id, c_provider, c_key, c_size FROM u ON CONFLICT (job_id) DO NOTHING \
               RETURNING job_id, size_bytes), \
         r AS (DELETE FROM storage_reservations WHERE job_id IN (SELECT id FROM u)), \
         up AS (INSERT INTO storage_usage (provider, shard, bytes_used, file_count) \
                SELECT c_provider, c_shard, COALESCE(SUM(f.size_bytes), 0), count(f.job_id) \
                FROM u LEFT JOIN f ON f.job_id = u.id GROUP BY c_provider, c_shard \
                ORDER BY c_provider, c_shard \
                ON CONFLICT (provider, shard) DO UPDATE SET bytes_used = storage_usage.bytes_used + EXCLUDED.bytes_used, \
                file_count = storage_usage.file_count + EXCLUDED.file_count, updated_at = now() \
                RETURNING provider, shard, bytes_used, file_count), \
         t AS (SELECT provider, SUM(bytes_used)::bigint AS bytes_used, SUM(file_count)::bigint AS file_count \
               FROM (SELECT provider, bytes_used, file_count FROM up \
                     UNION ALL \
                     SELECT s.provider, s.bytes_used, s.file_count FROM storage_usage s \
                     WHERE s.provider IN (SELECT provider FROM up) \
                       AND NOT EXISTS (SELECT 1 FROM up WHERE up.provider = s.provider AND up.shard = s.shard)) z \
               GROUP BY provider) \
         SELECT id, pg_advisory_unlock(c_lock) AS unlocked, NULL::text, NULL::int8, NULL::int8 FROM u \
         UNION ALL SELECT NULL::uuid, NULL::bool, provider, bytes_used, file_count FROM t",
    )
    .bind(&ids)
    .bind(&providers)
    .bind(&keys)
    .bind(&sizes)
    .bind(&hashes)
    .bind(&types)
    .bind(&hooks)
    .bind(&shards)
    .bind(&locks)
    .bind(t.to())
    .bind(t.from_names())
    .fetch_all(conn)
    .await?;
    let mut moved = vec![false; n];
    let mut usage = Vec::new();
    for (id, _unlocked, provider, bytes_used, file_count) in rows {
        match (id, provider, bytes_used, file_count) {
            (Some(id), ..) => {
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    moved[i] = true;
                }
            }
            (None, Some(provider), Some(bytes_used), Some(file_count)) => usage.push(Usage {
                provider,
                bytes_used,
                file_count,
            }),
            _ => {}
        }
    }
    Ok(Completed { moved, usage })
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
