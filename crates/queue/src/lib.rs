//! The download queue in Redis, through apalis-redis.
//!
//! Facts this crate leans on (apalis-redis 1.0.0, pinned exactly in the workspace; each
//! covered by a test in `crates/worker/tests/`): keys are `{queue}:active` (LIST),
//! `{queue}:scheduled` (ZSET: apalis' own push lands every task here with score = now; ours,
//! [`Queue::push_many`], puts tasks straight on `{queue}:active`),
//! `{queue}:inflight:{worker}` (SET), `{queue}:workers` (ZSET, score = last heartbeat),
//! `{queue}:dead` (SET), `{queue}:data` (HASH task id → payload), `{queue}:meta:{id}`
//! (HASH), `{queue}:done` (SET), `{queue}:signal` (LIST). The scripts in `src/lua/` read and write them directly.
//!
//! A job's task id in Redis is its job id, so "does Redis still hold job X" is
//! `HEXISTS {queue}:data X`, and a second push of a job Redis still holds is a no-op
//! (the push script, `lua/push.lua`, sets the payload with `HSETNX`, as apalis' does): the
//! sweeper may push freely.

pub mod events;

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{Config, RedisStorage};
use clipstash_domain::DownloadJob;
use clipstash_domain::config::secret_url;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

/// Redis and queue settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis connection URL, e.g. redis://127.0.0.1:6379
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true, value_parser = |s: &str| secret_url(s, &["redis", "rediss"]))]
    pub redis_url: SecretString,

    /// Name of the job queue; the prefix of every Redis key it uses.
    #[arg(
        long,
        env = "CLIPSTASH_QUEUE",
        value_name = "CLIPSTASH_QUEUE",
        default_value = "clipstash:downloads"
    )]
    pub queue: String,

    /// How often workers heartbeat into Redis.
    #[arg(long, env = "CLIPSTASH_HEARTBEAT_INTERVAL", value_name = "CLIPSTASH_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Missed heartbeats after which a worker counts as dead and its jobs are re-enqueued by
    /// live workers (orphan timeout = interval x this).
    #[arg(long, env = "CLIPSTASH_MISSED_HEARTBEATS", value_name = "CLIPSTASH_MISSED_HEARTBEATS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub missed_heartbeats: u32,
}

impl RedisArgs {
    /// How long after its last heartbeat a worker's jobs are recovered by others.
    pub fn orphan_timeout(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }
}

/// Connection and queue for producing jobs and sampling the queue.
#[derive(Clone)]
pub struct Queue {
    config: Config,
    conn: ConnectionManager,
    name: String,
    orphan_timeout: Duration,
}

/// Counts sampled from Redis for `queue_length` and `workers_live`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready to run now.
    pub pending: u64,
    /// Waiting for a future time (apalis retries).
    pub scheduled: u64,
    /// Taken by a worker (running or prefetched).
    pub running: u64,
    pub dead: u64,
    pub workers_live: u64,
}

/// Opens a Redis connection manager with timeouts fit for a loaded server: the default
/// response timeout (500 ms) would turn a Redis hiccup into a dead worker.
pub async fn connect(url: &SecretString) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client.get_connection_manager_with_config(config).await
}

impl Queue {
    pub async fn connect(args: &RedisArgs) -> anyhow::Result<Self> {
        let conn = connect(&args.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: cannot connect: {e}"))?;
        Ok(Self::with_connection(conn, args))
    }

    pub fn with_connection(conn: ConnectionManager, args: &RedisArgs) -> Self {
        // No apalis leases: a lease is one more script per job whose `LREM` scans the whole
        // ready list (a cost that grows with the backlog), plus a renewal per heartbeat, and
        // it guards what the job's Postgres advisory lock already guards (one run at a time).
        // Fetching still moves a task into the worker's in-flight set, which is what orphan
        // recovery and `hand_back` work from.
        let config = Config::default()
            .queue(&args.queue)
            .heartbeat_interval(args.heartbeat_interval)
            .missed_heartbeats(args.missed_heartbeats as usize)
            .lock_tasks(false);
        Self {
            config,
            conn,
            name: args.queue.clone(),
            orphan_timeout: args.orphan_timeout(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The apalis storage for a worker that takes up to `batch_size` jobs per fetch.
    pub fn worker_storage(&self, batch_size: usize) -> RedisStorage<DownloadJob> {
        RedisStorage::new(self.conn.clone())
            .with_config(self.config.clone().batch_size(batch_size.max(1)))
    }

    /// Enqueues one job under its job id as task id: one `EVALSHA` round trip. A no-op while
    /// Redis still holds the job.
    pub async fn push(&self, job: &DownloadJob) -> anyhow::Result<()> {
        self.push_many(std::slice::from_ref(job)).await
    }

    /// Enqueues many jobs, each under its job id, ready at once, with one script
    /// (`lua/push.lua`): one round trip however many. Each is a no-op while Redis still holds
    /// that job. On an error some or all may still have landed (a script is not rolled back,
    /// and a timeout may follow a run): the caller marks them failed, and a worker skips a
    /// failed job it is handed.
    pub async fn push_many(&self, jobs: &[DownloadJob]) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut call = PUSH_SCRIPT.key(self.key("data"));
        call.key(self.key("active"))
            .key(self.key("signal"))
            .key(self.key("meta"))
            .arg(MAX_ATTEMPTS);
        for job in jobs {
            // The payload apalis' JSON codec writes and its fetch decodes.
            let payload = serde_json::to_string(job).map_err(|e| anyhow::anyhow!("task: {e}"))?;
            call.arg(job.job_id.to_string()).arg(payload);
        }
        let mut conn = self.conn.clone();
        call.invoke_async::<u64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("enqueue: {e}"))
    }

    /// Enqueues another copy of a job under a fresh task id, as a redelivery would: for tests
    /// of duplicate deliveries, through apalis' own push (into the scheduled set). Production
    /// code uses [`push`](Queue::push).
    pub async fn push_copy(&self, job: &DownloadJob) -> anyhow::Result<()> {
        RedisStorage::new(self.conn.clone())
            .with_config(self.config.clone())
            .push(job.clone())
            .await
            .map_err(|e| anyhow::anyhow!("enqueue: {e}"))
    }

    /// Of `ids`, the jobs Redis no longer holds as live tasks (no payload, or acked as done
    /// or dead). One atomic script; finished entries of returned ids are removed so a
    /// following [`push`](Queue::push) lands.
    pub async fn missing(&self, ids: &[uuid::Uuid]) -> redis::RedisResult<Vec<uuid::Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = MISSING_SCRIPT.prepare_invoke();
        call.key(self.key("data"))
            .key(self.key("done"))
            .key(self.key("dead"))
            .arg(self.key("meta:"));
        for id in ids {
            call.arg(id.to_string());
        }
        let missing: Vec<String> = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(missing
            .iter()
            .filter_map(|s| uuid::Uuid::parse_str(s).ok())
            .collect())
    }

    /// Forgets every task apalis has acked as done (payload, metadata, done entry), in
    /// batches of `batch` per script call; returns how many went. Postgres keeps the history.
    pub async fn prune_done(&self, batch: usize) -> redis::RedisResult<u64> {
        self.prune_set("done", batch).await
    }

    /// Forgets every task apalis has given up on (`{q}:dead`: a handler error 25 times in a
    /// row, e.g. through a long Postgres outage), like [`prune_done`](Queue::prune_done).
    /// Safe whatever the job's state: a job Postgres still holds as queued or retrying is no
    /// longer in Redis afterwards, so the sweeper pushes it again.
    pub async fn prune_dead(&self, batch: usize) -> redis::RedisResult<u64> {
        self.prune_set("dead", batch).await
    }

    async fn prune_set(&self, set: &str, batch: usize) -> redis::RedisResult<u64> {
        let batch = batch.max(1);
        let mut call = PRUNE_DONE_SCRIPT.key(self.key(set));
        call.key(self.key("data")).arg(self.key("meta:")).arg(batch);
        self.until_short(&call, batch).await
    }

    /// Runs a script that handles at most `chunk` items per call until a call handles fewer;
    /// returns how many were handled in all.
    async fn until_short(
        &self,
        call: &redis::ScriptInvocation<'_>,
        chunk: usize,
    ) -> redis::RedisResult<u64> {
        let mut total = 0u64;
        loop {
            let n: u64 = call.invoke_async(&mut self.conn.clone()).await?;
            total += n;
            if n < chunk as u64 {
                return Ok(total);
            }
        }
    }

    /// Moves every task that is due from apalis' scheduled set to its ready list, in chunks
    /// of `chunk` (at most 1,000) per script call; returns how many moved. apalis' own fetch
    /// moves them all in one Lua call that fails beyond ~8,000 due tasks, and then fails on
    /// every poll: workers run this before they start fetching and between fetches, so the
    /// scheduled set never holds that many due tasks when apalis looks.
    pub async fn promote_due(&self, chunk: usize) -> redis::RedisResult<u64> {
        let chunk = chunk.clamp(1, 1000);
        let mut call = PROMOTE_SCRIPT.key(self.key("scheduled"));
        call.key(self.key("active"))
            .key(self.key("signal"))
            .arg(unix_now())
            .arg(chunk);
        self.until_short(&call, chunk).await
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.name)
    }

    /// Samples the queue in one atomic script.
    pub async fn stats(&self) -> redis::RedisResult<QueueStats> {
        let now = unix_now();
        let live_since = now.saturating_sub(self.orphan_timeout.as_secs());
        let (pending, scheduled, running, dead, workers_live): (u64, u64, u64, u64, u64) =
            STATS_SCRIPT
                .key(self.key("active"))
                .key(self.key("scheduled"))
                .key(self.key("workers"))
                .key(self.key("dead"))
                .arg(now)
                .arg(live_since)
                .arg(self.key("inflight:"))
                .invoke_async(&mut self.conn.clone())
                .await?;
        Ok(QueueStats {
            pending,
            scheduled,
            running,
            dead,
            workers_live,
        })
    }

    /// Hands a worker's taken jobs back to the ready list and removes its registration (apalis
    /// 1.0 leaves both behind on exit, delaying recovery by the orphan timeout). Returns how
    /// many jobs went back.
    pub async fn hand_back(&self, worker_name: &str) -> redis::RedisResult<u64> {
        HAND_BACK_SCRIPT
            .key(self.key(&format!("inflight:{worker_name}")))
            .key(self.key("active"))
            .key(self.key("workers"))
            .key(self.key(&format!("workers:metadata:{worker_name}")))
            .arg(worker_name)
            .invoke_async(&mut self.conn.clone())
            .await
    }
}

/// Seconds since the epoch: apalis-redis' unit for scores and heartbeats.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

static STATS_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/stats.lua")));

static MISSING_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/missing.lua")));

static PRUNE_DONE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/prune_done.lua")));

static PUSH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/push.lua")));

/// The attempts apalis' push records for a task that names none. Only a record: the worker
/// retries within a delivery, and apalis' result handling gives up after 25 attempts
/// whatever the task says.
const MAX_ATTEMPTS: u32 = 25;

static PROMOTE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/promote.lua")));

static HAND_BACK_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/hand_back.lua")));
