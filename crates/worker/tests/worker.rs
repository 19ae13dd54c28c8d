//! The worker against real Postgres, Redis, local storage and a local media server.

mod common;

use chrono::Utc;
use clipstash_domain::DownloadJob;
use std::time::Duration;
use uuid::Uuid;

use clipstash_testkit::OwnRedis;
use clipstash_testkit::{MediaServer, media_sha256, wait_for};
use common::Env;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn media_of_every_size_is_streamed_into_storage_intact() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let worker = env.start_worker(env.settings()).await;
    // From one byte to past several upload parts (8 MiB each), plus a chunked response.
    let cases: Vec<(String, u64, u64)> =
        [0u64, 1, 64 * 1024, 9 * 1024 * 1024 + 7, 130 * 1024 * 1024]
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("/media/{n}/{i}/size"), n, i as u64))
            .chain([(
                format!("/chunked/{}/77/c", 3 * 1024 * 1024 + 5),
                3 * 1024 * 1024 + 5,
                77,
            )])
            .collect();
    let mut ids = Vec::new();
    for (path, _, _) in &cases {
        ids.push(env.submit(&media.url(path)).await);
    }
    let mut total = 0;
    for ((path, size, seed), id) in cases.iter().zip(&ids) {
        let job = env.finished(*id, LIMIT).await;
        assert_eq!(
            job.status.as_str(),
            "succeeded",
            "{path}: {:?}",
            job.error_message
        );
        assert_eq!(job.size_bytes, Some(*size as i64), "{path}");
        let expected = media_sha256(*size, *seed);
        assert_eq!(job.sha256.as_deref(), Some(expected.as_str()), "{path}");
        assert_eq!(job.content_type.as_deref(), Some("video/mp4"));
        assert_eq!(job.attempts, 1);
        assert_eq!(job.provider.as_deref(), Some("local"));
        assert!(job.started_at.is_some() && job.finished_at.is_some());
        // What is on disk is what the source sent.
        let on_disk = std::fs::read(env.object_path(*id)).unwrap();
        assert_eq!(on_disk.len() as u64, *size);
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&on_disk)),
            expected,
            "{path}"
        );
        total += *size as i64;
    }
    assert_eq!(env.usage().await, (total, cases.len() as i64));
    worker.shutdown().await;
}

#[tokio::test]
async fn failures_end_with_their_code_after_the_right_number_of_attempts() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let mut settings = env.settings();
    settings.max_file_bytes = 1024 * 1024;
    let worker = env.start_worker(settings).await;
    // (path, final status, error code, attempts, requests the source saw)
    let cases = [
        ("/status/404/a", "failed", Some("source_not_found"), 1, 1),
        ("/status/410/a", "failed", Some("source_not_found"), 1, 1),
        ("/status/403/a", "failed", Some("source_client_error"), 1, 1),
        ("/status/500/a", "failed", Some("source_server_error"), 4, 4),
        ("/status/429/a", "failed", Some("source_rate_limited"), 4, 4),
        ("/flaky/2/5000/3/a", "succeeded", None, 3, 3),
        ("/truncated/100000/1/a", "failed", Some("truncated"), 4, 4),
        ("/stall/a", "failed", Some("timeout"), 4, 4),
        // A web page under `auto` goes to yt-dlp, which this worker does not have
        // (`direct` refusing a page is in ytdlp.rs).
        ("/html/a", "failed", Some("ytdlp_unavailable"), 1, 1),
        ("/media/2000000/1/a", "failed", Some("file_too_large"), 1, 1),
        (
            "/chunked/2000000/1/a",
            "failed",
            Some("file_too_large"),
            1,
            1,
        ),
    ];
    let mut ids = Vec::new();
    for (path, ..) in &cases {
        ids.push(env.submit(&media.url(path)).await);
    }
    // Nothing listens on this port: a connection error, retried.
    let closed = clipstash_testkit::free_port();
    let refused = env
        .submit(&format!("http://127.0.0.1:{closed}/v.mp4"))
        .await;

    for ((path, status, code, attempts, hits), id) in cases.iter().zip(&ids) {
        let job = env.finished(*id, LIMIT).await;
        assert_eq!(
            job.status.as_str(),
            *status,
            "{path}: {:?}",
            job.error_message
        );
        assert_eq!(
            job.error_code.map(|c| c.as_str()),
            *code,
            "{path}: {:?}",
            job.error_message
        );
        assert_eq!(job.attempts, *attempts, "{path}");
        assert_eq!(media.hits(path), *hits, "{path}");
        assert!(job.finished_at.is_some());
    }
    let job = env.finished(refused, LIMIT).await;
    assert_eq!(
        (job.error_code.map(|c| c.as_str()), job.attempts),
        (Some("connection_failed"), 4)
    );

    // Failed attempts leave nothing behind: only the one success is stored and counted.
    let files = env.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(env.usage().await, (5000, 1));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_job_delivered_twice_is_stored_and_counted_once() {
    // End to end: the second delivery arrives after the first finished and is skipped.
    // The two guards behind it, the claim's `Busy` and completion's ON CONFLICT, are each
    // tested on their own in crates/db/tests/transitions.rs.
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let url = media.url("/media/777777/5/dup");
    let id = env.submit(&url).await;
    let created = env.job(id).await.created_at;
    env.push(id, &url, created).await;
    let worker = env.start_worker(env.settings()).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    wait_for("both deliveries handled", LIMIT, || async {
        let s = env.producer.stats().await.unwrap();
        (s.pending + s.running + s.scheduled == 0).then_some(())
    })
    .await;
    assert_eq!(env.usage().await, (777777, 1));
    assert_eq!(env.job(id).await.attempts, 1);
    assert_eq!(media.hits("/media/777777/5/dup"), 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_job_that_keeps_killing_workers_is_given_up() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let url = media.url("/media/10/1/poison");
    let id = env.submit(&url).await;
    // As if four deliveries had each died with their worker.
    sqlx::query("UPDATE jobs SET status = 'running', attempts = 4 WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let worker = env.start_worker(env.settings()).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (job.status.as_str(), job.error_code.map(|c| c.as_str())),
        ("failed", Some("redelivery_limit"))
    );
    assert_eq!(media.hits("/media/10/1/poison"), 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn cancelled_jobs_are_skipped() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let id = env.submit(&media.url("/media/10/1/cancel")).await;
    clipstash_db::transitions::delete_job(&env.db.pool, id)
        .await
        .unwrap();
    let witness = env.submit(&media.url("/media/10/1/after")).await;
    let worker = env.start_worker(env.settings()).await;
    assert_eq!(
        env.finished(witness, LIMIT).await.status.as_str(),
        "succeeded"
    );
    wait_for("queue drained", LIMIT, || async {
        let s = env.producer.stats().await.unwrap();
        (s.pending + s.running == 0).then_some(())
    })
    .await;
    assert_eq!(env.job(id).await.status.as_str(), "cancelled");
    assert_eq!(media.hits("/media/10/1/cancel"), 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn shutdown_hands_unfinished_jobs_back_and_deregisters() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    // Held after its first 64 KiB until released: running when the worker is told to stop.
    let slow = "/held/4000000/2/handback/a";
    let id = env.submit(&media.url(slow)).await;
    let first = env.start_worker(env.settings()).await;
    wait_for("the download to start", LIMIT, || async {
        (media.hits(slow) == 1).then_some(())
    })
    .await;
    let name = first.name.clone();
    first.shutdown().await;

    // Handed back at once (not after the orphan timeout), and no stale registration left.
    let stats = env.producer.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running), (1, 0), "{stats:?}");
    let mut conn = env.queue.conn().await;
    let workers: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:workers", env.queue.name))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!workers.iter().any(|w| w.starts_with(&name)), "{workers:?}");
    assert_eq!(env.job(id).await.status.as_str(), "running");

    media.release("handback");
    let second = env.start_worker(env.settings()).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    assert_eq!(
        job.sha256.as_deref(),
        Some(media_sha256(4_000_000, 2).as_str())
    );
    assert_eq!(job.attempts, 2);
    assert_eq!(env.usage().await, (4_000_000, 1));
    second.shutdown().await;
}

#[tokio::test]
async fn conflicting_settings_stop_start_up_with_a_message_naming_them() {
    let env = Env::new().await;
    let mut settings = env.settings();
    settings.shutdown_grace = Duration::from_secs(10);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exporter = metrics_core::Exporter::detached(metrics_core::Component::Worker);
    let err = clipstash_worker::Worker::build(settings, exporter, listener)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("CLIPSTASH_SHUTDOWN_GRACE") && err.contains("CLIPSTASH_HEARTBEAT_INTERVAL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_job_cancelled_while_waiting_to_retry_stays_cancelled() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let mut settings = env.settings();
    // A backoff no test outlives: the delete below lands inside it whatever the timing.
    settings.retry_base = Duration::from_secs(3600);
    let worker = env.start_worker(settings).await;
    let id = env.submit(&media.url("/status/503/backoff")).await;
    wait_for("the job to wait for its retry", LIMIT, || async {
        (env.job(id).await.status.as_str() == "retrying").then_some(())
    })
    .await;
    let outcome = clipstash_db::transitions::delete_job(&env.db.pool, id)
        .await
        .unwrap();
    assert!(
        matches!(outcome, clipstash_db::DeleteOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
    // Shutting down ends the backoff; the job goes back to the queue, and the next worker
    // to take it finds it cancelled and lets go without another attempt. (The attempt loop's
    // own check after a backoff is tested directly in crates/db/tests.)
    worker.shutdown().await;
    let second = env.start_worker(env.settings()).await;
    wait_for("the second worker to let go", LIMIT, || async {
        let s = env.producer.stats().await.unwrap();
        (s.running + s.pending + s.scheduled == 0).then_some(())
    })
    .await;
    let job = env.job(id).await;
    assert_eq!((job.status.as_str(), job.attempts), ("cancelled", 1));
    assert_eq!(media.hits("/status/503/backoff"), 1);
    second.shutdown().await;
}

#[tokio::test]
async fn a_busy_worker_does_not_hoard_jobs_other_workers_could_run() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let mut settings = env.settings();
    settings.concurrency = 2;
    let first = env.start_worker(settings.clone()).await;
    // Eight downloads held open until the test releases them.
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            env.submit(&media.url(&format!("/held/1300000/{i}/hoard/{i}")))
                .await,
        );
    }
    let running = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'running'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
        n
    };
    wait_for("the first worker to be busy", LIMIT, || async {
        (running().await == 2).then_some(())
    })
    .await;
    // It holds at most one fetched batch beyond what it runs (batch size = concurrency)...
    let stats = env.producer.stats().await.unwrap();
    assert!(stats.running <= 4, "{stats:?}");
    assert!(stats.pending >= 4, "{stats:?}");
    // ...so a second worker finds work at once instead of waiting for the first to finish.
    let second = env.start_worker(settings).await;
    wait_for("both workers busy", LIMIT, || async {
        (running().await == 4).then_some(())
    })
    .await;
    media.release("hoard");
    for id in ids {
        assert_eq!(env.finished(id, LIMIT).await.status.as_str(), "succeeded");
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_job_recorded_but_never_enqueued_is_swept_in_and_succeeds() {
    // The API died between its INSERT and its push: only Postgres knows the job.
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let path = "/media/4321/7/lost";
    let id = env.insert_only(&media.url(path)).await;
    let worker = env.start_worker(env.settings()).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    assert_eq!(job.attempts, 1);
    assert_eq!(media.hits(path), 1);
    assert_eq!(env.usage().await, (4321, 1));
    worker.shutdown().await;
}

#[tokio::test]
async fn every_accepted_job_succeeds_once_after_redis_loses_everything() {
    let redis = OwnRedis::start().await;
    let env = Env::with_redis(Some(redis.url())).await;
    let media = MediaServer::start().await;
    let mut settings = env.settings();
    // One slot: the held job runs, the others wait in Redis when it is flushed.
    settings.concurrency = 1;
    let held = "/held/300000/3/flush/a";
    let held_id = env.submit(&media.url(held)).await;
    let worker = env.start_worker(settings).await;
    wait_for("the held download to start", LIMIT, || async {
        (media.hits(held) == 1).then_some(())
    })
    .await;
    let mut waiting = Vec::new();
    for i in 0..4u64 {
        let path = format!("/media/{}/{i}/waiting", 1000 + i);
        waiting.push((env.submit(&media.url(&path)).await, path, 1000 + i as i64));
    }
    // All five are in Redis (the worker may have prefetched one of the four).
    let stats = env.producer.stats().await.unwrap();
    assert_eq!(stats.pending + stats.running, 5, "{stats:?}");

    redis.flushall().await;
    media.release("flush");

    let job = env.finished(held_id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    let mut total = 300_000;
    for (id, path, size) in &waiting {
        let job = env.finished(*id, LIMIT).await;
        assert_eq!(job.status.as_str(), "succeeded", "{path}");
        assert_eq!(job.attempts, 1, "{path}");
        assert_eq!(media.hits(path), 1, "{path} downloaded once");
        total += size;
    }
    assert_eq!(env.usage().await, (total, 5), "each job counted once");
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(files, 5);
    worker.shutdown().await;
}

/// Keys and hash fields under a queue's prefix.
async fn redis_footprint(env: &Env) -> (usize, usize) {
    let mut conn = env.queue.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.queue.name))
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields: usize = redis::cmd("HLEN")
        .arg(format!("{}:data", env.queue.name))
        .query_async(&mut conn)
        .await
        .unwrap();
    (keys.len(), fields)
}

#[tokio::test]
async fn redis_holds_only_live_jobs_and_nothing_runs_twice() {
    const N: u64 = 200;
    let env = Env::new().await;
    let media = MediaServer::start().await;
    // First without pruning (the first sweep is an hour away)...
    let mut settings = env.settings();
    settings.sweep_interval = Duration::from_secs(3600);
    let worker = env.start_worker(settings).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            env.submit(&media.url(&format!("/media/100/{i}/many")))
                .await,
        );
    }
    for id in &ids {
        assert_eq!(env.finished(*id, LIMIT).await.status.as_str(), "succeeded");
    }
    worker.shutdown().await;
    let before = redis_footprint(&env).await;
    eprintln!("after {N} jobs, unpruned: (keys, data fields) = {before:?}");
    assert!(before.0 as u64 > N, "{before:?}");

    // ...then with the sweeper pruning every 200 ms: a small constant remains.
    let worker = env.start_worker(env.settings()).await;
    let after = wait_for("redis to hold only live jobs", LIMIT, || async {
        let f = redis_footprint(&env).await;
        (f.0 <= 4 && f.1 == 0).then_some(f)
    })
    .await;
    eprintln!("after pruning: (keys, data fields) = {after:?}");

    // The sweeper saw healthy jobs only: nothing was enqueued again, run twice or counted twice.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(env.job(*id).await.attempts, 1);
        assert_eq!(media.hits(&format!("/media/100/{i}/many")), 1);
    }
    assert_eq!(env.usage().await, (100 * N as i64, N as i64));
    worker.shutdown().await;
}

#[tokio::test]
async fn retention_deletes_old_finished_rows_but_never_a_stored_object() {
    let env = Env::new().await;
    let insert = |status: &'static str, finished_days_ago: Option<i32>, stored: bool| {
        let pool = env.db.pool.clone();
        async move {
            let id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO jobs (id, url, source, status, finished_at, updated_at) \
                 VALUES ($1, 'https://x.example/v', 'direct', $2, \
                         now() - make_interval(days => $3), now() - make_interval(days => $3))",
            )
            .bind(id)
            .bind(status)
            .bind(finished_days_ago)
            .execute(&pool)
            .await
            .unwrap();
            if stored {
                sqlx::query(
                    "INSERT INTO stored_files (job_id, provider, object_key, size_bytes) \
                     VALUES ($1, 'local', 'downloads/x', 1)",
                )
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            }
            id
        }
    };
    let kept = [
        insert("succeeded", Some(40), true).await, // its object is still stored
        insert("failed", Some(2), false).await,    // too recent
        insert("succeeded", Some(2), true).await,
    ];
    let gone = [
        insert("failed", Some(40), false).await,
        insert("cancelled", Some(40), false).await,
        insert("succeeded", Some(40), false).await, // object deleted by the client
    ];
    let mut settings = env.settings();
    settings.job_retention = Some(Duration::from_secs(30 * 86400));
    let worker = env.start_worker(settings).await;
    wait_for("old finished rows to go", LIMIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1)")
            .bind(&gone[..])
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1)")
        .bind(&kept[..])
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(files, 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_running_job_whose_worker_is_gone_is_reaped_but_a_live_one_is_not() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let (live_path, dead_path) = ("/media/2000/1/live", "/media/3000/2/dead");
    let live = env.insert_only(&media.url(live_path)).await;
    let dead = env.insert_only(&media.url(dead_path)).await;
    // Both were claimed an hour ago; Redis has lost them (never pushed here).
    sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = 1, started_at = now(), \
         updated_at = now() - interval '1 hour' WHERE id = ANY($1)",
    )
    .bind(&[live, dead][..])
    .execute(&env.db.pool)
    .await
    .unwrap();
    // A live worker's session still holds `live`'s lock.
    let mut holder = env.db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(clipstash_db::transitions::lock_key(live))
        .execute(&mut *holder)
        .await
        .unwrap();

    let s = env.settings();
    let sweeper = clipstash_worker::sweeper::Sweeper {
        pool: env.db.pool.clone(),
        queue: env.producer.clone(),
        interval: s.sweep_interval,
        grace: s.sweep_grace,
        orphan_after: s.common.redis.orphan_timeout(),
        retention: None,
    };
    let report = sweeper.sweep().await.unwrap();
    assert_eq!((report.orphans, report.requeued), (1, 0), "{report:?}");
    assert_eq!(
        env.producer.missing(&[live, dead]).await.unwrap(),
        vec![live],
        "only the dead worker's job is back in Redis"
    );
    let again = sweeper.sweep().await.unwrap();
    assert_eq!(again.orphans, 0, "Redis holds it now: {again:?}");

    let worker = env.start_worker(env.settings()).await;
    let job = env.finished(dead, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    assert_eq!(job.attempts, 2, "the lost attempt counts");
    assert_eq!(media.hits(dead_path), 1);
    assert_eq!(env.job(live).await.status.as_str(), "running");
    assert_eq!(media.hits(live_path), 0);

    // Its worker dies: the lock goes with the session, and the reaper takes the job.
    drop(holder.detach());
    let job = env.finished(live, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded");
    assert_eq!(env.usage().await, (5000, 2));
    worker.shutdown().await;
}

#[tokio::test]
async fn one_sweep_re_enqueues_a_backlog_larger_than_a_page() {
    // As after a Redis flush with a deep backlog: 1200 queued rows, none in Redis.
    let env = Env::new().await;
    sqlx::query(
        "INSERT INTO jobs (id, url, source, status, updated_at) \
         SELECT gen_random_uuid(), 'https://x.example/v', 'direct', 'queued', \
                now() - interval '1 hour' FROM generate_series(1, 1200)",
    )
    .execute(&env.db.pool)
    .await
    .unwrap();
    let s = env.settings();
    let sweeper = clipstash_worker::sweeper::Sweeper {
        pool: env.db.pool.clone(),
        queue: env.producer.clone(),
        interval: s.sweep_interval,
        grace: s.sweep_grace,
        orphan_after: s.common.redis.orphan_timeout(),
        retention: None,
    };
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(report.requeued, 1200, "{report:?}");
    assert_eq!(env.producer.stats().await.unwrap().pending, 1200);
    // Redis holds them all now: the next sweep pushes nothing.
    assert_eq!(sweeper.sweep().await.unwrap().requeued, 0);
    assert_eq!(env.producer.stats().await.unwrap().pending, 1200);
}

/// apalis puts a task in `{q}:dead` after 25 handler errors in a row (e.g. a long Postgres
/// outage) and keeps its payload and metadata forever; the sweeper forgets them like done
/// ones, and a dead job Postgres still holds as queued comes back through the re-enqueue.
#[tokio::test]
async fn the_sweeper_prunes_dead_tasks_and_requeues_a_dead_job_postgres_still_wants() {
    let env = Env::new().await;
    let finished = env.insert_only("http://127.0.0.1:9/finished").await;
    let live = env.insert_only("http://127.0.0.1:9/live").await;
    sqlx::query(
        "UPDATE jobs SET status = CASE WHEN id = $1 THEN 'failed' ELSE 'queued' END, \
         updated_at = now() - interval '1 hour' WHERE id = ANY($2)",
    )
    .bind(finished)
    .bind(&[finished, live][..])
    .execute(&env.db.pool)
    .await
    .unwrap();
    let q = &env.queue.name;
    let mut conn = env.queue.conn().await;
    for id in [finished, live] {
        env.producer
            .push(&DownloadJob {
                job_id: id,
                url: "http://127.0.0.1:9/x".into(),
                enqueued_at: Utc::now(),
            })
            .await
            .unwrap();
        // As apalis' handle_results leaves a task it gave up on.
        let _: () = redis::pipe()
            .cmd("ZREM")
            .arg(format!("{q}:scheduled"))
            .arg(id.to_string())
            .cmd("LREM")
            .arg(format!("{q}:active"))
            .arg(0)
            .arg(id.to_string())
            .cmd("SADD")
            .arg(format!("{q}:dead"))
            .arg(id.to_string())
            .cmd("HSET")
            .arg(format!("{q}:meta:{id}"))
            .arg("status")
            .arg("Failed")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let s = env.settings();
    let sweeper = clipstash_worker::sweeper::Sweeper {
        pool: env.db.pool.clone(),
        queue: env.producer.clone(),
        interval: s.sweep_interval,
        grace: Duration::from_secs(1),
        orphan_after: s.common.redis.orphan_timeout(),
        retention: None,
    };
    let report = sweeper.sweep().await.unwrap();
    assert_eq!((report.pruned_dead, report.requeued), (2, 1), "{report:?}");
    let dead: usize = redis::cmd("SCARD")
        .arg(format!("{q}:dead"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let has = |id: Uuid| {
        let mut conn = conn.clone();
        let key = format!("{q}:data");
        async move {
            let n: usize = redis::cmd("HEXISTS")
                .arg(key)
                .arg(id.to_string())
                .query_async(&mut conn)
                .await
                .unwrap();
            n == 1
        }
    };
    assert!(
        !has(finished).await,
        "a finished job's payload stays pruned"
    );
    assert!(
        has(live).await,
        "the job Postgres still wants is pushed again"
    );
    let meta: usize = redis::cmd("EXISTS")
        .arg(format!("{q}:meta:{finished}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(meta, 0);
    assert_eq!(env.producer.stats().await.unwrap().pending, 1);
}

/// apalis drops a running job's future when it restarts its worker after a Redis error. A
/// drop while the claim's statement is in flight must not leave the job's advisory lock on
/// a pooled connection: the job would look busy to the reaper forever, stuck `running`
/// (the chaos suite's redis-restart found one).
#[tokio::test]
async fn a_claim_cut_short_never_leaves_its_lock_on_a_pooled_connection() {
    use clipstash_db::transitions;
    use clipstash_sources::{DirectHttp, EgressPolicy, FetchLimits};
    let env = Env::new().await;
    let s = env.settings();
    // One connection: the claim's, returned to the pool or closed.
    let pool = clipstash_db::connect(&s.common.database.database_url, 1)
        .await
        .unwrap();
    let ctx = clipstash_worker::JobContext {
        pool: pool.clone(),
        storage: clipstash_storage::Storage::from_args(&s.common.storage).unwrap(),
        direct: DirectHttp::new(
            FetchLimits {
                idle_timeout: s.idle_timeout,
                connect_timeout: s.connect_timeout,
            },
            EgressPolicy::new(&s.common.network),
        )
        .unwrap(),
        max_file_bytes: s.max_file_bytes,
        max_attempts: 4,
        retry_base: s.retry_base,
        attempt_timeout: s.attempt_timeout,
        shutdown: tokio_util::sync::CancellationToken::new(),
        events: clipstash_queue::events::Publisher::spawn(
            clipstash_queue::connect(&s.common.redis.redis_url)
                .await
                .unwrap(),
            clipstash_queue::events::EventNames::new(&s.common.redis.queue),
        ),
        cancels: Default::default(),
        ytdlp: None,
        secret_key: None,
        session: clipstash_worker::job::LockSession::spawn(pool.clone()),
    };
    let url = "http://127.0.0.1:9/cut-short";
    let id = env.insert_only(url).await;
    // Holding the row makes the claim wait in its UPDATE, after its CTE took the lock.
    let mut blocker = env.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let job = DownloadJob {
        job_id: id,
        url: url.into(),
        enqueued_at: Utc::now(),
    };
    let cut = tokio::time::timeout(Duration::from_millis(500), ctx.process(job)).await;
    assert!(cut.is_err(), "the claim was to be waiting: {cut:?}");
    blocker.rollback().await.unwrap();
    wait_for(
        "the cut-short claim's lock to go",
        Duration::from_secs(10),
        || async {
            let mut c = env.db.pool.acquire().await.unwrap();
            (!transitions::is_locked(&mut c, id).await.unwrap()).then_some(())
        },
    )
    .await;
    pool.close().await;
}

/// The API's push (`lua/push.lua`) puts tasks on the ready list; a job Redis still holds is
/// left as it is however often it is pushed (the sweepers rely on it); and a push larger
/// than one Lua `unpack` takes (~8,000 values) lands whole.
#[tokio::test]
async fn a_job_pushed_again_is_queued_once_and_a_large_push_lands_whole() {
    let env = Env::new().await;
    let q = &env.queue.name;
    let mut conn = env.queue.conn().await;
    let job = DownloadJob {
        job_id: Uuid::now_v7(),
        url: "http://127.0.0.1:9/once".into(),
        enqueued_at: Utc::now(),
    };
    env.producer.push(&job).await.unwrap();
    // As a worker records a try on the task.
    let meta = format!("{q}:meta:{}", job.job_id);
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg("attempts")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    env.producer.push(&job).await.unwrap();
    env.producer
        .push_many(&[job.clone(), job.clone()])
        .await
        .unwrap();
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{q}:active"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ready, [job.job_id.to_string()]);
    let attempts: String = redis::cmd("HGET")
        .arg(&meta)
        .arg("attempts")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(attempts, "1", "a push again must not reset the task");

    let many: Vec<DownloadJob> = (0..9_000)
        .map(|_| DownloadJob {
            job_id: Uuid::now_v7(),
            url: "http://127.0.0.1:9/many".into(),
            enqueued_at: Utc::now(),
        })
        .collect();
    env.producer.push_many(&many).await.unwrap();
    let stats = env.producer.stats().await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (9_001, 0));
}

/// apalis-redis 1.0.0's fetch moves every due task to the ready list in one Lua `unpack`,
/// which fails beyond ~8,000 values: a backlog that large (a burst while workers are down)
/// failed every fetch, for good. Workers now promote due tasks in chunks first.
#[tokio::test]
async fn a_backlog_beyond_luas_unpack_limit_is_still_taken() {
    let env = Env::new().await;
    // Jobs a worker dismisses at once (cancelled), so the test measures taking, not running.
    let ids: Vec<Uuid> = (0..9_000).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO jobs (id, url, source, status, requested_source) \
         SELECT id, 'http://127.0.0.1:9/backlog', 'direct', 'cancelled', 'auto' FROM UNNEST($1::uuid[]) AS t(id)",
    )
    .bind(&ids)
    .execute(&env.db.pool)
    .await
    .unwrap();
    // Written as apalis' own push writes a task, due now in its scheduled set (as an API of
    // an earlier release left them: ours now pushes onto the ready list).
    let q = &env.queue.name;
    let mut pipe = redis::pipe();
    for &job_id in &ids {
        let payload = serde_json::to_string(&DownloadJob {
            job_id,
            url: "http://127.0.0.1:9/backlog".into(),
            enqueued_at: Utc::now(),
        })
        .unwrap();
        pipe.hset(format!("{q}:data"), job_id.to_string(), payload)
            .ignore()
            .hset_multiple(
                format!("{q}:meta:{job_id}"),
                &[
                    ("attempts", "0"),
                    ("max_attempts", "25"),
                    ("status", "Pending"),
                    ("idempotency_key", ""),
                ],
            )
            .ignore()
            .zadd(
                format!("{q}:scheduled"),
                job_id.to_string(),
                Utc::now().timestamp(),
            )
            .ignore();
    }
    let _: () = pipe.query_async(&mut env.queue.conn().await).await.unwrap();
    assert_eq!(env.producer.stats().await.unwrap().pending, 9_000);
    let worker = env.start_worker(env.settings()).await;
    wait_for("the backlog to drain", Duration::from_secs(60), || async {
        let stats = env.producer.stats().await.unwrap();
        (stats.pending == 0 && stats.running == 0).then_some(())
    })
    .await;
    worker.shutdown().await;
}
