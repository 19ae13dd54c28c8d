//! Live progress, event streams and cancelling running jobs, with an in-process API and worker
//! on real Postgres and Redis and the test kit's media server (its `/held/...` route keeps a
//! download running until the test releases it).

mod common;

use std::time::Duration;

use clipstash_api::auth::keys::{generate_key, hash_key};
use clipstash_db::keys::{self, NewKey};
use clipstash_db::transitions;
use clipstash_testkit::settings::{self as test_settings, RunningApi};
use clipstash_testkit::{MediaServer, wait_for};
use common::Env;
use serde_json::{Value, json};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);

/// A key created straight in Postgres.
async fn key(env: &Env, name: &str) -> String {
    let key = generate_key().unwrap();
    let id = Uuid::now_v7();
    keys::create_key(
        &env.db.pool,
        id,
        &NewKey {
            name,
            key_hash: &hash_key(&key),
            prefix: &key[..11],
            rate_per_minute: None,
            max_active_jobs: None,
            webhook_secret: &keys::StoredWebhookSecret::Plain(vec![7; 32]),
        },
    )
    .await
    .unwrap();
    key
}

/// An API on the env's database and queue; `auth` on with `max_streams` streams per key.
async fn api(env: &Env, auth: bool, max_streams: u32) -> RunningApi {
    let dir = std::env::temp_dir().join(format!("cs-live-api-{}", Uuid::new_v4().simple()));
    let mut s = test_settings::api(test_settings::common(&env.db, &env.queue, &dir));
    if auth {
        s.access = test_settings::access();
    }
    s.access.max_streams_per_key = max_streams;
    RunningApi::start(s, dir).await
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn submit(api: &RunningApi, key: Option<&str>, url: &str) -> String {
    let (code, job) = call(
        "POST",
        &format!("{}/v1/downloads", api.base),
        key,
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(code, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn job(api: &RunningApi, key: Option<&str>, id: &str) -> Value {
    let (code, job) = call("GET", &format!("{}/v1/downloads/{id}", api.base), key, None).await;
    assert_eq!(code, 200, "{job}");
    job
}

/// Waits until the job view shows bytes arriving, and returns it.
async fn moving(api: &RunningApi, key: Option<&str>, id: &str) -> Value {
    wait_for("progress in the job view", LIMIT, || async {
        let j = job(api, key, id).await;
        (j["status"] == "running" && j["progress"]["bytes_done"].as_u64() > Some(0)).then_some(j)
    })
    .await
}

/// An open event stream, read event by event.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(
        api: &RunningApi,
        key: Option<&str>,
        id: &str,
    ) -> Result<Sse, (u16, reqwest::header::HeaderMap, Value)> {
        let mut req = client().get(format!("{}/v1/downloads/{id}/events", api.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        if resp.status() != 200 {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            return Err((status, headers, resp.json().await.unwrap_or(Value::Null)));
        }
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Ok(Sse {
            resp,
            buf: String::new(),
        })
    }

    /// The next event as (name, data), skipping keep-alive comments; `None` when the stream
    /// ends. Panics if neither happens within the limit.
    async fn next(&mut self) -> Option<(String, Value)> {
        tokio::time::timeout(LIMIT, self.next_event())
            .await
            .expect("an event or the end within the limit")
    }

    async fn next_event(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(n), Some(d)) = (name, data) {
                    return Some((n, d));
                }
                continue;
            }
            let chunk = self.resp.chunk().await.unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn progress_shows_in_the_job_view_and_the_stream_which_ends_with_the_job() {
    let env = Env::new().await;
    let worker = env.start_worker(env.settings()).await;
    let api = api(&env, false, 10).await;
    let media = MediaServer::start().await;
    let size = 3_000_000u64;
    let id = submit(&api, None, &media.url(&format!("/held/{size}/3/live/a"))).await;

    let mut sse = Sse::open(&api, None, &id).await.unwrap();
    let (name, first) = sse.next().await.unwrap();
    assert_eq!(name, "state");
    assert_eq!(first["id"], id.as_str());
    assert!(
        ["queued", "running"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );

    let view = moving(&api, None, &id).await;
    let p = &view["progress"];
    assert_eq!(p["bytes_total"], size, "{view}");
    assert!(p["bytes_done"].as_u64().unwrap() <= size);
    assert!(
        p["speed_bps"].is_u64() && p.get("eta_s").is_some(),
        "{view}"
    );

    // The stream relays the worker's progress.
    loop {
        let (name, data) = sse.next().await.expect("progress before the end");
        match name.as_str() {
            "progress" => {
                assert_eq!(data["bytes_total"], size, "{data}");
                if data["bytes_done"].as_u64() > Some(0) {
                    break;
                }
            }
            _ => assert_eq!(name, "state", "{data}"),
        }
    }

    media.release("live");
    let last = loop {
        let (name, data) = sse
            .next()
            .await
            .expect("the end state before the stream closes");
        if name == "state" && data["status"] != "running" {
            break data;
        }
    };
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["size_bytes"], size);
    assert!(
        sse.next().await.is_none(),
        "the stream closes after the end"
    );

    let done = job(&api, None, &id).await;
    assert_eq!(
        done["progress"],
        Value::Null,
        "a finished job shows no progress"
    );
    // A client that connects after the end gets the end at once, and the stream closes.
    let mut late = Sse::open(&api, None, &id).await.unwrap();
    let (name, data) = late.next().await.unwrap();
    assert_eq!(
        (name.as_str(), &data["status"]),
        ("state", &json!("succeeded"))
    );
    assert!(late.next().await.is_none());
    worker.shutdown().await;
}

#[tokio::test]
async fn streams_are_for_the_jobs_own_key_and_capped_per_key_across_replicas() {
    let env = Env::new().await;
    // No worker: the job stays queued and its streams stay open.
    let a = api(&env, true, 2).await;
    let b = api(&env, true, 2).await;
    let (alice, bob) = (key(&env, "alice").await, key(&env, "bob").await);
    let id = submit(&a, Some(&alice), "https://a.example/v.mp4").await;

    let (code, _, err) = Sse::open(&a, Some(&bob), &id).await.err().unwrap();
    assert_eq!((code, &err["error"]["code"]), (404, &json!("not_found")));
    let (code, _, _) = Sse::open(&a, None, &id).await.err().unwrap();
    assert_eq!(code, 401);

    let mut first = Sse::open(&a, Some(&alice), &id).await.unwrap();
    let mut second = Sse::open(&b, Some(&alice), &id).await.unwrap();
    for s in [&mut first, &mut second] {
        assert_eq!(s.next().await.unwrap().1["status"], "queued");
    }
    // Two open, one on each replica: the third is refused on either.
    for api in [&a, &b] {
        let (code, headers, err) = Sse::open(api, Some(&alice), &id).await.err().unwrap();
        assert_eq!(
            (code, &err["error"]["code"]),
            (429, &json!("too_many_streams"))
        );
        assert!(headers.contains_key("retry-after"));
        assert_eq!(headers["ratelimit-policy"], "\"streams\";q=2");
    }
    // Bob's streams are his own.
    let bobs = submit(&a, Some(&bob), "https://a.example/w.mp4").await;
    Sse::open(&b, Some(&bob), &bobs).await.unwrap();

    // A closed stream frees its place.
    drop(first);
    let mut third = wait_for("a place after a stream closed", LIMIT, || async {
        Sse::open(&a, Some(&alice), &id).await.ok()
    })
    .await;
    assert_eq!(third.next().await.unwrap().0, "state");

    // The end reaches open streams even with no message at all (no worker here, and the
    // cancel is written to Postgres only): each stream re-reads its job on a timer.
    let uuid: Uuid = id.parse().unwrap();
    assert!(matches!(
        transitions::delete_job(&env.db.pool, uuid).await.unwrap(),
        clipstash_db::DeleteOutcome::Cancelled { .. }
    ));
    for s in [&mut second, &mut third] {
        let (name, data) = s.next().await.unwrap();
        assert_eq!(
            (name.as_str(), &data["status"]),
            ("state", &json!("cancelled"))
        );
        assert!(s.next().await.is_none());
    }
}

async fn reservations(env: &Env, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM storage_reservations WHERE job_id = $1::uuid")
        .bind(id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn cancelling_a_running_job_stops_the_download_and_keeps_nothing() {
    let env = Env::new().await;
    let mut settings = env.settings();
    // A quota, so the running upload holds a reservation that the cancel must give back.
    settings.common.storage.storage_quota_bytes = 1 << 30;
    // Far beyond every wait below: only the cancel can end the attempt.
    settings.attempt_timeout = Duration::from_secs(600);
    let worker = env.start_worker(settings).await;
    let api = api(&env, false, 10).await;
    let media = MediaServer::start().await;
    let path = "/held/5000000/4/cancel/a";
    let id = submit(&api, None, &media.url(path)).await;
    moving(&api, None, &id).await;
    assert_eq!(media.sending(path), 1);
    assert_eq!(reservations(&env, &id).await, 1);
    let mut sse = Sse::open(&api, None, &id).await.unwrap();
    assert_eq!(sse.next().await.unwrap().1["status"], "running");

    let (code, view) = call(
        "DELETE",
        &format!("{}/v1/downloads/{id}", api.base),
        None,
        None,
    )
    .await;
    assert_eq!(
        (code, &view["status"]),
        (200, &json!("cancelled")),
        "{view}"
    );

    wait_for("the source connection to close", LIMIT, || async {
        (media.sending(path) == 0).then_some(())
    })
    .await;
    loop {
        let (name, data) = sse.next().await.expect("the cancelled state");
        if name == "state" {
            assert_eq!(data["status"], "cancelled");
            break;
        }
    }
    assert!(sse.next().await.is_none());
    wait_for("the reservation to go", LIMIT, || async {
        (reservations(&env, &id).await == 0).then_some(())
    })
    .await;
    // The worker is done with it (its lock is gone), and nothing of it is left.
    let uuid: Uuid = id.parse().unwrap();
    wait_for("the worker to let go of the job", LIMIT, || async {
        let mut conn = env.db.pool.acquire().await.unwrap();
        (!transitions::is_locked(&mut conn, uuid).await.unwrap()).then_some(())
    })
    .await;
    let row = env.job(uuid).await;
    assert_eq!(row.status, clipstash_domain::JobStatus::Cancelled);
    assert_eq!((row.size_bytes, row.error_code), (None, None));
    assert!(!env.object_path(uuid).exists());
    assert_eq!(
        env.stored_files(),
        Vec::<std::path::PathBuf>::new(),
        "no staging file left"
    );
    assert_eq!(env.usage().await, (0, 0));
    assert_eq!(media.hits(path), 1, "not retried");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_cancel_whose_message_was_missed_still_stops_the_job() {
    let env = Env::new().await;
    let mut settings = env.settings();
    settings.attempt_timeout = Duration::from_secs(600);
    let worker = env.start_worker(settings).await;
    let api = api(&env, false, 10).await;
    let media = MediaServer::start().await;
    let path = "/held/5000000/5/missed/a";
    let id = submit(&api, None, &media.url(path)).await;
    moving(&api, None, &id).await;
    let mut sse = Sse::open(&api, None, &id).await.unwrap();
    // Cancelled in Postgres only, as if the pub/sub message had been lost.
    let uuid: Uuid = id.parse().unwrap();
    assert!(matches!(
        transitions::delete_job(&env.db.pool, uuid).await.unwrap(),
        clipstash_db::DeleteOutcome::Cancelled { .. }
    ));
    wait_for("the worker to notice from the row", LIMIT, || async {
        (media.sending(path) == 0).then_some(())
    })
    .await;
    // The stream, with no message either, ends from its own re-read of the row.
    let last = loop {
        let (name, data) = sse.next().await.expect("the end state");
        if name == "state" && data["status"] != "running" {
            break data;
        }
    };
    assert_eq!(last["status"], "cancelled");
    assert!(sse.next().await.is_none());
    assert_eq!(
        env.job(uuid).await.status,
        clipstash_domain::JobStatus::Cancelled
    );
    assert!(!env.object_path(uuid).exists());
    worker.shutdown().await;
}

#[tokio::test]
async fn progress_is_stored_under_the_queue_prefix_and_events_reach_subscribers() {
    use clipstash_domain::{JobEvent, JobStatus, Progress};
    use clipstash_queue::events::{self, EventNames, Publisher};
    let queue = clipstash_testkit::TestQueue::new();
    let url = clipstash_testkit::redis_url();
    let conn = clipstash_queue::connect(&url.clone().into()).await.unwrap();
    let names = EventNames::new(&queue.name);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(events::subscribe(
        url.into(),
        names.events_channel(),
        move |p: &[u8]| {
            let _ = tx.send(serde_json::from_slice::<JobEvent>(p).unwrap());
        },
        stop.clone(),
    ));
    let publisher = Publisher::spawn(conn.clone(), names.clone());
    let id = Uuid::now_v7();
    let progress = Progress {
        bytes_done: 10,
        bytes_total: Some(100),
        speed_bps: 5,
        eta_s: Some(18),
    };
    // Published until the subscription is up (it may miss the first ones: pub/sub keeps nothing).
    let got = wait_for("the progress event", LIMIT, || {
        publisher.progress(id, progress);
        let got = rx.try_recv().ok();
        async move { got }
    })
    .await;
    assert_eq!(
        got,
        JobEvent::Progress {
            job_id: id,
            progress
        }
    );
    assert_eq!(
        events::read_progress(&conn, &names, id).await,
        Some(progress)
    );
    let mut raw = queue.conn().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}:progress:{id}", queue.name))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
    // A state change clears it.
    publisher.state(id, JobStatus::Succeeded);
    wait_for("the state event", LIMIT, || {
        let got = rx
            .try_recv()
            .ok()
            .filter(|e| matches!(e, JobEvent::State { .. }));
        async move { got }
    })
    .await;
    assert_eq!(events::read_progress(&conn, &names, id).await, None);
    stop.cancel();
}

#[tokio::test]
async fn cancelling_a_job_uploading_to_s3_aborts_its_multipart_upload() {
    use clipstash_testkit::emulators;
    let env = Env::new().await;
    let bucket = emulators::unique_bucket();
    let s3 = emulators::s3_bucket(&bucket).await;
    let mut settings = env.settings();
    settings.common.storage.storage = vec![s3.replacen("s3://", "s3=s3://", 1)];
    settings.attempt_timeout = Duration::from_secs(600);
    let worker = env.start_worker(settings).await;
    let api = api(&env, false, 10).await;
    let media = MediaServer::start().await;
    let path = "/held/20000000/6/s3cancel/a";
    let id = submit(&api, None, &media.url(path)).await;
    moving(&api, None, &id).await;
    let uploads = || async {
        reqwest::get(format!("{}/{bucket}?uploads", emulators::moto().endpoint()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        uploads().await.contains("<Upload>"),
        "the upload is under way"
    );

    let (code, _) = call(
        "DELETE",
        &format!("{}/v1/downloads/{id}", api.base),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    wait_for("the multipart upload to be aborted", LIMIT, || async {
        (!uploads().await.contains("<Upload>")).then_some(())
    })
    .await;
    wait_for("the source connection to close", LIMIT, || async {
        (media.sending(path) == 0).then_some(())
    })
    .await;
    let key = clipstash_storage::Storage::object_key(id.parse().unwrap());
    let head = client()
        .head(format!("{}/{bucket}/{key}", emulators::moto().endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "no object");
    worker.shutdown().await;
}
