//! The attempt loop of a claimed job: try, classify, back off, try again, record.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use clipstash_db::{Claim, transitions};
use clipstash_domain::{DownloadJob, ErrorCode, JobError, StoredObject};
use clipstash_runtime::gauges;
use clipstash_sources::Source;
use clipstash_storage::ingest::ingest;
use metrics_core::{Outcome, Task, Tracker, record_queue_wait};
use uuid::Uuid;

use super::JobContext;
use super::lock::LockedConn;

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
            task.finish(Outcome::Failed);
            conn.release().await?;
            return Ok(());
        }

        loop {
            let task = Tracker::start(&Task::ProcessDownload);
            let download = Tracker::start(&source.kind());
            tracing::info!(%id, attempt = attempts, "downloading");
            let result = match tokio::time::timeout(
                self.attempt_timeout,
                self.attempt(source, id, &job.url),
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
                    match transitions::complete(conn.get(), id, &object).await? {
                        Some(usage) => {
                            download.success();
                            task.success();
                            gauges::set_storage(&[usage]);
                            tracing::info!(%id, bytes = object.size_bytes, "stored");
                        }
                        None => {
                            tracing::warn!(%id, key = object.object_key, "job left the running state during its attempt; its object is an orphan");
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
                        task.finish(Outcome::Retried);
                        tracing::info!(%id, attempt = attempts, code = %e.code, ?delay, "retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.shutdown.cancelled() => {
                                conn.release().await?;
                                return Err(Interrupted::Shutdown);
                            }
                        }
                        match transitions::next_attempt(conn.get(), id).await? {
                            Some(n) => attempts = n,
                            None => {
                                tracing::info!(%id, "cancelled while waiting to retry");
                                break;
                            }
                        }
                    } else {
                        transitions::record_failure(conn.get(), id, e.code, &e.message, false)
                            .await?;
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

    /// One attempt: open the source, stream it through the ingest pipeline.
    async fn attempt(
        &self,
        source: &impl Source,
        id: Uuid,
        url: &str,
    ) -> Result<StoredObject, JobError> {
        // Debug builds only: the chaos suite's poison job.
        clipstash_runtime::test_hooks::crash_if_marked(
            clipstash_runtime::test_hooks::CRASH_ON_URL,
            url,
        );
        let media = source.open(url).await?;
        ingest(&self.storage, &self.pool, id, media, self.max_file_bytes).await
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
