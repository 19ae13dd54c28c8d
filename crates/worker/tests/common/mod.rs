//! Helpers shared by the worker's test binaries.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clipstash_core::DownloadJob;
use clipstash_core::config::{GaugeArgs, NetworkArgs, StorageArgs};
use clipstash_core::db::{self, JobRow};
use clipstash_core::queue::Queue;
use clipstash_testkit::{TestDb, TestQueue, free_port, wait_for};
use clipstash_worker::{Settings, Worker};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Env {
    pub db: TestDb,
    pub queue: TestQueue,
    pub producer: Queue,
    pub storage_dir: PathBuf,
}

impl Env {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let queue = TestQueue::new();
        let producer = Queue::connect(&queue.args()).await.unwrap();
        let storage_dir =
            std::env::temp_dir().join(format!("cs-storage-{}", Uuid::new_v4().simple()));
        Self {
            db,
            queue,
            producer,
            storage_dir,
        }
    }

    /// Worker settings with fast retries and timeouts for tests.
    pub fn settings(&self) -> Settings {
        Settings {
            metrics_listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            concurrency: 4,
            worker_name: "test".into(),
            poll_interval: Duration::from_millis(20),
            max_retries: 3,
            retry_base: Duration::from_millis(10),
            attempt_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            max_file_bytes: 200 * 1024 * 1024,
            shutdown_grace: Duration::from_millis(500),
            database: self.db.args(),
            redis: self.queue.args(),
            storage: StorageArgs {
                storage_dir: self.storage_dir.clone(),
                storage_quota_bytes: 0,
            },
            gauges: GaugeArgs {
                storage_refresh: Duration::from_secs(60),
                queue_refresh: Duration::from_secs(1),
            },
            network: NetworkArgs {
                allow_private_networks: true,
            },
        }
    }

    pub async fn start_worker(&self, settings: Settings) -> RunningWorker {
        let worker = Worker::build(settings).await.unwrap();
        let name = worker.name().to_string();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        RunningWorker { name, stop, task }
    }

    /// Records a job and enqueues it, as the API does.
    pub async fn submit(&self, url: &str) -> Uuid {
        let id = Uuid::now_v7();
        let row = db::insert_job(&self.db.pool, id, url, "direct")
            .await
            .unwrap();
        self.push(id, url, row.created_at).await;
        id
    }

    pub async fn push(&self, id: Uuid, url: &str, enqueued_at: chrono::DateTime<Utc>) {
        self.producer
            .push(&DownloadJob {
                job_id: id,
                url: url.into(),
                enqueued_at,
            })
            .await
            .unwrap();
    }

    pub async fn job(&self, id: Uuid) -> JobRow {
        db::get_job(&self.db.pool, id).await.unwrap().unwrap()
    }

    /// Waits until the job is succeeded, failed or cancelled.
    pub async fn finished(&self, id: Uuid, limit: Duration) -> JobRow {
        wait_for(&format!("job {id} to finish"), limit, || async move {
            let j = self.job(id).await;
            matches!(j.status.as_str(), "succeeded" | "failed" | "cancelled").then_some(j)
        })
        .await
    }

    pub async fn usage(&self) -> (i64, i64) {
        let u = db::storage_usage(&self.db.pool).await.unwrap();
        u.first().map_or((0, 0), |u| (u.bytes_used, u.file_count))
    }

    pub fn object_path(&self, id: Uuid) -> PathBuf {
        self.storage_dir.join("downloads").join(id.to_string())
    }

    /// Files under the storage root (staging files of aborted uploads included).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out)
                } else {
                    out.push(p)
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage_dir, &mut out);
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

pub struct RunningWorker {
    pub name: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
    }
}
