//! The yt-dlp source with the real pinned yt-dlp (`deploy/ytdlp/ensure.sh`) against the local
//! media server: downloads streamed through the ingest pipeline, routing (`auto`, the HTML
//! fallback), video info, the size cap, cancellation by drop and worker shutdown, with no
//! process outliving its job. Every URL is loopback.

mod common;

use std::time::Duration;

use clipstash_db::jobs::NewJob;
use clipstash_domain::{ErrorCode, RequestedSource, VideoSource};
use clipstash_sources::{DownloadOptions, EgressPolicy, Ytdlp, YtdlpLimits, YtdlpProgram};
use clipstash_testkit::procs::{Proc, processes_in_group, processes_with_arg, wait_healthy};
use clipstash_testkit::settings::{self, RunningApi, ytdlp_path};
use clipstash_testkit::{MediaServer, free_port, media_sha256, wait_for};
use common::Env;
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(90);

fn limits() -> YtdlpLimits {
    YtdlpLimits {
        socket_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        wall_timeout: Duration::from_secs(60),
    }
}

async fn ytdlp() -> Ytdlp {
    Ytdlp::probe(&ytdlp_path(), limits(), EgressPolicy::off())
        .await
        .unwrap()
}

/// Worker settings with the real yt-dlp on.
fn with_ytdlp(env: &Env) -> clipstash_worker::Settings {
    let mut s = env.settings();
    s.common = settings::with_ytdlp(s.common);
    s
}

/// Records a job as the API would and enqueues it.
async fn submit(env: &Env, url: &str, source: VideoSource, requested: RequestedSource) -> Uuid {
    let id = Uuid::now_v7();
    env.submit_job(&NewJob {
        requested,
        ..NewJob::new(id, url, source)
    })
    .await;
    id
}

/// Waits until no live process has `needle` on its command line.
async fn no_process_with(needle: &str) {
    wait_for(
        &format!("no process with {needle}"),
        Duration::from_secs(10),
        || async move { processes_with_arg(needle).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_ytdlp_download_streams_into_storage_with_the_served_bytes() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let worker = env.start_worker(with_ytdlp(&env)).await;
    let path = "/media/3000000/7/yt-direct.mp4";
    let id = submit(
        &env,
        &media.url(path),
        VideoSource::Ytdlp,
        RequestedSource::Ytdlp,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded", "{:?}", job.error_message);
    assert_eq!(job.size_bytes, Some(3_000_000));
    assert_eq!(
        job.sha256.as_deref(),
        Some(media_sha256(3_000_000, 7).as_str())
    );
    assert_eq!(job.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(job.source, VideoSource::Ytdlp);
    assert_eq!(job.extractor.as_deref(), Some("generic"));
    assert_eq!(job.video_id.as_deref(), Some("yt-direct"));
    assert!(media.hits(path) >= 1);
    no_process_with("yt-direct.mp4").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn auto_sends_a_web_page_to_ytdlp_in_the_same_attempt_and_direct_refuses_it() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let worker = env.start_worker(with_ytdlp(&env)).await;

    let page = media.url("/page/200000/9/fallback");
    let id = submit(&env, &page, VideoSource::Direct, RequestedSource::Auto).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded", "{:?}", job.error_message);
    assert_eq!(job.attempts, 1, "{:?}", job.error_message);
    assert_eq!(job.source, VideoSource::Ytdlp, "the source that ran");
    assert_eq!(job.requested_source, RequestedSource::Auto);
    assert_eq!(job.extractor.as_deref(), Some("html5"));
    assert_eq!(job.title.as_deref(), Some("Clip fallback (1)"));
    assert_eq!(
        job.sha256.as_deref(),
        Some(media_sha256(200_000, 9).as_str())
    );
    assert_eq!(media.hits("/media/200000/9/fallback.mp4"), 1);

    // `direct` takes the answer as it is: a page is not media.
    let id = submit(
        &env,
        &media.url("/page/1000/9/forced"),
        VideoSource::Direct,
        RequestedSource::Direct,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        job.error_code,
        Some(ErrorCode::UnsupportedContentType),
        "{:?}",
        job.error_message
    );
    assert_eq!(media.hits("/media/1000/9/forced.mp4"), 0);

    // A page with no video: yt-dlp's verdict, not retried.
    let id = submit(
        &env,
        &media.url("/html/novideo"),
        VideoSource::Direct,
        RequestedSource::Auto,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (job.status.as_str(), job.error_code, job.attempts),
        ("failed", Some(ErrorCode::UnsupportedUrl), 1),
        "{:?}",
        job.error_message
    );
    assert_eq!(job.source, VideoSource::Ytdlp);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_without_ytdlp_fails_such_jobs_with_a_clear_code() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let worker = env.start_worker(env.settings()).await;
    let id = submit(
        &env,
        &media.url("/page/1000/1/off"),
        VideoSource::Direct,
        RequestedSource::Auto,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (job.status.as_str(), job.error_code, job.attempts),
        ("failed", Some(ErrorCode::YtdlpUnavailable), 1)
    );
    worker.shutdown().await;

    // A missing yt-dlp stops start-up, naming the setting.
    let mut s = env.settings();
    s.common.ytdlp.ytdlp = YtdlpProgram::Program("/nonexistent/yt-dlp".into());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = clipstash_worker::Worker::build(
        s,
        metrics_core::Exporter::detached(metrics_core::Component::Worker),
        listener,
    )
    .await
    .err()
    .expect("refuses to start");
    assert!(err.to_string().contains("CLIPSTASH_YTDLP"), "{err}");
}

#[tokio::test]
async fn the_worker_exports_the_ytdlp_version() {
    let env = Env::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let worker = clipstash_worker::Worker::build(
        with_ytdlp(&env),
        metrics_core::Exporter::detached(metrics_core::Component::Worker),
        listener,
    )
    .await
    .unwrap();
    let url = format!("http://{}/metrics", worker.metrics_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let text = wait_for("/metrics", Duration::from_secs(10), || {
        let url = url.clone();
        async move { reqwest::get(url).await.ok()?.text().await.ok() }
    })
    .await;
    let version = ytdlp().await.version().to_string();
    assert!(
        text.contains(&format!("ytdlp_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_the_media_kills_the_process_group_and_removes_its_dir() {
    let media = MediaServer::start().await;
    let y = ytdlp().await;
    // Held: the server trickles a byte every 100 ms until released, so yt-dlp is mid-download.
    let run = y
        .download(
            &media.url("/held/5000000/3/dropgate/held-drop.mp4"),
            &DownloadOptions::default(),
        )
        .unwrap();
    let dir = run.dir().to_path_buf();
    let mut opened = run.open().await.unwrap();
    let pgid = opened.pgid.expect("a process group");
    let first = opened.media.body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(!processes_in_group(pgid).is_empty(), "yt-dlp is running");
    assert!(dir.is_dir());
    drop(opened);
    wait_for("the group to die", Duration::from_secs(10), || async move {
        processes_in_group(pgid).is_empty().then_some(())
    })
    .await;
    assert!(!dir.exists(), "the temp dir goes with the run");
    media.release("dropgate");
}

#[tokio::test]
async fn the_size_cap_kills_the_process_group_of_a_chunked_download() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let mut s = with_ytdlp(&env);
    s.max_file_bytes = 1024 * 1024;
    let worker = env.start_worker(s).await;
    // Chunked: no length for --max-filesize to refuse early; our own count is the cap.
    let id = submit(
        &env,
        &media.url("/chunked/50000000/4/cap-chunked.mp4"),
        VideoSource::Ytdlp,
        RequestedSource::Ytdlp,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (job.status.as_str(), job.error_code),
        ("failed", Some(ErrorCode::FileTooLarge)),
        "{:?}",
        job.error_message
    );
    no_process_with("cap-chunked.mp4").await;
    assert_eq!(env.usage().await, (0, 0));

    // An announced size over the cap: yt-dlp refuses it itself (and exits 0 with nothing).
    let id = submit(
        &env,
        &media.url("/media/3000000/4/cap-known.mp4"),
        VideoSource::Ytdlp,
        RequestedSource::Ytdlp,
    )
    .await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        job.error_code,
        Some(ErrorCode::FileTooLarge),
        "{:?}",
        job.error_message
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn the_egress_guard_checks_a_ytdlp_url_before_running_it() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let mut s = with_ytdlp(&env);
    s.common.network.allow_private_networks = false;
    let worker = env.start_worker(s).await;
    let path = "/media/1000/1/guarded.mp4";
    let url = format!("http://localhost:{}{path}", media.addr.port());
    let id = submit(&env, &url, VideoSource::Ytdlp, RequestedSource::Ytdlp).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (job.status.as_str(), job.error_code, job.attempts),
        ("failed", Some(ErrorCode::ForbiddenAddress), 1),
        "{:?}",
        job.error_message
    );
    assert_eq!(media.hits(path), 0);
    worker.shutdown().await;
}

/// The API in this process, with yt-dlp on and `hosts` as `CLIPSTASH_YTDLP_HOSTS`.
async fn api(env: &Env, hosts: &str) -> RunningApi {
    let mut common = settings::with_ytdlp(settings::common(&env.db, &env.queue, &env.storage_dir));
    common.ytdlp.ytdlp_hosts = hosts.parse().unwrap();
    RunningApi::start(settings::api(common), env.storage_dir.join("api")).await
}

#[tokio::test]
async fn auto_routes_listed_hosts_to_ytdlp_and_requests_are_validated() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let api = api(&env, "127.0.0.1").await;
    let worker = env.start_worker(with_ytdlp(&env)).await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let client = client.clone();
        let url = format!("{}/v1/downloads", api.base);
        async move { client.post(url).json(&body).send().await.unwrap() }
    };

    let r = post(json!({"url": media.url("/media/100000/5/routed.mp4"), "max_height": 720})).await;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["source"], "ytdlp", "{job}");
    assert_eq!(job["requested_source"], "auto");
    assert_eq!(job["max_height"], 720);
    let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let row = env.finished(id, LIMIT).await;
    assert_eq!(row.status.as_str(), "succeeded", "{:?}", row.error_message);
    assert_eq!(row.extractor.as_deref(), Some("generic"));
    let view: Value = client
        .get(format!("{}/v1/downloads/{id}", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["extractor"], "generic", "{view}");
    assert_eq!(view["video_id"], "routed");
    assert_eq!(view["sha256"], media_sha256(100_000, 5));

    // `direct` wins over the host list.
    let r = post(json!({"url": media.url("/media/1000/5/forced"), "source": "direct"})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["source"], "direct");

    for (body, code) in [
        (
            json!({"url": media.url("/x"), "format": "bv+ba"}),
            "invalid_format",
        ),
        (
            json!({"url": media.url("/x"), "format": "b;rm -rf"}),
            "invalid_format",
        ),
        (
            json!({"url": media.url("/x"), "format": ""}),
            "invalid_format",
        ),
        (
            json!({"url": media.url("/x"), "format": "b".repeat(201)}),
            "invalid_format",
        ),
        (
            json!({"url": media.url("/x"), "max_height": 100}),
            "invalid_max_height",
        ),
        (
            json!({"url": media.url("/x"), "max_height": 5000}),
            "invalid_max_height",
        ),
        (
            json!({"url": media.url("/x"), "source": "ftp"}),
            "invalid_request",
        ),
        (
            json!({"url": media.url("/x"), "cookie": "a"}),
            "invalid_request",
        ),
        (
            json!({"url": media.url("/x"), "max_height": 720.5}),
            "invalid_max_height",
        ),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(r.status(), 422, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
    }
    // Taken as the contract says: yt-dlp options on a direct job are kept and have no
    // effect, `null` is `auto`, and a whole number may be written 720.0.
    let r = post(json!({"url": media.url("/media/1000/6/opts"), "source": "direct", "format": "b", "max_height": 720.0})).await;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        (&job["source"], &job["format"], &job["max_height"]),
        (&json!("direct"), &json!("b"), &json!(720)),
        "{job}"
    );
    let r = post(json!({"url": media.url("/media/1000/7/null"), "source": null})).await;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["requested_source"], "auto", "{job}");
    worker.shutdown().await;
}

#[tokio::test]
async fn video_info_reports_the_fields_and_is_cached() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let api = api(&env, "").await;
    let client = reqwest::Client::new();
    let info = |url: String| {
        let client = client.clone();
        let base = api.base.clone();
        async move {
            let u = url::Url::parse_with_params(&format!("{base}/v1/videos/info"), [("url", url)])
                .unwrap();
            client.get(u).send().await.unwrap()
        }
    };
    let page = "/page/4096/2/info";
    let r = info(media.url(page)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["extractor"], "html5", "{v}");
    assert_eq!(v["title"], "Clip info (1)");
    assert_eq!(v["webpage_url"], media.url(page));
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    for key in ["duration_s", "uploader", "thumbnail"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let f = &v["formats"][0];
    assert_eq!(f["ext"], "mp4", "{v}");
    for key in ["format_id", "height", "vcodec", "acodec", "filesize"] {
        assert!(f.get(key).is_some(), "{key} in {f}");
    }
    let hits = media.hits(page);
    assert!(hits >= 1);
    // Cached: the same URL again reaches nobody.
    let again: Value = info(media.url(page)).await.json().await.unwrap();
    assert_eq!(again, v);
    assert_eq!(media.hits(page), hits);

    // yt-dlp's verdicts keep their codes.
    for (path, status, code) in [
        ("/status/404/info-missing", 404, "source_not_found"),
        ("/html/info-novideo", 422, "unsupported_url"),
    ] {
        let r = info(media.url(path)).await;
        assert_eq!(r.status(), status, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{path}: {e}");
    }
    let r = info("ftp://x/".into()).await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn a_worker_sigterm_with_a_ytdlp_job_running_leaves_no_process() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let port = free_port();
    let envs = vec![
        ("DATABASE_URL", env.db.url.clone()),
        ("REDIS_URL", clipstash_testkit::redis_url()),
        ("CLIPSTASH_QUEUE", env.queue.name.clone()),
        (
            "CLIPSTASH_STORAGE_DIR",
            env.storage_dir.display().to_string(),
        ),
        ("CLIPSTASH_ALLOW_PRIVATE_NETWORKS", "true".into()),
        ("CLIPSTASH_YTDLP", ytdlp_path().display().to_string()),
        ("CLIPSTASH_HEARTBEAT_INTERVAL", "1s".into()),
        ("CLIPSTASH_MISSED_HEARTBEATS", "3".into()),
        ("CLIPSTASH_SHUTDOWN_GRACE", "1s".into()),
        ("CLIPSTASH_POLL_INTERVAL", "50ms".into()),
        // yt-dlp's own socket timeout: long, so only our kill can end it within the test.
        ("CLIPSTASH_IDLE_TIMEOUT", "60s".into()),
        ("CLIPSTASH_METRICS_LISTEN", format!("127.0.0.1:{port}")),
    ];
    let mut w = Proc::spawn("clipstash-worker", &["run"], &envs);
    wait_healthy(&w, &format!("http://127.0.0.1:{port}/healthz")).await;
    // Stalled: 1 KiB, then silence. yt-dlp sits in a socket read and writes nothing, so its
    // stdout closing would not end it (a writer would die of the broken pipe).
    let tag = "sigterm-stall.mp4";
    let id = submit(
        &env,
        &media.url(&format!("/stall/{tag}")),
        VideoSource::Ytdlp,
        RequestedSource::Ytdlp,
    )
    .await;
    wait_for("yt-dlp to run", LIMIT, || async move {
        (!processes_with_arg(tag).is_empty()).then_some(())
    })
    .await;
    assert!(
        w.terminate(Duration::from_secs(30)).await,
        "{}",
        w.log_text()
    );
    no_process_with(tag).await;
    // Handed back, not failed: another worker will run it.
    let job = env.job(id).await;
    assert_ne!(job.status.as_str(), "failed", "{:?}", job.error_message);
}

/// `DELETE` of a running yt-dlp job: the worker drops the attempt, which kills yt-dlp's
/// process group (the contract between the cancel and the yt-dlp source), and nothing of
/// the job is stored or counted.
#[tokio::test]
async fn cancelling_a_running_ytdlp_job_kills_its_process_group_and_keeps_nothing() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let api = api(&env, "127.0.0.1").await;
    let mut s = with_ytdlp(&env);
    // Far beyond every wait below: only the cancel can end the attempt.
    s.attempt_timeout = Duration::from_secs(600);
    let worker = env.start_worker(s).await;
    let tag = "ytdlp-cancel.mp4";
    let path = format!("/held/5000000/8/ytcancel/{tag}");
    let client = reqwest::Client::new();
    let job: Value = client
        .post(format!("{}/v1/downloads", api.base))
        .json(&json!({ "url": media.url(&path) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["source"], "ytdlp", "{job}");
    let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    // yt-dlp is running and its bytes are flowing into the upload.
    wait_for("yt-dlp streaming the media", LIMIT, || async {
        let running = !processes_with_arg(tag).is_empty();
        let view: Value = client
            .get(format!("{}/v1/downloads/{id}", api.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let moving = view["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0;
        (running && moving).then_some(())
    })
    .await;

    let r = client
        .delete(format!("{}/v1/downloads/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["status"], "cancelled", "{view}");

    no_process_with(tag).await;
    wait_for("the source connection to close", LIMIT, || async {
        (media.sending(&path) == 0).then_some(())
    })
    .await;
    let row = env.job(id).await;
    assert_eq!(row.status.as_str(), "cancelled");
    assert_eq!((row.size_bytes, row.error_code), (None, None));
    assert!(!env.object_path(id).exists());
    assert_eq!(env.usage().await, (0, 0));
    let hits = media.hits(&path);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(media.hits(&path), hits, "not run again");
    worker.shutdown().await;
}
