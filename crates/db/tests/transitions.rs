//! The transitions' SQL against a real Postgres, a database per test.

use clipstash_db::{Claim, jobs, transitions, usage};
use clipstash_domain::{ErrorCode, JobStatus, VideoSource};
use clipstash_testkit::{TestDb, stored_object};
use uuid::Uuid;

async fn queued(db: &TestDb) -> Uuid {
    let id = Uuid::now_v7();
    jobs::insert_job(&db.pool, id, "https://a.example/v.mp4", VideoSource::Direct)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn completing_twice_counts_the_file_once() {
    let db = TestDb::new().await;
    let id = queued(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let Claim::Claimed {
        attempts: 1,
        first_start: true,
        job,
    } = transitions::claim(&mut conn, id).await.unwrap()
    else {
        panic!("a queued job is claimed on its first attempt");
    };
    // The claim hands back the row as it left it.
    assert_eq!(
        (job.id, job.status, job.attempts),
        (id, JobStatus::Running, 1)
    );
    assert_eq!(job.url, "https://a.example/v.mp4");
    let first = transitions::complete(&mut conn, id, &stored_object(id, 1000))
        .await
        .unwrap()
        .expect("a running job succeeds");
    assert_eq!((first.bytes_used, first.file_count), (1000, 1));
    // The completion released the job's lock in the same statement.
    assert_eq!(
        advisory_locks(&db).await,
        0,
        "the lock outlived the completion"
    );
    // The same completion again (a second delivery that got this far): the file row's
    // primary key turns it into a no-op for usage.
    let second = transitions::complete(&mut conn, id, &stored_object(id, 1000))
        .await
        .unwrap()
        .expect("succeeding again is idempotent");
    assert_eq!((second.bytes_used, second.file_count), (1000, 1));
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!((all[0].bytes_used, all[0].file_count), (1000, 1));
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(files, 1);
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_job_held_by_one_session_is_busy_for_another() {
    let db = TestDb::new().await;
    let id = queued(&db).await;
    let mut holder = db.pool.acquire().await.unwrap();
    let mut other = db.pool.acquire().await.unwrap();
    assert!(matches!(
        transitions::claim(&mut holder, id).await.unwrap(),
        Claim::Claimed { .. }
    ));
    assert_eq!(
        transitions::claim(&mut other, id).await.unwrap(),
        Claim::Busy
    );
    // Busy changed nothing: still one attempt.
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Running, 1));
    // Once released, the other session may claim it (as after a worker died).
    transitions::release(&mut holder, id).await.unwrap();
    assert!(matches!(
        transitions::claim(&mut other, id).await.unwrap(),
        Claim::Claimed {
            attempts: 2,
            first_start: false,
            ..
        }
    ));
}

#[tokio::test]
async fn illegal_transitions_change_nothing() {
    let db = TestDb::new().await;
    let id = queued(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    // A queued job cannot succeed or resume.
    assert_eq!(
        transitions::complete(&mut conn, id, &stored_object(id, 5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        transitions::next_attempt(&mut conn, id).await.unwrap(),
        None
    );
    // Cancelled during a backoff: the attempt loop's next attempt does not start.
    transitions::claim(&mut conn, id).await.unwrap();
    assert!(
        transitions::record_failure(&mut *conn, id, ErrorCode::Timeout, "slow", true)
            .await
            .unwrap()
    );
    assert!(matches!(
        transitions::delete_job(&db.pool, id).await.unwrap(),
        clipstash_db::DeleteOutcome::Cancelled { .. }
    ));
    assert_eq!(
        transitions::next_attempt(&mut conn, id).await.unwrap(),
        None
    );
    assert!(
        !transitions::record_failure(&mut *conn, id, ErrorCode::Timeout, "late", false)
            .await
            .unwrap(),
        "a cancelled job does not become failed"
    );
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Cancelled, 1));
    assert!(usage::storage_usage(&db.pool).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_status_in_a_row_is_an_error_not_a_default() {
    let db = TestDb::new().await;
    let id = queued(&db).await;
    // Only a future (or hand-edited) schema could hold such a value: drop the guard to make one.
    sqlx::query("ALTER TABLE jobs DROP CONSTRAINT jobs_status_check")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET status = 'paused' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let err = jobs::get_job(&db.pool, id).await.unwrap_err();
    assert!(err.to_string().contains("paused"), "{err}");
}

#[tokio::test]
async fn rebuilding_usage_puts_every_file_in_the_shard_completion_used() {
    let db = TestDb::new().await;
    let mut before = Vec::new();
    for size in 1..=40 {
        let id = queued(&db).await;
        let mut conn = db.pool.acquire().await.unwrap();
        transitions::claim(&mut conn, id).await.unwrap();
        transitions::complete(&mut conn, id, &stored_object(id, size))
            .await
            .unwrap()
            .unwrap();
        transitions::release(&mut conn, id).await.unwrap();
    }
    let rows = || async {
        sqlx::query_as::<_, (i16, i64, i64)>(
            "SELECT shard, bytes_used, file_count FROM storage_usage WHERE provider = 'local' ORDER BY shard",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    before.extend(rows().await);
    assert!(
        before.len() > 4,
        "40 files spread over several shards: {before:?}"
    );
    let rebuilt = usage::rebuild_usage(&db.pool, "local").await.unwrap();
    assert_eq!(
        (rebuilt.bytes_used, rebuilt.file_count),
        ((1..=40).sum(), 40)
    );
    assert_eq!(rows().await, before);
}

#[tokio::test]
async fn a_running_job_cancelled_cannot_succeed_or_fail_and_gives_back_its_reservation() {
    let db = TestDb::new().await;
    let id = queued(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    transitions::claim(&mut conn, id).await.unwrap();
    assert!(
        usage::reserve(&db.pool, id, "local", 1000, 10_000)
            .await
            .unwrap()
    );
    let outcome = transitions::delete_job(&db.pool, id).await.unwrap();
    assert!(
        matches!(
            outcome,
            clipstash_db::DeleteOutcome::Cancelled {
                was: JobStatus::Running,
                ..
            }
        ),
        "{outcome:?}"
    );
    let reserved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_reservations WHERE job_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reserved, 0, "the cancel gives the space back");
    // The worker's attempt ends late: neither its success nor its failure overwrites it.
    assert_eq!(
        transitions::complete(&mut conn, id, &stored_object(id, 5))
            .await
            .unwrap(),
        None
    );
    assert!(
        !transitions::record_failure(&mut *conn, id, ErrorCode::Timeout, "late", true)
            .await
            .unwrap()
    );
    assert_eq!(
        jobs::cancelled_among(&db.pool, &[id, Uuid::now_v7()])
            .await
            .unwrap(),
        [id]
    );
    let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at.is_some());
    assert!(usage::storage_usage(&db.pool).await.unwrap().is_empty());
}

/// Advisory locks held by any session on the test's database.
async fn advisory_locks(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_session_claims_and_completes_many_jobs_in_one_statement_each() {
    let db = TestDb::new().await;
    let (a, b, cancelled, busy) = (
        queued(&db).await,
        queued(&db).await,
        queued(&db).await,
        queued(&db).await,
    );
    let mut other = db.pool.acquire().await.unwrap();
    assert!(matches!(
        transitions::claim(&mut other, busy).await.unwrap(),
        Claim::Claimed { .. }
    ));
    transitions::delete_job(&db.pool, cancelled).await.unwrap();
    let mut session = db.pool.acquire().await.unwrap();
    let claims = transitions::claim_many(&mut session, &[a, busy, cancelled, b])
        .await
        .unwrap();
    // Answers in the order asked, each as a claim of its own would.
    assert!(matches!(&claims[0], Claim::Claimed { job, attempts: 1, .. } if job.id == a));
    assert_eq!(claims[1], Claim::Busy);
    assert_eq!(claims[2], Claim::NotRunnable);
    assert!(matches!(&claims[3], Claim::Claimed { job, attempts: 1, .. } if job.id == b));
    // The session holds a and b; the cancelled job's lock went at once; `other` holds busy.
    assert_eq!(advisory_locks(&db).await, 3);

    let (oa, ob) = (stored_object(a, 1000), stored_object(b, 24));
    let done = transitions::complete_many(&mut session, &[(a, &oa), (cancelled, &oa), (b, &ob)])
        .await
        .unwrap();
    assert_eq!(done.moved, [true, false, true]);
    assert_eq!(done.usage.len(), 1);
    assert_eq!(
        (done.usage[0].bytes_used, done.usage[0].file_count),
        (1024, 2)
    );
    // Both completed jobs' locks went with the statement; only `other`'s remains.
    assert_eq!(advisory_locks(&db).await, 1);
    for id in [a, b] {
        let job = jobs::get_job(&db.pool, id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Succeeded);
    }
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!((all[0].bytes_used, all[0].file_count), (1024, 2));
    // A second delivery that got as far as completing both again (succeeding is
    // idempotent) counts nothing twice.
    let again = transitions::complete_many(&mut session, &[(a, &oa), (b, &ob)])
        .await
        .unwrap();
    assert_eq!(again.moved, [true, true]);
    assert_eq!(
        (again.usage[0].bytes_used, again.usage[0].file_count),
        (1024, 2)
    );
    let all = usage::storage_usage(&db.pool).await.unwrap();
    assert_eq!((all[0].bytes_used, all[0].file_count), (1024, 2));
}

/// Inserts `n` jobs in `status` with one statement; returns their ids.
async fn many_in(db: &TestDb, n: i32, status: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO jobs (id, url, source, requested_source, status, finished_at) \
         SELECT gen_random_uuid(), 'https://a.example/' || n, 'direct', 'auto', $2, \
                CASE WHEN $2 IN ('succeeded', 'failed') THEN now() END \
         FROM generate_series(1, $1) n RETURNING id",
    )
    .bind(n)
    .bind(status)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Rows of `jobs` read so far, by every session: index entries that scans of its indexes
/// returned, plus rows read by sequential scans. `session` (a pool of one connection) is
/// made to publish its counts first: a session otherwise sends them at most once a second.
async fn jobs_rows_read(session: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(session)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT (SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes \
                 WHERE relname = 'jobs')::int8 \
              + (SELECT COALESCE(sum(seq_tup_read), 0) FROM pg_stat_user_tables \
                 WHERE relname = 'jobs')::int8",
    )
    .fetch_one(session)
    .await
    .unwrap()
}

/// Every transition the workers make reaches its jobs by primary key, whatever Postgres'
/// statistics say. Statistics taken while every job had ended (failed, here), then a backlog
/// that no `ANALYZE` has seen (as after a quiet spell on a big table): planned with them,
/// the transitions' `status = ANY(...)` guards made each claim, completion, failure, resume
/// and quota check read every active job (`clipstash_db::transitions` says why). Here 4,000
/// jobs are active, and each step may read a few rows per job it moves, not thousands.
#[tokio::test]
async fn transitions_read_their_jobs_by_primary_key_whatever_the_statistics_say() {
    let db = TestDb::new().await;
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(&db.pool)
        .await
        .unwrap();
    many_in(&db, 2_000, "failed").await;
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    let queued = many_in(&db, 2_000, "queued").await;
    many_in(&db, 2_000, "running").await;
    let (ids, done) = (&queued[..20], &queued[..16]);
    let (retried, failed) = (queued[16], queued[17]);

    // One session: it holds the claims' locks, and its reads are the ones counted.
    let session = clipstash_db::connect(&db.url.clone().into(), 1)
        .await
        .unwrap();
    let mut before = jobs_rows_read(&session).await;
    let mut step = async |name: &str, jobs: i64| {
        let after = jobs_rows_read(&session).await;
        let read = after - before;
        // Each job's index entries, its foreign keys' checks: tens per job, not thousands.
        assert!(
            read <= 20 * jobs + 50,
            "{name} read {read} rows of jobs for {jobs} jobs, with 4,000 active"
        );
        before = after;
    };

    let mut conn = session.acquire().await.unwrap();
    let claims = transitions::claim_many(&mut conn, ids).await.unwrap();
    assert!(claims.iter().all(|c| matches!(c, Claim::Claimed { .. })));
    drop(conn);
    step("the claim", 20).await;

    let objects: Vec<_> = done.iter().map(|id| stored_object(*id, 1000)).collect();
    let batch: Vec<_> = done.iter().copied().zip(objects.iter()).collect();
    let mut conn = session.acquire().await.unwrap();
    let completed = transitions::complete_many(&mut conn, &batch).await.unwrap();
    assert_eq!(completed.moved, vec![true; 16]);
    drop(conn);
    step("the completion", 16).await;

    let moved = transitions::record_failure(&session, retried, ErrorCode::Timeout, "x", true)
        .await
        .unwrap();
    assert!(moved, "a running job is retried");
    step("the retry", 1).await;

    let mut conn = session.acquire().await.unwrap();
    let attempts = transitions::next_attempt(&mut conn, retried).await.unwrap();
    assert_eq!(attempts, Some(2));
    drop(conn);
    step("the resume", 1).await;

    let moved = transitions::record_failure(&session, failed, ErrorCode::Timeout, "x", false)
        .await
        .unwrap();
    assert!(moved, "a running job fails");
    step("the failure", 1).await;

    assert!(
        usage::reserve(&session, retried, "local", 100, 1_000_000)
            .await
            .unwrap()
    );
    step("the quota check", 1).await;

    let job = jobs::get_job(&db.pool, retried).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
}

/// A batch of 64, the workers' largest, on a table never analysed (a fresh deployment's
/// first minute): the planner, thinking `jobs` small, would rather scan all of it than look
/// 64 ids up, unless the ids come as an array it cannot see into.
#[tokio::test]
async fn a_batch_on_a_table_never_analysed_is_read_by_primary_key() {
    let db = TestDb::new().await;
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(&db.pool)
        .await
        .unwrap();
    let queued = many_in(&db, 10_000, "queued").await;
    let ids = &queued[..64];
    let session = clipstash_db::connect(&db.url.clone().into(), 1)
        .await
        .unwrap();
    let before = jobs_rows_read(&session).await;
    let mut conn = session.acquire().await.unwrap();
    let claims = transitions::claim_many(&mut conn, ids).await.unwrap();
    assert!(claims.iter().all(|c| matches!(c, Claim::Claimed { .. })));
    drop(conn);
    let claimed = jobs_rows_read(&session).await;
    assert!(
        claimed - before <= 20 * 64 + 50,
        "the claim of 64 read {} rows of jobs",
        claimed - before
    );
    let objects: Vec<_> = ids.iter().map(|id| stored_object(*id, 1000)).collect();
    let batch: Vec<_> = ids.iter().copied().zip(objects.iter()).collect();
    let mut conn = session.acquire().await.unwrap();
    let completed = transitions::complete_many(&mut conn, &batch).await.unwrap();
    assert_eq!(completed.moved, vec![true; 64]);
    drop(conn);
    let read = jobs_rows_read(&session).await - claimed;
    assert!(
        read <= 20 * 64 + 50,
        "the completion of 64 read {read} rows of jobs"
    );
}
