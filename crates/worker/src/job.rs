//! Running one download job: claim it in Postgres, try up to `max_attempts` times with
//! exponential backoff, record the outcome. Every job outcome (success, permanent failure,
//! retries exhausted, cancelled) is reported to apalis as done; only a failure of our own
//! infrastructure (Postgres unreachable) is an error, which apalis schedules again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use clipstash_core::db::{self, Claim};
use clipstash_core::fetch::{Fetcher, JobError};
use clipstash_core::model::Source;
use clipstash_core::storage::Storage;
use clipstash_core::{DownloadJob, ErrorCode, gauges};
use futures_util::FutureExt;
use metrics_core::catalogue::TASK_PROCESS_DOWNLOAD;
use metrics_core::{DownloadTracker, TaskOutcome, TaskTracker, record_error};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Everything a job needs; shared by all jobs of a process.
pub struct JobContext {
    pub pool: PgPool,
    pub storage: Storage,
    pub fetcher: Fetcher,
    /// First attempt plus retries.
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub attempt_timeout: Duration,
    /// Fires on SIGTERM: a job waiting to retry hands itself back instead of sleeping.
    pub shutdown: CancellationToken,
}

/// The apalis handler.
pub async fn handle(job: DownloadJob, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let id = job.job_id;
    match AssertUnwindSafe(ctx.process(job)).catch_unwind().await {
        Ok(result) => result.map_err(|e| {
            tracing::warn!(%id, error = ?e, "job interrupted; the queue will deliver it again");
            e.into()
        }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%id, panic = %what, "job panicked");
            record_error(
                ErrorCode::InternalError.as_str(),
                ErrorCode::InternalError.error_type().as_str(),
            );
            // The lock connection was closed as the panic unwound; record the failure anew.
            db::record_failure(
                &ctx.pool,
                id,
                ErrorCode::InternalError,
                "the worker failed unexpectedly",
                false,
            )
            .await?;
            Ok(())
        }
    }
}

/// A pooled connection holding a job's advisory lock. Released explicitly when the job is
/// done; if dropped instead (cancelled, panic), the connection is closed rather than
/// returned to the pool, which releases the lock in Postgres.
struct LockedConn {
    conn: Option<PoolConnection<Postgres>>,
    id: Uuid,
}

impl LockedConn {
    fn get(&mut self) -> &mut sqlx::PgConnection {
        self.conn.as_mut().expect("connection held until release")
    }

    async fn release(mut self) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.take().expect("connection held until release");
        db::release(&mut conn, self.id).await
    }
}

impl Drop for LockedConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// Why an attempt loop stopped early without an outcome.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("shutting down while waiting to retry")]
    Shutdown,
}

impl JobContext {
    /// Runs a delivered job to an outcome recorded in Postgres.
    pub async fn process(&self, job: DownloadJob) -> Result<(), Interrupted> {
        let id = job.job_id;
        let mut conn = self.pool.acquire().await?;
        let mut attempts = match db::claim(&mut conn, id).await? {
            Claim::Claimed {
                attempts,
                first_start,
            } => {
                if first_start {
                    let waited = (Utc::now() - job.enqueued_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    metrics_core::trackers::record_queue_wait(TASK_PROCESS_DOWNLOAD, waited);
                }
                attempts
            }
            Claim::Busy => {
                tracing::info!(%id, "already running on another worker; dropping this delivery");
                return Ok(());
            }
            Claim::NotRunnable => {
                tracing::info!(%id, "cancelled or finished; skipping");
                return Ok(());
            }
        };
        let mut conn = LockedConn {
            conn: Some(conn),
            id,
        };
        let source = url::Url::parse(&job.url)
            .map(|u| Source::for_url(&u))
            .unwrap_or(Source::Direct);
        let key = Storage::object_key(id);

        if attempts > self.max_attempts {
            // Delivered again after crashing workers: stop the loop here.
            let task = TaskTracker::start(TASK_PROCESS_DOWNLOAD);
            let e = JobError::new(
                ErrorCode::RedeliveryLimit,
                format!("gave up after {} deliveries", attempts - 1),
            );
            record_error(e.code.as_str(), e.code.error_type().as_str());
            db::record_failure(conn.get(), id, e.code, &e.message, false).await?;
            task.finish(TaskOutcome::Failed);
            conn.release().await?;
            return Ok(());
        }

        loop {
            let task = TaskTracker::start(TASK_PROCESS_DOWNLOAD);
            let download = DownloadTracker::start(source.as_str());
            tracing::info!(%id, attempt = attempts, "downloading");
            let result = match tokio::time::timeout(
                self.attempt_timeout,
                self.fetcher.download_to(&job.url, &self.storage, &key),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(JobError::new(
                    ErrorCode::Timeout,
                    format!("attempt took longer than {:?}", self.attempt_timeout),
                )),
            };
            match result {
                Ok(object) => {
                    let usage = db::complete(conn.get(), id, &object).await?;
                    download.success();
                    task.finish(TaskOutcome::Success);
                    gauges::set_storage(&[usage]);
                    tracing::info!(%id, bytes = object.size_bytes, "stored");
                    break;
                }
                Err(e) => {
                    drop(download);
                    record_error(e.code.as_str(), e.code.error_type().as_str());
                    if e.code.is_transient() && attempts < self.max_attempts {
                        db::record_failure(conn.get(), id, e.code, &e.message, true).await?;
                        task.finish(TaskOutcome::Retried);
                        let delay = self.backoff(attempts);
                        tracing::info!(%id, attempt = attempts, code = %e.code, ?delay, "retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.shutdown.cancelled() => {
                                conn.release().await?;
                                return Err(Interrupted::Shutdown);
                            }
                        }
                        match db::next_attempt(conn.get(), id).await? {
                            Some(n) => attempts = n,
                            None => {
                                tracing::info!(%id, "cancelled while waiting to retry");
                                break;
                            }
                        }
                    } else {
                        db::record_failure(conn.get(), id, e.code, &e.message, false).await?;
                        task.finish(TaskOutcome::Failed);
                        tracing::info!(%id, attempt = attempts, code = %e.code, "failed");
                        break;
                    }
                }
            }
        }
        conn.release().await?;
        Ok(())
    }

    /// `retry_base * 2^(attempt-1)`: 1 s, 2 s, 4 s with the defaults.
    fn backoff(&self, attempt: i32) -> Duration {
        self.retry_base * 2u32.saturating_pow((attempt - 1).clamp(0, 16) as u32)
    }
}
