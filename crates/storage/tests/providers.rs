//! One provider contract, run against every kind that can run here: local disk, S3 on moto,
//! Azure Blob on Azurite (emulators started by the test kit on free loopback ports, a bucket
//! or container per test), and GCS on the test kit's in-process fake of the XML API calls
//! `object_store` makes (no emulator on the reachable registries speaks that API; see
//! docs/STORAGE.md). Against real GCS the contract runs only when `CLIPSTASH_TEST_GCS_URL`
//! is set.

use bytes::Bytes;
use clipstash_storage::{Kind, Placement, Provider, Storage, StorageArgs};
use clipstash_testkit::emulators;
use clipstash_testkit::gcs_fake::GcsFake;
use object_store::GetRange;
use sha2::{Digest, Sha256};

fn storage(entry: String) -> Storage {
    Storage::from_args(&StorageArgs {
        storage: vec![entry],
        placement: Placement::Ordered,
        storage_dir: std::env::temp_dir(),
        storage_quota_bytes: 0,
    })
    .unwrap()
}

fn local_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cs-contract-{}", uuid::Uuid::new_v4().simple()))
}

/// Deterministic bytes of `len`.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u64) as u8
        })
        .collect()
}

async fn put(p: &Provider, key: &str, body: &[u8]) {
    let mut up = p.start_upload(key).await.unwrap();
    for chunk in body.chunks(1 << 20) {
        up.wait_for_capacity(2).await.unwrap();
        up.put(Bytes::copy_from_slice(chunk));
    }
    up.finish().await.unwrap();
}

async fn read(p: &Provider, key: &str, range: Option<GetRange>) -> Vec<u8> {
    p.get(key, range)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// The contract every provider kind keeps.
async fn contract(p: &Provider, expect_kind: Kind) {
    assert_eq!(p.kind(), expect_kind);
    // Small, empty, and larger than several 8 MiB parts.
    let small = data(1000, 1);
    let big = data(100 * 1024 * 1024 + 17, 2);
    put(p, "downloads/a/small", &small).await;
    put(p, "downloads/a/empty", &[]).await;
    put(p, "downloads/b/big", &big).await;

    assert_eq!(read(p, "downloads/a/small", None).await, small);
    assert_eq!(read(p, "downloads/a/empty", None).await, Vec::<u8>::new());
    let got = read(p, "downloads/b/big", None).await;
    assert_eq!(
        hex::encode(Sha256::digest(&got)),
        hex::encode(Sha256::digest(&big))
    );
    assert_eq!(
        read(p, "downloads/b/big", Some(GetRange::Bounded(10..20))).await,
        big[10..20]
    );
    assert_eq!(
        read(p, "downloads/a/small", Some(GetRange::Bounded(990..1000))).await,
        small[990..]
    );
    assert_eq!(
        p.head("downloads/b/big").await.unwrap().size,
        big.len() as u64
    );

    let mut listed: Vec<(String, u64)> = p
        .list("downloads")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, m)| (k, m.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("downloads/a/empty".to_string(), 0),
            ("downloads/a/small".to_string(), 1000),
            ("downloads/b/big".to_string(), big.len() as u64),
        ]
    );

    // A signed URL works over plain HTTP, for kinds that sign.
    match p
        .signed_get_url("downloads/a/small", std::time::Duration::from_secs(60))
        .await
        .unwrap()
    {
        Some(url) => {
            assert_ne!(expect_kind, Kind::Local);
            let r = reqwest::get(url.as_str()).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            assert_eq!(r.bytes().await.unwrap().to_vec(), small);
        }
        None => assert_eq!(expect_kind, Kind::Local, "only local disk cannot sign"),
    }

    // An aborted upload leaves nothing at its key.
    let mut up = p.start_upload("downloads/c/aborted").await.unwrap();
    up.put(Bytes::from(data(9 * 1024 * 1024, 3)));
    up.abort().await.unwrap();
    assert!(matches!(
        p.head("downloads/c/aborted").await,
        Err(object_store::Error::NotFound { .. })
    ));

    for key in ["downloads/a/small", "downloads/a/empty", "downloads/b/big"] {
        p.delete(key).await.unwrap();
        assert!(matches!(
            p.head(key).await,
            Err(object_store::Error::NotFound { .. })
        ));
        // Deleting again is not an error (deletes are retried).
        p.delete(key).await.unwrap();
    }
    assert!(p.list("downloads").await.unwrap().is_empty());
}

#[tokio::test]
async fn local_disk_keeps_the_contract_and_leaves_no_staging_files() {
    let dir = local_dir();
    let s = storage(format!("disk=file://{}", dir.display()));
    contract(&s.providers()[0], Kind::Local).await;
    let mut left = Vec::new();
    for e in walk(&dir) {
        left.push(e);
    }
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn s3_on_moto_keeps_the_contract_and_leaves_no_parts() {
    let bucket = emulators::unique_bucket();
    let url = emulators::s3_bucket(&bucket).await.replacen(
        &format!("s3://{bucket}"),
        &format!("s3://{bucket}/some/prefix"),
        1,
    );
    let s = storage(format!("s3={url}"));
    let p = &s.providers()[0];
    contract(p, Kind::S3).await;
    // No multipart upload is left in progress (the aborted one, the finished ones).
    let uploads = reqwest::get(format!("{}/{bucket}?uploads", emulators::moto().endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!uploads.contains("<Upload>"), "{uploads}");
    // Our prefix is honoured: the keys live under it in the bucket.
    put(p, "downloads/x", b"x").await;
    let listing = reqwest::get(format!(
        "{}/{bucket}?list-type=2",
        emulators::moto().endpoint()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        listing.contains("<Key>some/prefix/downloads/x</Key>"),
        "{listing}"
    );
}

#[tokio::test]
async fn azure_on_azurite_keeps_the_contract() {
    let container = emulators::unique_bucket();
    let url = emulators::azure_container(&container).await;
    let s = storage(format!("blob={url}"));
    contract(&s.providers()[0], Kind::Azure).await;
}

#[tokio::test]
async fn gcs_on_the_fake_keeps_the_contract_and_leaves_no_parts() {
    let fake = GcsFake::start().await;
    // Two entries a page, so that listing follows continuation tokens.
    fake.set_page_size(2);
    let bucket = emulators::unique_bucket();
    let url = fake.bucket(&bucket).replacen(
        &format!("gs://{bucket}"),
        &format!("gs://{bucket}/some/prefix"),
        1,
    );
    let s = storage(format!("gcs={url}"));
    let p = &s.providers()[0];
    contract(p, Kind::Gcs).await;
    // The contract went through each call the fake stands in for.
    let calls = fake.calls();
    for wanted in [
        "POST uploads",
        "PUT ",
        "PUT partNumber,uploadId",
        "POST uploadId",
        "DELETE uploadId",
        "GET ",
        "GET  Range",
        "HEAD ",
        "GET list-type,prefix",
        "GET continuation-token,list-type,prefix",
        "DELETE ",
    ] {
        assert!(
            calls.iter().any(|c| c == wanted),
            "no {wanted:?} in {calls:?}"
        );
    }
    assert!(
        calls.iter().any(|c| c.starts_with("GET X-Goog-Algorithm,")),
        "no signed GET in {calls:?}"
    );
    // No multipart upload is left in progress (the aborted one, the finished ones).
    assert_eq!(fake.uploads_in_progress(&bucket), 0);
    // Our prefix is honoured: the keys live under it in the bucket.
    put(p, "downloads/x", b"x").await;
    assert_eq!(fake.objects(&bucket), ["some/prefix/downloads/x"]);
}

/// The fake's checks are not decoration: an unsigned request, a tampered signed URL and a
/// request for a missing bucket are refused as GCS refuses them.
#[tokio::test]
async fn the_gcs_fake_refuses_what_gcs_refuses() {
    let fake = GcsFake::start().await;
    let bucket = emulators::unique_bucket();
    let s = storage(format!("gcs={}", fake.bucket(&bucket)));
    let p = &s.providers()[0];
    put(p, "k", b"hello").await;
    let r = reqwest::get(format!("{}/{bucket}/k", fake.endpoint()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let url = p
        .signed_get_url("k", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let r = reqwest::get(url.as_str()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    // The same URL for another object, or with one signature digit changed, is refused.
    let other = url
        .as_str()
        .replacen(&format!("/{bucket}/k?"), &format!("/{bucket}/j?"), 1);
    assert_eq!(reqwest::get(other).await.unwrap().status(), 403);
    let sig_at = url.as_str().find("X-Goog-Signature=").unwrap() + "X-Goog-Signature=".len();
    let mut tampered = url.to_string();
    let digit = if &tampered[sig_at..=sig_at] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.replace_range(sig_at..=sig_at, digit);
    assert_eq!(reqwest::get(tampered).await.unwrap().status(), 403);
    // A bucket that does not exist is an error, not an empty listing.
    let missing = storage(format!("gcs={}", fake.bucket(&bucket)).replacen(
        &format!("gs://{bucket}"),
        "gs://cs-no-such-bucket",
        1,
    ));
    let e = missing.providers()[0].list("downloads").await.unwrap_err();
    assert!(e.to_string().contains("NoSuchBucket"), "{e}");
}

/// Real GCS, opt-in: set `CLIPSTASH_TEST_GCS_URL` to a `gs://bucket[/prefix]?...` storage
/// URL, with credentials in the usual environment (`GOOGLE_APPLICATION_CREDENTIALS`, ...) or
/// the query. The contract runs under a fresh prefix below the URL's and deletes what it
/// wrote. Never set in CI.
#[tokio::test]
async fn gcs_for_real_keeps_the_contract() {
    let Ok(raw) = std::env::var("CLIPSTASH_TEST_GCS_URL") else {
        println!("gcs_for_real_keeps_the_contract: skipped, CLIPSTASH_TEST_GCS_URL is not set");
        return;
    };
    let mut url = url::Url::parse(&raw).expect("CLIPSTASH_TEST_GCS_URL is a gs:// URL");
    assert_eq!(url.scheme(), "gs", "CLIPSTASH_TEST_GCS_URL is a gs:// URL");
    let path = format!(
        "{}/clipstash-contract-{}",
        url.path().trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    );
    url.set_path(&path);
    let s = storage(format!("gcs={url}"));
    contract(&s.providers()[0], Kind::Gcs).await;
}
