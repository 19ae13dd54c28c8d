//! The attempt loop of a claimed job: try, classify, back off, try again, record.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use clipstash_db::{Claim, transitions, usage};
use clipstash_domain::{DownloadJob, ErrorCode, JobError, JobStatus, StoredObject};
use clipstash_runtime::gauges;
use clipstash_sources::Source;
use clipstash_storage::ingest::ingest;
use metrics_core::{Outcome, Task, Tracker, record_queue_wait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::JobContext;
use super::lock::LockedConn;
use super::progress;

/// How long a cancelled attempt may take to abort its upload cleanly before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

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
        // Guarded before the claim runs: dropped at any point, the connection is closed.
        let mut conn = LockedConn::new(self.pool.acquire().await?, id);
        let mut attempts = match transitions::claim(conn.get(), id).await? {
            Claim::Claimed {
                attempts,
                first_start,
            } => {
                if first_start {
                    let waited = (Utc::now() - job.enqueued_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    record_queue_wait(Task::ProcessDownload, waited);
                }
                attempts
            }
            Claim::Busy => {
                tracing::info!(%id, "already running on another worker; dropping this delivery");
                conn.unlocked();
                return Ok(());
            }
            Claim::NotRunnable => {
                tracing::info!(%id, "cancelled or finished; skipping");
                conn.unlocked();
                return Ok(());
            }
        };
        let registration = self.cancels.register(id);
        let cancel = registration.token();
        self.events.state(id, JobStatus::Running);
        let source = &self.direct;
        let mut delays = self.backoff();

        if attempts > self.max_attempts {
            // Delivered again after crashing workers: stop the loop here.
            let task = Tracker::start(&Task::ProcessDownload);
            let e = JobError::new(
                ErrorCode::RedeliveryLimit,
                format!("gave up after {} deliveries", attempts - 1),
            );
            e.code.record();
            transitions::record_failure(conn.get(), id, e.code, &e.message, false).await?;
            self.events.state(id, JobStatus::Failed);
            task.finish(Outcome::Failed);
            conn.release().await?;
            return Ok(());
        }

        loop {
            let task = Tracker::start(&Task::ProcessDownload);
            let download = Tracker::start(&source.kind());
            tracing::info!(%id, attempt = attempts, "downloading");
            let attempt = tokio::time::timeout(
                self.attempt_timeout,
                self.attempt(source, id, &job.url, cancel),
            );
            // A cancelled attempt ends by itself within moments (its stream errors); one stuck
            // elsewhere (a hanging abort) is dropped after a grace.
            let result = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(JobError::new(
                    ErrorCode::Timeout,
                    format!("attempt took longer than {:?}", self.attempt_timeout),
                ))),
                _ = async { cancel.cancelled().await; tokio::time::sleep(CANCEL_GRACE).await } => {
                    Err(progress::cancelled())
                }
            };
            if cancel.is_cancelled() {
                self.discard(id, result.ok()).await;
                download.finish(Outcome::Cancelled);
                task.finish(Outcome::Cancelled);
                break;
            }
            match result {
                Ok(object) => {
                    match transitions::complete(conn.get(), id, &object).await? {
                        Some(usage) => {
                            download.success();
                            task.success();
                            gauges::set_storage(&[usage]);
                            self.events.state(id, JobStatus::Succeeded);
                            tracing::info!(%id, bytes = object.size_bytes, "stored");
                        }
                        None => {
                            // Only a cancel moves a running job away from its worker.
                            self.discard(id, Some(object)).await;
                            download.finish(Outcome::Cancelled);
                            task.finish(Outcome::Cancelled);
                        }
                    }
                    break;
                }
                Err(e) => {
                    drop(download);
                    e.code.record();
                    let delay = delays
                        .next()
                        .filter(|_| e.code.is_transient() && attempts < self.max_attempts);
                    if let Some(delay) = delay {
                        transitions::record_failure(conn.get(), id, e.code, &e.message, true)
                            .await?;
                        self.events.state(id, JobStatus::Retrying);
                        task.finish(Outcome::Retried);
                        tracing::info!(%id, attempt = attempts, code = %e.code, ?delay, "retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            // Cancelled while waiting: the row says so; next_attempt sees it.
                            _ = cancel.cancelled() => {}
                            _ = self.shutdown.cancelled() => {
                                conn.release().await?;
                                return Err(Interrupted::Shutdown);
                            }
                        }
                        match transitions::next_attempt(conn.get(), id).await? {
                            Some(n) => {
                                attempts = n;
                                self.events.state(id, JobStatus::Running);
                            }
                            None => {
                                tracing::info!(%id, "cancelled while waiting to retry");
                                break;
                            }
                        }
                    } else {
                        transitions::record_failure(conn.get(), id, e.code, &e.message, false)
                            .await?;
                        self.events.state(id, JobStatus::Failed);
                        task.finish(Outcome::Failed);
                        tracing::info!(%id, attempt = attempts, code = %e.code, "failed");
                        break;
                    }
                }
            }
        }
        conn.release().await?;
        Ok(())
    }

    /// One attempt: open the source, stream it through the ingest pipeline, publishing its
    /// progress; ends at once with an error when `cancel` fires.
    async fn attempt(
        &self,
        source: &impl Source,
        id: Uuid,
        url: &str,
        cancel: &CancellationToken,
    ) -> Result<StoredObject, JobError> {
        // Debug builds only: the chaos suite's poison job.
        clipstash_runtime::test_hooks::crash_if_marked(
            clipstash_runtime::test_hooks::CRASH_ON_URL,
            url,
        );
        let media = tokio::select! {
            m = source.open(url) => m?,
            _ = cancel.cancelled() => return Err(progress::cancelled()),
        };
        let (media, watch) = progress::watch(media, cancel.clone());
        let result = tokio::select! {
            r = ingest(&self.storage, &self.pool, id, media, self.max_file_bytes) => r,
            never = watch.report(&self.events, id) => match never {},
        };
        watch.finish(&self.events, id);
        result
    }

    /// After a cancel: nothing of the attempt may stay stored or counted. Gives back its
    /// quota reservation and deletes an object it finished storing before it noticed.
    async fn discard(&self, id: Uuid, object: Option<StoredObject>) {
        tracing::info!(%id, "cancelled; the attempt is stopped and its upload discarded");
        if let Some(o) = object {
            match self.storage.provider(o.provider.as_str()) {
                Some(p) => {
                    if let Err(e) = p.delete(&o.object_key).await {
                        tracing::error!(%id, key = o.object_key, error = %e, "deleting the object of a cancelled job; it is an orphan until `storage reconcile --fix`");
                    }
                }
                None => {
                    tracing::error!(%id, provider = %o.provider.as_str(), "stored on an unknown provider")
                }
            }
        }
        if let Err(e) = usage::release_reservation(&self.pool, id).await {
            tracing::warn!(%id, error = %e, "releasing a cancelled job's reservation");
        }
        self.events.state(id, JobStatus::Cancelled);
    }

    /// Delays between attempts: `retry_base`, doubling, each stretched by up to 100 %
    /// (jitter), capped at 10 minutes before jitter.
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.retry_base)
            .with_factor(2.0)
            .with_max_delay(Duration::from_secs(600))
            .with_max_times(usize::MAX)
            .with_jitter()
            .build()
    }
}
