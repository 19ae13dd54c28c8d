//! The lock session against a real Postgres: one connection holding every running job's
//! lock, claiming and completing in batches.

use std::time::Duration;

use clipstash_db::{Claim, jobs, transitions};
use clipstash_domain::{JobStatus, VideoSource};
use clipstash_testkit::{TestDb, stored_object, wait_for};
use clipstash_worker::job::LockSession;
use clipstash_worker::job::session::SessionError;
use uuid::Uuid;

async fn queued(db: &TestDb) -> Uuid {
    let id = Uuid::now_v7();
    jobs::insert_job(&db.pool, id, "https://a.example/v.mp4", VideoSource::Direct)
        .await
        .unwrap();
    id
}

/// Whether some session holds the job's lock, asked from a connection of the test's own.
async fn locked(db: &TestDb, id: Uuid) -> bool {
    let mut c = db.pool.acquire().await.unwrap();
    transitions::is_locked(&mut c, id).await.unwrap()
}

/// Polls until the job's lock is in the state wanted (releases are sent, not awaited).
async fn wait_locked(db: &TestDb, id: Uuid, want: bool) {
    let what = format!(
        "the lock of {id} to be {}",
        if want { "held" } else { "free" }
    );
    wait_for(&what, Duration::from_secs(10), || async {
        (locked(db, id).await == want).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_second_delivery_to_the_same_worker_is_busy_and_a_dropped_lock_is_released() {
    let db = TestDb::new().await;
    let session = LockSession::spawn(db.pool.clone());
    let id = queued(&db).await;
    // Both deliveries ask at once: they land in the same round.
    let (a, b) = tokio::join!(session.claim(id), session.claim(id));
    let (a, b) = (a.unwrap(), b.unwrap());
    let claimed = [&a, &b]
        .iter()
        .filter(|(c, _)| matches!(c, Claim::Claimed { .. }))
        .count();
    assert_eq!(
        claimed, 1,
        "session locks are re-entrant: the session must refuse the twin"
    );
    assert!([&a.0, &b.0].contains(&&Claim::Busy));
    // And a later delivery while the first still runs.
    assert_eq!(session.claim(id).await.unwrap().0, Claim::Busy);
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Running, 1));
    assert!(locked(&db, id).await);
    // The attempt ends without a completion (failed, cancelled, panicked): dropping the
    // lock releases it, and the job may be claimed again.
    drop((a, b));
    wait_locked(&db, id, false).await;
    assert!(matches!(
        session.claim(id).await.unwrap().0,
        Claim::Claimed { attempts: 2, .. }
    ));
}

#[tokio::test]
async fn concurrent_completions_share_statements_and_release_their_locks() {
    let db = TestDb::new().await;
    let session = LockSession::spawn(db.pool.clone());
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(queued(&db).await);
    }
    let runs = ids.iter().map(|&id| {
        let session = session.clone();
        async move {
            let (claim, lock) = session.claim(id).await.unwrap();
            assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");
            let usage = lock.unwrap().complete(stored_object(id, 10)).await.unwrap();
            usage.expect("a running job succeeds")
        }
    });
    futures_util::future::join_all(runs).await;
    let (succeeded, files): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'succeeded'), \
                (SELECT count(*) FROM stored_files)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((succeeded, files), (40, 40));
    // A statement's `now()` is its transaction's start: jobs completed together share it.
    let (claims, completions): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT started_at), count(DISTINCT finished_at) FROM jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        claims < 40 && completions < 40,
        "40 jobs took {claims} claim and {completions} completion statements"
    );
    let usage = clipstash_db::usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!((usage[0].bytes_used, usage[0].file_count), (400, 40));
    for id in ids {
        assert!(!locked(&db, id).await, "a completed job's lock outlived it");
    }
}

#[tokio::test]
async fn a_lost_session_connection_fails_its_jobs_completions_and_frees_their_locks() {
    let db = TestDb::new().await;
    let session = LockSession::spawn(db.pool.clone());
    let id = queued(&db).await;
    let (claim, lock) = session.claim(id).await.unwrap();
    assert!(matches!(claim, Claim::Claimed { .. }));
    let mut lock = lock.unwrap();
    // Postgres drops the session's connection (a restart, a network cut, an admin).
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND objid = ($1::bigint & x'FFFFFFFF'::bigint)",
    )
    .bind(transitions::lock_key(id))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    wait_locked(&db, id, false).await;
    // The completion cannot pretend to hold the lock: it fails, and nothing is recorded.
    let err = lock.complete(stored_object(id, 10)).await.unwrap_err();
    assert!(matches!(err, SessionError::Database(_)), "{err:?}");
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    // The next delivery claims it on a fresh connection; the old lock's drop is ignored.
    drop(lock);
    let (again, lock2) = session.claim(id).await.unwrap();
    assert!(
        matches!(again, Claim::Claimed { attempts: 2, .. }),
        "{again:?}"
    );
    assert!(locked(&db, id).await);
    // A later completion under the old generation would be refused with Lost; this one
    // belongs to the new generation and succeeds.
    assert!(
        lock2
            .unwrap()
            .complete(stored_object(id, 10))
            .await
            .unwrap()
            .is_some()
    );
}
