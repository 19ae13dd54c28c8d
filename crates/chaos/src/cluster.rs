//! The system under test: its own Postgres and Redis, a media server, the real
//! `clipstash-api` and `clipstash-worker` binaries, and an orchestrator's habit of starting
//! a process again when it exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clipstash_testkit::procs::{Proc, wait_healthy};
use clipstash_testkit::prom;
use clipstash_testkit::{MediaServer, OwnPostgres, OwnRedis, free_port};
use sqlx::PgPool;

/// Marker in a URL that makes the API abort after its INSERT (debug builds' test hook).
pub const CRASH_AFTER_INSERT_MARKER: &str = "chaos-crash-after-insert";
/// Marker in a URL that makes any worker abort when it attempts the job.
pub const POISON_MARKER: &str = "chaos-poison";

/// Timings of the processes under test: short, so a scenario takes seconds.
#[derive(Debug, Clone)]
pub struct Timings {
    pub heartbeat: Duration,
    pub missed_heartbeats: u32,
    pub shutdown_grace: Duration,
    pub sweep_interval: Duration,
    pub sweep_grace: Duration,
    pub attempt_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_retries: u32,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 3,
            shutdown_grace: Duration::from_secs(2),
            sweep_interval: Duration::from_millis(500),
            sweep_grace: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(8),
            idle_timeout: Duration::from_secs(3),
            max_retries: 3,
        }
    }
}

/// One worker process and what was last scraped from it.
pub struct WorkerProc {
    pub proc: Proc,
    pub port: u16,
    /// Which start this is (0, 1, ...): counters belong to one process lifetime.
    pub generation: u32,
}

/// Counters of one worker process lifetime, as last scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scraped {
    pub success: f64,
    pub failed: f64,
    pub interrupted: f64,
    pub in_progress: f64,
    pub usage_bytes: f64,
    pub files: f64,
    /// `jobs_stale_seconds`, summed over the live states.
    pub stale: f64,
    /// How many `jobs_stale_seconds` series the worker exports (one per live state).
    pub stale_series: usize,
}

pub struct Cluster {
    pub pg: OwnPostgres,
    pub redis: OwnRedis,
    pub media: MediaServer,
    pub db_url: String,
    pub storage_dir: PathBuf,
    pub api: Option<Proc>,
    pub api_port: u16,
    pub api_env: Vec<(&'static str, String)>,
    pub worker_env: Vec<(&'static str, String)>,
    pub workers: Vec<WorkerProc>,
    pub concurrency: u32,
    pub timings: Timings,
    pub client: reqwest::Client,
    /// The suite's own pool on the cluster's database (sqlx reconnects after a restart).
    pub pool: PgPool,
    /// Last scrape of every worker process ever started, by generation.
    pub scraped: HashMap<u32, Scraped>,
    /// Processes that exited or were killed without a final scrape (their last counters
    /// may miss a few jobs).
    pub unscraped_exits: u32,
    /// Processes started again after they exited on their own.
    pub restarts: u32,
    next_generation: u32,
    /// Worker ports are held until the worker is gone: a new worker gets a new port.
    pub logs: Vec<PathBuf>,
}

impl Cluster {
    /// Starts Postgres, Redis, the media server, the API and `workers` workers.
    pub async fn start(workers: usize, concurrency: u32, timings: Timings) -> Self {
        let pg = OwnPostgres::start().await;
        let db_url = pg.create_db("clipstash").await;
        let redis = OwnRedis::start().await;
        let media = MediaServer::start().await;
        let storage_dir =
            std::env::temp_dir().join(format!("cs-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&storage_dir).unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&db_url)
            .await
            .unwrap();
        let mut this = Self {
            pg,
            redis,
            media,
            db_url,
            storage_dir,
            api: None,
            api_port: free_port(),
            api_env: vec![(
                "CLIPSTASH_TEST_CRASH_AFTER_INSERT",
                CRASH_AFTER_INSERT_MARKER.to_string(),
            )],
            worker_env: vec![("CLIPSTASH_TEST_CRASH_ON_URL", POISON_MARKER.to_string())],
            workers: Vec::new(),
            concurrency,
            timings,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            pool,
            scraped: HashMap::new(),
            unscraped_exits: 0,
            restarts: 0,
            next_generation: 0,
            logs: Vec::new(),
        };
        this.start_api().await;
        for _ in 0..workers {
            this.start_worker().await;
        }
        this
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let t = &self.timings;
        let d = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            ("DATABASE_URL", self.db_url.clone()),
            ("REDIS_URL", self.redis.url()),
            ("CLIPSTASH_QUEUE", "chaos".into()),
            (
                "CLIPSTASH_STORAGE_DIR",
                self.storage_dir.display().to_string(),
            ),
            ("CLIPSTASH_STORAGE_QUOTA_BYTES", (1u64 << 40).to_string()),
            ("CLIPSTASH_ALLOW_PRIVATE_NETWORKS", "true".into()),
            ("CLIPSTASH_HEARTBEAT_INTERVAL", d(t.heartbeat)),
            (
                "CLIPSTASH_MISSED_HEARTBEATS",
                t.missed_heartbeats.to_string(),
            ),
            ("CLIPSTASH_SHUTDOWN_GRACE", d(t.shutdown_grace)),
            ("CLIPSTASH_POLL_INTERVAL", "50ms".into()),
            ("CLIPSTASH_RETRY_BASE", "100ms".into()),
            ("CLIPSTASH_MAX_RETRIES", t.max_retries.to_string()),
            ("CLIPSTASH_IDLE_TIMEOUT", d(t.idle_timeout)),
            ("CLIPSTASH_ATTEMPT_TIMEOUT", d(t.attempt_timeout)),
            ("CLIPSTASH_QUEUE_REFRESH", "250ms".into()),
            ("CLIPSTASH_STORAGE_REFRESH", "250ms".into()),
            ("CLIPSTASH_SWEEP_INTERVAL", d(t.sweep_interval)),
            ("CLIPSTASH_SWEEP_GRACE", d(t.sweep_grace)),
        ]
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub async fn start_api(&mut self) {
        let mut env = self.env();
        env.push(("CLIPSTASH_LISTEN", format!("127.0.0.1:{}", self.api_port)));
        env.push(("CLIPSTASH_HTTP_WORKERS", "2".into()));
        env.push(("CLIPSTASH_AUTH", "off".into()));
        env.extend(self.api_env.iter().cloned());
        let api = Proc::spawn("clipstash-api", &["serve"], &env);
        self.logs.push(api.log.clone());
        wait_healthy(&api, &self.api_url("/healthz")).await;
        self.api = Some(api);
    }

    pub async fn start_worker(&mut self) {
        let port = free_port();
        let mut env = self.env();
        env.push(("CLIPSTASH_METRICS_LISTEN", format!("127.0.0.1:{port}")));
        env.push(("CLIPSTASH_CONCURRENCY", self.concurrency.to_string()));
        env.extend(self.worker_env.iter().cloned());
        let proc = Proc::spawn("clipstash-worker", &["run"], &env);
        self.logs.push(proc.log.clone());
        wait_healthy(&proc, &format!("http://127.0.0.1:{port}/healthz")).await;
        let generation = self.next_generation;
        self.next_generation += 1;
        self.scraped.insert(generation, Scraped::default());
        self.workers.push(WorkerProc {
            proc,
            port,
            generation,
        });
    }

    /// Scrapes one worker's `/metrics`; `None` when it does not answer.
    pub async fn scrape(&self, port: u16) -> Option<Scraped> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let s = prom::parse(&text);
        Some(Scraped {
            success: prom::sum(&s, "tasks_total", &[("status", "success")]),
            failed: prom::sum(&s, "tasks_total", &[("status", "failed")]),
            interrupted: prom::sum(&s, "tasks_total", &[("status", "interrupted")]),
            in_progress: prom::sum(&s, "tasks_in_progress", &[]),
            usage_bytes: prom::sum(&s, "storage_usage_bytes", &[]),
            files: prom::sum(&s, "storage_files", &[]),
            stale: prom::sum(&s, "jobs_stale_seconds", &[]),
            stale_series: prom::series_count(&s, "jobs_stale_seconds"),
        })
    }

    /// One round of upkeep: scrape every worker, start again any process that exited (as
    /// an orchestrator would).
    pub async fn tick(&mut self) {
        for i in 0..self.workers.len() {
            let (port, generation) = (self.workers[i].port, self.workers[i].generation);
            if let Some(s) = self.scrape(port).await {
                self.scraped.insert(generation, s);
            }
        }
        let mut exited = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Ok(Some(_)) = w.proc.child.try_wait() {
                exited.push(i);
            }
        }
        for i in exited.into_iter().rev() {
            self.workers.remove(i);
            self.unscraped_exits += 1;
            self.restarts += 1;
            self.start_worker().await;
        }
        let api_gone = match self.api.as_mut() {
            Some(api) => matches!(api.child.try_wait(), Ok(Some(_))),
            None => false,
        };
        if api_gone {
            self.restarts += 1;
            self.start_api().await;
        }
    }

    /// Keeps ticking for `d`.
    pub async fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.tick().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Index of a worker with a download in progress right now (scraped), if any.
    pub async fn busy_worker(&self) -> Option<usize> {
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(s) = self.scrape(w.port).await
                && s.in_progress > 0.0
            {
                return Some(i);
            }
        }
        None
    }

    /// kill -9 of worker `i`; the next tick starts a new one.
    pub async fn kill9_worker(&mut self, i: usize) {
        let (port, generation) = (self.workers[i].port, self.workers[i].generation);
        if let Some(s) = self.scrape(port).await {
            self.scraped.insert(generation, s);
        }
        let w = &mut self.workers[i];
        w.proc.kill9().await;
        let _ = w.proc.child.wait().await;
    }

    /// SIGTERM of worker `i`, waits for it to exit, starts its replacement; returns whether
    /// it exited cleanly within the grace period (plus a margin).
    pub async fn replace_worker(&mut self, i: usize) -> bool {
        let mut w = self.workers.remove(i);
        let pid = w.proc.child.id();
        if let Some(pid) = pid {
            clipstash_testkit::signal(pid, "TERM");
        }
        // Scrape while it drains: the last figures before /metrics goes away.
        let limit = Instant::now() + self.timings.shutdown_grace + Duration::from_secs(8);
        let mut clean = false;
        loop {
            if let Some(s) = self.scrape(w.port).await {
                self.scraped.insert(w.generation, s);
            }
            if let Ok(Some(status)) = w.proc.child.try_wait() {
                clean = status.success();
                break;
            }
            if Instant::now() > limit {
                let _ = w.proc.child.kill().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.unscraped_exits += 1;
        self.start_worker().await;
        clean
    }

    /// `/readyz` of the API: (status, body).
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let r = self
            .client
            .get(self.api_url("/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// The last lines of every process log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("==> {} <==\n", log.display()));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage_dir);
        // Paused Redis must not keep a stopped process around; kill works on it either way.
        if std::env::var_os("CLIPSTASH_CHAOS_KEEP_LOGS").is_none() {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}
