//! Running one download job: claim it in Postgres, run the attempt loop ([`attempts`]),
//! record the outcome. Every job outcome (success, permanent failure, retries exhausted,
//! cancelled) is reported to apalis as done; only a failure of our own infrastructure
//! (Postgres unreachable) is an error, which apalis schedules again.

pub mod attempts;
pub mod cancel;
pub mod progress;
pub mod session;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use clipstash_db::transitions;
use clipstash_domain::{DownloadJob, ErrorCode, JobStatus};
use clipstash_queue::events::Publisher;
use clipstash_sources::{DirectHttp, SecretKey, Ytdlp};
use clipstash_storage::Storage;
use futures_util::FutureExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use attempts::Interrupted;
pub use cancel::Cancels;
pub use session::LockSession;

/// Everything a job needs; shared by all jobs of a process.
pub struct JobContext {
    pub pool: PgPool,
    pub storage: Storage,
    pub direct: DirectHttp,
    /// yt-dlp for YouTube and other sites; `None` when off (such jobs fail
    /// `ytdlp_unavailable`).
    pub ytdlp: Option<Ytdlp>,
    /// Opens a job's sealed cookies for yt-dlp (`CLIPSTASH_SECRET_KEY`); without it, a job
    /// with cookies fails `cookies_unreadable`.
    pub secret_key: Option<SecretKey>,
    /// Largest file accepted; the ingest pipeline's hard cap.
    pub max_file_bytes: u64,
    /// First attempt plus retries.
    pub max_attempts: i32,
    /// Delay before the first retry (doubled each time, with jitter).
    pub retry_base: Duration,
    pub attempt_timeout: Duration,
    /// Fires on SIGTERM: a job waiting to retry hands itself back instead of sleeping.
    pub shutdown: CancellationToken,
    /// State changes and progress, for the job view and the API's event streams.
    pub events: Publisher,
    /// The running jobs' cancel tokens.
    pub cancels: Arc<Cancels>,
    /// Holds the running jobs' locks; claims and completes them in batches.
    pub session: LockSession,
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
            let code = ErrorCode::InternalError;
            code.record();
            // The attempt's tracker unwound as `interrupted`; this attempt is final.
            metrics_core::record_task_outcome(
                metrics_core::Task::ProcessDownload,
                metrics_core::Outcome::Failed,
            );
            // The job's lock was released as the panic unwound; record the failure anew.
            transitions::record_failure(
                &ctx.pool,
                id,
                code,
                "the worker failed unexpectedly",
                false,
            )
            .await?;
            ctx.events.state(id, JobStatus::Failed);
            Ok(())
        }
    }
}
