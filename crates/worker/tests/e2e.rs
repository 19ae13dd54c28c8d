//! End to end with the real binaries: `clipstash-api` and `clipstash-worker` processes,
//! real Postgres, Redis, local storage, promtool and Prometheus.

use std::path::PathBuf;
use std::time::Duration;

use clipstash_testkit::procs::{Proc, peak_rss, wait_healthy};
use clipstash_testkit::prom::{self, promtool_check_metrics};
use clipstash_testkit::{MediaServer, TestDb, TestQueue, free_port, media_sha256, wait_for};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

struct Stack {
    db: TestDb,
    queue: TestQueue,
    storage_dir: PathBuf,
    api: Option<Proc>,
    api_port: u16,
    workers: Vec<(Proc, u16)>,
    client: reqwest::Client,
    /// Settings added to every process's environment (after the defaults, so they win).
    extra_env: Vec<(&'static str, String)>,
}

impl Stack {
    async fn new() -> Self {
        Self {
            db: TestDb::new().await,
            queue: TestQueue::new(),
            storage_dir: std::env::temp_dir()
                .join(format!("cs-e2e-{}", uuid::Uuid::new_v4().simple())),
            api: None,
            api_port: free_port(),
            workers: Vec::new(),
            client: reqwest::Client::new(),
            extra_env: Vec::new(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DATABASE_URL", self.db.url.clone()),
            ("REDIS_URL", clipstash_testkit::redis_url()),
            ("CLIPSTASH_QUEUE", self.queue.name.clone()),
            (
                "CLIPSTASH_STORAGE_DIR",
                self.storage_dir.display().to_string(),
            ),
            ("CLIPSTASH_STORAGE_QUOTA_BYTES", (1u64 << 30).to_string()),
            ("CLIPSTASH_ALLOW_PRIVATE_NETWORKS", "true".into()),
            ("CLIPSTASH_HEARTBEAT_INTERVAL", "1s".into()),
            ("CLIPSTASH_MISSED_HEARTBEATS", "3".into()),
            ("CLIPSTASH_SHUTDOWN_GRACE", "2s".into()),
            ("CLIPSTASH_POLL_INTERVAL", "50ms".into()),
            ("CLIPSTASH_RETRY_BASE", "20ms".into()),
            ("CLIPSTASH_IDLE_TIMEOUT", "2s".into()),
            ("CLIPSTASH_QUEUE_REFRESH", "500ms".into()),
            ("CLIPSTASH_STORAGE_REFRESH", "500ms".into()),
            ("CLIPSTASH_SWEEP_INTERVAL", "200ms".into()),
            ("CLIPSTASH_SWEEP_GRACE", "1s".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    async fn start_api(&mut self) {
        let mut env = self.env();
        env.push(("CLIPSTASH_LISTEN", format!("127.0.0.1:{}", self.api_port)));
        env.push(("CLIPSTASH_HTTP_WORKERS", "2".into()));
        // Access has its own tests (crates/api/tests/access.rs); these are about the job path.
        env.push(("CLIPSTASH_AUTH", "off".into()));
        let api = Proc::spawn("clipstash-api", &["serve"], &env);
        wait_healthy(&api, &self.api_url("/readyz")).await;
        self.api = Some(api);
    }

    async fn start_worker(&mut self, concurrency: u32) -> usize {
        let port = free_port();
        let mut env = self.env();
        env.push(("CLIPSTASH_METRICS_LISTEN", format!("127.0.0.1:{port}")));
        env.push(("CLIPSTASH_CONCURRENCY", concurrency.to_string()));
        let w = Proc::spawn("clipstash-worker", &["run"], &env);
        wait_healthy(&w, &format!("http://127.0.0.1:{port}/healthz")).await;
        self.workers.push((w, port));
        self.workers.len() - 1
    }

    async fn submit(&self, url: &str) -> String {
        let r = self
            .client
            .post(self.api_url("/v1/downloads"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn job(&self, id: &str) -> Value {
        self.client
            .get(self.api_url(&format!("/v1/downloads/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn finished(&self, id: &str) -> Value {
        wait_for(&format!("job {id} to finish"), LIMIT, || async move {
            let j = self.job(id).await;
            matches!(
                j["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(j)
        })
        .await
    }

    async fn scrape(&self, port: u16) -> String {
        self.client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn logs(&self) -> String {
        let mut s = self.api.as_ref().map(|a| a.log_text()).unwrap_or_default();
        for (w, _) in &self.workers {
            s.push_str(&w.log_text());
        }
        s
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn fifty_jobs_on_two_workers_with_failures_retries_and_a_cancel() {
    let media = MediaServer::start().await;
    let mut stack = Stack::new().await;
    stack.start_api().await;

    // Cancelled while queued, before any worker exists: it must never run.
    let cancelled = stack.submit(&media.url("/media/1000/1/cancelled")).await;
    let r = stack
        .client
        .delete(stack.api_url(&format!("/v1/downloads/{cancelled}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    stack.start_worker(4).await;
    stack.start_worker(4).await;

    let mut good = Vec::new();
    for i in 0..50u64 {
        let size = 1024 + i * 37_000;
        let id = stack
            .submit(&media.url(&format!("/media/{size}/{i}/e2e")))
            .await;
        good.push((id, size, i));
    }
    let server_error = stack.submit(&media.url("/status/500/e2e")).await;
    let not_found = stack.submit(&media.url("/status/404/e2e")).await;
    let flaky = stack.submit(&media.url("/flaky/1/4242/7/e2e")).await;

    let mut total = 4242;
    for (id, size, seed) in &good {
        let job = stack.finished(id).await;
        assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
        assert_eq!(job["size_bytes"], *size);
        let expected = media_sha256(*size, *seed);
        assert_eq!(job["sha256"], expected.as_str());
        let stored = stack.storage_dir.join(job["object_key"].as_str().unwrap());
        assert_eq!(
            sha256_file(&stored),
            expected,
            "stored object matches the source"
        );
        total += size;
    }
    let job = stack.finished(&server_error).await;
    assert_eq!(
        (
            job["status"].as_str(),
            job["error"]["code"].as_str(),
            job["attempts"].as_i64()
        ),
        (Some("failed"), Some("source_server_error"), Some(4))
    );
    assert_eq!(media.hits("/status/500/e2e"), 4);
    let job = stack.finished(&not_found).await;
    assert_eq!(
        (job["error"]["code"].as_str(), job["attempts"].as_i64()),
        (Some("source_not_found"), Some(1))
    );
    let job = stack.finished(&flaky).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("succeeded"), Some(2))
    );
    assert_eq!(stack.job(&cancelled).await["status"], "cancelled");
    assert_eq!(media.hits("/media/1000/1/cancelled"), 0);

    // Metrics: every endpoint passes promtool, and the counts add up across workers.
    let mut worker_samples = Vec::new();
    for (_, port) in &stack.workers {
        let text = stack.scrape(*port).await;
        promtool_check_metrics(&text).unwrap_or_else(|e| panic!("worker /metrics: {e}"));
        let samples = prom::parse(&text);
        assert_eq!(
            prom::sum(&samples, "app_info", &[("component", "worker")]),
            1.0
        );
        worker_samples.extend(samples);
    }
    let tasks = |status| {
        prom::sum(
            &worker_samples,
            "tasks_total",
            &[("task_name", "process_download"), ("status", status)],
        )
    };
    assert_eq!(tasks("success"), 51.0);
    assert_eq!(tasks("failed"), 2.0);
    let errors: Vec<_> = worker_samples
        .iter()
        .filter(|s| s.name == "errors_total")
        .collect();
    assert_eq!(
        tasks("retried"),
        4.0,
        "3 retries of the 500 and 1 of the flaky source; errors: {errors:?}\n{}",
        stack.logs()
    );
    assert_eq!(
        prom::sum(
            &worker_samples,
            "downloads_total",
            &[("status", "success"), ("provider", "direct")]
        ),
        51.0
    );
    assert_eq!(
        prom::sum(&worker_samples, "downloads_total", &[("status", "failed")]),
        6.0
    );
    assert_eq!(
        prom::sum(&worker_samples, "task_queue_wait_seconds_count", &[]),
        53.0
    );
    assert_eq!(
        prom::sum(
            &worker_samples,
            "storage_uploads_total",
            &[("provider", "local"), ("status", "success")]
        ),
        51.0
    );
    assert_eq!(
        prom::sum(
            &worker_samples,
            "errors_total",
            &[("error_code", "source_server_error")]
        ),
        5.0,
        "4 from the 500 source, 1 from the flaky one"
    );
    assert_eq!(prom::sum(&worker_samples, "tasks_in_progress", &[]), 0.0);
    assert!(prom::sum(&worker_samples, "process_resident_memory_bytes", &[]) > 0.0);

    let api_text = stack.scrape(stack.api_port).await;
    promtool_check_metrics(&api_text).unwrap_or_else(|e| panic!("api /metrics: {e}"));
    let api = prom::parse(&api_text);
    assert_eq!(prom::sum(&api, "app_info", &[("component", "api")]), 1.0);
    assert_eq!(prom::sum(&api, "tasks_enqueued_total", &[]), 54.0);
    assert_eq!(
        prom::sum(
            &api,
            "http_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/v1/downloads"),
                ("status", "202")
            ]
        ),
        54.0
    );
    assert!(
        prom::sum(
            &api,
            "http_requests_total",
            &[("endpoint", "/v1/downloads/{id}"), ("status", "200")]
        ) >= 54.0
    );
    assert!(!api_text.contains(&cancelled), "no job id in any label");
    // Global gauges converge on Postgres' and Redis' figures in every process.
    for port in std::iter::once(stack.api_port).chain(stack.workers.iter().map(|(_, p)| *p)) {
        wait_for("storage and queue gauges", LIMIT, || async {
            let s = prom::parse(&stack.scrape(port).await);
            let ok = prom::sum(&s, "storage_usage_bytes", &[("provider", "local")]) == total as f64
                && prom::sum(&s, "storage_files", &[("provider", "local")]) == 51.0
                && prom::sum(&s, "storage_quota_bytes", &[("provider", "local")])
                    == (1u64 << 30) as f64
                && prom::sum(&s, "workers_live", &[]) == 2.0
                && prom::sum(&s, "queue_length", &[("state", "pending")]) == 0.0;
            ok.then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_job_held_by_a_killed_worker_finishes_on_another_once() {
    let media = MediaServer::start().await;
    let mut stack = Stack::new().await;
    stack.start_api().await;
    let victim = stack.start_worker(1).await;
    // Held after its first 64 KiB, so the worker is mid-download when killed.
    let path = "/held/3000000/5/kill9/a";
    let id = stack.submit(&media.url(path)).await;
    wait_for("the download to start", LIMIT, || async {
        (media.hits(path) == 1).then_some(())
    })
    .await;
    assert_eq!(stack.job(&id).await["status"], "running");

    stack.start_worker(1).await;
    stack.workers[victim].0.kill9().await;
    media.release("kill9");

    let job = stack.finished(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["sha256"], media_sha256(3_000_000, 5).as_str());
    assert_eq!(media.hits(path), 2);
    let storage: Value = stack
        .client
        .get(stack.api_url("/v1/storage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(storage["providers"][0]["bytes_used"], 3_000_000);
    assert_eq!(storage["providers"][0]["files"], 1);

    // SIGTERM: the survivor stops cleanly, well within its grace period.
    let (survivor, _) = stack.workers.last_mut().unwrap();
    assert!(
        survivor.terminate(Duration::from_secs(10)).await,
        "{}",
        survivor.log_text()
    );
}

#[tokio::test]
async fn a_job_the_api_never_pushed_is_swept_in_and_counted_in_jobs_requeued_total() {
    let media = MediaServer::start().await;
    let mut stack = Stack::new().await;
    let worker = stack.start_worker(1).await;
    let port = stack.workers[worker].1;
    // The API died between its INSERT and its push: only Postgres knows the job.
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO jobs (id, url, source) VALUES ($1, $2, 'direct')")
        .bind(id)
        .bind(media.url("/media/2500/3/lost"))
        .execute(&stack.db.pool)
        .await
        .unwrap();
    let status = wait_for("the lost job to succeed", LIMIT, || async {
        let s: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
        (s != "queued" && s != "running").then_some(s)
    })
    .await;
    assert_eq!(status, "succeeded", "{}", stack.logs());
    let samples = prom::parse(&stack.scrape(port).await);
    assert_eq!(
        prom::sum(
            &samples,
            "jobs_requeued_total",
            &[("reason", "not_in_queue")]
        ),
        1.0
    );
    assert_eq!(
        prom::sum(&samples, "jobs_requeued_total", &[("reason", "orphaned")]),
        0.0
    );
}

#[tokio::test]
async fn unknown_paths_and_ids_add_no_http_series() {
    let mut stack = Stack::new().await;
    stack.start_api().await;
    // Warm up each route shape once so the baseline holds their series.
    for path in [
        "/nope/warm",
        "/v1/downloads/018f0000-0000-7000-8000-000000000000",
        "/v1/downloads/warm",
        "/metrics",
    ] {
        stack.client.get(stack.api_url(path)).send().await.unwrap();
    }
    let before = prom::parse(&stack.scrape(stack.api_port).await);
    for i in 0..1000 {
        stack
            .client
            .get(stack.api_url(&format!("/unknown/{i}/{}", uuid::Uuid::new_v4())))
            .send()
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4();
        let r = stack
            .client
            .get(stack.api_url(&format!("/v1/downloads/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let after_text = stack.scrape(stack.api_port).await;
    let after = prom::parse(&after_text);
    let grew =
        prom::series_count(&after, "http_") as i64 - prom::series_count(&before, "http_") as i64;
    assert!(grew <= 5, "2,000 distinct paths added {grew} HTTP series");
    assert!(
        prom::sum(
            &after,
            "http_requests_total",
            &[("endpoint", "unmatched"), ("status", "404")]
        ) >= 1000.0
    );
    assert!(
        prom::sum(
            &after,
            "http_requests_total",
            &[("endpoint", "/v1/downloads/{id}"), ("status", "404")]
        ) >= 1000.0
    );
}

/// The repository's own `deploy/` and `dashboards/` files.
fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Prometheus run with `deploy/prometheus.yml`, pointed at this test's processes.
struct Prometheus {
    _proc: std::process::Child,
    base: String,
    dir: PathBuf,
}

impl Prometheus {
    async fn start(api_port: u16, worker_ports: &[u16]) -> Self {
        let dir = std::env::temp_dir().join(format!("cs-prom-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = std::fs::read_to_string(repo_file("deploy/prometheus.yml")).unwrap();
        // Same jobs, rules and file_sd discovery; only the cadence and the API's port change.
        let replaced = |from: &str, to: &str, text: String| {
            assert!(
                text.contains(from),
                "deploy/prometheus.yml no longer has `{from}`"
            );
            text.replace(from, to)
        };
        let config = replaced("scrape_interval: 15s", "scrape_interval: 1s", config);
        let config = replaced(
            "evaluation_interval: 15s",
            "evaluation_interval: 1s",
            config,
        );
        let config = replaced("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"), config);
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::copy(repo_file("deploy/alerts.yml"), dir.join("alerts.yml")).unwrap();
        let targets: Vec<String> = worker_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::fs::write(
            dir.join("workers.json"),
            json!([{ "targets": targets }]).to_string(),
        )
        .unwrap();

        let port = free_port();
        let proc = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::fs::File::create(dir.join("log")).unwrap())
            .stderr(std::fs::File::create(dir.join("err")).unwrap())
            .spawn()
            .expect("prometheus on PATH (Debian package prometheus; `just test` installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        wait_for("prometheus ready", LIMIT, || {
            let url = format!("{base}/-/ready");
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        Self {
            _proc: proc,
            base,
            dir,
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base), query).unwrap();
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// Evaluates an instant query; panics on a PromQL error.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let v = self.get("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self._proc.kill();
        let _ = self._proc.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn prometheus_scrapes_every_target_and_every_panel_and_alert_evaluates() {
    let media = MediaServer::start().await;
    let mut stack = Stack::new().await;
    stack.start_api().await;
    stack.start_worker(2).await;
    stack.start_worker(2).await;
    let worker_ports: Vec<u16> = stack.workers.iter().map(|(_, p)| *p).collect();
    let prom = Prometheus::start(stack.api_port, &worker_ports).await;

    // Every target of both scrape jobs is up.
    wait_for("all three targets up", LIMIT, || async {
        let t = prom.get("/api/v1/targets", &[]).await;
        let active = t["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = |job: &str| {
            active
                .iter()
                .filter(|a| a["labels"]["job"] == job && a["health"] == "up")
                .count()
        };
        (up("clipstash-api") == 1 && up("clipstash-worker") == 2).then_some(())
    })
    .await;

    // A workload with successes, a permanent failure and retried failures.
    let mut ids = Vec::new();
    for i in 0..10u64 {
        ids.push(
            stack
                .submit(&media.url(&format!("/media/{}/{i}/prom", 50_000 + i * 1000)))
                .await,
        );
    }
    ids.push(stack.submit(&media.url("/status/404/prom")).await);
    ids.push(stack.submit(&media.url("/status/503/prom")).await);
    for id in &ids {
        stack.finished(id).await;
    }
    wait_for("Prometheus to see the workload", LIMIT, || async {
        let r = prom
            .query(r#"sum(tasks_total{job="clipstash-worker", status="success"})"#)
            .await;
        (r.first().and_then(|s| s["value"][1].as_str()) == Some("10")).then_some(())
    })
    .await;
    // Let rate() windows hold a few samples after the workload.
    wait_for("a few more scrapes", LIMIT, || async {
        let r = prom
            .query(r#"count_over_time(up{job="clipstash-api"}[1m])"#)
            .await;
        let n: f64 = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (n >= 8.0).then_some(())
    })
    .await;

    // Every dashboard query parses, evaluates and returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("dashboards/clipstash.json")).unwrap(),
    )
    .unwrap();
    let mut evaluated = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let concrete = expr
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            let result = prom.query(&concrete).await;
            assert!(
                !result.is_empty(),
                "panel {:?} returned no data: {concrete}",
                panel["title"]
            );
            evaluated += 1;
        }
    }
    assert!(evaluated >= 15, "only {evaluated} panel queries");

    // Every alert rule is loaded, evaluates without error, and its expression runs.
    let rules = wait_for("rules evaluated", LIMIT, || async {
        let v = prom.get("/api/v1/rules", &[]).await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")).then_some(rules)
    })
    .await;
    assert!(rules.len() >= 7, "{} rules", rules.len());
    for rule in &rules {
        assert_eq!(rule["type"], "alerting");
        prom.query(rule["query"].as_str().unwrap()).await;
    }
    // With every worker up and nothing failing for long, the no-workers alert stays quiet.
    let firing = prom
        .query(r#"ALERTS{alertname="ClipstashNoLiveWorkers"}"#)
        .await;
    assert!(firing.is_empty(), "{firing:?}");
}

/// Peak resident memory of a process (VmHWM), in bytes.

#[tokio::test]
async fn worker_memory_stays_flat_whatever_the_file_size() {
    let media = MediaServer::start().await;
    let mut stack = Stack::new().await;
    stack.start_api().await;
    stack.start_worker(1).await;
    let pid = stack.workers[0].0.child.id().unwrap();
    let size = 300 * 1024 * 1024;
    let id = stack
        .submit(&media.url(&format!("/media/{size}/3/big")))
        .await;
    let job = stack.finished(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["sha256"], media_sha256(size, 3).as_str());
    // Upload parts are 8 MiB with two in flight: the peak is tens of MiB, not the file's 300.
    let peak = peak_rss(pid);
    assert!(
        peak < 100 * 1024 * 1024,
        "peak RSS {} MiB for a 300 MiB file",
        peak >> 20
    );
}

#[tokio::test]
async fn four_storage_kinds_with_the_real_binaries_fill_their_quotas_and_reconcile_clean() {
    use clipstash_testkit::emulators;
    const SIZE: u64 = 400_000;
    let media = MediaServer::start().await;
    let gcs = clipstash_testkit::gcs_fake::GcsFake::start().await;
    let mut stack = Stack::new().await;
    let bucket = emulators::unique_bucket();
    let container = emulators::unique_bucket();
    let quota = 2 * SIZE;
    // Local disk, S3 on moto, Azure on Azurite and GCS on the test kit's fake, at once.
    let storage = format!(
        "disk=file://{}?quota={quota}\n{}&quota={quota}\n{}&quota={quota}\ngcs={}&quota={quota}",
        stack.storage_dir.display(),
        emulators::s3_bucket(&bucket)
            .await
            .replacen("s3://", "s3=s3://", 1),
        emulators::azure_container(&container)
            .await
            .replacen("az://", "blob=az://", 1),
        gcs.bucket(&bucket),
    );
    stack.extra_env = vec![
        ("CLIPSTASH_STORAGE", storage.clone()),
        ("CLIPSTASH_PLACEMENT", "ordered".into()),
        ("CLIPSTASH_MAX_RETRIES", "1".into()),
    ];
    stack.start_api().await;
    let w1 = stack.start_worker(4).await;
    let w2 = stack.start_worker(4).await;

    // Eight uploads at once on two workers: the quotas, not the timing, decide where they go.
    let mut ids = Vec::new();
    for i in 0..8u64 {
        ids.push(
            stack
                .submit(&media.url(&format!("/media/{SIZE}/{i}/q{i}")))
                .await,
        );
    }
    let mut per_provider = std::collections::BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let job = stack.finished(id).await;
        assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
        assert_eq!(job["sha256"], media_sha256(SIZE, i as u64).as_str());
        *per_provider
            .entry(job["provider"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_provider.into_iter().collect::<Vec<_>>(),
        [
            ("blob".to_string(), 2),
            ("disk".to_string(), 2),
            ("gcs".to_string(), 2),
            ("s3".to_string(), 2)
        ]
    );
    // All full: the next job fails as storage_full.
    let full = stack
        .submit(&media.url(&format!("/media/{SIZE}/9/full")))
        .await;
    let job = stack.finished(&full).await;
    assert_eq!(job["error"]["code"], "storage_full", "{job}");

    // Each worker exports every provider's quota, and the uploads add up per provider.
    let mut uploads = 0.0;
    for i in [w1, w2] {
        let samples = prom::parse(&stack.scrape(stack.workers[i].1).await);
        for p in ["disk", "s3", "blob", "gcs"] {
            assert_eq!(
                prom::sum(&samples, "storage_quota_bytes", &[("provider", p)]),
                quota as f64
            );
        }
        uploads += prom::sum(&samples, "storage_uploads_total", &[("status", "success")]);
    }
    assert_eq!(uploads, 8.0);
    assert_eq!(gcs.objects(&bucket).len(), 2, "what GCS holds");

    // What the API counts is what the providers hold: reconcile finds nothing to fix.
    let out = tokio::process::Command::new(clipstash_testkit::procs::binary("clipstash-worker"))
        .args(["storage", "reconcile"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &stack.db.url)
        .env("CLIPSTASH_STORAGE", &storage)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["disk", "s3", "blob", "gcs"] {
        assert!(
            text.contains(&format!("{p}: 2 objects, 2 rows; orphans 0 (deleted 0), rows without object 0, size mismatches 0; usage {quota} bytes / 2 files")),
            "{text}"
        );
    }
}
