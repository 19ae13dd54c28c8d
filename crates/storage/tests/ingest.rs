//! The ingest pipeline with real Postgres: quotas under concurrency, placement, growing
//! reservations, failures leaving nothing behind.

use bytes::Bytes;
use clipstash_db::{Claim, jobs, transitions, usage};
use clipstash_domain::{ErrorCode, Media, VideoSource};
use clipstash_storage::ingest::{SINGLE_PUT_MAX, ingest};
use clipstash_storage::{Placement, Storage, StorageArgs};
use clipstash_testkit::TestDb;
use futures_util::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;

fn storage(entries: &[String], placement: Placement) -> Storage {
    Storage::from_args(&StorageArgs {
        storage: entries.to_vec(),
        placement,
        storage_dir: std::env::temp_dir(),
        storage_quota_bytes: 0,
    })
    .unwrap()
}

fn local(name: &str, quota: u64) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cs-ingest-{}", Uuid::new_v4().simple()));
    (
        format!("{name}=file://{}?quota={quota}", dir.display()),
        dir,
    )
}

/// A media stream of `len` bytes in 64 KiB chunks, announcing its length or not.
fn media(len: u64, announce: bool) -> Media {
    let chunks = (0..len.div_ceil(65536)).map(move |i| {
        let n = (len - i * 65536).min(65536) as usize;
        Ok(Bytes::from(vec![i as u8; n]))
    });
    Media {
        content_type: "video/mp4".into(),
        expected_len: announce.then_some(len),
        body: futures_util::stream::iter(chunks).boxed(),
    }
}

/// A job claimed as a worker would: reservations count only for running jobs.
async fn running_job(pool: &PgPool) -> (Uuid, sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let id = Uuid::now_v7();
    jobs::insert_job(pool, id, "https://a.example/v.mp4", VideoSource::Direct)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert!(matches!(
        transitions::claim(&mut conn, id).await.unwrap(),
        Claim::Claimed { .. }
    ));
    (id, conn)
}

/// Runs one job's ingest and records its outcome as the worker does.
async fn run(pool: &PgPool, s: &Storage, len: u64, announce: bool) -> Result<String, ErrorCode> {
    let (id, mut conn) = running_job(pool).await;
    match ingest(s, pool, id, media(len, announce), 100 * MIB).await {
        Ok(obj) => {
            transitions::complete(&mut conn, id, &obj)
                .await
                .unwrap()
                .unwrap();
            Ok(obj.provider.to_string())
        }
        Err(e) => {
            transitions::record_failure(&mut *conn, id, e.code, &e.message, false)
                .await
                .unwrap();
            Err(e.code)
        }
    }
}

fn used(all: &[usage::Usage], name: &str) -> (i64, i64) {
    all.iter()
        .find(|u| u.provider == name)
        .map_or((0, 0), |u| (u.bytes_used, u.file_count))
}

#[tokio::test]
async fn concurrent_uploads_never_exceed_a_quota_and_spill_over_in_order() {
    let db = TestDb::new().await;
    let (a, dir_a) = local("a", 3 * MIB);
    let (b, dir_b) = local("b", 2 * MIB);
    let s = storage(&[a, b], Placement::Ordered);
    // Eight 1 MiB uploads at once, half of them of unknown length: room for five. Each job
    // holds a connection, as a worker's claim does, and its reservations need another: the
    // test's pool of 8 ran out and its 5 s acquire timeout failed uploads as storage_error
    // when the machine was busy (seen in CI).
    let pool = clipstash_db::connect(&db.url.clone().into(), 16)
        .await
        .unwrap();
    let outcomes =
        futures_util::future::join_all((0..8).map(|i| run(&pool, &s, MIB, i % 2 == 0))).await;
    let ok: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let full = outcomes
        .iter()
        .filter(|o| **o == Err(ErrorCode::StorageFull))
        .count();
    assert_eq!((ok.len(), full), (5, 3), "{outcomes:?}");
    assert_eq!(ok.iter().filter(|p| p.as_str() == "a").count(), 3);
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!(used(&all, "a"), (3 * MIB as i64, 3));
    assert_eq!(used(&all, "b"), (2 * MIB as i64, 2));
    // Failed uploads hold no reservation and left no object.
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_reservations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(reservations, 0);
    let _ = (
        std::fs::remove_dir_all(dir_a),
        std::fs::remove_dir_all(dir_b),
    );
}

#[tokio::test]
async fn a_stream_of_unknown_length_grows_its_reservation_until_the_quota() {
    let db = TestDb::new().await;
    let (a, dir) = local("a", 5 * MIB);
    let s = storage(&[a], Placement::Ordered);
    // Unknown length: starts with 1 MiB reserved, grows to cover 4 MiB.
    assert_eq!(run(&db.pool, &s, 4 * MIB, false).await, Ok("a".into()));
    // The next one starts (1 MiB fits) but runs out of room mid-stream.
    assert_eq!(
        run(&db.pool, &s, 3 * MIB, false).await,
        Err(ErrorCode::StorageFull)
    );
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!(used(&all, "a"), (4 * MIB as i64, 1));
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    assert_eq!(files.len(), 1, "only the first job's folder: {files:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn least_used_alternates_between_equal_providers() {
    let db = TestDb::new().await;
    let (a, dir_a) = local("a", 10 * MIB);
    let (b, dir_b) = local("b", 10 * MIB);
    let s = storage(&[a, b], Placement::LeastUsed);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(run(&db.pool, &s, MIB, true).await.unwrap());
    }
    assert_eq!(got, ["a", "b", "a", "b"]);
    let _ = (
        std::fs::remove_dir_all(dir_a),
        std::fs::remove_dir_all(dir_b),
    );
}

#[tokio::test]
async fn a_provider_that_errors_is_skipped_when_another_has_room() {
    let db = TestDb::new().await;
    // A file up to SINGLE_PUT_MAX goes in one put, so the broken provider fails after the
    // body is read; a larger one streams, and fails as its upload starts.
    for len in [SINGLE_PUT_MAX, SINGLE_PUT_MAX + 1] {
        let (broken, dir_broken) = local("broken", 0);
        let (good, dir_good) = local("good", 0);
        let s = storage(&[broken, good], Placement::Ordered);
        // The first provider's root becomes a plain file: every upload to it fails.
        std::fs::remove_dir_all(&dir_broken).unwrap();
        std::fs::write(&dir_broken, b"not a folder").unwrap();
        assert_eq!(
            run(&db.pool, &s, len, true).await,
            Ok("good".into()),
            "{len}"
        );
        assert_eq!(stored_bytes(&dir_good), len, "{len}");
        let _ = (
            std::fs::remove_file(dir_broken),
            std::fs::remove_dir_all(dir_good),
        );
    }
}

/// Bytes of every file under `dir`.
fn stored_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => stored_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}

#[tokio::test]
async fn a_small_body_off_its_announced_length_is_refused_and_leaves_nothing() {
    let db = TestDb::new().await;
    let (p, dir) = local("p", 10 * MIB);
    let s = storage(&[p], Placement::Ordered);
    for (announced, sent) in [(100_000, 100_001), (100_000, 99_999), (100_000, 200_000)] {
        let (id, mut conn) = running_job(&db.pool).await;
        let mut m = media(sent, true);
        m.expected_len = Some(announced);
        let e = ingest(&s, &db.pool, id, m, 100 * MIB).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Truncated, "{sent} of {announced}: {e:?}");
        transitions::record_failure(&mut *conn, id, e.code, &e.message, false)
            .await
            .unwrap();
    }
    assert_eq!(stored_bytes(&dir), 0);
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!(used(&all, "p"), (0, 0));
    // Nothing stays reserved: the whole quota is there for the next file.
    assert_eq!(run(&db.pool, &s, 10 * MIB, true).await, Ok("p".into()));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn random_placement_uses_every_provider() {
    let db = TestDb::new().await;
    let (a, dir_a) = local("a", 0);
    let (b, dir_b) = local("b", 0);
    let s = storage(&[a, b], Placement::Random);
    let mut got = std::collections::BTreeMap::new();
    // 24 jobs: all on one provider has a chance of 2 in 2^24.
    for _ in 0..24 {
        *got.entry(run(&db.pool, &s, 64 * 1024, true).await.unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b"], "{got:?}");
    let _ = (
        std::fs::remove_dir_all(dir_a),
        std::fs::remove_dir_all(dir_b),
    );
}
