//! The attempt loop of a claimed job: try, classify, back off, try again, record.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use clipstash_db::{Claim, JobRow, jobs, transitions, usage};
use clipstash_domain::{
    DownloadJob, ErrorCode, JobError, JobStatus, Media, RequestedSource, StoredObject, VideoSource,
};
use clipstash_runtime::gauges;
use clipstash_sources::cookies::CookieFile;
use clipstash_sources::{DownloadOptions, Fetched};
use clipstash_storage::ingest::ingest;
use futures_util::StreamExt;
use metrics_core::{Outcome, Task, Tracker, record_queue_wait};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::JobContext;
use super::progress;
use super::session::SessionError;

/// How long a cancelled attempt may take to abort its upload cleanly before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// A source that says it is rate-limiting us (HTTP 429, YouTube's "try again later") is
/// retried this many times later than other transient failures: hammering it prolongs the
/// limit.
pub const RATE_LIMITED_BACKOFF_FACTOR: u32 = 30;

/// Why an attempt loop stopped early without an outcome.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("shutting down while waiting to retry")]
    Shutdown,
}

impl JobContext {
    /// Runs a delivered job to an outcome recorded in Postgres.
    pub async fn process(&self, job: DownloadJob) -> Result<(), Interrupted> {
        let id = job.job_id;
        // The claim returns the row (what the submit asked for: source, format, height) and,
        // when the job is ours, its lock: dropped at any point, the lock is released.
        let (claim, lock) = self.session.claim(id).await?;
        let (mut attempts, spec) = match claim {
            Claim::Claimed {
                attempts,
                first_start,
                job: spec,
            } => {
                if first_start {
                    let waited = (Utc::now() - job.enqueued_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    record_queue_wait(Task::ProcessDownload, waited);
                }
                (attempts, spec)
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
        let mut lock = lock.expect("a claimed job comes with its lock");
        let registration = self.cancels.register(id);
        let cancel = registration.token();
        self.events.state(id, JobStatus::Running);
        let mut delays = self.backoff();

        if attempts > self.max_attempts {
            // Delivered again after crashing workers: stop the loop here.
            let task = Tracker::start(&Task::ProcessDownload);
            let e = JobError::new(
                ErrorCode::RedeliveryLimit,
                format!("gave up after {} deliveries", attempts - 1),
            );
            e.code.record();
            transitions::record_failure(&self.pool, id, e.code, &e.message, false).await?;
            self.events.state(id, JobStatus::Failed);
            task.finish(Outcome::Failed);
            return Ok(());
        }

        loop {
            let task = Tracker::start(&Task::ProcessDownload);
            let mut download = Tracker::start(&spec.source);
            tracing::info!(%id, attempt = attempts, source = %spec.source, "downloading");
            let attempt = tokio::time::timeout(
                self.attempt_timeout,
                self.attempt(&spec, &job.url, &mut download, cancel),
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
                    // The completion releases the lock in its own statement.
                    match lock.complete(object.clone()).await? {
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
                        .filter(|_| e.code.is_transient() && attempts < self.max_attempts)
                        .map(|d| match e.code {
                            ErrorCode::SourceRateLimited => d * RATE_LIMITED_BACKOFF_FACTOR,
                            _ => d,
                        });
                    if let Some(delay) = delay {
                        transitions::record_failure(&self.pool, id, e.code, &e.message, true)
                            .await?;
                        self.events.state(id, JobStatus::Retrying);
                        task.finish(Outcome::Retried);
                        tracing::info!(%id, attempt = attempts, code = %e.code, ?delay, "retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            // Cancelled while waiting: the row says so; next_attempt sees it.
                            _ = cancel.cancelled() => {}
                            _ = self.shutdown.cancelled() => return Err(Interrupted::Shutdown),
                        }
                        match transitions::next_attempt(&mut *self.pool.acquire().await?, id)
                            .await?
                        {
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
                        transitions::record_failure(&self.pool, id, e.code, &e.message, false)
                            .await?;
                        self.events.state(id, JobStatus::Failed);
                        task.finish(Outcome::Failed);
                        tracing::info!(%id, attempt = attempts, code = %e.code, "failed");
                        break;
                    }
                }
            }
        }
        // A lock still held (failed, or cancelled) is released as it drops.
        drop(lock);
        Ok(())
    }

    /// One attempt: open the source, stream it through the ingest pipeline, publishing its
    /// progress; ends at once with an error when `cancel` fires. `download` is relabelled
    /// with the source that actually ran.
    async fn attempt(
        &self,
        spec: &JobRow,
        url: &str,
        download: &mut Tracker<VideoSource>,
        cancel: &CancellationToken,
    ) -> Result<StoredObject, JobError> {
        let id = spec.id;
        // Debug builds only: the chaos suite's poison job.
        clipstash_runtime::test_hooks::crash_if_marked(
            clipstash_runtime::test_hooks::CRASH_ON_URL,
            url,
        );
        let media = tokio::select! {
            m = self.open(spec, url, download) => m?,
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

    /// Opens the job's media. A direct link of an `auto` job that answers with a web page
    /// goes to yt-dlp in the same attempt.
    async fn open(
        &self,
        spec: &JobRow,
        url: &str,
        download: &mut Tracker<VideoSource>,
    ) -> Result<Media, JobError> {
        let id = spec.id;
        let media = if spec.source.uses_ytdlp() || spec.requested_source == RequestedSource::Ytdlp {
            self.open_ytdlp(spec, url, download).await?
        } else {
            match self.direct.fetch(url).await? {
                Fetched::Media(media) => media,
                Fetched::Page { .. } if spec.requested_source == RequestedSource::Auto => {
                    tracing::info!(%id, "the link is a web page: handing it to yt-dlp");
                    download.relabel(&VideoSource::Ytdlp);
                    let opened = self.open_ytdlp(spec, url, download).await;
                    if opened.is_err() {
                        // yt-dlp ran (and failed): the job shows it.
                        jobs::record_source(&self.pool, id, VideoSource::Ytdlp, None, None, None)
                            .await
                            .map_err(db_error)?;
                    }
                    opened?
                }
                Fetched::Page { content_type } => {
                    return Err(JobError::new(
                        ErrorCode::UnsupportedContentType,
                        format!(
                            "source answered with {content_type}, not media (source: direct; use auto or ytdlp for web pages)"
                        ),
                    ));
                }
            }
        };
        Ok(media)
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

    /// Opens `url` with yt-dlp and records what it said about the video on the job.
    async fn open_ytdlp(
        &self,
        spec: &JobRow,
        url: &str,
        download: &mut Tracker<VideoSource>,
    ) -> Result<Media, JobError> {
        let ytdlp = self.ytdlp.as_ref().ok_or_else(|| {
            JobError::new(
                ErrorCode::YtdlpUnavailable,
                "this URL needs yt-dlp, and this worker runs without it (CLIPSTASH_YTDLP=off)",
            )
        })?;
        let opts = DownloadOptions {
            format: spec.format.clone(),
            max_height: spec.max_height.and_then(|h| u32::try_from(h).ok()),
            max_bytes: Some(self.max_file_bytes),
        };
        // Every run goes through the egress proxy (`Ytdlp` adds `--proxy` to each); the
        // job's cookies, if any, go in a 0600 file in the run's own temp dir.
        let mut run = ytdlp.download(url, &opts)?;
        let cookie_file = match self.job_cookies(spec.id).await? {
            Some(cookies) => {
                let file = CookieFile::write(run.dir(), &cookies).await.map_err(|e| {
                    JobError::new(ErrorCode::InternalError, format!("writing cookies: {e}"))
                })?;
                run = run.cookies(file.path());
                Some(file)
            }
            None => None,
        };
        let mut opened = run.open().await?;
        if let Some(file) = cookie_file {
            // The file lives as long as yt-dlp (which writes its cookie jar back at the
            // end): it goes with the media stream, whatever ends it.
            let body = std::mem::replace(
                &mut opened.media.body,
                futures_util::stream::empty().boxed(),
            );
            opened.media.body = body
                .map(move |chunk| {
                    let _ = &file;
                    chunk
                })
                .boxed();
        }
        download.relabel(&opened.source);
        let c = &opened.chosen;
        jobs::record_source(
            &self.pool,
            spec.id,
            opened.source,
            c.extractor.as_deref(),
            c.id.as_deref(),
            c.title.as_deref(),
        )
        .await
        .map_err(db_error)?;
        Ok(opened.media)
    }

    /// The job's cookies, opened with this worker's key; `None` when it has none.
    async fn job_cookies(&self, id: uuid::Uuid) -> Result<Option<SecretString>, JobError> {
        let Some(sealed) = jobs::sealed_cookies(&self.pool, id).await.map_err(|e| {
            JobError::new(
                ErrorCode::StorageError,
                format!("reading the job's cookies: {e}"),
            )
        })?
        else {
            return Ok(None);
        };
        let key = self.secret_key.as_ref().ok_or_else(|| {
            JobError::new(
                ErrorCode::CookiesUnreadable,
                "the job has cookies and this worker has no CLIPSTASH_SECRET_KEY to open them",
            )
        })?;
        key.open(id, &sealed)
            .map(Some)
            .map_err(|e| JobError::new(ErrorCode::CookiesUnreadable, e.to_string()))
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

fn db_error(e: sqlx::Error) -> JobError {
    JobError::new(
        ErrorCode::StorageError,
        format!("recording the source: {e}"),
    )
}
