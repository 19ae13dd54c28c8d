//! Helpers shared by the worker's test binaries.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clipstash_db::jobs::NewJob;
use clipstash_db::{JobRow, jobs, usage};
use clipstash_domain::{DownloadJob, VideoSource};
use clipstash_queue::Queue;
use clipstash_testkit::{TestDb, TestQueue, settings, wait_for};
use clipstash_worker::{Settings, Worker};
use metrics_core::{Component, Exporter};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Env {
    pub db: TestDb,
    pub queue: TestQueue,
    pub producer: Queue,
    pub storage_dir: PathBuf,
    /// A Redis of the test's own instead of the shared one.
    pub redis_url: Option<String>,
}

impl Env {
    pub async fn new() -> Self {
        Self::with_redis(None).await
    }

    /// An environment whose queue lives on `redis_url` (an [`OwnRedis`]) when given.
    pub async fn with_redis(redis_url: Option<String>) -> Self {
        let db = TestDb::new().await;
        let queue = TestQueue::new();
        let mut args = queue.args();
        if let Some(url) = &redis_url {
            args.redis_url = url.clone().into();
        }
        let producer = Queue::connect(&args).await.unwrap();
        let storage_dir =
            std::env::temp_dir().join(format!("cs-storage-{}", Uuid::new_v4().simple()));
        Self {
            db,
            queue,
            producer,
            storage_dir,
            redis_url,
        }
    }

    /// Worker settings with fast retries and timeouts for tests.
    pub fn settings(&self) -> Settings {
        let mut common = settings::common(&self.db, &self.queue, &self.storage_dir);
        if let Some(url) = &self.redis_url {
            common.redis.redis_url = url.clone().into();
        }
        settings::worker(common)
    }

    /// Builds and runs a worker in this process, its metrics on a listener from the OS and
    /// in a recorder of its own (never the process's global one).
    pub async fn start_worker(&self, settings: Settings) -> RunningWorker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let worker = Worker::build(settings, Exporter::detached(Component::Worker), listener)
            .await
            .unwrap();
        let name = worker.name().to_string();
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        RunningWorker { name, stop, task }
    }

    /// Records a direct job and enqueues it, as the API does.
    pub async fn submit(&self, url: &str) -> Uuid {
        let id = Uuid::now_v7();
        self.submit_job(&NewJob::new(id, url, VideoSource::Direct))
            .await;
        id
    }

    /// Records `job` (with whatever the submit asked for) and enqueues it, as the API does.
    pub async fn submit_job(&self, job: &NewJob<'_>) {
        let row = jobs::insert_new_job(&self.db.pool, job).await.unwrap();
        self.producer
            .push(&DownloadJob {
                job_id: job.id,
                url: job.url.into(),
                enqueued_at: row.created_at,
            })
            .await
            .unwrap();
    }

    /// Records a job without enqueueing it: the API crashed between its INSERT and its push.
    pub async fn insert_only(&self, url: &str) -> Uuid {
        let id = Uuid::now_v7();
        jobs::insert_job(&self.db.pool, id, url, VideoSource::Direct)
            .await
            .unwrap();
        id
    }

    /// Enqueues another copy of a job under a fresh task id, as a redelivery would.
    pub async fn push(&self, id: Uuid, url: &str, enqueued_at: chrono::DateTime<Utc>) {
        self.producer
            .push_copy(&DownloadJob {
                job_id: id,
                url: url.into(),
                enqueued_at,
            })
            .await
            .unwrap();
    }

    pub async fn job(&self, id: Uuid) -> JobRow {
        jobs::get_job(&self.db.pool, id).await.unwrap().unwrap()
    }

    /// Waits until the job is succeeded, failed or cancelled.
    pub async fn finished(&self, id: Uuid, limit: Duration) -> JobRow {
        wait_for(&format!("job {id} to finish"), limit, || async move {
            let j = self.job(id).await;
            j.status.is_terminal().then_some(j)
        })
        .await
    }

    pub async fn usage(&self) -> (i64, i64) {
        let u = usage::storage_usage(&self.db.pool).await.unwrap();
        u.first().map_or((0, 0), |u| (u.bytes_used, u.file_count))
    }

    pub fn object_path(&self, id: Uuid) -> PathBuf {
        self.storage_dir
            .join(clipstash_storage::Storage::object_key(id))
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
