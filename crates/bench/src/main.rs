//! `just bench`: the job path measured with the release binaries on this machine, each figure
//! next to a baseline taken in the same run (see docs/BENCHMARKS.md).

use std::time::{Duration, Instant};

use clap::Parser;
use clipstash_testkit::procs::{Proc, peak_rss, wait_healthy};
use clipstash_testkit::{MediaServer, TestDb, TestQueue, free_port};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Benchmark the clipstash job path (run through `just bench`)")]
struct Args {
    /// Jobs submitted in the enqueue and small-job phases.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent HTTP clients submitting jobs.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Worker processes for the small-job phase.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 16)]
    worker_concurrency: u32,
    /// Size of the small jobs, in KiB.
    #[arg(long, default_value_t = 64)]
    small_kib: u64,
    /// Size of the large download, in MiB.
    #[arg(long, default_value_t = 512)]
    large_mib: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let media = MediaServer::start().await;
    let storage = std::env::temp_dir().join(format!("cs-bench-{}", std::process::id()));
    let env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", clipstash_testkit::redis_url()),
        ("CLIPSTASH_QUEUE", queue.name.clone()),
        ("CLIPSTASH_STORAGE_DIR", storage.display().to_string()),
        ("CLIPSTASH_ALLOW_PRIVATE_NETWORKS", "true".to_string()),
        ("CLIPSTASH_YTDLP", "off".to_string()),
        ("CLIPSTASH_POLL_INTERVAL", "20ms".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let api_port = free_port();
    let mut api_env = env.clone();
    api_env.push(("CLIPSTASH_LISTEN", format!("127.0.0.1:{api_port}")));
    // The bench measures the job path, not per-key limits.
    api_env.push(("CLIPSTASH_AUTH", "off".into()));
    let api = Proc::spawn("clipstash-api", &["serve"], &api_env);
    let base = format!("http://127.0.0.1:{api_port}");
    wait_healthy(&api, &format!("{base}/readyz")).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;

    println!(
        "clipstash bench: {} jobs, {} clients, {} workers x {}",
        args.jobs, args.clients, args.workers, args.worker_concurrency
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>12}",
        "measure", "rate/s", "p50 ms", "p99 ms", "vs baseline"
    );

    // 1. Enqueue: POST /v1/downloads against GET /healthz on the same server and clients.
    let healthz = load(&client, args.jobs, args.clients, |_| {
        client.get(format!("{base}/healthz"))
    })
    .await;
    healthz.print("baseline: GET /healthz", None);
    let small = args.small_kib * 1024;
    let enqueue = load(&client, args.jobs, args.clients, |i| {
        client
            .post(format!("{base}/v1/downloads"))
            .json(&json!({ "url": media.url(&format!("/media/{small}/{i}/b")) }))
    })
    .await;
    enqueue.print("enqueue: POST /v1/downloads", Some(healthz.rate()));

    // 2. Small jobs end to end: the queue drained by the workers.
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let port = free_port();
        let mut w_env = env.clone();
        w_env.push(("CLIPSTASH_METRICS_LISTEN", format!("127.0.0.1:{port}")));
        w_env.push(("CLIPSTASH_CONCURRENCY", args.worker_concurrency.to_string()));
        w_env.push((
            "CLIPSTASH_DB_MAX_CONNECTIONS",
            (args.worker_concurrency + 4).to_string(),
        ));
        workers.push(Proc::spawn("clipstash-worker", &["run"], &w_env));
    }
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
                .fetch_one(&db.pool)
                .await?;
        if done as usize >= args.jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = start.elapsed();
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(failed == 0, "{failed} small jobs failed");
    println!(
        "{:<34} {:>12.0} {:>10} {:>10} {:>12}",
        format!("{} KiB jobs end to end", args.small_kib),
        args.jobs as f64 / drained.as_secs_f64(),
        "-",
        "-",
        "-"
    );

    // 3. One large file: the job's wall time against curl fetching the same URL.
    let large = args.large_mib * 1024 * 1024;
    let url = media.url(&format!("/media/{large}/1/large"));
    let t = Instant::now();
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &url])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "curl failed");
    let curl = t.elapsed();
    let rss_before: Vec<u64> = workers
        .iter()
        .map(|w| peak_rss(w.child.id().unwrap()))
        .collect();
    let t = Instant::now();
    let r: serde_json::Value = client
        .post(format!("{base}/v1/downloads"))
        .json(&json!({ "url": url }))
        .send()
        .await?
        .json()
        .await?;
    let id = r["id"].as_str().unwrap().to_string();
    loop {
        let j: serde_json::Value = client
            .get(format!("{base}/v1/downloads/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match j["status"].as_str() {
            Some("succeeded") => break,
            Some("failed") => anyhow::bail!("large job failed: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let job = t.elapsed();
    let rss_after: Vec<u64> = workers
        .iter()
        .map(|w| peak_rss(w.child.id().unwrap()))
        .collect();
    println!(
        "{:<34} {:>12} {:>10.0} {:>10} {:>12}",
        format!("baseline: curl {} MiB", args.large_mib),
        "-",
        curl.as_secs_f64() * 1e3,
        "-",
        "-"
    );
    println!(
        "{:<34} {:>12} {:>10.0} {:>10} {:>11.2}x",
        format!("{} MiB job, submit to succeeded", args.large_mib),
        "-",
        job.as_secs_f64() * 1e3,
        "-",
        job.as_secs_f64() / curl.as_secs_f64()
    );
    println!(
        "worker peak RSS (VmHWM): {} MiB before the large job, {} MiB after",
        rss_before.iter().max().unwrap() >> 20,
        rss_after.iter().max().unwrap() >> 20
    );
    drop(workers);
    drop(api);
    let _ = std::fs::remove_dir_all(storage);
    Ok(())
}

struct Load {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }

    fn print(&self, name: &str, baseline: Option<f64>) {
        let ratio = baseline.map_or("-".to_string(), |b| format!("{:.2}x", self.rate() / b));
        println!(
            "{:<34} {:>12.0} {:>10.2} {:>10.2} {:>12}",
            name,
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            ratio
        );
    }
}

/// Sends `n` requests from `clients` concurrent loops; fails on any non-2xx.
async fn load(
    _client: &reqwest::Client,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Load {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..n)
        .map(|i| {
            let req = make(i);
            async move {
                let t = Instant::now();
                let r = req.send().await.expect("request");
                assert!(r.status().is_success(), "HTTP {}", r.status());
                let _ = r.bytes().await;
                t.elapsed()
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let elapsed = start.elapsed();
    latencies.sort();
    Load { elapsed, latencies }
}
