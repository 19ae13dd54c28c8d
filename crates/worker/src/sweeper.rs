//! The sweeper: Postgres says what must run, Redis only carries it. Every
//! `CLIPSTASH_SWEEP_INTERVAL` each worker
//!
//! 1. prunes the tasks apalis acked as done or gave up on (`{q}:dead`) from Redis (payload,
//!    metadata, set entry), so Redis holds only live jobs;
//! 2. re-enqueues jobs Postgres holds as `queued`/`retrying` (not updated for
//!    `CLIPSTASH_SWEEP_GRACE`) or `running` (not updated for the orphan timeout) whose lock no
//!    live session holds and which Redis no longer holds: lost in a Redis flush or restart,
//!    or never pushed because the API died between its INSERT and its push;
//! 3. with `CLIPSTASH_JOB_RETENTION`, deletes finished job rows older than that, except
//!    those whose object is still stored.
//!
//! Every worker sweeps, without a leader: a job's task id in Redis is its job id and the
//! push (`clipstash_queue`'s `lua/push.lua`, as apalis' push) sets the payload with
//! `HSETNX`, so two sweepers pushing the same job leave one task.
//! A copy that still slips through (the job finished between the read and the push) is
//! dropped by the claim's lock and the transitions' guards.

use std::collections::HashSet;
use std::time::Duration;

use clipstash_db::{jobs, transitions};
use clipstash_domain::{DownloadJob, JobStatus};
use clipstash_queue::Queue;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `reason` of a job re-enqueued while Postgres holds it `queued` or `retrying`.
pub const REASON_NOT_IN_QUEUE: &str = "not_in_queue";
/// `reason` of a `running` job whose worker is gone (no lock held).
pub const REASON_ORPHANED: &str = "orphaned";

/// Rows read per page.
const BATCH: i64 = 500;
/// Done tasks pruned per Redis script call.
const PRUNE_BATCH: usize = 500;

/// What the sweeper needs; built by the worker from its settings.
#[derive(Clone)]
pub struct Sweeper {
    pub pool: PgPool,
    pub queue: Queue,
    pub interval: Duration,
    pub grace: Duration,
    pub orphan_after: Duration,
    pub retention: Option<Duration>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub pruned: u64,
    /// Tasks apalis had given up on (`{q}:dead`), forgotten like done ones.
    pub pruned_dead: u64,
    pub requeued: u64,
    pub orphans: u64,
    pub deleted_rows: u64,
}

impl Sweeper {
    /// Sweeps every `interval` until `stop` fires; a failed sweep is logged and retried on
    /// the next tick.
    pub fn spawn(self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            // The first sweep after one interval: at start-up the API's pushes of the last
            // moments are still within their grace anyway.
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + self.interval,
                self.interval,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.sweep().await {
                    Ok(r) if r.requeued + r.orphans + r.deleted_rows > 0 => {
                        tracing::info!(?r, "sweep")
                    }
                    Ok(r) => tracing::debug!(?r, "sweep"),
                    Err(e) => tracing::warn!(error = ?e, "sweep failed; trying again next time"),
                }
            }
        })
    }

    /// Pushes the jobs of `page` that no live worker holds and Redis no longer holds.
    async fn requeue_lost(
        &self,
        page: Vec<jobs::StaleJob>,
        report: &mut SweepReport,
    ) -> anyhow::Result<()> {
        if page.is_empty() {
            return Ok(());
        }
        // A job a live worker holds (running, or waiting out a retry backoff) is its. A queued
        // job holds no lock (the claim takes it and leaves `queued` at once): not testing it
        // saves a round trip and never makes a concurrent claim see it as busy.
        let mut conn = self.pool.acquire().await?;
        let mut free = Vec::with_capacity(page.len());
        for job in page {
            if job.status == JobStatus::Queued {
                free.push(job);
                continue;
            }
            match transitions::is_locked(&mut conn, job.id).await {
                Ok(true) => {}
                Ok(false) => free.push(job),
                Err(e) => {
                    // The lock may still be held on this session: never pool it again.
                    drop(conn.detach());
                    return Err(e.into());
                }
            }
        }
        drop(conn);
        let ids: Vec<_> = free.iter().map(|j| j.id).collect();
        let missing: HashSet<_> = self.queue.missing(&ids).await?.into_iter().collect();
        for job in free.into_iter().filter(|j| missing.contains(&j.id)) {
            self.queue
                .push(&DownloadJob {
                    job_id: job.id,
                    url: job.url,
                    enqueued_at: job.created_at,
                })
                .await?;
            let reason = if job.status == JobStatus::Running {
                report.orphans += 1;
                REASON_ORPHANED
            } else {
                report.requeued += 1;
                REASON_NOT_IN_QUEUE
            };
            tracing::info!(id = %job.id, status = %job.status, reason, "re-enqueued a job Redis no longer held");
            metrics_core::record_requeue(reason);
        }
        Ok(())
    }

    /// One sweep: prune, re-enqueue, apply retention.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport {
            pruned: self.queue.prune_done(PRUNE_BATCH).await?,
            pruned_dead: self.queue.prune_dead(PRUNE_BATCH).await?,
            ..Default::default()
        };
        // Page through every candidate: after a flush the backlog may be far larger than
        // one page, and re-pushed rows stay candidates until a worker claims them.
        let mut after = None;
        loop {
            let page =
                jobs::stale_live_jobs(&self.pool, self.grace, self.orphan_after, after, BATCH)
                    .await?;
            after = page.last().map(|j| j.id);
            let full = page.len() as i64 == BATCH;
            self.requeue_lost(page, &mut report).await?;
            if !full {
                break;
            }
        }
        if let Some(retention) = self.retention {
            report.deleted_rows =
                jobs::delete_finished_before(&self.pool, retention, BATCH).await?;
        }
        Ok(report)
    }
}
