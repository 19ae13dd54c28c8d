//! yt-dlp behind the egress proxy and with a job's cookies, with the real pinned yt-dlp
//! against the local media server. Every URL is loopback; the refused ones must reach
//! nothing, so their paths count zero hits.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use clipstash_db::jobs::{self, NewJob};
use clipstash_domain::{RequestedSource, VideoSource};
use clipstash_sources::cookies;
use clipstash_testkit::settings::{self, secret_key};
use clipstash_testkit::{MediaServer, wait_for};
use common::Env;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(90);

/// Worker settings with the real yt-dlp, the egress guard on and `allow` allowlisted.
fn guarded_ytdlp(env: &Env, allow: &str) -> clipstash_worker::Settings {
    let mut s = env.settings();
    s.common = settings::with_ytdlp(s.common);
    s.common.network.allow_private_networks = false;
    s.common.network.egress_allow = allow.parse().unwrap();
    s
}

/// Records a yt-dlp job (with `cookies_sealed`, as the API seals them) and enqueues it.
async fn submit(env: &Env, id: Uuid, url: &str, cookies_sealed: Option<&[u8]>) {
    env.submit_job(&NewJob {
        requested: RequestedSource::Ytdlp,
        cookies_sealed,
        ..NewJob::new(id, url, VideoSource::Ytdlp)
    })
    .await;
}

/// Cookie files of yt-dlp runs (in their temp dirs) whose text holds `needle`.
fn cookie_files_with(needle: &str) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with("clipstash-ytdlp-")
        })
        .map(|d| d.path().join("cookies.txt"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(needle)))
        .collect()
}

#[tokio::test]
async fn a_jobs_cookies_reach_the_server_as_a_cookie_header_and_the_file_is_gone_afterwards() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let port = media.addr.port();
    // The guard on, the media server allowlisted: yt-dlp reaches it through the proxy.
    let worker = env
        .start_worker(guarded_ytdlp(&env, &format!("127.0.0.1:{port}")))
        .await;

    let value = format!("v{}", Uuid::new_v4().simple());
    // The download trickles until the test opens the gate, so the run is surely alive
    // while the test looks for its cookie file.
    let path = "/held/300000/5/cookie-gate/yt-cookies.mp4";
    let url = media.url(path);
    let id = Uuid::now_v7();
    let text = cookies::normalise(
        &serde_json::json!({ "SID": value }),
        &url::Url::parse(&url).unwrap(),
    )
    .unwrap();
    let sealed = secret_key().seal(id, &text);
    submit(&env, id, &url, Some(&sealed)).await;

    let files = wait_for("the run's cookie file", LIMIT, || {
        let value = value.clone();
        async move {
            let files = cookie_files_with(&value);
            (!files.is_empty()).then_some(files)
        }
    })
    .await;
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", files[0].display());
    media.release("cookie-gate");

    let job = env.finished(id, LIMIT).await;
    assert_eq!(job.status.as_str(), "succeeded", "{:?}", job.error_message);
    assert_eq!(job.size_bytes, Some(300000));
    let cookie = media
        .request_headers(path)
        .into_iter()
        .find(|(name, _)| name == "cookie")
        .map(|(_, v)| v);
    assert_eq!(cookie, Some(format!("SID={value}")));

    // The file went with the run, and the job's sealed cookies with the job.
    wait_for("the cookie file to go", Duration::from_secs(10), || {
        let gone = cookie_files_with(&value).is_empty() && !files[0].exists();
        async move { gone.then_some(()) }
    })
    .await;
    assert_eq!(jobs::sealed_cookies(&env.db.pool, id).await.unwrap(), None);
    worker.shutdown().await;
}

#[tokio::test]
async fn ytdlp_connections_off_the_allowlist_are_refused_by_the_proxy_with_forbidden_address() {
    let env = Env::new().await;
    let allowed = MediaServer::start().await;
    let other = MediaServer::start().await;
    let (a, b) = (allowed.addr.port(), other.addr.port());
    let worker = env
        .start_worker(guarded_ytdlp(&env, &format!("127.0.0.1:{a}")))
        .await;

    // The submitted URL is allowlisted; the redirect it answers with leads yt-dlp to another
    // loopback port, which only the proxy sees.
    let hop = format!("/redirect/127.0.0.1/{b}/media/1000/1/yt-other.mp4");
    // And a name that resolves to loopback, on the allowlisted port.
    let by_name = format!("/redirect/localhost/{a}/media/1000/2/yt-name.mp4");
    for path in [&hop, &by_name] {
        let id = Uuid::now_v7();
        submit(&env, id, &allowed.url(path), None).await;
        let job = env.finished(id, LIMIT).await;
        assert_eq!(
            (
                job.status.as_str(),
                job.error_code.map(|c| c.as_str()),
                job.attempts
            ),
            ("failed", Some("forbidden_address"), 1),
            "{path}: {:?}",
            job.error_message
        );
        let msg = job.error_message.unwrap_or_default();
        assert!(msg.contains("loopback"), "{path}: {msg}");
        assert!(allowed.hits(path) >= 1, "{path} was not asked for");
    }
    assert_eq!(other.hits("/media/1000/1/yt-other.mp4"), 0);
    assert_eq!(allowed.hits("/media/1000/2/yt-name.mp4"), 0);

    // Straight to a port off the allowlist: refused before yt-dlp starts.
    let id = Uuid::now_v7();
    submit(&env, id, &other.url("/media/1000/3/yt-direct.mp4"), None).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        job.error_code.map(|c| c.as_str()),
        Some("forbidden_address")
    );
    assert_eq!(other.hits("/media/1000/3/yt-direct.mp4"), 0);
    worker.shutdown().await;
}
