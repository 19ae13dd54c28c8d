//! Global gauges: storage usage from Postgres and queue figures from Redis. Every process
//! samples the same values, so queries aggregate them with `max by (...)`, never `sum`.

use std::time::Duration;

use metrics::gauge;
use metrics_core::catalogue::{
    JOBS_STALE_SECONDS, QUEUE_LENGTH, STORAGE_FILES, STORAGE_QUOTA_BYTES, STORAGE_USAGE_BYTES,
    WORKERS_LIVE,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use clipstash_db::Usage;
use clipstash_queue::{Queue, QueueStats};
use clipstash_storage::Storage;

/// Sets the storage gauges to absolute values (after an add or remove, or a refresh).
pub fn set_storage(usage: &[Usage]) {
    for u in usage {
        gauge!(STORAGE_USAGE_BYTES, "provider" => u.provider.clone()).set(u.bytes_used as f64);
        gauge!(STORAGE_FILES, "provider" => u.provider.clone()).set(u.file_count as f64);
    }
}

pub fn set_queue(queue: &str, s: &QueueStats) {
    for (state, v) in [
        ("pending", s.pending),
        ("scheduled", s.scheduled),
        ("running", s.running),
        ("dead", s.dead),
    ] {
        gauge!(QUEUE_LENGTH, "queue" => queue.to_string(), "state" => state).set(v as f64);
    }
    gauge!(WORKERS_LIVE, "queue" => queue.to_string()).set(s.workers_live as f64);
}

/// Sets `jobs_stale_seconds{status}`: for each live status, the seconds since the least
/// recently updated job in it last changed (0 when none). One index scan
/// (`jobs_live_updated_at_idx`).
pub async fn sample_stale_jobs(pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT status, EXTRACT(EPOCH FROM now() - min(updated_at))::float8 FROM jobs \
         WHERE status IN ('queued', 'running', 'retrying') GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    for status in ["queued", "running", "retrying"] {
        let age = rows
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0.0, |(_, a)| a.max(0.0));
        gauge!(JOBS_STALE_SECONDS, "status" => status).set(age);
    }
    Ok(())
}

/// Refreshes storage and stale-job gauges every `storage_every` and queue gauges every `queue_every`
/// until `shutdown`. Failures are logged and retried on the next tick.
pub fn spawn_sampler(
    pool: PgPool,
    queue: Queue,
    storage: &Storage,
    storage_every: Duration,
    queue_every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Every configured provider shows its quota, and 0 before its first file rather than no
    // series at all.
    for p in storage.providers() {
        let provider = p.name().to_string();
        gauge!(STORAGE_QUOTA_BYTES, "provider" => provider.clone()).set(p.quota_bytes() as f64);
        set_storage(&[Usage {
            provider,
            bytes_used: 0,
            file_count: 0,
        }]);
    }
    tokio::spawn(async move {
        let mut storage_tick = tokio::time::interval(storage_every);
        let mut queue_tick = tokio::time::interval(queue_every);
        storage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        queue_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = storage_tick.tick() => {
                    match clipstash_db::usage::storage_usage(&pool).await {
                        Ok(usage) => set_storage(&usage),
                        Err(e) => tracing::warn!(error = %e, "refreshing storage gauges"),
                    }
                    if let Err(e) = sample_stale_jobs(&pool).await {
                        tracing::warn!(error = %e, "sampling stale jobs");
                    }
                }
                _ = queue_tick.tick() => match queue.stats().await {
                    Ok(stats) => set_queue(queue.name(), &stats),
                    Err(e) => tracing::warn!(error = %e, "sampling queue gauges"),
                },
            }
        }
    })
}
