//! Stored files, per-provider usage and quota reservations.
//!
//! Usage is spread over [`USAGE_SHARDS`] rows per provider: a job's file is counted in the
//! shard its id picks, so completions on different workers update different rows instead of
//! serialising on one. Readers sum the shards. A running upload holds a reservation that
//! counts against its provider's quota until the job succeeds (the reservation becomes usage
//! in the same transaction) or fails (it is deleted). Only reservations of `running` jobs
//! count, so a worker that dies mid-upload cannot leak quota for good.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Usage rows per provider. [`rebuild_usage`]'s SQL computes the same shard (the id's last
/// hex digit): change both together.
pub const USAGE_SHARDS: u128 = 16;

/// The usage shard a job's file is counted in: the id's low 4 bits (its last hex digit).
pub(crate) fn shard_of(job_id: Uuid) -> i16 {
    (job_id.as_u128() % USAGE_SHARDS) as i16
}

/// Bytes and objects per storage provider.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Usage {
    pub provider: String,
    pub bytes_used: i64,
    pub file_count: i64,
}

/// Usage of every provider that has stored something.
pub async fn storage_usage(pool: &PgPool) -> Result<Vec<Usage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, SUM(bytes_used)::bigint AS bytes_used, SUM(file_count)::bigint AS file_count \
         FROM storage_usage GROUP BY provider ORDER BY provider",
    )
    .fetch_all(pool)
    .await
}

/// Usage of one provider (zero when it has stored nothing).
pub async fn provider_usage<'e>(
    executor: impl PgExecutor<'e>,
    provider: &str,
) -> Result<Usage, sqlx::Error> {
    sqlx::query_as(
        "SELECT $1::text AS provider, COALESCE(SUM(bytes_used), 0)::bigint AS bytes_used, \
         COALESCE(SUM(file_count), 0)::bigint AS file_count FROM storage_usage WHERE provider = $1",
    )
    .bind(provider)
    .fetch_one(executor)
    .await
}

/// Advisory-lock key of a provider's quota: reservations on one provider are decided one at a
/// time (completions never take it).
fn quota_lock_key(provider: &str) -> i64 {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in provider.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Reserves `bytes` on `provider` for `job_id` (replacing the job's earlier reservation, on
/// any provider), if stored usage plus the running jobs' reservations stay within `quota`.
/// A provider without a quota (0) always has room and records nothing. Returns whether the
/// space is the job's.
pub async fn reserve(
    pool: &PgPool,
    job_id: Uuid,
    provider: &str,
    bytes: u64,
    quota: u64,
) -> Result<bool, sqlx::Error> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    // Without a quota there is nothing to protect: no lock, no row.
    if quota == 0 {
        return Ok(true);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(quota_lock_key(provider))
        .execute(&mut *tx)
        .await?;
    // The job's state is checked with a function of `status`, so the planner reaches each
    // reservation's job by primary key rather than reading every active job
    // (`crate::transitions` says why).
    let committed: i64 = sqlx::query_scalar(
        "SELECT ((SELECT COALESCE(SUM(bytes_used), 0) FROM storage_usage WHERE provider = $1) \
              + (SELECT COALESCE(SUM(r.bytes), 0) FROM storage_reservations r \
                 JOIN jobs j ON j.id = r.job_id \
                   AND array_position('{running}'::text[], j.status) IS NOT NULL \
                 WHERE r.provider = $1 AND r.job_id <> $2))::bigint",
    )
    .bind(provider)
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    let fits = committed.saturating_add(bytes) <= i64::try_from(quota).unwrap_or(i64::MAX);
    if fits {
        upsert_reservation(&mut *tx, job_id, provider, bytes).await?;
    }
    tx.commit().await?;
    Ok(fits)
}

async fn upsert_reservation<'e>(
    executor: impl PgExecutor<'e>,
    job_id: Uuid,
    provider: &str,
    bytes: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO storage_reservations (job_id, provider, bytes) VALUES ($1, $2, $3) \
         ON CONFLICT (job_id) DO UPDATE SET provider = EXCLUDED.provider, bytes = EXCLUDED.bytes, \
         updated_at = now()",
    )
    .bind(job_id)
    .bind(provider)
    .bind(bytes)
    .execute(executor)
    .await?;
    Ok(())
}

/// Drops a job's reservation (its upload failed or was abandoned).
pub async fn release_reservation<'e>(
    executor: impl PgExecutor<'e>,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM storage_reservations WHERE job_id = $1")
        .bind(job_id)
        .execute(executor)
        .await?;
    Ok(())
}

/// A stored file's row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredFile {
    pub job_id: Uuid,
    pub provider: String,
    pub object_key: String,
    pub size_bytes: i64,
}

/// The files recorded on `provider`, for reconciliation with what it holds.
pub async fn files_on(pool: &PgPool, provider: &str) -> Result<Vec<StoredFile>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, provider, object_key, size_bytes FROM stored_files WHERE provider = $1",
    )
    .bind(provider)
    .fetch_all(pool)
    .await
}

/// Recomputes a provider's usage from its stored files (what `storage reconcile --fix` does
/// after deleting orphans): the shard rows are replaced in one transaction.
pub async fn rebuild_usage(pool: &PgPool, provider: &str) -> Result<Usage, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM storage_usage WHERE provider = $1")
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO storage_usage (provider, shard, bytes_used, file_count) \
         SELECT provider, (strpos('0123456789abcdef', right(job_id::text, 1)) - 1)::smallint, \
                SUM(size_bytes), count(*) \
         FROM stored_files WHERE provider = $1 GROUP BY 1, 2",
    )
    .bind(provider)
    .execute(&mut *tx)
    .await?;
    let usage = provider_usage(&mut *tx, provider).await?;
    tx.commit().await?;
    Ok(usage)
}
