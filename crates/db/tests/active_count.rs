//! `api_keys.active_jobs`, each key's count of active jobs that a submit checks its cap
//! against, kept by the submit statement (for the jobs it inserts) and by triggers on `jobs`
//! (for every other change): it must equal the count of the key's active jobs after every
//! kind of change, from every code path, alone or concurrent.

use clipstash_db::batch::{AtCap, JobInserter, Written};
use clipstash_db::jobs::{self, IdempotencyKey, NewJob, active_statuses};
use clipstash_db::{Claim, DeleteOutcome, Owner, transitions};
use clipstash_domain::{ErrorCode, JobStatus, StoredObject, VideoSource};
use clipstash_testkit::{TestDb, stored_object};
use futures_util::future::join_all;
use strum::VariantArray;
use uuid::Uuid;

/// Each key's `(kept count, counted)`, by key id.
async fn counts(db: &TestDb) -> Vec<(Uuid, i64, i64)> {
    sqlx::query_as(
        "SELECT k.id, k.active_jobs, \
           (SELECT count(*) FROM jobs j WHERE j.api_key_id = k.id AND j.status = ANY($1)) \
         FROM api_keys k ORDER BY k.id",
    )
    .bind(active_statuses())
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Asserts every key's kept count is its real one, and returns the kept counts of `keys`.
async fn checked(db: &TestDb, step: &str, keys: &[Uuid]) -> Vec<i64> {
    let all = counts(db).await;
    for (id, kept, real) in &all {
        assert_eq!(
            kept, real,
            "after {step}: key {id} keeps {kept}, has {real}"
        );
    }
    keys.iter()
        .map(|k| all.iter().find(|(id, ..)| id == k).unwrap().1)
        .collect()
}

async fn submit(inserter: &JobInserter, key: Option<Uuid>) -> Uuid {
    let id = Uuid::now_v7();
    let job = NewJob::new(id, "https://a.example/v.mp4", VideoSource::Direct);
    match key {
        Some(key) => {
            let done = inserter.insert_capped(&job, key, 1_000).await.unwrap();
            assert!(!matches!(done, Err(AtCap)));
        }
        None => {
            inserter.insert(&job).await.unwrap();
        }
    }
    id
}

/// Postgres' `job_is_active`, which the triggers count by, and the domain's list of active
/// statuses, which the API and the docs use, name the same statuses.
#[tokio::test]
async fn postgres_and_the_domain_agree_on_which_statuses_are_active() {
    let db = TestDb::new().await;
    for status in JobStatus::VARIANTS {
        let active: bool = sqlx::query_scalar("SELECT job_is_active($1)")
            .bind(status.as_str())
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            active,
            active_statuses().contains(&status.as_str()),
            "{status:?}"
        );
    }
}

/// Every transition the product makes, and the raw changes an operator might, each
/// checked: submits (batched, two keys in one statement; at the cap; idempotent, and its
/// replay), claim, retry, resume, failure, success (two keys in one statement), cancel,
/// retention, a job moved between keys, a deletion and a truncation.
#[tokio::test]
async fn every_change_to_jobs_keeps_each_keys_count() {
    let db = TestDb::new().await;
    let (a, b) = (db.api_key("a").await, db.api_key("b").await);
    let keys = [a, b];
    let inserter = JobInserter::spawn(db.pool.clone(), 2);

    // Sent at once, so batches hold submits of both keys (and a keyless one).
    let (of_a, of_b, _) = tokio::join!(
        join_all((0..4).map(|_| submit(&inserter, Some(a)))),
        join_all((0..3).map(|_| submit(&inserter, Some(b)))),
        submit(&inserter, None),
    );
    let (mut of_a, of_b) = (of_a, of_b);
    assert_eq!(checked(&db, "batched submits", &keys).await, [4, 3]);
    let job = NewJob::new(
        Uuid::now_v7(),
        "https://a.example/c.mp4",
        VideoSource::Direct,
    );
    let done = inserter.insert_capped(&job, b, 3).await.unwrap();
    assert!(matches!(done, Err(AtCap)), "{done:?}");
    assert_eq!(checked(&db, "a submit at the cap", &keys).await, [4, 3]);

    let id = Uuid::now_v7();
    let job = NewJob::new(id, "https://a.example/i.mp4", VideoSource::Direct);
    let key = IdempotencyKey {
        key: "once",
        request_sha256: "ab",
    };
    let done = inserter
        .submit(&job, Some((a, 1_000)), Some(key))
        .await
        .unwrap();
    assert!(matches!(done, Written::Created(_)), "{done:?}");
    of_a.push(id);
    assert_eq!(checked(&db, "an idempotent submit", &keys).await, [5, 3]);
    let again = NewJob::new(
        Uuid::now_v7(),
        "https://a.example/i.mp4",
        VideoSource::Direct,
    );
    let done = inserter
        .submit(&again, Some((a, 1_000)), Some(key))
        .await
        .unwrap();
    assert!(matches!(done, Written::Replayed(_)), "{done:?}");
    assert_eq!(checked(&db, "its replay", &keys).await, [5, 3]);

    // Claim two of a's and one of b's in one statement: still active.
    let mut conn = db.pool.acquire().await.unwrap();
    let claimed = [of_a[0], of_a[1], of_b[0]];
    let claims = transitions::claim_many(&mut conn, &claimed).await.unwrap();
    assert!(claims.iter().all(|c| matches!(c, Claim::Claimed { .. })));
    assert_eq!(checked(&db, "claims", &keys).await, [5, 3]);

    // a[0] fails an attempt and will retry (retrying is active), resumes, then fails for good.
    let moved = transitions::record_failure(&mut *conn, of_a[0], ErrorCode::Timeout, "x", true)
        .await
        .unwrap();
    assert!(moved);
    assert_eq!(checked(&db, "a retry", &keys).await, [5, 3]);
    assert!(
        transitions::next_attempt(&mut conn, of_a[0])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(checked(&db, "a resumed attempt", &keys).await, [5, 3]);
    let moved = transitions::record_failure(&mut *conn, of_a[0], ErrorCode::Timeout, "x", false)
        .await
        .unwrap();
    assert!(moved);
    assert_eq!(checked(&db, "a final failure", &keys).await, [4, 3]);

    // a[1] and b[0] succeed in one statement.
    let (oa, ob) = (stored_object(of_a[1], 10), stored_object(of_b[0], 10));
    let done = transitions::complete_many(&mut conn, &[(of_a[1], &oa), (of_b[0], &ob)])
        .await
        .unwrap();
    assert_eq!(done.moved, [true, true]);
    assert_eq!(checked(&db, "two successes", &keys).await, [3, 2]);
    transitions::release(&mut conn, of_a[0]).await.unwrap();

    // Cancel one of b's queued jobs; deleting it again changes nothing.
    let out = transitions::delete_job_of(&db.pool, of_b[1], Owner::Key(b))
        .await
        .unwrap();
    assert!(matches!(out, DeleteOutcome::Cancelled { .. }), "{out:?}");
    assert_eq!(checked(&db, "a cancel", &keys).await, [3, 1]);
    let out = transitions::delete_job_of(&db.pool, of_b[1], Owner::Key(b))
        .await
        .unwrap();
    assert!(matches!(out, DeleteOutcome::Unchanged(_)), "{out:?}");
    assert_eq!(checked(&db, "a second cancel", &keys).await, [3, 1]);

    // Retention deletes ended jobs only: no count moves.
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '2 days' WHERE finished_at IS NOT NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let gone = jobs::delete_finished_before(&db.pool, std::time::Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert!(gone >= 2, "retention deleted {gone}");
    assert_eq!(checked(&db, "retention", &keys).await, [3, 1]);

    // By hand: a job moved from a to b, an active job deleted, an ended one revived.
    sqlx::query("UPDATE jobs SET api_key_id = $2 WHERE id = $1")
        .bind(of_a[2])
        .bind(b)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        checked(&db, "a job moved between keys", &keys).await,
        [2, 2]
    );
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(of_a[3])
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(checked(&db, "an active job deleted", &keys).await, [1, 2]);
    // a[1] succeeded and keeps its file, so retention kept it.
    sqlx::query("UPDATE jobs SET status = 'queued' WHERE id = $1")
        .bind(of_a[1])
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(checked(&db, "an ended job revived", &keys).await, [2, 2]);

    sqlx::query("TRUNCATE jobs CASCADE")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(checked(&db, "a truncation", &keys).await, [0, 0]);
}

/// Workers completing jobs of the same keys at once (their jobs in different orders), on
/// several connections, while submits for those keys go on: no deadlock, and every count
/// exact at the end.
#[tokio::test]
async fn concurrent_completions_and_submits_keep_exact_counts() {
    let db = TestDb::new().await;
    let keys: Vec<Uuid> = join_all((0..4).map(|i| {
        let db = &db;
        async move { db.api_key(&format!("k{i}")).await }
    }))
    .await;
    let inserter = JobInserter::spawn(db.pool.clone(), 2);
    let mut ids = Vec::new();
    for i in 0..96 {
        ids.push(submit(&inserter, Some(keys[i % keys.len()])).await);
    }
    // Four "workers", each with its own connection and a quarter of the jobs (every key in
    // each), completing 6 at a time, half of them in reverse key order.
    let workers = ids.chunks(24).enumerate().map(|(w, chunk)| {
        let pool = db.pool.clone();
        let mut chunk = chunk.to_vec();
        if w % 2 == 1 {
            chunk.reverse();
        }
        async move {
            let mut conn = pool.acquire().await.unwrap();
            for batch in chunk.chunks(6) {
                let claims = transitions::claim_many(&mut conn, batch).await.unwrap();
                assert!(claims.iter().all(|c| matches!(c, Claim::Claimed { .. })));
                let objects: Vec<StoredObject> =
                    batch.iter().map(|id| stored_object(*id, 10)).collect();
                let done: Vec<(Uuid, &StoredObject)> =
                    batch.iter().copied().zip(objects.iter()).collect();
                let out = transitions::complete_many(&mut conn, &done).await.unwrap();
                assert!(out.moved.iter().all(|m| *m));
            }
        }
    });
    let submits = async {
        for i in 0..40 {
            submit(&inserter, Some(keys[i % keys.len()])).await;
        }
    };
    tokio::join!(join_all(workers), submits);
    assert_eq!(
        checked(&db, "concurrent completions and submits", &keys).await,
        [10, 10, 10, 10]
    );
}

/// The migration that adds the counts takes them from the jobs already there.
#[tokio::test]
async fn the_migration_counts_the_jobs_already_there() {
    // Every migration before the one that adds the counts.
    let db = TestDb::migrated_before("20261130000011").await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for (key, name) in [(a, "a"), (b, "b")] {
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, prefix) VALUES ($1, $2, $3, 'cs_test')",
        )
        .bind(key)
        .bind(name)
        .bind([*key.as_bytes(), *key.as_bytes()].concat())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // a: 3 active (queued, running, retrying) and 2 ended; b: ended only; one keyless.
    let jobs = [
        (Some(a), "queued"),
        (Some(a), "running"),
        (Some(a), "retrying"),
        (Some(a), "succeeded"),
        (Some(a), "failed"),
        (Some(b), "cancelled"),
        (None, "queued"),
    ];
    for (key, status) in jobs {
        sqlx::query(
            "INSERT INTO jobs (id, url, source, status, api_key_id, requested_source) \
             VALUES ($1, 'https://a.example/v.mp4', 'direct', $2, $3, 'auto')",
        )
        .bind(Uuid::now_v7())
        .bind(status)
        .bind(key)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    clipstash_db::migrate(&db.pool).await.unwrap();
    assert_eq!(checked(&db, "the migration", &[a, b]).await, [3, 0]);
}

/// A statement that moves no count (a claim, queued to running) does not touch its key's
/// row, so claims never wait on a batch of submits holding the key.
#[tokio::test]
async fn a_claim_does_not_wait_for_its_keys_lock() {
    let db = TestDb::new().await;
    let key = db.api_key("held").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let id = submit(&inserter, Some(key)).await;
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(key)
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let claims = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        transitions::claim_many(&mut conn, &[id]),
    )
    .await
    .expect("the claim waited for the key's lock")
    .unwrap();
    assert!(matches!(claims[0], Claim::Claimed { .. }));
    holder.rollback().await.unwrap();
    assert_eq!(checked(&db, "a claim", &[key]).await, [1]);
}

/// `deploy/sql/recount-active-jobs.sql`, the operator's repair, puts a count changed by hand
/// back to the real one and leaves the right ones alone.
#[tokio::test]
async fn the_recount_script_repairs_a_wrong_count() {
    let db = TestDb::new().await;
    let (a, b) = (db.api_key("a").await, db.api_key("b").await);
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    for _ in 0..3 {
        submit(&inserter, Some(a)).await;
    }
    submit(&inserter, Some(b)).await;
    // An ended job of `a`, which the recount must not count.
    let ended = submit(&inserter, Some(a)).await;
    let out = transitions::delete_job_of(&db.pool, ended, Owner::Key(a))
        .await
        .unwrap();
    assert!(matches!(out, DeleteOutcome::Cancelled { .. }), "{out:?}");
    sqlx::query("UPDATE api_keys SET active_jobs = 99 WHERE id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    let script = include_str!("../../../deploy/sql/recount-active-jobs.sql");
    let mut conn = db.pool.acquire().await.unwrap();
    let fixed: Vec<(String, i64, i64)> = {
        use futures_util::TryStreamExt;
        sqlx::raw_sql(sqlx::AssertSqlSafe(script))
            .fetch_many(&mut *conn)
            .try_filter_map(|step| async move {
                Ok(match step {
                    sqlx::Either::Right(row) => {
                        use sqlx::Row;
                        Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                    }
                    sqlx::Either::Left(_) => None,
                })
            })
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(fixed, [("a".to_string(), 99, 3)]);
    assert_eq!(checked(&db, "the recount", &[a, b]).await, [3, 1]);
}

/// The recount waits for a submit that holds its key (it locks every key first, in the
/// submits' order), then counts what that submit committed: the count it leaves is exact.
/// (Counting first, it would write a count that misses the submit's job.)
#[tokio::test]
async fn the_recount_waits_for_a_submit_holding_its_key() {
    let db = TestDb::new().await;
    let key = db.api_key("held").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    submit(&inserter, Some(key)).await;
    // The count is wrong (changed by hand), so the recount has to write it.
    sqlx::query("UPDATE api_keys SET active_jobs = 99 WHERE id = $1")
        .bind(key)
        .execute(&db.pool)
        .await
        .unwrap();
    let (holder, _) = db.submit_in_progress(key, 1, None).await;
    let script = include_str!("../../../deploy/sql/recount-active-jobs.sql");
    let recount = tokio::spawn({
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    });
    db.until_a_session_waits_on_a_lock(|| recount.is_finished())
        .await;
    holder.commit().await.unwrap();
    recount.await.unwrap();
    assert_eq!(checked(&db, "a recount during a submit", &[key]).await, [2]);
}

/// A count lowered by hand does not make the key's next transitions fail: the triggers keep
/// it at 0 at least (the recount script puts the real value back).
#[tokio::test]
async fn a_count_too_low_does_not_block_transitions() {
    let db = TestDb::new().await;
    let key = db.api_key("low").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let id = submit(&inserter, Some(key)).await;
    sqlx::query("UPDATE api_keys SET active_jobs = 0 WHERE id = $1")
        .bind(key)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let claims = transitions::claim_many(&mut conn, &[id]).await.unwrap();
    assert!(matches!(claims[0], Claim::Claimed { .. }));
    let obj = stored_object(id, 10);
    let done = transitions::complete_many(&mut conn, &[(id, &obj)])
        .await
        .unwrap();
    assert_eq!(done.moved, [true]);
    let kept: i64 = sqlx::query_scalar("SELECT active_jobs FROM api_keys WHERE id = $1")
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0);
}
