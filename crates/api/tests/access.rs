//! Access control against real Postgres and Redis: API keys, auth on every /v1 route, job
//! ownership, the per-key request rate (shared by replicas through Redis) and the per-key cap
//! on active jobs. A test binary of its own so access can change without touching api.rs.

use std::time::Duration;

use clipstash_api::Settings;
use clipstash_api::auth::keys::{generate_key, hash_key, new_webhook_secret};
use clipstash_api::auth::{AccessArgs, KeyCache};
use clipstash_db::keys::{self, NewKey};
use clipstash_testkit::procs::{Proc, wait_healthy};
use clipstash_testkit::{
    OwnRedis, TestDb, TestQueue, free_port, settings as test_settings, wait_for,
};
use serde_json::{Value, json};

type Api = test_settings::RunningApi;

fn settings(db: &TestDb, queue: &TestQueue, access: AccessArgs) -> (Settings, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cs-access-{}", uuid::Uuid::new_v4().simple()));
    let mut s = test_settings::api(test_settings::common(db, queue, &dir));
    s.access = access;
    (s, dir)
}

async fn start(db: &TestDb, queue: &TestQueue, access: AccessArgs) -> Api {
    let (s, storage_dir) = settings(db, queue, access);
    Api::start(s, storage_dir).await
}

/// The real `clipstash-api serve` on a free port with this test's database, queue and a
/// storage folder of its own, one HTTP worker, and `extra` settings; returned once ready,
/// with its base URL and storage folder.
async fn serve_binary(
    db: &TestDb,
    queue: &TestQueue,
    extra: &[(&'static str, &str)],
) -> (Proc, String, std::path::PathBuf) {
    let port = free_port();
    let storage = std::env::temp_dir().join(format!("cs-bin-{}", uuid::Uuid::new_v4().simple()));
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", clipstash_testkit::redis_url()),
        ("CLIPSTASH_QUEUE", queue.name.clone()),
        ("CLIPSTASH_STORAGE_DIR", storage.display().to_string()),
        ("CLIPSTASH_LISTEN", format!("127.0.0.1:{port}")),
        ("CLIPSTASH_HTTP_WORKERS", "1".into()),
    ];
    env.extend(extra.iter().map(|&(k, v)| (k, v.to_owned())));
    let api = Proc::spawn("clipstash-api", &["serve"], &env);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&api, &format!("{base}/readyz")).await;
    (api, base, storage)
}

/// Creates a key straight in Postgres (the CLI has its own test) and returns it.
async fn key(db: &TestDb, name: &str, rate: Option<i32>, max_active: Option<i32>) -> String {
    let key = generate_key().unwrap();
    let id = uuid::Uuid::now_v7();
    let (_, webhook_secret) = new_webhook_secret(id, &Default::default()).unwrap();
    keys::create_key(
        &db.pool,
        id,
        &NewKey {
            name,
            key_hash: &hash_key(&key),
            prefix: &key[..11],
            rate_per_minute: rate,
            max_active_jobs: max_active,
            webhook_secret: &webhook_secret,
        },
    )
    .await
    .unwrap();
    key
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> Resp {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp {
        status,
        headers,
        body,
    }
}

fn header_values(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

async fn submit(api: &Api, key: &str, url: &str) -> Resp {
    call(
        "POST",
        &format!("{}/v1/downloads", api.base),
        Some(key),
        Some(json!({ "url": url })),
    )
    .await
}

const JOB: &str = "/v1/downloads/018f0000-0000-7000-8000-000000000000";
const JOB_FILE: &str = "/v1/downloads/018f0000-0000-7000-8000-000000000000/file";

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_unknown_key_with_401() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let routes = [
        ("POST", "/v1/downloads"),
        ("GET", "/v1/downloads"),
        ("GET", JOB),
        ("DELETE", JOB),
        ("GET", JOB_FILE),
        ("GET", "/v1/storage"),
        ("PUT", "/v1/storage"),
        ("GET", "/v1/no-such-route"),
    ];
    for (method, path) in routes {
        let url = format!("{}{path}", api.base);
        let body = (method == "POST").then(|| json!({"url": "https://a.example/v.mp4"}));
        for (key, code) in [
            (None, "unauthenticated"),
            (Some("cs_not-a-key"), "invalid_api_key"),
        ] {
            let r = call(method, &url, key, body.clone()).await;
            assert_eq!(
                (r.status, r.body["error"]["code"].as_str()),
                (401, Some(code)),
                "{method} {path} with {key:?}: {}",
                r.body
            );
            let challenge = header_values(&r, "www-authenticate");
            assert!(
                challenge.len() == 1 && challenge[0].starts_with("Bearer"),
                "{method} {path}: {challenge:?}"
            );
        }
        // A scheme other than Bearer is no key at all.
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), &url)
            .basic_auth("user", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with Basic");
    }
    // Nothing was recorded by the refused submissions.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // Probes and metrics never need a key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = call("GET", &format!("{}{path}", api.base), None, None).await;
        assert_eq!(r.status, 200, "{path}");
    }
    // With a key, the same routes answer.
    let k = key(&db, "a", None, None).await;
    let r = call("GET", &format!("{}/v1/storage", api.base), Some(&k), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        "GET",
        &format!("{}/v1/no-such-route", api.base),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_the_cache_ttl() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await; // 1 s cache
    let k = key(&db, "soon-revoked", None, None).await;
    let url = format!("{}/v1/downloads", api.base);
    assert_eq!(call("GET", &url, Some(&k), None).await.status, 200);
    // Its use is recorded (in the background, at most once a minute).
    wait_for("last_used_at", Duration::from_secs(10), || async {
        let t: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE name = 'soon-revoked'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        t.map(|_| ())
    })
    .await;

    assert!(keys::revoke_key(&db.pool, "soon-revoked").await.unwrap());
    // Refused once the cached lookup expires; the bound is the TTL plus slack for a slow box.
    let r = wait_for(
        "the revoked key to be refused",
        Duration::from_secs(15),
        || async {
            let r = call("GET", &url, Some(&k), None).await;
            (r.status != 200).then_some(r)
        },
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
}

/// A pool that is closed: a lookup that reaches Postgres through it fails, so a lookup
/// that succeeds came from the cache.
async fn closed_pool(db: &TestDb) -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&db.url)
        .unwrap();
    pool.close().await;
    pool
}

#[tokio::test]
async fn a_key_in_use_is_read_again_before_it_expires_and_refused_once_revoked() {
    let db = TestDb::new().await;
    let k = key(&db, "busy", None, None).await;
    let ttl = Duration::from_millis(600);
    let cache = KeyCache::new(ttl, db.pool.clone());
    assert!(cache.lookup(&db.pool, &k).await.unwrap().is_some());

    // Five TTLs of requests, none of which may reach Postgres: the refresh keeps it fresh.
    let closed = closed_pool(&db).await;
    let until = std::time::Instant::now() + 5 * ttl;
    while std::time::Instant::now() < until {
        let found = cache.lookup(&closed, &k).await;
        assert!(
            matches!(found, Ok(Some(_))),
            "a key used every 50 ms expired: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked: a refresh reads it as missing, and the cache refuses it without a lookup.
    assert!(keys::revoke_key(&db.pool, "busy").await.unwrap());
    wait_for(
        "the refresh to see the revocation",
        Duration::from_secs(10),
        || async { matches!(cache.lookup(&closed, &k).await, Ok(None)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_live_keys_are_cached_before_their_first_request() {
    let db = TestDb::new().await;
    let (a, b) = (
        key(&db, "a", None, None).await,
        key(&db, "b", None, None).await,
    );
    let revoked = key(&db, "revoked", None, None).await;
    assert!(keys::revoke_key(&db.pool, "revoked").await.unwrap());
    let cache = KeyCache::new(Duration::from_secs(30), db.pool.clone());
    assert_eq!(cache.preload(&db.pool).await.unwrap(), 2);

    let closed = closed_pool(&db).await;
    for k in [&a, &b] {
        assert!(matches!(cache.lookup(&closed, k).await, Ok(Some(_))));
    }
    // Not loaded: its lookup goes to Postgres (here, the closed pool).
    assert!(cache.lookup(&closed, &revoked).await.is_err());
}

#[tokio::test]
async fn the_uses_of_keys_that_fall_due_together_are_written_in_one_statement() {
    let db = TestDb::new().await;
    let mut all = Vec::new();
    for name in ["k1", "k2", "k3", "k4", "k5"] {
        all.push(key(&db, name, None, None).await);
    }
    let cache = KeyCache::new(Duration::from_secs(30), db.pool.clone());
    for k in &all {
        assert!(cache.lookup(&db.pool, k).await.unwrap().is_some());
    }
    // One statement: one transaction, so one `now()` for every key.
    let stamps: Vec<chrono::DateTime<chrono::Utc>> =
        wait_for("every key's last use", Duration::from_secs(10), || async {
            let t: Vec<Option<chrono::DateTime<chrono::Utc>>> =
                sqlx::query_scalar("SELECT last_used_at FROM api_keys ORDER BY name")
                    .fetch_all(&db.pool)
                    .await
                    .unwrap();
            t.into_iter().collect::<Option<Vec<_>>>()
        })
        .await;
    assert_eq!(stamps.len(), 5);
    assert!(stamps.iter().all(|t| *t == stamps[0]), "{stamps:?}");
}

/// `n` live keys written straight into `api_keys` in one statement; returns them.
async fn many_keys(db: &TestDb, n: usize) -> Vec<String> {
    let tokens: Vec<String> = (0..n).map(|_| generate_key().unwrap()).collect();
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| hash_key(t).to_vec()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, name, key_hash, prefix) \
         SELECT gen_random_uuid(), 'bulk-' || n, h, 'csk_bulk' \
         FROM UNNEST($1::bytea[]) WITH ORDINALITY AS t(h, n)",
    )
    .bind(&hashes)
    .execute(&db.pool)
    .await
    .unwrap();
    tokens
}

#[tokio::test]
async fn a_full_cache_evicts_unknown_keys_before_the_loaded_ones() {
    let db = TestDb::new().await;
    let tokens = many_keys(&db, 5_000).await;
    let cache = KeyCache::new(Duration::from_secs(60), db.pool.clone());
    assert_eq!(cache.preload(&db.pool).await.unwrap(), 5_000);
    // A flood of made-up keys fills the rest of the cache (10,000 entries), then one more.
    for _ in 0..5_001 {
        assert!(
            cache
                .lookup(&db.pool, &generate_key().unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }
    let closed = closed_pool(&db).await;
    for t in tokens.iter().step_by(97) {
        assert!(
            matches!(cache.lookup(&closed, t).await, Ok(Some(_))),
            "a loaded key was evicted by unknown ones"
        );
    }
}

#[tokio::test]
async fn a_burst_of_more_keys_than_the_writer_queues_is_recorded_whole() {
    let db = TestDb::new().await;
    let tokens = many_keys(&db, 1_500).await;
    let cache = KeyCache::new(Duration::from_secs(60), db.pool.clone());
    cache.preload(&db.pool).await.unwrap();
    // Cached: 1,500 first uses within a few milliseconds, more than the writer's queue holds.
    for t in &tokens {
        assert!(cache.lookup(&db.pool, t).await.unwrap().is_some());
    }
    wait_for(
        "every key's use recorded",
        Duration::from_secs(15),
        || async {
            let unrecorded: i64 =
                sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE last_used_at IS NULL")
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
            (unrecorded == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_api_starts_with_its_keys_already_cached() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let k = key(&db, "made-before-the-start", None, None).await;
    // A minute's cache: no refresh runs during the test (one every 30 s).
    let access = AccessArgs {
        auth_cache_ttl: Duration::from_secs(60),
        ..test_settings::access()
    };
    let api = start(&db, &queue, access).await;
    // Revoked before its first request: a lookup would refuse it, the entry loaded at start
    // still lets it through (a revocation reaches a replica within the TTL).
    assert!(
        keys::revoke_key(&db.pool, "made-before-the-start")
            .await
            .unwrap()
    );
    let r = call("GET", &format!("{}/v1/downloads", api.base), Some(&k), None).await;
    assert_eq!(
        r.status, 200,
        "the key was looked up, not loaded at start: {:?}",
        r.body
    );
}

#[tokio::test]
async fn a_key_sees_lists_and_deletes_only_its_own_jobs() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let a = key(&db, "a", None, None).await;
    let b = key(&db, "b", None, None).await;
    let r = submit(&api, &a, "https://a.example/a.mp4").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job_a = r.body["id"].as_str().unwrap().to_string();
    let r = submit(&api, &b, "https://a.example/b.mp4").await;
    let job_b = r.body["id"].as_str().unwrap().to_string();

    let job_url = |id: &str| format!("{}/v1/downloads/{id}", api.base);
    // B cannot read or cancel A's job: the same 404 as a job that does not exist.
    for method in ["GET", "DELETE"] {
        let r = call(method, &job_url(&job_a), Some(&b), None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method}"
        );
    }
    let r = call("GET", &job_url(&job_a), Some(&a), None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("queued")));
    // Nor its file: B gets the missing-job 404, A the no-file-yet 404.
    let file_url = format!("{}/file", job_url(&job_a));
    let r = call("GET", &file_url, Some(&b), None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = call("GET", &file_url, Some(&a), None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("file_not_found"))
    );

    for (k, own) in [(&a, &job_a), (&b, &job_b)] {
        let r = call("GET", &format!("{}/v1/downloads", api.base), Some(k), None).await;
        let ids: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [own.as_str()]);
    }
    let r = call("DELETE", &job_url(&job_a), Some(&a), None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("cancelled"))
    );
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT api_key_id FROM jobs WHERE id = $1::uuid")
            .bind(&job_b)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(owner.is_some(), "a job created with a key belongs to it");
}

#[tokio::test]
async fn the_request_over_the_rate_is_refused_with_retry_after_and_ratelimit_headers() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let n = 5;
    let k = key(&db, "slow", Some(n), None).await;
    let url = format!("{}/v1/storage", api.base);
    for i in 0..n {
        let r = call("GET", &url, Some(&k), None).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(
            header_values(&r, "ratelimit-policy"),
            [r#""default";q=5;w=60"#]
        );
        let rl = header_values(&r, "ratelimit");
        assert!(
            rl.len() == 1 && rl[0].starts_with(&format!("\"default\";r={};t=", n - 1 - i)),
            "request {i}: {rl:?}"
        );
    }
    let r = call("GET", &url, Some(&k), None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{}",
        r.body
    );
    let retry: u64 = header_values(&r, "retry-after")[0].parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        header_values(&r, "ratelimit-policy"),
        [r#""default";q=5;w=60"#]
    );
    assert_eq!(
        header_values(&r, "ratelimit"),
        [format!("\"default\";r=0;t={retry}")]
    );
    // Another key has a budget of its own.
    let other = key(&db, "other", Some(n), None).await;
    assert_eq!(call("GET", &url, Some(&other), None).await.status, 200);
}

#[tokio::test]
async fn two_api_instances_sharing_redis_share_one_budget() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let one = start(&db, &queue, test_settings::access()).await;
    let two = start(&db, &queue, test_settings::access()).await;
    let n = 6;
    let k = key(&db, "shared", Some(n), None).await;
    // Alternating between the instances: each sees only half the requests, so only a
    // shared budget refuses the 7th.
    for i in 0..n {
        let api = if i % 2 == 0 { &one } else { &two };
        let r = call("GET", &format!("{}/v1/storage", api.base), Some(&k), None).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    for api in [&one, &two] {
        let r = call("GET", &format!("{}/v1/storage", api.base), Some(&k), None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (429, Some("rate_limited"))
        );
    }
}

/// Concurrent requests share rate-limit script calls (`auth/limit.rs`), judged one after
/// another: of 40 requests of one key at once with a budget of 10, exactly 10 pass, each told
/// a different remaining count (9 down to 0), and another key's requests in the same burst
/// all pass on a budget of their own.
#[tokio::test]
async fn a_burst_of_one_key_spends_its_budget_once_per_request() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let n = 10;
    let (k, other) = (
        key(&db, "burst", Some(n), None).await,
        key(&db, "other", Some(1_000), None).await,
    );
    let url = format!("{}/v1/storage", api.base);
    let (k, other, url) = (&k, &other, &url);
    let burst = (0..60).map(|i| async move {
        let theirs = i % 3 == 2;
        let key = if theirs { other } else { k };
        (theirs, call("GET", url, Some(key), None).await)
    });
    let answers = futures_util::future::join_all(burst).await;
    let (theirs, ours): (Vec<_>, Vec<_>) = answers.into_iter().partition(|(o, _)| *o);
    assert!(theirs.iter().all(|(_, r)| r.status == 200));
    let mut remaining: Vec<u32> = ours
        .iter()
        .filter(|(_, r)| r.status == 200)
        .map(|(_, r)| {
            let rl = &header_values(r, "ratelimit")[0];
            let r = rl.split(";r=").nth(1).unwrap().split(';').next().unwrap();
            r.parse().unwrap()
        })
        .collect();
    remaining.sort();
    assert_eq!(remaining, (0..n as u32).collect::<Vec<_>>());
    for (_, r) in ours.iter().filter(|(_, r)| r.status != 200) {
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (429, Some("rate_limited"))
        );
    }
}

/// The rate limit fails open: with Redis stalled (SIGSTOP) a request passes once the check
/// times out, and with Redis gone at once, both without rate headers; with Redis back,
/// requests are counted again.
#[tokio::test]
async fn requests_pass_uncounted_while_redis_is_stalled_or_gone() {
    let (db, queue, mut redis) = (
        TestDb::new().await,
        TestQueue::new(),
        OwnRedis::start().await,
    );
    let (mut s, storage_dir) = settings(&db, &queue, test_settings::access());
    s.common.redis.redis_url = redis.url().into();
    let api = Api::start(s, storage_dir).await;
    let k = key(&db, "open", Some(1_000), None).await;
    let url = format!("{}/v1/storage", api.base);
    let counted = |r: &Resp| !header_values(r, "ratelimit").is_empty();
    let r = call("GET", &url, Some(&k), None).await;
    assert!(r.status == 200 && counted(&r), "{:?}", r.headers);

    redis.pause();
    let stalled = futures_util::future::join_all((0..3).map(|_| call("GET", &url, Some(&k), None)));
    // Well under the Redis connection's own 10 s response timeout.
    let stalled = tokio::time::timeout(Duration::from_secs(3), stalled)
        .await
        .expect("a stalled Redis held requests past the check's timeout");
    assert!(stalled.iter().all(|r| r.status == 200 && !counted(r)));
    redis.resume();
    let r = call("GET", &url, Some(&k), None).await;
    assert!(r.status == 200 && counted(&r), "{:?}", r.headers);

    redis.kill();
    let r = call("GET", &url, Some(&k), None).await;
    assert!(r.status == 200 && !counted(&r), "{:?}", r.headers);
    redis.restart().await;
    wait_for("counted again", Duration::from_secs(10), || async {
        let r = call("GET", &url, Some(&k), None).await;
        (r.status == 200 && counted(&r)).then_some(())
    })
    .await;
}

/// A key whose rate state Redis cannot read (here, a list where the number should be) has
/// its requests let through uncounted; the other keys judged in the same script calls are
/// counted as usual.
#[tokio::test]
async fn an_unreadable_rate_state_lets_only_its_own_key_through_uncounted() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let (broken, fine) = (
        key(&db, "broken", Some(5), None).await,
        key(&db, "fine", Some(1_000), None).await,
    );
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'broken'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut conn = clipstash_queue::connect(&clipstash_testkit::redis_url().into())
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(format!("{}:ratelimit:{id}", queue.name))
        .arg("not a number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/v1/storage", api.base);
    let (broken, fine, url) = (&broken, &fine, &url);
    let burst = (0..30).map(|i| async move {
        let key = if i % 2 == 0 { broken } else { fine };
        (i % 2 == 0, call("GET", url, Some(key), None).await)
    });
    for (is_broken, r) in futures_util::future::join_all(burst).await {
        assert_eq!(r.status, 200, "{}", r.body);
        let counted = !header_values(&r, "ratelimit").is_empty();
        assert_eq!(counted, !is_broken, "{:?}", r.headers);
    }
}

#[tokio::test]
async fn concurrent_submits_never_exceed_the_active_jobs_cap() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let one = start(&db, &queue, test_settings::access()).await;
    let two = start(&db, &queue, test_settings::access()).await;
    let cap = 3;
    let k = key(&db, "capped", None, Some(cap)).await;
    let submits = (0..10).map(|i| {
        let api = if i % 2 == 0 { &one } else { &two };
        submit(api, &k, "https://a.example/v.mp4")
    });
    let answers = futures_util::future::join_all(submits).await;
    let accepted = answers.iter().filter(|r| r.status == 202).count();
    assert_eq!(accepted, cap as usize);
    for r in answers.iter().filter(|r| r.status != 202) {
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (429, Some("too_many_active_jobs")),
            "{}",
            r.body
        );
        assert!(header_values(r, "retry-after")[0].parse::<u64>().unwrap() >= 1);
        assert!(header_values(r, "ratelimit-policy").contains(&format!("\"active-jobs\";q={cap}")));
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running', 'retrying')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(active, i64::from(cap));

    // A finished job frees its place.
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded' WHERE id = (SELECT id FROM jobs ORDER BY id LIMIT 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        submit(&one, &k, "https://a.example/w.mp4").await.status,
        202
    );
    assert_eq!(
        submit(&two, &k, "https://a.example/x.mp4").await.status,
        429
    );
}

/// Runs `clipstash-api keys ...` to completion; returns (success, stdout, stderr).
async fn keys_cli(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(clipstash_testkit::procs::binary("clipstash-api"))
        .arg("keys")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn keys_create_list_revoke_through_the_real_binary() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let (ok, key, err) = keys_cli(
        &db,
        &[
            "create",
            "--name",
            "ci",
            "--rate",
            "30",
            "--max-active",
            "2",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let mut lines = key.lines();
    let key = lines.next().unwrap_or("").to_string();
    assert!(key.starts_with("cs_") && key.len() == 67, "{key:?}");
    let whsec = lines.next().unwrap_or("");
    assert!(
        whsec.starts_with("whsec_") && whsec.len() == 6 + 44,
        "{whsec:?}"
    );
    let (ok, _, err) = keys_cli(&db, &["create", "--name", "ci"]).await;
    assert!(!ok && err.contains("already exists"), "{err}");

    let (ok, list, err) = keys_cli(&db, &["list"]).await;
    assert!(ok, "{err}");
    assert!(
        !list.contains(&key) && !list.contains(&key[11..20]),
        "list shows the key:\n{list}"
    );
    let line = list.lines().find(|l| l.starts_with("ci ")).expect(&list);
    assert!(
        line.contains(&key[..11]) && line.contains("30") && line.contains("live"),
        "{line}"
    );

    // The real server with auth on accepts it, then refuses it once revoked.
    let (api, base, storage) =
        serve_binary(&db, &queue, &[("CLIPSTASH_AUTH_CACHE_TTL", "1s")]).await;
    assert!(
        !api.log_text().contains("CLIPSTASH_AUTH=off"),
        "auth is required by default"
    );
    let url = format!("{base}/v1/downloads");
    assert_eq!(call("GET", &url, Some(&key), None).await.status, 200);
    assert_eq!(call("GET", &url, None, None).await.status, 401);

    let (ok, out, err) = keys_cli(&db, &["revoke", "ci"]).await;
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (ok, _, _) = keys_cli(&db, &["revoke", "ci"]).await;
    assert!(!ok, "revoking twice is an error");
    let (_, list, _) = keys_cli(&db, &["list"]).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("ci ") && l.contains("revoked")),
        "{list}"
    );
    wait_for(
        "the revoked key to be refused",
        Duration::from_secs(15),
        || async { (call("GET", &url, Some(&key), None).await.status == 401).then_some(()) },
    )
    .await;

    // Refusals are counted by reason, with no key in any label.
    let metrics = call("GET", &format!("{base}/metrics"), None, None).await;
    let text = metrics.body.as_str().unwrap().to_string();
    let rejected: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("http_requests_rejected_total{reason=\"unauthenticated\"} "))
        .expect(&text)
        .parse()
        .unwrap();
    assert!(rejected >= 2.0, "{rejected}");
    assert!(!text.contains(&key[..11]));
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test]
async fn auth_off_is_announced_loudly() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let (api, base, storage) = serve_binary(&db, &queue, &[("CLIPSTASH_AUTH", "off")]).await;
    let log = api.log_text();
    assert!(
        log.contains("WARN") && log.contains("CLIPSTASH_AUTH=off"),
        "{log}"
    );
    assert_eq!(
        call("GET", &format!("{base}/v1/downloads"), None, None)
            .await
            .status,
        200
    );
    let _ = std::fs::remove_dir_all(storage);
}

/// `CLIPSTASH_RUNTIME_THREADS` sizes the real server's own runtime (one thread unless set),
/// as the runtime itself reports at start-up.
#[tokio::test]
async fn the_api_runtime_has_the_threads_it_is_given() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    for (set, expected) in [(None, 1), (Some("3"), 3)] {
        let mut extra = vec![("CLIPSTASH_AUTH", "off")];
        extra.extend(set.map(|n| ("CLIPSTASH_RUNTIME_THREADS", n)));
        let (api, _, storage) = serve_binary(&db, &queue, &extra).await;
        // The line is logged once the server is built, which may be just after it answers.
        let listening = wait_for("the start-up line", Duration::from_secs(10), || async {
            api.log_text()
                .lines()
                .find(|l| l.contains("clipstash-api listening"))
                .map(str::to_owned)
        })
        .await;
        assert!(
            listening.ends_with(&format!(" runtime_threads={expected}")),
            "{set:?}: {listening}"
        );
        drop(api);
        let _ = std::fs::remove_dir_all(storage);
    }
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_api_key_and_replays_pass_the_cap() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, test_settings::access()).await;
    let a = key(&db, "a", None, Some(1)).await;
    let b = key(&db, "b", None, None).await;
    let post = |k: String, url: &'static str| {
        let base = api.base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/downloads"))
                .bearer_auth(k)
                .header("Idempotency-Key", "order-42")
                .json(&json!({ "url": url }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, first) = post(a.clone(), "https://a.example/v.mp4").await;
    assert_eq!(code, 202, "{first}");
    // The same Idempotency-Key from another API key is another job.
    let (code, other) = post(b.clone(), "https://a.example/v.mp4").await;
    assert_eq!(code, 202, "{other}");
    assert_ne!(first["id"], other["id"]);
    // A's replay is answered although A is at its cap of one active job...
    let (code, replay) = post(a.clone(), "https://a.example/v.mp4").await;
    assert_eq!((code, &replay["id"]), (200, &first["id"]));
    // ...while a new submit by A is not, and the key with another body is refused first.
    let r = submit(&api, &a, "https://a.example/w.mp4").await;
    assert_eq!(r.body["error"]["code"], "too_many_active_jobs");
    let (code, reused) = post(a, "https://a.example/w.mp4").await;
    assert_eq!(
        (code, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
}
