//! Signed webhooks end to end, on loopback only: a real API (auth on), a real worker, a key
//! from the real `clipstash-api keys create`, and a receiver on 127.0.0.1 that records what
//! it gets. Signatures are checked here by recomputing the HMAC from the printed secret with
//! the `hmac` crate directly, not with clipstash's own signing code.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clipstash_api::Settings;
use clipstash_runtime::CommonArgs;
use clipstash_testkit::procs::{Proc, wait_healthy};
use clipstash_testkit::receiver::{Received, Receiver};
use clipstash_testkit::{
    MediaServer, TestDb, TestQueue, free_port, prom, settings as test_settings, wait_for,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const LIMIT: Duration = Duration::from_secs(60);
/// `CLIPSTASH_SECRET_KEY` of the workers (and of the keys made with it).
const SERVER_KEY: &str = clipstash_testkit::settings::SECRET_KEY_TEXT;

struct Env {
    db: TestDb,
    queue: TestQueue,
    dir: std::path::PathBuf,
}

impl Env {
    async fn new() -> Self {
        Self {
            db: TestDb::new().await,
            queue: TestQueue::new(),
            dir: std::env::temp_dir().join(format!("cs-hooks-{}", uuid::Uuid::new_v4().simple())),
        }
    }

    /// Shared settings; with `allow` the egress guard is on with that allowlist.
    fn common(&self, allow: Option<&str>) -> CommonArgs {
        let mut c = test_settings::common(&self.db, &self.queue, &self.dir);
        if let Some(allow) = allow {
            c.network.allow_private_networks = false;
            c.network.egress_allow = allow.parse().unwrap();
        }
        c
    }

    async fn api(&self, allow: Option<&str>) -> test_settings::RunningApi {
        let mut s: Settings = test_settings::api(self.common(allow));
        s.access = test_settings::access();
        test_settings::RunningApi::start(s, self.dir.clone()).await
    }

    /// The real worker binary (its `/metrics` is the process's own), with fast webhook
    /// retries; returns it and its metrics URL.
    async fn worker(&self, allow: Option<&str>) -> (Proc, String) {
        let port = free_port();
        let env = vec![
            ("DATABASE_URL", self.db.url.clone()),
            ("REDIS_URL", clipstash_testkit::redis_url()),
            ("CLIPSTASH_QUEUE", self.queue.name.clone()),
            ("CLIPSTASH_STORAGE_DIR", self.dir.display().to_string()),
            ("CLIPSTASH_METRICS_LISTEN", format!("127.0.0.1:{port}")),
            (
                "CLIPSTASH_ALLOW_PRIVATE_NETWORKS",
                allow.is_none().to_string(),
            ),
            ("CLIPSTASH_EGRESS_ALLOW", allow.unwrap_or("").to_string()),
            ("CLIPSTASH_HEARTBEAT_INTERVAL", "1s".into()),
            ("CLIPSTASH_MISSED_HEARTBEATS", "3".into()),
            ("CLIPSTASH_SHUTDOWN_GRACE", "2s".into()),
            ("CLIPSTASH_POLL_INTERVAL", "50ms".into()),
            ("CLIPSTASH_WEBHOOK_POLL", "50ms".into()),
            ("CLIPSTASH_WEBHOOK_RETRY_BASE", "100ms".into()),
            ("CLIPSTASH_WEBHOOK_MAX_ATTEMPTS", "5".into()),
            ("CLIPSTASH_SECRET_KEY", SERVER_KEY.into()),
        ];
        let w = Proc::spawn("clipstash-worker", &["run"], &env);
        wait_healthy(&w, &format!("http://127.0.0.1:{port}/healthz")).await;
        (w, format!("http://127.0.0.1:{port}/metrics"))
    }

    /// `clipstash-api keys create` through the real binary: (API key, webhook secret).
    async fn key(&self, name: &str) -> (String, String) {
        let stdout = self.keys(&["create", "--name", name], None).await;
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        (lines[0].to_string(), lines[1].to_string())
    }

    /// `clipstash-api keys ARGS` (with `CLIPSTASH_SECRET_KEY` when given); its stdout.
    async fn keys(&self, args: &[&str], secret_key: Option<&str>) -> String {
        let mut cmd =
            tokio::process::Command::new(clipstash_testkit::procs::binary("clipstash-api"));
        cmd.arg("keys")
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &self.db.url);
        if let Some(k) = secret_key {
            cmd.env("CLIPSTASH_SECRET_KEY", k);
        }
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

async fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Checks a delivery's Standard Webhooks signature against `whsec` (from `keys create`).
fn assert_signed(got: &Received, whsec: &str) {
    let id = got.header("webhook-id").expect("webhook-id");
    let ts = got.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = got.header("webhook-signature").expect("webhook-signature");
    let secret = B64.decode(whsec.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "signature of {id}");
    assert!(id.starts_with("msg_"), "{id}");
    let now = chrono::Utc::now().timestamp();
    let ts: i64 = ts.parse().unwrap();
    assert!((now - ts).abs() < 300, "timestamp {ts} vs now {now}");
    assert_eq!(got.header("content-type"), Some("application/json"));
}

async fn scrape(metrics: &str) -> Vec<prom::Sample> {
    prom::parse(&reqwest::get(metrics).await.unwrap().text().await.unwrap())
}

async fn wait_received(r: &Receiver, n: usize) -> Vec<Received> {
    wait_for(&format!("{n} webhook requests"), LIMIT, || async {
        let got = r.received();
        (got.len() >= n).then_some(got)
    })
    .await
}

#[tokio::test]
async fn ended_jobs_post_their_view_signed_with_the_keys_secret() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let receiver = Receiver::start(&[]);
    let (key, whsec) = env.key("hooks").await;
    assert!(whsec.starts_with("whsec_"), "{whsec}");
    let api = env.api(None).await;
    let downloads = format!("{}/v1/downloads", api.base);
    let submit = |url: String, tag: &str| {
        let body = json!({"url": url, "callback_url": receiver.url(&format!("/hook/{tag}"))});
        call("POST", &downloads, &key, Some(body))
    };

    // Cancelled through the API before any worker runs: its webhook waits in the outbox.
    let (status, cancelled) = submit(media.url("/media/1000/1/cancelled"), "cancelled").await;
    assert_eq!(status, 202, "{cancelled}");
    let cancelled_id = cancelled["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        "DELETE",
        &format!("{}/v1/downloads/{cancelled_id}", api.base),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(receiver.received().is_empty());

    let (_worker, metrics) = env.worker(None).await;
    let (status, job) = submit(media.url("/media/4000/7/done"), "done").await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["callback_url"], receiver.url("/hook/done"));
    let done_id = job["id"].as_str().unwrap().to_string();
    // Fails at once (404 is permanent): the webhook written with the failed transition.
    let (status, job) = submit(media.url("/status/404/failed"), "failed").await;
    assert_eq!(status, 202, "{job}");
    let failed_id = job["id"].as_str().unwrap().to_string();

    let got = wait_received(&receiver, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "each job's webhook once");
    for (id, tag, status) in [
        (&cancelled_id, "cancelled", "cancelled"),
        (&done_id, "done", "succeeded"),
        (&failed_id, "failed", "failed"),
    ] {
        let hit = got
            .iter()
            .find(|g| g.path == format!("/hook/{tag}"))
            .expect(tag);
        assert_signed(hit, &whsec);
        let sent: Value = serde_json::from_slice(&hit.body).unwrap();
        let (_, view) = call(
            "GET",
            &format!("{}/v1/downloads/{id}", api.base),
            &key,
            None,
        )
        .await;
        assert_eq!(sent, view, "the webhook body is the job view");
        assert_eq!(sent["status"], status);
    }
    let samples = scrape(&metrics).await;
    assert_eq!(
        prom::sum(
            &samples,
            "webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        3.0
    );
    assert_eq!(
        prom::sum(&samples, "webhook_delivery_duration_seconds_count", &[]),
        3.0
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_same_delivery_on_the_third_try() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let receiver = Receiver::start(&[500, 503]);
    // This key's secret is derived from CLIPSTASH_SECRET_KEY: Postgres holds only a salt.
    let out = env
        .keys(&["create", "--name", "retries"], Some(SERVER_KEY))
        .await;
    let (key, whsec) = out.split_once('\n').unwrap();
    let (key, whsec) = (key.to_string(), whsec.trim().to_string());
    let (plain, salted): (bool, bool) = sqlx::query_as(
        "SELECT webhook_secret IS NOT NULL, webhook_secret_salt IS NOT NULL FROM api_keys",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!((plain, salted), (false, true));
    let api = env.api(None).await;
    let (_worker, metrics) = env.worker(None).await;
    let (status, job) = call(
        "POST",
        &format!("{}/v1/downloads", api.base),
        &key,
        Some(json!({"url": media.url("/media/1000/2/r"), "callback_url": receiver.url("/hook")})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let got = wait_received(&receiver, 3).await;
    for g in &got {
        assert_signed(g, &whsec);
        assert_eq!(
            g.header("webhook-id"),
            got[0].header("webhook-id"),
            "one message id for every retry"
        );
        assert_eq!(g.body, got[0].body, "the same body every time");
    }
    let job_id = uuid::Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
    let rows = wait_for("the delivery recorded", LIMIT, || async {
        let rows = clipstash_db::webhooks::deliveries_of(&env.db.pool, job_id)
            .await
            .unwrap();
        (rows.len() == 1 && rows[0].state == "delivered").then_some(rows)
    })
    .await;
    assert_eq!((rows[0].attempts, rows[0].last_status), (3, Some(200)));
    let samples = scrape(&metrics).await;
    assert_eq!(
        prom::sum(
            &samples,
            "webhook_deliveries_total",
            &[("outcome", "retried")]
        ),
        2.0
    );
    assert_eq!(
        prom::sum(
            &samples,
            "webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_callback_the_egress_guard_refuses_is_never_sent() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let receiver = Receiver::start(&[]);
    let (key, _) = env.key("guarded").await;
    // The guard on in both processes, open only to the media server.
    let allow = format!("127.0.0.1:{}", media.addr.port());
    let api = env.api(Some(&allow)).await;
    let (_worker, metrics) = env.worker(Some(&allow)).await;

    // A name passes at submit and is refused when it resolves (to loopback) at delivery.
    let port = receiver.addr.port();
    let (status, job) = call(
        "POST",
        &format!("{}/v1/downloads", api.base),
        &key,
        Some(json!({"url": media.url("/media/1000/3/g"), "callback_url": format!("http://localhost:{port}/hook")})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = uuid::Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
    let rows = wait_for("the delivery given up", LIMIT, || async {
        let rows = clipstash_db::webhooks::deliveries_of(&env.db.pool, job_id)
            .await
            .unwrap();
        (rows.len() == 1 && rows[0].state == "failed").then_some(rows)
    })
    .await;
    assert_eq!(rows[0].attempts, 1, "a refusal is not retried");
    let err = rows[0].last_error.clone().unwrap_or_default();
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(
        media.hits("/media/1000/3/g"),
        1,
        "the download itself was allowed"
    );

    // A literal forbidden address is refused at submit, in any spelling (loopback only here:
    // the other address classes are the classifier's unit tests, which connect nowhere).
    for callback in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://0x7f.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let (status, body) = call(
            "POST",
            &format!("{}/v1/downloads", api.base),
            &key,
            Some(json!({"url": media.url("/media/1000/3/h"), "callback_url": callback})),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("forbidden_address")),
            "{callback}: {body}"
        );
    }
    assert!(receiver.received().is_empty(), "the receiver was reached");
    let samples = scrape(&metrics).await;
    assert_eq!(
        prom::sum(
            &samples,
            "webhook_deliveries_total",
            &[("outcome", "refused")]
        ),
        1.0
    );
}

#[tokio::test]
async fn callback_urls_are_validated_and_need_a_key_with_a_secret() {
    let env = Env::new().await;
    let (key, _) = env.key("checks").await;
    let api = env.api(None).await;
    let downloads = format!("{}/v1/downloads", api.base);
    let post = |body: Value| call("POST", &downloads, &key, Some(body));
    for bad in [
        "ftp://hooks.example/x",
        "not a url",
        "",
        "http://user:pw@hooks.example/x",
        "https://hooks.example*/x",
        "https://hooks.example/a b",
        "https://hooks.example/%zz",
        "https://hooks.example/a#b#c",
        "https://hooks.example/a[1]",
    ] {
        let (status, body) =
            post(json!({"url": "https://a.example/v.mp4", "callback_url": bad})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_url")),
            "{bad}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("callback_url"),
            "{body}"
        );
    }
    // A key from before webhooks (no secret) cannot ask for callbacks until it gets one.
    sqlx::query("UPDATE api_keys SET webhook_secret = NULL, webhook_secret_salt = NULL")
        .execute(&env.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the key cache's TTL
    let (status, body) =
        post(json!({"url": "https://a.example/v.mp4", "callback_url": "https://hooks.example/x"}))
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("webhook_secret_missing")),
        "{body}"
    );
    let (status, _) = post(json!({"url": "https://a.example/v.mp4"})).await;
    assert_eq!(status, 202);
    // Rotating gives it one (printed once), and callbacks work again.
    let list = env.keys(&["list"], None).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("checks ") && l.contains("none")),
        "{list}"
    );
    let whsec = env.keys(&["rotate-webhook-secret", "checks"], None).await;
    assert!(whsec.trim().starts_with("whsec_"), "{whsec}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) =
        post(json!({"url": "https://a.example/v.mp4", "callback_url": "https://hooks.example/x"}))
            .await;
    assert_eq!(status, 202, "{body}");
}
