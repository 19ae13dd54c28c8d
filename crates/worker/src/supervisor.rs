//! The apalis side of a worker: run the monitor, hand jobs back when it stops, restart it
//! under a new name after a Redis error.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use clipstash_queue::Queue;
use tokio_util::sync::CancellationToken;

use crate::job::{self, JobContext};
use crate::poll::Every;
use crate::settings::Settings;

/// Takes jobs until `shutdown` fires, restarting the apalis worker whenever it stops on its
/// own. On shutdown, running jobs get `shutdown_grace` to finish; the rest are handed back.
pub async fn supervise(
    queue: &Queue,
    name_prefix: &str,
    ctx: &Arc<JobContext>,
    settings: &Settings,
    shutdown: CancellationToken,
) {
    let concurrency = settings.concurrency as usize;
    // apalis' fetch fails on every poll once ~8,000 tasks are due at once (a burst of submits
    // while workers are down or busy): keep its scheduled set drained, before the first
    // fetch and then every poll interval.
    if let Err(e) = queue.promote_due(PROMOTE_CHUNK).await {
        tracing::warn!(error = %e, "promoting due tasks before taking jobs");
    }
    let promoter = tokio::spawn(keep_promoting(queue.clone(), settings.poll_interval));
    let mut restarts = 0u32;
    loop {
        // apalis leaves a worker's name registered after it stops, and re-registering a
        // name still within its heartbeat window fails: every run gets a new name.
        let name = format!("{}-r{restarts}", name_prefix);
        let storage = queue.worker_storage(concurrency);
        let ctx = ctx.clone();
        let poll = settings.poll_interval;
        let worker_name = name.clone();
        let monitor = Monitor::new()
            .register(move |_| {
                WorkerBuilder::new(worker_name.clone())
                    .backend(storage.clone().poll_with_strategy(Every::new(poll)))
                    .data(ctx.clone())
                    .concurrency(concurrency)
                    .build(job::handle)
            })
            .shutdown_timeout(settings.shutdown_grace);
        tracing::info!(worker = %name, queue = queue.name(), concurrency, "taking jobs");
        let signal = shutdown.clone();
        let result = monitor
            .run_with_signal(async move {
                signal.cancelled().await;
                Ok(())
            })
            .await;
        match queue.hand_back(&name).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(worker = %name, jobs = n, "handed unfinished jobs back to the queue")
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "handing jobs back; they return after the orphan timeout")
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        // apalis ends a worker on any Redis error (a blip, a timeout): start a new one.
        restarts += 1;
        tracing::warn!(worker = %name, ?result, restarts, "worker stopped unexpectedly; restarting");
        let delay = Duration::from_millis(250 * u64::from(restarts.min(20)));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    promoter.abort();
}

/// Due tasks moved per script call by the promoter.
const PROMOTE_CHUNK: usize = 1000;

/// Moves due tasks to the ready list every `every` (see [`Queue::promote_due`]). A Redis
/// error is logged once until a call succeeds again: the apalis worker reports the outage.
async fn keep_promoting(queue: Queue, every: Duration) {
    let mut failing = false;
    loop {
        // The supervisor promoted once before the first fetch.
        tokio::time::sleep(every).await;
        match queue.promote_due(PROMOTE_CHUNK).await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "promoting due tasks; retrying every poll interval");
            }
            Err(_) => {}
        }
    }
}

/// `prefix-host-pid-random`: unique per process so a dead worker's jobs are recovered by
/// others and replicas never share a name.
pub(crate) fn unique_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{host}-{}-{}", std::process::id(), &random[..8])
}
