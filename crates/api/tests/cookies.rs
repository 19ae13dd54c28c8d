//! `cookies` of `POST /v1/downloads`: sealed before they are stored, stored only sealed (the
//! Postgres row; never the Redis payload), never shown, erased when the job ends, refused
//! without a key or when malformed. Reads Postgres and Redis raw to prove it.

use clipstash_testkit::settings::{RunningApi, secret_key};
use clipstash_testkit::{TestDb, TestQueue, settings as test_settings};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

/// A cookie value that must never show up anywhere but inside the sealed bytes.
const SECRET: &str = "SIDVALUE-7f3c9a1e5b-do-not-leak";

struct App {
    api: RunningApi,
    db: TestDb,
    queue: TestQueue,
    client: reqwest::Client,
}

async fn app(with_key: bool) -> App {
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let dir = std::env::temp_dir().join(format!("cs-cookies-{}", Uuid::new_v4().simple()));
    let mut common = test_settings::common(&db, &queue, &dir);
    if !with_key {
        common.secrets.secret_key = None;
    }
    let api = RunningApi::start(test_settings::api(common), dir).await;
    App {
        api,
        db,
        queue,
        client: reqwest::Client::new(),
    }
}

impl App {
    async fn post(&self, body: Value) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}/v1/downloads", self.api.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .client
            .get(format!("{}{path}", self.api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// Every value under the test's Redis prefix, read raw by type.
    async fn redis_dump(&self) -> Vec<u8> {
        let mut conn = self.queue.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{}*", self.queue.name))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "nothing in Redis to look at");
        let mut dump = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                ],
                "hash" => redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "set" => redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                other => panic!("{key}: unexpected Redis type {other}"),
            };
            dump.extend_from_slice(key.as_bytes());
            for v in values {
                dump.push(b'\n');
                dump.extend_from_slice(&v);
            }
        }
        dump
    }

    /// The job's row as Postgres renders it (bytea as hex), and its sealed cookies.
    async fn row(&self, id: &str) -> (String, Option<Vec<u8>>) {
        sqlx::query_as(
            "SELECT row_to_json(j)::text, cookies_sealed FROM jobs j WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the cookie: {text}");
    assert!(
        !text.contains(&hex::encode(SECRET)),
        "{what} shows the cookie in hex"
    );
}

#[tokio::test]
async fn cookies_are_sealed_in_postgres_absent_from_redis_and_never_shown() {
    let app = app(true).await;
    let url = "https://www.youtube.com/shorts/abcdefghijk";
    let text = format!(
        "# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t1900000000\tSID\t{SECRET}\n"
    );
    let pairs = json!({ "SID": SECRET, "HSID": "other" });
    let mut ids = Vec::new();
    for cookies in [json!(text), pairs] {
        let (status, body) = app.post(json!({ "url": url, "cookies": cookies })).await;
        assert_eq!(status, 202, "{body}");
        assert_no_secret("the 202", &body);
        assert!(!body.contains("cookies"), "{body}");
        let job: Value = serde_json::from_str(&body).unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }

    for id in &ids {
        // Postgres holds only the sealed bytes, which open (for this job, with the key) to
        // the normalised cookies.txt.
        let (row, sealed) = app.row(id).await;
        assert_no_secret("the Postgres row", &row);
        let sealed = sealed.expect("cookies are stored");
        assert!(!contains(&sealed, SECRET));
        let opened = secret_key()
            .open(id.parse().unwrap(), &sealed)
            .expect("sealed for this job");
        assert!(
            opened.expose_secret().contains(".youtube.com\tTRUE\t/\t"),
            "{}",
            opened.expose_secret().len()
        );
        assert!(opened.expose_secret().contains(SECRET));

        // No GET shows them.
        let one = app.get(&format!("/v1/downloads/{id}")).await;
        assert_no_secret("GET /v1/downloads/{id}", &one);
        assert!(!one.contains("cookies"), "{one}");
    }
    let list = app.get("/v1/downloads").await;
    assert_no_secret("GET /v1/downloads", &list);
    assert!(!list.contains("cookies"), "{list}");

    // Redis holds the task (its job id is there) but no cookie, sealed or not.
    let dump = app.redis_dump().await;
    for id in &ids {
        assert!(contains(&dump, id), "the task of {id} is not in the dump");
    }
    assert!(!contains(&dump, SECRET), "Redis holds the cookie");
    assert!(!contains(&dump, "cookies"), "Redis holds a cookies field");
}

#[tokio::test]
async fn cookies_are_erased_when_the_job_ends() {
    let app = app(true).await;
    let (status, body) = app
        .post(json!({ "url": "https://a.example/v.mp4", "cookies": { "SID": SECRET } }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(app.row(&id).await.1.is_some());
    // Cancelled while queued: the transition that ends it drops the sealed cookies.
    let r = app
        .client
        .delete(format!("{}/v1/downloads/{id}", app.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (row, sealed) = app.row(&id).await;
    assert!(row.contains("\"status\":\"cancelled\""), "{row}");
    assert_eq!(sealed, None);
}

#[tokio::test]
async fn without_a_key_cookies_are_refused_and_nothing_is_recorded() {
    let app = app(false).await;
    let (status, body) = app
        .post(json!({ "url": "https://a.example/v.mp4", "cookies": { "SID": SECRET } }))
        .await;
    assert_eq!(status, 422, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "cookies_disabled");
    assert_no_secret("the error", &body);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    // Without cookies (or with null) the same server takes the job.
    for body in [
        json!({ "url": "https://a.example/v.mp4" }),
        json!({ "url": "https://a.example/v.mp4", "cookies": null }),
    ] {
        assert_eq!(app.post(body).await.0, 202);
    }
}

#[tokio::test]
async fn malformed_cookies_get_invalid_cookies_without_being_quoted() {
    let app = app(true).await;
    let url = "https://a.example/v.mp4";
    let too_big = format!(
        ".a.example\tTRUE\t/\tFALSE\t0\tSID\t{SECRET}{}",
        "v".repeat(70 * 1024)
    );
    for cookies in [
        json!(format!("SID={SECRET}")),
        json!(format!(".a.example\tTRUE\t/\tFALSE\t0\tSID")),
        json!(format!(".a.example\tTRUE\t/\tFALSE\t0\tSID\t{SECRET};x")),
        json!(""),
        json!({}),
        json!({ "SID": 42 }),
        json!({ "S ID": SECRET }),
        json!({ "SID": format!("{SECRET}\n") }),
        json!([SECRET]),
        json!(7),
        json!(too_big),
    ] {
        let (status, body) = app.post(json!({ "url": url, "cookies": cookies })).await;
        assert_eq!(status, 422, "{body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["code"], "invalid_cookies", "{body}");
        assert_no_secret("the error", &body);
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}
