//! Several storage providers at once, end to end: an API and a worker in this process, local
//! disk, S3 on moto and Azure on Azurite configured together, quotas, file delivery, delete.

use std::time::Duration;

use clipstash_storage::{Placement, Storage, StorageArgs};
use clipstash_testkit::{
    MediaServer, TestDb, TestQueue, emulators, media_sha256, settings, wait_for,
};
use metrics_core::{Component, Exporter};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);
const SIZE: u64 = 300_000;

/// Submits `url`; returns the job id.
async fn submit(client: &reqwest::Client, base: &str, url: &str) -> String {
    let r: Value = client
        .post(format!("{base}/v1/downloads"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["id"].as_str().unwrap().to_string()
}

/// Waits until job `id` reaches `status`; returns its view.
async fn until(client: &reqwest::Client, base: &str, id: &str, status: &str) -> Value {
    wait_for(&format!("job {id} to be {status}"), LIMIT, || async move {
        let j: Value = client
            .get(format!("{base}/v1/downloads/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (j["status"] == status).then_some(j)
    })
    .await
}

#[tokio::test]
async fn three_kinds_at_once_within_quota_delivered_and_deleted() {
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let media = MediaServer::start().await;
    let dir = std::env::temp_dir().join(format!("cs-multi-{}", uuid::Uuid::new_v4().simple()));
    let bucket = emulators::unique_bucket();
    let container = emulators::unique_bucket();
    // Room for exactly two files on each provider; ordered placement fills them in turn.
    let quota = 2 * SIZE;
    let entries = vec![
        format!("disk=file://{}?quota={quota}", dir.display()),
        format!(
            "{}&quota={quota}",
            emulators::s3_bucket(&bucket)
                .await
                .replacen("s3://", "s3=s3://", 1)
        ),
        format!(
            "{}&quota={quota}",
            emulators::azure_container(&container)
                .await
                .replacen("az://", "blob=az://", 1)
        ),
    ];
    let mut common = settings::common(&db, &queue, &dir);
    common.storage.storage = entries.clone();
    common.storage.placement = Placement::Ordered;

    let app = clipstash_api::Application::build(
        settings::api(common.clone()),
        Exporter::detached(Component::Api),
    )
    .await
    .unwrap();
    let base = format!("http://{}", app.addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    let worker = clipstash_worker::Worker::build(
        settings::worker(common.clone()),
        Exporter::detached(Component::Worker),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    tokio::spawn(worker.run(stop.clone()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Six jobs one after the other: two land on each provider.
    let mut jobs = Vec::new();
    for i in 0..6u64 {
        let id = submit(
            &client,
            &base,
            &media.url(&format!("/media/{SIZE}/{i}/clip{i}.mp4")),
        )
        .await;
        let job = until(&client, &base, &id, "succeeded").await;
        assert_eq!(job["sha256"], media_sha256(SIZE, i));
        jobs.push(job);
    }
    let providers: Vec<&str> = jobs
        .iter()
        .map(|j| j["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["disk", "disk", "s3", "s3", "blob", "blob"]);

    // The API's figures match what each provider really holds.
    let storage = Storage::from_args(&StorageArgs {
        storage: entries,
        placement: Placement::Ordered,
        storage_dir: dir.clone(),
        storage_quota_bytes: 0,
    })
    .unwrap();
    let (_, view) = get("/v1/storage".into()).await;
    for (i, p) in storage.providers().iter().enumerate() {
        let held: u64 = p
            .list("downloads")
            .await
            .unwrap()
            .iter()
            .map(|(_, m)| m.size)
            .sum();
        let v = &view["providers"][i];
        assert_eq!(v["name"], p.name().as_str());
        assert_eq!(v["kind"], p.kind().as_str());
        assert_eq!(
            (v["bytes_used"].as_u64(), v["files"].as_u64()),
            (Some(held), Some(2))
        );
        assert_eq!(v["quota_bytes"], quota);
        assert_eq!(v["used_ratio"], 1.0);
    }

    // All full: the next job fails as storage_full after its retries.
    let id = submit(&client, &base, &media.url(&format!("/media/{SIZE}/9/full"))).await;
    let failed = until(&client, &base, &id, "failed").await;
    assert_eq!(
        (
            failed["error"]["code"].as_str(),
            failed["attempts"].as_i64()
        ),
        (Some("storage_full"), Some(4))
    );
    assert_eq!(media.hits("/media/300000/9/full"), 4);

    // Delivery: whole, by range, out of range, and redirect where the provider can sign.
    for job in &jobs {
        let id = job["id"].as_str().unwrap();
        let seed: u64 = job["url"]
            .as_str()
            .unwrap()
            .split('/')
            .nth(5)
            .unwrap()
            .parse()
            .unwrap();
        let r = client
            .get(format!("{base}/v1/downloads/{id}/file"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["etag"],
            format!("\"{}\"", media_sha256(SIZE, seed))
        );
        assert_eq!(r.headers()["content-length"], SIZE.to_string());
        assert_eq!(
            r.headers()["content-disposition"],
            format!("attachment; filename=\"clip{seed}.mp4\"")
        );
        let body = r.bytes().await.unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&body)),
            media_sha256(SIZE, seed)
        );
        let r = client
            .get(format!("{base}/v1/downloads/{id}/file"))
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], format!("bytes 10-19/{SIZE}"));
        assert_eq!(r.bytes().await.unwrap(), body.slice(10..20));
        let r = client
            .get(format!("{base}/v1/downloads/{id}/file"))
            .header("range", format!("bytes={SIZE}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416);
        let r = client
            .get(format!("{base}/v1/downloads/{id}/file?redirect=true"))
            .send()
            .await
            .unwrap();
        if job["provider"] == "disk" {
            assert_eq!(r.status(), 200, "local disk cannot sign: streamed");
        } else {
            assert_eq!(r.status(), 302);
            let signed = r.headers()["location"].to_str().unwrap().to_string();
            assert!(signed.starts_with("http://127.0.0.1:"), "{signed}");
            assert_eq!(
                reqwest::get(&signed).await.unwrap().bytes().await.unwrap(),
                body
            );
        }
    }
    // No file for a failed job.
    let (code, err) = get(format!("/v1/downloads/{id}/file")).await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (404, Some("file_not_found"))
    );

    // Delete: each object leaves the provider that held it, and usage falls to zero.
    for job in &jobs {
        let id = job["id"].as_str().unwrap();
        let r = client
            .delete(format!("{base}/v1/downloads/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let p = storage.provider(job["provider"].as_str().unwrap()).unwrap();
        assert!(matches!(
            p.head(job["object_key"].as_str().unwrap()).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let (code, _) = get(format!("/v1/downloads/{id}/file")).await;
        assert_eq!(code, 404);
    }
    let (_, view) = get("/v1/storage".into()).await;
    for v in view["providers"].as_array().unwrap() {
        assert_eq!(
            (v["bytes_used"].as_u64(), v["files"].as_u64()),
            (Some(0), Some(0)),
            "{v}"
        );
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `clipstash-worker storage ARGS` with `env`; returns (exit code, stdout).
async fn storage_cmd(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut cmd =
        tokio::process::Command::new(clipstash_testkit::procs::binary("clipstash-worker"));
    cmd.arg("storage")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn storage_check_probes_every_provider_and_reconcile_finds_and_fixes_drift() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("cs-reconcile-{}", uuid::Uuid::new_v4().simple()));
    let bucket = emulators::unique_bucket();
    let s3 = emulators::s3_bucket(&bucket)
        .await
        .replacen("s3://", "s3=s3://", 1);
    let disk = format!("disk=file://{}", dir.display());
    let env = vec![
        ("CLIPSTASH_STORAGE", format!("{disk}\n{s3}")),
        ("DATABASE_URL", db.url.clone()),
    ];

    let (code, out) = storage_cmd(&["check"], &env).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("disk") && out.contains("s3") && !out.contains("FAILED"),
        "{out}"
    );
    let closed = clipstash_testkit::free_port();
    let broken = emulators::s3_url(
        &emulators::Emulator {
            port: closed,
            pid: 0,
        },
        &bucket,
    )
    .replacen("s3://", "gone=s3://", 1);
    let (code, out) = storage_cmd(
        &["check"],
        &[("CLIPSTASH_STORAGE", format!("{disk} {broken}"))],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("gone") && l.contains("FAILED")),
        "{out}"
    );
    assert!(
        !out.contains("secret_access_key=test"),
        "no option value is printed: {out}"
    );

    // Drift: an object with no row (a crash after upload), and a row with no object.
    let storage = Storage::from_args(&StorageArgs {
        storage: vec![disk.clone()],
        placement: Placement::Ordered,
        storage_dir: dir.clone(),
        storage_quota_bytes: 0,
    })
    .unwrap();
    let p = &storage.providers()[0];
    let mut up = p.start_upload("downloads/2026/01/01/orphan").await.unwrap();
    up.put(bytes::Bytes::from_static(b"orphan bytes"));
    up.finish().await.unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO jobs (id, url, source, status) VALUES ($1, 'https://a.example/v', 'direct', 'succeeded')")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO stored_files (job_id, provider, object_key, size_bytes) VALUES ($1, 'disk', 'downloads/gone', 5)")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    // Usage that disagrees with the files rows.
    sqlx::query("INSERT INTO storage_usage (provider, shard, bytes_used, file_count) VALUES ('disk', 3, 999, 7)")
        .execute(&db.pool)
        .await
        .unwrap();

    let (code, out) = storage_cmd(&["reconcile", "--grace", "0s"], &env).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("disk: 1 objects, 1 rows; orphans 1 (deleted 0), rows without object 1"),
        "{out}"
    );
    assert!(
        p.head("downloads/2026/01/01/orphan").await.is_ok(),
        "without --fix nothing is deleted"
    );

    let (code, out) = storage_cmd(&["reconcile", "--fix", "--grace", "0s"], &env).await;
    assert_eq!(
        code, 1,
        "the row without an object is reported, not deleted: {out}"
    );
    assert!(out.contains("orphans 1 (deleted 1)"), "{out}");
    assert!(
        out.contains("-> 5 bytes / 1 files"),
        "usage rebuilt from the files rows: {out}"
    );
    assert!(matches!(
        p.head("downloads/2026/01/01/orphan").await,
        Err(object_store::Error::NotFound { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_provider_that_dies_mid_upload_sends_the_job_elsewhere() {
    let db = TestDb::new().await;
    let queue = TestQueue::new();
    let media = MediaServer::start().await;
    let dir = std::env::temp_dir().join(format!("cs-dies-{}", uuid::Uuid::new_v4().simple()));
    let moto = emulators::start_moto();
    let bucket = emulators::unique_bucket();
    let s3 = emulators::s3_bucket_on(&moto, &bucket)
        .await
        .replacen("s3://", "s3=s3://", 1);
    let mut common = settings::common(&db, &queue, &dir);
    // S3 first: the job goes there until it is gone.
    common.storage.storage = vec![s3, format!("disk=file://{}", dir.display())];
    common.storage.placement = Placement::Ordered;
    let worker = clipstash_worker::Worker::build(
        settings::worker(common),
        Exporter::detached(Component::Worker),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));

    let size = 9 * 1024 * 1024 + 5;
    let path = format!("/held/{size}/4/dies/a");
    let id = uuid::Uuid::now_v7();
    let row = clipstash_db::jobs::insert_job(
        &db.pool,
        id,
        &media.url(&path),
        clipstash_domain::VideoSource::Direct,
    )
    .await
    .unwrap();
    clipstash_queue::Queue::connect(&queue.args())
        .await
        .unwrap()
        .push(&clipstash_domain::DownloadJob {
            job_id: id,
            url: row.url.clone(),
            enqueued_at: row.created_at,
        })
        .await
        .unwrap();
    wait_for("the download to start", LIMIT, || async {
        (media.hits(&path) == 1).then_some(())
    })
    .await;
    // S3 vanishes while the body is still coming; then the rest of the body arrives.
    moto.kill();
    media.release("dies");
    let job = wait_for("the job to finish", LIMIT, || async {
        let j = clipstash_db::jobs::get_job(&db.pool, id)
            .await
            .unwrap()
            .unwrap();
        j.status.is_terminal().then_some(j)
    })
    .await;
    assert_eq!(job.status.as_str(), "succeeded", "{:?}", job.error_message);
    assert_eq!(job.provider.as_deref(), Some("disk"));
    assert_eq!(job.sha256.as_deref(), Some(media_sha256(size, 4).as_str()));
    let usage = clipstash_db::usage::storage_usage(&db.pool).await.unwrap();
    let counted: Vec<(&str, i64, i64)> = usage
        .iter()
        .map(|u| (u.provider.as_str(), u.bytes_used, u.file_count))
        .collect();
    assert_eq!(
        counted,
        [("disk", size as i64, 1)],
        "nothing counted on the dead provider"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
