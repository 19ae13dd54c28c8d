//! `just bench`: the job path measured with the release binaries on this machine, each figure
//! next to a baseline taken in the same run (see docs/BENCHMARKS.md).

mod cpu;
mod load;
mod micro;

use std::time::{Duration, Instant};

use clap::Parser;
use clipstash_testkit::procs::{Proc, peak_rss, wait_healthy};
use clipstash_testkit::{MediaServer, TestDb, TestQueue, free_port};
use metrics_core::Exporter;
use metrics_core::catalogue::Component;
use serde_json::json;

use crate::load::load;

/// How long the bench waits without progress before it reports a stall.
const STALL: Duration = Duration::from_secs(60);

/// The Python original's enqueue rate on this machine (docs/BENCHMARKS.md, 2026-11-24); it
/// cannot be re-run here, so its ratio is against this recorded figure.
const ORIGINAL_ENQUEUE_PER_S: f64 = 840.0;

/// Fewest `/healthz` requests of the enqueue phase's baseline.
const HEALTHZ_REQUESTS: usize = 20_000;

/// Fewest submits of the enqueue phase. 2,000 take ~150 ms, and the burst right after the
/// API starts (its first ~200 submits wait 10–25 ms) is then a tenth of the phase and sets
/// its p99; the first `--jobs` submits' p50 and p99 are printed on their own line.
const ENQUEUE_SUBMITS: usize = 10_000;

/// One line of the result table.
pub fn row(name: &str, rate: &str, p50: &str, p99: &str, vs: &str) {
    println!("{name:<40} {rate:>10} {p50:>9} {p99:>9} {vs:>26}");
}

#[derive(Parser)]
#[command(about = "Benchmark the clipstash job path (run through `just bench`)")]
struct Args {
    /// Jobs of the small-job figure (the time until this many have ended). The enqueue
    /// phase submits at least 10,000, and the workers drain them all (also reported).
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent HTTP clients submitting jobs.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Worker processes for the small-job phase (issue 11's target is for one).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Jobs each worker runs at once. A 64 KiB job spends most of its time waiting on round
    /// trips, so it takes this many in flight to keep the cores busy (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 64)]
    worker_concurrency: u32,
    /// Size of the small jobs, in KiB.
    #[arg(long, default_value_t = 64)]
    small_kib: u64,
    /// Size of the large download, in MiB.
    #[arg(long, default_value_t = 512)]
    large_mib: u64,
    /// Submit with API keys, one per client in turn (auth on, as in production): every
    /// batch of submits then also locks its keys and checks each key's active-jobs cap.
    /// 0: auth off.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    keys: u32,
    /// Send every submit with its own `Idempotency-Key`, as a client that retries safely
    /// does (batched like the others; a replay is looked up after the batch).
    #[arg(long)]
    idempotency: bool,
    /// Rounds of the large-file phase: `curl -o` and the job alternate, and their medians
    /// are compared.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    large_rounds: u32,
    /// Requests per run in the middleware comparison (bare handler against the same
    /// handler behind the HTTP metrics middleware, alternating, best of 3 each).
    #[arg(long, default_value_t = 20_000)]
    middleware_requests: usize,
    /// Only the enqueue phase and its `/healthz` baseline, then stop: ~5 s a run, so an A/B
    /// of the submit path can alternate builds many times (docs/BENCHMARKS.md).
    #[arg(long)]
    enqueue_only: bool,
    /// Folder the local storage provider writes under (a fresh subfolder per run; default:
    /// the system temp folder). Pointing it at a tmpfs such as /dev/shm takes the
    /// filesystem's cost out of the small-job figure (docs/BENCHMARKS.md).
    #[arg(long, value_name = "DIR")]
    storage_dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    let submits = args.jobs.max(ENQUEUE_SUBMITS);
    // This process's own recorder: the middleware and render phases record into it.
    let exporter = Exporter::install(Component::Api)?;
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let media = MediaServer::start().await;
    let storage = args
        .storage_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("cs-bench-{}", std::process::id()));
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", clipstash_testkit::redis_url()),
        ("CLIPSTASH_QUEUE", queue.name.clone()),
        ("CLIPSTASH_STORAGE_DIR", storage.display().to_string()),
        ("CLIPSTASH_ALLOW_PRIVATE_NETWORKS", "true".to_string()),
        ("CLIPSTASH_POLL_INTERVAL", "20ms".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let passed = passed_through(&env);
    env.extend(passed.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let api_port = free_port();
    let mut api_env = env.clone();
    api_env.push(("CLIPSTASH_LISTEN", format!("127.0.0.1:{api_port}")));
    let keys = if args.keys == 0 {
        api_env.push(("CLIPSTASH_AUTH", "off".into()));
        Vec::new()
    } else {
        create_keys(args.keys, &db.url)?
    };
    let api = Proc::spawn("clipstash-api", &["serve"], &api_env);
    let base = format!("http://127.0.0.1:{api_port}");
    wait_healthy(&api, &format!("{base}/readyz")).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;

    println!(
        "clipstash bench: {} jobs ({submits} submitted), {} clients, {} workers x {}, {}{}",
        args.jobs,
        args.clients,
        args.workers,
        args.worker_concurrency,
        match args.keys {
            0 => "auth off".to_string(),
            n => format!("{n} API keys"),
        },
        if args.idempotency {
            ", an Idempotency-Key per submit"
        } else {
            ""
        }
    );
    row("measure", "rate/s", "p50 ms", "p99 ms", "vs baseline");

    // 1. Enqueue: POST /v1/downloads against GET /healthz on the same server and clients.
    // CPU is charged per request to every process on the path, so the two rates can be
    // compared with what each request costs the machine.
    let api_pid = api.child.id().expect("api pid");
    let me = std::process::id();
    let db_name = db.name.clone();
    let postgres_of_db = move || {
        let db_name = db_name.clone();
        cpu::Group::snapshot(move |cmd| {
            // `postgres: [CLUSTER: ]USER DB ADDR STATE` (Debian adds the cluster, e.g. `15/main:`).
            cmd.starts_with("postgres: ") && cmd.split(' ').any(|word| word == db_name)
        })
    };
    let redis_server = || {
        cpu::Group::snapshot(|cmd| {
            cmd.starts_with("redis-server") || cmd.starts_with("/usr/bin/redis-server")
        })
    };
    let (api_cpu, me_cpu) = (cpu::of_pid(api_pid), cpu::of_pid(me));
    // At least HEALTHZ_REQUESTS: 2,000 of them take ~40 ms, too short to be a baseline.
    let healthz_requests = args.jobs.max(HEALTHZ_REQUESTS);
    let healthz = load(healthz_requests, args.clients, |_| {
        client.get(format!("{base}/healthz"))
    })
    .await;
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / healthz_requests as f64;
    let (healthz_api, healthz_me) = (
        per_request(cpu::of_pid(api_pid) - api_cpu),
        per_request(cpu::of_pid(me) - me_cpu),
    );
    // Every submit is a job: CPU per submit and per job divide by the same count.
    let per = |d: Duration| d.as_secs_f64() * 1e6 / submits as f64;
    healthz.print("baseline: GET /healthz", None);
    println!(
        "  CPU per request: {:.0} µs = API {healthz_api:.0} + bench client {healthz_me:.0}",
        healthz_api + healthz_me
    );
    let small = args.small_kib * 1024;
    let (postgres, redis) = (postgres_of_db(), redis_server());
    let (api_cpu, me_cpu) = (cpu::of_pid(api_pid), cpu::of_pid(me));
    let enqueue = load(submits, args.clients, |i| {
        let req = authorized(client.post(format!("{base}/v1/downloads")), &keys, i)
            .json(&json!({ "url": media.url(&format!("/media/{small}/{i}/b")) }));
        if args.idempotency {
            req.header("Idempotency-Key", format!("bench-{i}"))
        } else {
            req
        }
    })
    .await;
    let (api_us, pg_us, redis_us, me_us) = (
        per(cpu::of_pid(api_pid) - api_cpu),
        per(postgres.since()),
        per(redis.since()),
        per(cpu::of_pid(me) - me_cpu),
    );
    enqueue.print(
        &format!("enqueue: POST /v1/downloads, {submits}"),
        Some(healthz.rate()),
    );
    println!(
        "  the first {} of them, right after the API started: p50 {:.2} ms, p99 {:.2} ms",
        args.jobs,
        enqueue.first_pct(args.jobs, 0.5),
        enqueue.first_pct(args.jobs, 0.99)
    );
    row(
        "",
        "",
        "",
        "",
        &format!(
            "{:.1}x the original ({ORIGINAL_ENQUEUE_PER_S}/s)",
            enqueue.rate() / ORIGINAL_ENQUEUE_PER_S
        ),
    );
    let submit_us = api_us + pg_us + redis_us + me_us;
    println!(
        "  CPU per submit: {submit_us:.0} µs = API {api_us:.0} + Postgres {pg_us:.0} + Redis {redis_us:.0} + bench client {me_us:.0}; {:.2}x a /healthz request's, so at most {:.2}x its rate with both on every core",
        submit_us / (healthz_api + healthz_me),
        (healthz_api + healthz_me) / submit_us
    );
    if args.enqueue_only {
        drop(api);
        let _ = std::fs::remove_dir_all(storage);
        return Ok(());
    }

    // 2. Small jobs end to end: the queue drained by the workers. CPU is charged per job
    // to each server-side process group (Postgres: this database's backends only).
    let (postgres, redis) = (postgres_of_db(), redis_server());
    let api_cpu = cpu::of_pid(api_pid);
    // Postgres' clock at the start, for the time until the first `--jobs` jobs and all of
    // them ended (their `finished_at`, written by Postgres too).
    let started_at: String = sqlx::query_scalar("SELECT clock_timestamp()::text")
        .fetch_one(&db.pool)
        .await?;
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
    // A stalled drain is a finding, not a reason to wait for ever (a backlog once stopped
    // every worker): give up when no job ends for STALL.
    let (mut last_done, mut last_change) = (0i64, Instant::now());
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
                .fetch_one(&db.pool)
                .await?;
        if done as usize >= submits {
            break;
        }
        if done != last_done {
            (last_done, last_change) = (done, Instant::now());
        }
        anyhow::ensure!(
            last_change.elapsed() < STALL,
            "small jobs stalled: {done} of {submits} ended, none in the last {STALL:?}; see the workers' logs in the temp folder",
        );
        // Each count reads the whole table (~2 ms of Postgres at 10,000 jobs, charged to the
        // small jobs' Postgres figure): polled every 20 ms, it took a tenth of a core.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last `finished_at`, not when the poll noticed it.
    let drained = Duration::from_secs_f64(
        sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(finished_at) - $1::timestamptz)::float8 FROM jobs",
        )
        .bind(&started_at)
        .fetch_one(&db.pool)
        .await?,
    );
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(failed == 0, "{failed} small jobs failed");
    let first_jobs: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (SELECT finished_at FROM jobs WHERE finished_at IS NOT NULL \
         ORDER BY finished_at OFFSET $1 LIMIT 1) - $2::timestamptz)::float8",
    )
    .bind(args.jobs as i64 - 1)
    .bind(&started_at)
    .fetch_one(&db.pool)
    .await?;
    // The workers' CPU time so far (they started with this phase).
    let worker_cpu = || -> Duration {
        workers
            .iter()
            .map(|w| cpu::of_pid(w.child.id().expect("worker pid")))
            .sum()
    };
    let (api_us, worker_us, pg_us, redis_us) = (
        per(cpu::of_pid(api_pid) - api_cpu),
        per(worker_cpu()),
        per(postgres.since()),
        per(redis.since()),
    );
    row(
        &format!(
            "{} KiB jobs end to end, first {}",
            args.small_kib, args.jobs
        ),
        &format!("{:.0}", args.jobs as f64 / first_jobs),
        "-",
        "-",
        "-",
    );
    if submits > args.jobs {
        row(
            &format!("{} KiB jobs end to end, all {submits}", args.small_kib),
            &format!("{:.0}", submits as f64 / drained.as_secs_f64()),
            "-",
            "-",
            "-",
        );
    }
    println!(
        "  CPU per job: {:.0} µs = workers {worker_us:.0} + Postgres {pg_us:.0} + Redis {redis_us:.0} + API {api_us:.0}",
        worker_us + pg_us + redis_us + api_us
    );

    // 3. One large file: the job's wall time against curl fetching the same URL, into a file
    // on the storage folder's filesystem (the job stores the file too) and into /dev/null.
    // Both are noisy on a disk that is still writing back earlier runs, so they alternate
    // for `--large-rounds` rounds and the medians are compared.
    let large = args.large_mib * 1024 * 1024;
    let url = media.url(&format!("/media/{large}/1/large"));
    std::fs::create_dir_all(&storage)?;
    let curl_file = storage.join("curl-baseline");
    let curl_to = |out: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let (curl_before, me_before) = (cpu::of_waited_children(), cpu::of_pid(me));
            let t = Instant::now();
            let status = tokio::process::Command::new("curl")
                .args(["-sS", "-o"])
                .arg(&out)
                .arg(&url)
                .status()
                .await?;
            anyhow::ensure!(status.success(), "curl failed");
            let wall = t.elapsed();
            let cpu = cpu::of_waited_children() - curl_before + (cpu::of_pid(me) - me_before);
            anyhow::Ok((wall, cpu))
        }
    };
    let (curl_null, _) = curl_to("/dev/null".into()).await?;
    let sha_alone = sha256_alone(large);
    let rss_before: Vec<u64> = workers
        .iter()
        .map(|w| peak_rss(w.child.id().unwrap()))
        .collect();
    let large_job = || async {
        // CPU used while the job runs: is the path bound by the two cores it shares with
        // the media server (this process), or by something else?
        let (workers_before, me_before) = (worker_cpu(), cpu::of_pid(me));
        let t = Instant::now();
        let r: serde_json::Value =
            authorized(client.post(format!("{base}/v1/downloads")), &keys, 0)
                .json(&json!({ "url": url }))
                .send()
                .await?
                .json()
                .await?;
        let id = r["id"].as_str().unwrap().to_string();
        loop {
            anyhow::ensure!(
                t.elapsed() < STALL * 10,
                "the large job did not end within {:?}",
                STALL * 10
            );
            let j: serde_json::Value =
                authorized(client.get(format!("{base}/v1/downloads/{id}")), &keys, 0)
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
        let run = LargeRun {
            wall: t.elapsed(),
            workers: worker_cpu() - workers_before,
            bench: cpu::of_pid(me) - me_before,
        };
        // Deleted at once, as curl's file is: a disk still writing back earlier rounds'
        // files slows the next round of both.
        let deleted = authorized(client.delete(format!("{base}/v1/downloads/{id}")), &keys, 0)
            .send()
            .await?;
        anyhow::ensure!(
            deleted.status().is_success(),
            "deleting the large job's file: HTTP {}",
            deleted.status()
        );
        anyhow::Ok(run)
    };
    let mut curls = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..args.large_rounds {
        curls.push(curl_to(curl_file.clone()).await?);
        std::fs::remove_file(&curl_file)?;
        jobs.push(large_job().await?);
    }
    let rounds: Vec<String> = curls
        .iter()
        .zip(&jobs)
        .map(|((c, _), j)| format!("{:.2}", j.wall.as_secs_f64() / c.as_secs_f64()))
        .collect();
    let (curl, curl_cpu) = median_by(&curls, |(wall, _)| *wall);
    let LargeRun {
        wall: job,
        workers: workers_used,
        bench: me_used,
    } = median_by(&jobs, |j| j.wall);
    let rss_after: Vec<u64> = workers
        .iter()
        .map(|w| peak_rss(w.child.id().unwrap()))
        .collect();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    row(
        &format!("baseline: curl -o file, {} MiB (ms)", args.large_mib),
        "-",
        &ms(curl),
        "-",
        "-",
    );
    row(
        &format!("curl -o /dev/null, {} MiB (ms)", args.large_mib),
        "-",
        &ms(curl_null),
        "-",
        "-",
    );
    row(
        &format!("{} MiB job, submit to succeeded (ms)", args.large_mib),
        "-",
        &ms(job),
        "-",
        &format!(
            "{:.2}x curl ({:.2}x /dev/null)",
            job.as_secs_f64() / curl.as_secs_f64(),
            job.as_secs_f64() / curl_null.as_secs_f64()
        ),
    );
    println!(
        "  medians of {} alternating rounds; job / curl in each round: {}",
        args.large_rounds,
        rounds.join(", ")
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available = job.as_secs_f64() * 1e3 * cores as f64;
    let used = (workers_used + me_used).as_secs_f64() * 1e3;
    println!(
        "  CPU during the large job: workers {} ms + media server and bench {} ms = {used:.0} ms of {available:.0} ms ({cores} cores x the job's wall time): {:.0}%",
        workers_used.as_millis(),
        me_used.as_millis(),
        used / available * 100.0
    );
    // What no download that hashes can beat here: its hash alone, and curl's work plus the
    // hash spread over every core.
    let floor = sha_alone.max((curl_cpu + sha_alone) / cores as u32);
    println!(
        "  floor: SHA-256 of {} MiB alone {} ms on one core; curl -o file used {} ms of CPU with the media server; the job cannot beat max(hash, (curl's CPU + hash) / {cores} cores) = {} ms = {:.2}x curl",
        args.large_mib,
        sha_alone.as_millis(),
        curl_cpu.as_millis(),
        floor.as_millis(),
        floor.as_secs_f64() / curl.as_secs_f64()
    );
    println!(
        "worker peak RSS (VmHWM): {} MiB before the large job, {} MiB after",
        rss_before.iter().max().unwrap() >> 20,
        rss_after.iter().max().unwrap() >> 20
    );
    drop(workers);
    drop(api);
    let _ = std::fs::remove_dir_all(storage);

    // 4. The HTTP metrics middleware against the bare handler, in this process.
    let (bare, wrapped) =
        micro::middleware(&client, args.middleware_requests, args.clients, 3).await?;
    bare.best.print("baseline: bare handler", None);
    wrapped
        .best
        .print("same handler + metrics middleware", Some(bare.best.rate()));
    // With the cores busy, throughput follows CPU per request: a steadier figure than the
    // rates, which swing ±5% between runs of the same build.
    println!(
        "  CPU per request (server and client, this process, 3 runs each): bare {:.1} µs, with the middleware {:.1} µs: {:.2}x the bare handler's rate at most",
        bare.cpu_us,
        wrapped.cpu_us,
        bare.cpu_us / wrapped.cpu_us
    );
    let work = micro::middleware_work(200_000);
    println!(
        "  the middleware's own work timed alone: {} ns per request = {:.1}% of a bare request's CPU here",
        work.as_nanos(),
        work.as_secs_f64() * 1e6 / bare.cpu_us * 100.0
    );

    // 5. Rendering /metrics as the series grow (this process's recorder).
    let mut first = None;
    for (n, p50, p99) in micro::render(&exporter) {
        let vs = first.map_or("-".to_string(), |(n0, p99_0): (usize, f64)| {
            format!("{:.1}x the p99 at {n0} series", p99 / p99_0)
        });
        first.get_or_insert((n, p99));
        row(
            &format!("/metrics render, {n} series (ms)"),
            "-",
            &format!("{p50:.2}"),
            &format!("{p99:.2}"),
            &vs,
        );
    }
    Ok(())
}

/// The settings of this process's environment that reach the API and the workers too:
/// `CLIPSTASH_*` and `TOKIO_WORKER_THREADS`, to try a setting without a new flag
/// (`CLIPSTASH_HTTP_WORKERS=1 just bench`). The bench's own (`set`: its database, queue and
/// storage folder) win.
fn passed_through(set: &[(&str, String)]) -> Vec<(String, String)> {
    let the_bench_s = [
        "CLIPSTASH_LISTEN",
        "CLIPSTASH_AUTH",
        "CLIPSTASH_METRICS_LISTEN",
    ];
    std::env::vars()
        .filter(|(k, _)| k.starts_with("CLIPSTASH_") || k == "TOKIO_WORKER_THREADS")
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k) && !the_bench_s.contains(&k.as_str()))
        .collect()
}

/// `n` API keys without limits that matter here (100,000 requests a minute and active
/// jobs each), made with `clipstash-api keys create`.
fn create_keys(n: u32, database_url: &str) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let out = std::process::Command::new(clipstash_testkit::procs::binary("clipstash-api"))
                .args(["keys", "create", "--name", &format!("bench-{i}")])
                .args(["--rate", "100000", "--max-active", "100000"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DATABASE_URL", database_url)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "keys create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout)?;
            let key = stdout.lines().next().unwrap_or_default().trim().to_string();
            anyhow::ensure!(!key.is_empty(), "keys create printed no key");
            Ok(key)
        })
        .collect()
}

/// `req` with request `i`'s key (the keys in turn), or as is when auth is off.
fn authorized(req: reqwest::RequestBuilder, keys: &[String], i: usize) -> reqwest::RequestBuilder {
    match keys.get(i % keys.len().max(1)) {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

/// One large job: its wall time, and the CPU the workers and this process used meanwhile.
#[derive(Clone, Copy)]
struct LargeRun {
    wall: Duration,
    workers: Duration,
    bench: Duration,
}

/// The median element of `runs` by `key` (the upper one of an even count).
fn median_by<T: Copy>(runs: &[T], key: impl Fn(&T) -> Duration) -> T {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|r| key(r));
    sorted[sorted.len() / 2]
}

/// Wall time of SHA-256 over `bytes` bytes already in memory, on one core (the crate and
/// code the worker hashes with): the least time any download that hashes its bytes takes.
fn sha256_alone(bytes: u64) -> Duration {
    use sha2::{Digest, Sha256};
    let block: Vec<u8> = (0..1024 * 1024u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8)
        .collect();
    let t = Instant::now();
    let mut hasher = Sha256::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    std::hint::black_box(hasher.finalize());
    t.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_by_takes_the_middle_run_by_its_key() {
        let ms = Duration::from_millis;
        let runs = [(ms(30), 1), (ms(10), 2), (ms(20), 3)];
        assert_eq!(median_by(&runs, |r| r.0), (ms(20), 3));
        assert_eq!(median_by(&runs[..1], |r| r.0), (ms(30), 1));
        assert_eq!(median_by(&runs[..2], |r| r.0), (ms(30), 1));
    }
}
