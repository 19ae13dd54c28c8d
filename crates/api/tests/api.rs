//! The HTTP API against real Postgres and Redis: a database and a queue prefix per test.

use std::time::Duration;

use clipstash_api::{Application, Settings};
use clipstash_queue::{Queue, RedisArgs};
use clipstash_testkit::{
    MediaServer, OwnRedis, TestDb, TestQueue, media_sha256, settings as test_settings, wait_for,
};
use metrics_core::{Component, Exporter};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct TestApp {
    base: String,
    db: TestDb,
    queue: TestQueue,
    storage_dir: std::path::PathBuf,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

fn settings(
    db: &TestDb,
    queue: &TestQueue,
    redis: RedisArgs,
    storage_dir: &std::path::Path,
) -> Settings {
    let mut common = test_settings::common(db, queue, storage_dir);
    common.redis = redis;
    test_settings::api(common)
}

/// Builds an API whose metrics go to a recorder of its own.
async fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings, Exporter::detached(Component::Api)).await
}

async fn spawn_app_with(redis: Option<RedisArgs>) -> TestApp {
    spawn_app_configured(redis, true).await
}

/// An API with the egress guard on (`allow_private_networks: false`) or off.
async fn spawn_app_configured(redis: Option<RedisArgs>, allow_private_networks: bool) -> TestApp {
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let storage_dir =
        std::env::temp_dir().join(format!("cs-storage-{}", uuid::Uuid::new_v4().simple()));
    let redis = redis.unwrap_or_else(|| queue.args());
    let mut settings = settings(&db, &queue, redis, &storage_dir);
    settings.common.network.allow_private_networks = allow_private_networks;
    let app = build(settings).await.unwrap();
    let base = format!("http://{}", app.addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base,
        db,
        queue,
        storage_dir,
        client: reqwest::Client::new(),
        shutdown,
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(None).await
}

impl TestApp {
    async fn submit(&self, url: &str) -> Value {
        let r = self
            .client
            .post(format!("{}/v1/downloads", self.base))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn delete(&self, id: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(format!("{}/v1/downloads/{id}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

#[tokio::test]
async fn submit_records_the_job_before_answering_and_enqueues_it() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(format!("{}/v1/downloads", app.base))
        .json(&json!({ "url": "https://media.example/v.mp4" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(r.headers().contains_key("x-process-time"));
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/downloads/{id}"));
    assert_eq!(job["status"], "queued");
    assert_eq!(job["url"], "https://media.example/v.mp4");
    assert!(job["created_at"].is_string());

    // In Postgres before the response...
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued");
    // ...and on the Redis queue's ready list, not in its scheduled set.
    let queue = Queue::connect(&app.queue.args()).await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (1, 0));
    let mut conn = app.queue.conn().await;
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}:active", app.queue.name))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ready, [id]);

    let (code, fetched) = app.get(&location).await;
    assert_eq!(code, 200);
    assert_eq!(fetched["id"], id);
    assert_eq!(fetched["attempts"], 0);
    assert_eq!(fetched["error"], Value::Null);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_with_a_stable_code() {
    let app = spawn_app().await;
    let post = |body: String, ct: Option<&'static str>| {
        let mut req = app
            .client
            .post(format!("{}/v1/downloads", app.base))
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        (r#"{"url":"#.into(), json_ct, 400, "invalid_json"),
        ("not json".into(), json_ct, 400, "invalid_json"),
        (r#"{"url": 42}"#.into(), json_ct, 422, "invalid_request"),
        (r#"{}"#.into(), json_ct, 422, "invalid_request"),
        (
            r#"{"url":"https://a.example/x","extra":1}"#.into(),
            json_ct,
            422,
            "invalid_request",
        ),
        (
            r#"{"url":"ftp://a.example/x"}"#.into(),
            json_ct,
            422,
            "invalid_url",
        ),
        (r#"{"url":"not a url"}"#.into(), json_ct, 422, "invalid_url"),
        (r#"{"url":"   "}"#.into(), json_ct, 422, "invalid_url"),
        (
            r#"{"url":"https://user:pw@a.example/x"}"#.into(),
            json_ct,
            422,
            "invalid_url",
        ),
        (
            format!(r#"{{"url":"https://a.example/{}"}}"#, "a".repeat(3000)),
            json_ct,
            422,
            "invalid_url",
        ),
        (
            format!(r#"{{"url":"https://a.example/{}"}}"#, "a".repeat(200_000)),
            json_ct,
            413,
            "payload_too_large",
        ),
        (
            r#"{"url":"https://a.example/x"}"#.into(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            r#"{"url":"https://a.example/x"}"#.into(),
            None,
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in cases {
        let r = post(body.clone(), ct).await.unwrap();
        let got_status = r.status().as_u16();
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("non-JSON answer to {body:.60}: {e}"));
        assert_eq!(
            (got_status, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "body {body:.60}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    for (path, status, code) in [
        ("/v1/downloads?limit=abc", 400, "invalid_query"),
        ("/v1/downloads?limit=0", 400, "invalid_query"),
        ("/v1/downloads?limit=101", 400, "invalid_query"),
        ("/v1/downloads?status=bogus", 400, "invalid_query"),
        ("/v1/downloads?cursor=xyz", 400, "invalid_cursor"),
        ("/v1/downloads/not-a-uuid", 400, "invalid_id"),
        (
            "/v1/downloads/018f0000-0000-7000-8000-000000000000",
            404,
            "not_found",
        ),
        ("/no/such/route", 404, "not_found"),
    ] {
        let (got, v) = app.get(path).await;
        assert_eq!(
            (got, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
    }
    let r = app
        .client
        .put(format!("{}/v1/storage", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    // Every resource says which methods it serves (RFC 9110), health checks and the contract too.
    for (method, path, allow) in [
        ("PUT", "/v1/downloads", "GET, POST"),
        (
            "POST",
            "/v1/downloads/018f0000-0000-7000-8000-000000000000",
            "GET, DELETE",
        ),
        (
            "DELETE",
            "/v1/downloads/018f0000-0000-7000-8000-000000000000/file",
            "GET",
        ),
        ("TRACE", "/healthz", "GET"),
        ("POST", "/readyz", "GET"),
        ("TRACE", "/v1/openapi.json", "GET"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    // Nothing was recorded by the rejected submissions.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn literal_forbidden_addresses_are_refused_at_submit_when_the_guard_is_on() {
    // Nothing fetches here (no worker): the API answers from the parsed URL alone.
    let guarded = spawn_app_configured(None, false).await;
    for url in [
        "http://127.0.0.1/x.mp4",
        "http://2130706433/x.mp4",
        "http://0x7f.1/x.mp4",
        "http://[::1]/x.mp4",
        "http://[::ffff:127.0.0.1]/x.mp4",
    ] {
        let r = guarded
            .client
            .post(format!("{}/v1/downloads", guarded.base))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("forbidden_address")),
            "{url}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("loopback")
        );
    }
    // Nothing was recorded.
    let (_, page) = guarded.get("/v1/downloads").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    // A name is accepted: it is checked when the worker resolves it.
    guarded.submit("http://localhost/x.mp4").await;

    // With the guard off the same URL is accepted.
    let open = spawn_app_configured(None, true).await;
    let job = open.submit("http://127.0.0.1/x.mp4").await;
    assert_eq!(job["status"], "queued");
}

#[tokio::test]
async fn listing_is_newest_first_with_keyset_pages_and_a_status_filter() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.submit(&format!("https://a.example/{i}.mp4")).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids.reverse();
    let (_, cancelled) = app.delete(&ids[1]).await;
    assert_eq!(cancelled["status"], "cancelled");

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        // The first page has no cursor: an empty one is refused (400 invalid_cursor).
        let query = if cursor.is_empty() {
            String::new()
        } else {
            format!("&cursor={cursor}")
        };
        let (code, page) = app.get(&format!("/v1/downloads?limit=2{query}")).await;
        assert_eq!(code, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let (_, page) = app.get("/v1/downloads?status=cancelled").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[1].as_str());
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn cancelling_is_idempotent_and_covers_running_jobs() {
    let app = spawn_app().await;
    let id = app.submit("https://a.example/x.mp4").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let (code, job) = app.delete(&id).await;
        assert_eq!(code, 200);
        assert_eq!(job["status"], "cancelled");
        assert!(job["finished_at"].is_string());
    }
    let other = app.submit("https://a.example/y.mp4").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("UPDATE jobs SET status = 'running' WHERE id = $1::uuid")
        .bind(&other)
        .execute(&app.db.pool)
        .await
        .unwrap();
    // A running job is cancelled too (its worker stops it: crates/worker/tests/live.rs).
    let (code, job) = app.delete(&other).await;
    assert_eq!((code, job["status"].as_str().unwrap()), (200, "cancelled"));
    let (code, err) = app.delete("018f0000-0000-7000-8000-000000000000").await;
    assert_eq!(
        (code, err["error"]["code"].as_str().unwrap()),
        (404, "not_found")
    );
}

#[tokio::test]
async fn deleting_a_succeeded_job_removes_its_object_and_its_usage() {
    let app = spawn_app().await;
    let media = MediaServer::start().await;
    let worker_settings =
        test_settings::worker(test_settings::common(&app.db, &app.queue, &app.storage_dir));
    let worker = clipstash_worker::Worker::build(
        worker_settings,
        Exporter::detached(Component::Worker),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    let size = 300_000u64;
    let id = app
        .submit(&media.url(&format!("/media/{size}/9/del")))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = wait_for("the job to succeed", Duration::from_secs(30), || async {
        let (_, j) = app.get(&format!("/v1/downloads/{id}")).await;
        (j["status"] == "succeeded").then_some(j)
    })
    .await;
    assert_eq!(job["sha256"], media_sha256(size, 9));
    let path = app.storage_dir.join(job["object_key"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let (_, usage) = app.get("/v1/storage").await;
    assert_eq!(usage["providers"][0]["bytes_used"], size);
    assert_eq!(usage["providers"][0]["files"], 1);

    let (code, deleted) = app.delete(&id).await;
    assert_eq!(code, 200);
    assert_eq!(deleted["status"], "succeeded");
    assert!(deleted["deleted_at"].is_string());
    assert!(!path.exists(), "the object is gone from storage");
    let (_, usage) = app.get("/v1/storage").await;
    assert_eq!(usage["providers"][0]["bytes_used"], 0);
    assert_eq!(usage["providers"][0]["files"], 0);
    // A second delete changes nothing.
    let (code, again) = app.delete(&id).await;
    assert_eq!(code, 200);
    assert_eq!(again["deleted_at"], deleted["deleted_at"]);
    let (_, usage) = app.get("/v1/storage").await;
    assert_eq!(usage["providers"][0]["bytes_used"], 0);

    stop.cancel();
    worker_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn readiness_names_the_failed_dependency_and_submissions_are_not_lost() {
    let mut redis = OwnRedis::start().await;
    let queue = TestQueue::new();
    let args = RedisArgs {
        redis_url: redis.url().into(),
        ..queue.args()
    };
    let app = spawn_app_with(Some(args)).await;
    let (code, ready) = app.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["checks"]["redis"], "ok");

    redis.kill();
    let (code, ready) = app.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(ready["error"]["code"], "not_ready");
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["redis"], "unavailable");
    let (code, health) = app.get("/healthz").await;
    assert_eq!((code, health["status"].as_str().unwrap()), (200, "ok"));

    // With the queue down a submission is refused, and the job row says why.
    let r = app
        .client
        .post(format!("{}/v1/downloads", app.base))
        .json(&json!({"url": "https://a.example/v.mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "queue_unavailable");
    let row: (String, Option<String>) = sqlx::query_as("SELECT status, error_code FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        row,
        ("failed".to_string(), Some("queue_unavailable".to_string()))
    );
}

#[tokio::test]
async fn metrics_move_to_their_own_listener_when_configured() {
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let dir = std::env::temp_dir().join(format!("cs-storage-{}", uuid::Uuid::new_v4().simple()));
    let mut s = settings(&db, &queue, queue.args(), &dir);
    s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = build(s).await.unwrap();
    let (api, metrics) = (app.addr(), app.metrics_addr());
    assert_ne!(api, metrics);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("app_info{"));
    let r = client
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "not exposed on the public listener");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn concurrent_duplicates_with_one_idempotency_key_make_one_job() {
    let app = spawn_app().await;
    let post = |key: &str, url: &str| {
        app.client
            .post(format!("{}/v1/downloads", app.base))
            .header("Idempotency-Key", key)
            .json(&json!({ "url": url }))
            .send()
    };
    let url = "https://media.example/same.mp4";
    let answers = futures_util::future::join_all((0..16).map(|_| post("order-42", url))).await;
    let mut ids = Vec::new();
    let mut codes = Vec::new();
    for r in answers {
        let r = r.unwrap();
        codes.push(r.status().as_u16());
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    codes.sort();
    assert_eq!(codes[0], 200, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 202).count(),
        1,
        "one creates (202), the rest replay (200): {codes:?}"
    );
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let queue = Queue::connect(&app.queue.args()).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().pending, 1, "enqueued once");

    // The same body spelled differently is the same request.
    let r = app
        .client
        .post(format!("{}/v1/downloads", app.base))
        .header("Idempotency-Key", "order-42")
        .header("Content-Type", "application/json")
        .body(format!("{{ \"url\" :  \"{url}\" }}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"].as_str().unwrap(), ids[0]);

    // Another body under the same key is refused, and creates nothing.
    let r = post("order-42", "https://media.example/other.mp4")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_reused");

    // Another key is another job.
    let r = post("order-43", url).await.unwrap();
    assert_eq!(r.status(), 202);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_refused() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str(), "tab\there"] {
        let r = app
            .client
            .post(format!("{}/v1/downloads", app.base))
            .header("Idempotency-Key", key)
            .json(&json!({ "url": "https://media.example/v.mp4" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_idempotency_key", "{key:?}");
    }
    let r = app
        .client
        .post(format!("{}/v1/downloads", app.base))
        .header("Idempotency-Key", "k".repeat(255))
        .json(&json!({ "url": "https://media.example/v.mp4" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}
