//! The webhook outbox (`webhook_deliveries`). A terminal transition of a job with a
//! `callback_url` writes its delivery row in the same statement or transaction
//! ([`crate::transitions`]), so a delivery is never lost and never delays the job; the
//! workers' delivery loop leases due rows with `FOR UPDATE SKIP LOCKED` (several workers
//! share the table without taking the same row) and records each attempt's outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Queues the webhook of job `job_id` if it has a callback URL; call in the transaction of
/// its terminal transition.
pub(crate) async fn enqueue(conn: &mut PgConnection, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, job_id, url) \
         SELECT $2, id, callback_url FROM jobs WHERE id = $1 AND callback_url IS NOT NULL",
    )
    .bind(job_id)
    .bind(Uuid::now_v7())
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery leased for one attempt, with what signing it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// The body sent before, if any attempt was made: retries send the same bytes.
    pub payload: Option<Vec<u8>>,
    /// The job's API key (`None`: created with auth off) and its secret's stored form.
    pub api_key_id: Option<Uuid>,
    pub webhook_secret: Option<Vec<u8>>,
    pub webhook_secret_salt: Option<Vec<u8>>,
}

/// Leases up to `limit` due pending deliveries for `lease`: they are not due again until
/// then, so a worker that dies mid-attempt leaves them to another after `lease`.
pub async fn lease_due(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "WITH d AS (SELECT id, job_id FROM webhook_deliveries \
                    WHERE state = 'pending' AND next_attempt_at <= now() \
                    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries w SET next_attempt_at = now() + make_interval(secs => $2) \
         FROM d JOIN jobs j ON j.id = d.job_id LEFT JOIN api_keys k ON k.id = j.api_key_id \
         WHERE w.id = d.id \
         RETURNING w.id, w.job_id, w.url, w.attempts, w.created_at, w.payload, j.api_key_id, \
                   k.webhook_secret, k.webhook_secret_salt",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// What an attempt led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A 2xx: done.
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// Given up (410, refused by the egress guard, or out of attempts or time).
    GiveUp,
}

/// Records an attempt: its answer (`status`, or `error` when there was none), the body it
/// sent (kept for the retries), and what comes next.
pub async fn record_attempt(
    pool: &PgPool,
    id: Uuid,
    payload: &[u8],
    status: Option<u16>,
    error: Option<&str>,
    next: &Next,
) -> Result<(), sqlx::Error> {
    let (state, after) = match next {
        Next::Delivered => ("delivered", Duration::ZERO),
        Next::RetryAfter(d) => ("pending", *d),
        Next::GiveUp => ("failed", Duration::ZERO),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, payload = COALESCE(payload, $2), \
         state = $3, next_attempt_at = now() + make_interval(secs => $4), last_status = $5, \
         last_error = $6, finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(payload)
    .bind(state)
    .bind(after.as_secs_f64())
    .bind(status.map(i32::from))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery as stored (tests and operators' queries).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
}

/// Every delivery of job `job_id`, oldest first.
pub async fn deliveries_of(pool: &PgPool, job_id: Uuid) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, url, state, attempts, last_status, last_error \
         FROM webhook_deliveries WHERE job_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
}
