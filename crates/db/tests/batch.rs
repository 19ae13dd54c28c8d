//! Group commit of submits (`clipstash_db::batch`) against a real Postgres.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use clipstash_db::JobRow;
use clipstash_db::batch::{AtCap, Inserted, JobInserter, MAX_BATCH, Written};
use clipstash_db::jobs::{self, IdempotencyKey, NewJob};
use clipstash_domain::{JobStatus, RequestedSource, VideoSource};
use clipstash_testkit::TestDb;
use futures_util::future::join_all;
use uuid::Uuid;

/// Submits a direct job per id, all at once: one task polls them all, so every submit is
/// queued before the batching task runs.
async fn insert_all(inserter: &JobInserter, ids: &[Uuid]) -> Vec<Inserted> {
    join_all(ids.iter().map(|id| async move {
        inserter
            .insert(&NewJob::new(
                *id,
                "https://a.example/v.mp4",
                VideoSource::Direct,
            ))
            .await
    }))
    .await
}

/// Submits one direct job and waits for its commit.
async fn insert_one(inserter: &JobInserter) -> JobRow {
    let id = Uuid::now_v7();
    let row = insert_all(inserter, &[id]).await.remove(0).unwrap().row;
    assert_eq!(row.id, id);
    row
}

/// Concurrent submits share commits, and each caller gets back exactly its own row, with
/// every option it asked for, already in the table.
#[tokio::test]
async fn concurrent_inserts_share_one_statement_and_each_gets_its_own_row() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let urls: Vec<String> = (0..100)
        .map(|i| format!("https://a.example/{i}.mp4"))
        .collect();
    let callback = "https://hooks.example/done";
    // One task polls them all: every submit is queued before the batching task runs.
    let rows = join_all(ids.iter().zip(&urls).enumerate().map(|(i, (id, url))| {
        let inserter = inserter.clone();
        async move {
            let job = NewJob {
                requested: RequestedSource::Ytdlp,
                format: Some("best"),
                max_height: Some(720),
                cookies_sealed: Some(&[1, 2, 3]),
                callback_url: (i % 2 == 0).then_some(callback),
                ..NewJob::new(*id, url, VideoSource::Ytdlp)
            };
            inserter.insert(&job).await.unwrap().row
        }
    }))
    .await;
    for ((row, id), url) in rows.iter().zip(&ids).zip(&urls) {
        assert_eq!(row.id, *id);
        assert_eq!(&row.url, url);
        assert_eq!(row.status, JobStatus::Queued);
        let stored = jobs::get_job(&db.pool, *id)
            .await
            .unwrap()
            .expect("row committed");
        assert_eq!(stored.url, *url);
    }
    assert_eq!(rows.iter().filter(|r| r.callback_url.is_some()).count(), 50);
    let sealed = jobs::sealed_cookies(&db.pool, ids[0]).await.unwrap();
    assert_eq!(sealed.as_deref(), Some(&[1u8, 2, 3][..]));
    // `created_at` is the transaction's start time: one value per statement.
    let statements: HashSet<_> = rows.iter().map(|r| r.created_at).collect();
    assert_eq!(
        statements.len(),
        1,
        "100 queued submits took {} statements",
        statements.len()
    );
}

/// More than a batch's worth at once is split, and nothing is lost.
#[tokio::test]
async fn a_burst_larger_than_a_batch_is_split_and_all_rows_arrive() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 2);
    let n = MAX_BATCH * 2 + 7;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let rows: Vec<JobRow> = insert_all(&inserter, &ids)
        .await
        .into_iter()
        .map(|r| r.unwrap().row)
        .collect();
    assert_eq!(rows.len(), n);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count as usize, n);
    let statements: HashSet<_> = rows.iter().map(|r| r.created_at).collect();
    assert!(
        statements.len() >= 3,
        "{} statements for {n} rows",
        statements.len()
    );
}

/// When Postgres refuses the batch, every caller in it gets the error: none hangs, none is
/// told its job exists.
#[tokio::test]
async fn a_failed_batch_fails_every_caller_in_it() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let taken = Uuid::now_v7();
    inserter
        .insert(&NewJob::new(
            taken,
            "https://a.example/v.mp4",
            VideoSource::Direct,
        ))
        .await
        .unwrap();
    // The second of these reuses a primary key, so their shared statement fails.
    let ids = [Uuid::now_v7(), taken, Uuid::now_v7()];
    let results = insert_all(&inserter, &ids).await;
    assert!(results.iter().all(Result::is_err), "{results:?}");
    for id in [ids[0], ids[2]] {
        assert!(jobs::get_job(&db.pool, id).await.unwrap().is_none());
    }
}

/// The after-commit stage (where the API enqueues) sees each batch once, in submit order,
/// with its rows already committed; its error reaches every caller of the batch, each still
/// given its row (the API then marks the job failed).
#[tokio::test]
async fn the_after_commit_stage_sees_each_committed_batch_and_its_error_reaches_every_caller() {
    let db = TestDb::new().await;
    let seen: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
    let fail = Arc::new(AtomicBool::new(false));
    let (pool, log, failing) = (db.pool.clone(), seen.clone(), fail.clone());
    let inserter = JobInserter::spawn_then(
        db.pool.clone(),
        1,
        Arc::new(move |rows: Vec<JobRow>| {
            let (pool, log, failing) = (pool.clone(), log.clone(), failing.clone());
            Box::pin(async move {
                for row in &rows {
                    // Committed: another connection of the pool sees it.
                    anyhow::ensure!(jobs::get_job(&pool, row.id).await?.is_some());
                }
                log.lock()
                    .unwrap()
                    .push(rows.iter().map(|r| r.id).collect());
                anyhow::ensure!(!failing.load(Ordering::SeqCst), "queue down");
                Ok(())
            })
        }),
    );
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for result in insert_all(&inserter, &ids).await {
        let committed = result.unwrap();
        assert!(
            matches!(committed.after, Some(Ok(()))),
            "{:?}",
            committed.after
        );
    }
    assert_eq!(*seen.lock().unwrap(), vec![ids.clone()]);

    fail.store(true, Ordering::SeqCst);
    let more: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for (result, id) in insert_all(&inserter, &more).await.into_iter().zip(&more) {
        let committed = result.unwrap();
        assert_eq!(committed.row.id, *id);
        let error = committed
            .after
            .expect("a stage ran")
            .expect_err("the stage failed");
        assert!(error.to_string().contains("queue down"), "{error}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// Whether job `id` is in the table (committed), seen from another connection.
async fn exists(db: &TestDb, id: Uuid) -> bool {
    jobs::get_job(&db.pool, id).await.unwrap().is_some()
}

/// A batch keeps its place until its stage (the API's enqueue) has run: the submits that
/// arrive while it is held are not written, and once it ends they are written together, as
/// one batch.
#[tokio::test]
async fn submits_that_arrive_while_a_batch_is_enqueued_wait_and_go_as_one_batch() {
    let db = TestDb::new().await;
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let entered_tx = Arc::new(Mutex::new(Some(entered_tx)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stage_gate = gate.clone();
    let staged: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
    let log = staged.clone();
    let inserter = JobInserter::spawn_then(
        db.pool.clone(),
        1,
        Arc::new(move |rows: Vec<JobRow>| {
            let (entered_tx, gate) = (entered_tx.clone(), stage_gate.clone());
            log.lock()
                .unwrap()
                .push(rows.iter().map(|r| r.id).collect());
            Box::pin(async move {
                // The first batch's stage holds until the gate opens; later ones pass.
                let first = entered_tx.lock().unwrap().take();
                if let Some(tx) = first {
                    let _ = tx.send(());
                    let _held = gate.acquire().await?;
                }
                Ok(())
            })
        }),
    );
    let submit = |id: Uuid| {
        let inserter = inserter.clone();
        tokio::spawn(async move { insert_all(&inserter, &[id]).await.remove(0) })
    };
    let wait = std::time::Duration::from_secs(10);
    let first_id = Uuid::now_v7();
    let first = submit(first_id);
    tokio::time::timeout(wait, entered)
        .await
        .expect("the first batch reached its stage")
        .unwrap();
    let later_ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let later: Vec<_> = later_ids.iter().map(|&id| submit(id)).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for id in &later_ids {
        assert!(
            !exists(&db, *id).await,
            "a submit was written while the batch before it was in its stage"
        );
    }
    assert!(
        !first.is_finished(),
        "the first submit was answered before its stage ended"
    );
    gate.add_permits(1);
    for task in std::iter::once(first).chain(later) {
        let committed = tokio::time::timeout(wait, task)
            .await
            .expect("answered once the stage ended")
            .unwrap()
            .unwrap();
        assert!(
            matches!(committed.after, Some(Ok(()))),
            "{:?}",
            committed.after
        );
    }
    let mut staged = staged.lock().unwrap().clone();
    assert_eq!(
        staged.len(),
        2,
        "one stage for the first, one for the rest: {staged:?}"
    );
    assert_eq!(staged[0], vec![first_id]);
    let (mut second, mut expected) = (staged.remove(1), later_ids.clone());
    second.sort();
    expected.sort();
    assert_eq!(
        second, expected,
        "the three waiting submits went as one batch"
    );
}

/// A stage that panics is the batch's error: every caller is answered with its row and that
/// error, not left to read a dropped answer as the database being gone.
#[tokio::test]
async fn a_panicking_after_commit_stage_is_an_error_of_its_batch() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn_then(
        db.pool.clone(),
        1,
        Arc::new(|_| Box::pin(async { panic!("stage bug") })),
    );
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (result, id) in insert_all(&inserter, &ids).await.into_iter().zip(&ids) {
        let committed = result.expect("the row was committed");
        assert_eq!(committed.row.id, *id);
        let error = committed.after.expect("a stage ran").unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
    }
    // The inserter goes on working.
    let more = [Uuid::now_v7()];
    assert!(insert_all(&inserter, &more).await[0].is_ok());
}

/// Without a stage, no caller is told its job went through one.
#[tokio::test]
async fn without_a_stage_no_outcome_is_reported() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let committed = insert_all(&inserter, &[Uuid::now_v7()])
        .await
        .remove(0)
        .unwrap();
    assert!(committed.after.is_none());
}

/// Submits `n` jobs of `key` (cap `cap`) at once through `inserter`; returns, in submit
/// order, whether each was written.
async fn submit_capped(inserter: &JobInserter, key: Uuid, cap: i64, n: usize) -> Vec<bool> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    join_all(ids.iter().map(|id| async move {
        let job = NewJob::new(*id, "https://a.example/v.mp4", VideoSource::Direct);
        match inserter.insert_capped(&job, key, cap).await.unwrap() {
            Ok(committed) => {
                assert_eq!(committed.row.id, *id);
                true
            }
            Err(AtCap) => false,
        }
    }))
    .await
}

/// Every job of `key`, whatever its status.
async fn jobs_of(db: &TestDb, key: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE api_key_id = $1")
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// In one batch, each key's submits are admitted in submit order up to its cap, counting
/// the jobs it already has; other keys' and keyless submits are not held back by it.
#[tokio::test]
async fn a_batch_admits_each_keys_submits_up_to_its_cap_in_order() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let (a, b) = (db.api_key("a").await, db.api_key("b").await);
    // `a` already has one active job: two more fit under its cap of 3.
    assert_eq!(submit_capped(&inserter, a, 3, 1).await, [true]);
    let keyless: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let (of_a, of_b, plain) = tokio::join!(
        submit_capped(&inserter, a, 3, 5),
        submit_capped(&inserter, b, 10, 4),
        insert_all(&inserter, &keyless),
    );
    assert_eq!(of_a, [true, true, false, false, false]);
    assert_eq!(of_b, [true; 4]);
    assert!(plain.iter().all(Result::is_ok), "{plain:?}");
    assert_eq!((jobs_of(&db, a).await, jobs_of(&db, b).await), (3, 4));
    // Ended jobs do not count: with `a`'s jobs done, three more fit.
    sqlx::query("UPDATE jobs SET status = 'succeeded' WHERE api_key_id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        submit_capped(&inserter, a, 3, 4).await,
        [true, true, true, false]
    );
}

/// Two API processes (two inserters, two pools) submitting for one key at once write
/// exactly its cap: the key's lock, taken before the count, serialises their batches.
#[tokio::test]
async fn two_inserters_racing_on_one_key_never_overshoot_its_cap() {
    let db = TestDb::new().await;
    let key = db.api_key("raced").await;
    let other = clipstash_db::connect(&db.url.clone().into(), 4)
        .await
        .unwrap();
    let (one, two) = (
        JobInserter::spawn(db.pool.clone(), 2),
        JobInserter::spawn(other, 2),
    );
    // Ten bursts of 8 from each, cap 17: how many each got written.
    let written = |inserter: JobInserter| async move {
        let mut written = 0;
        for _ in 0..10 {
            let burst = submit_capped(&inserter, key, 17, 8).await;
            written += burst.iter().filter(|w| **w).count();
        }
        written
    };
    let (first, second) = tokio::join!(written(one), written(two));
    assert_eq!(first + second, 17, "written {first} + {second}");
    assert_eq!(jobs_of(&db, key).await, 17);
    assert_eq!(count_of(&db, key).await, 17);
}

/// The key's kept count of active jobs (`api_keys.active_jobs`).
async fn count_of(db: &TestDb, key: Uuid) -> i64 {
    sqlx::query_scalar("SELECT active_jobs FROM api_keys WHERE id = $1")
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A batch that meets a key another transaction holds waits for it, then counts what that
/// transaction committed: no submit gets past a cap filled while it waited, and what it writes
/// is added to the count committed meanwhile, not to the one it read before the wait.
#[tokio::test]
async fn a_keyed_batch_waits_for_the_keys_lock_and_counts_what_was_committed_meanwhile() {
    let db = TestDb::new().await;
    // (jobs the other writer holds, the key's cap, whether the waiting submit is written).
    for (held, cap, written) in [(2, 2, false), (1, 3, true)] {
        let key = db.api_key(&format!("held-{held}-of-{cap}")).await;
        let inserter = JobInserter::spawn(db.pool.clone(), 1);
        let (holder, _) = db.submit_in_progress(key, held, None).await;
        let submit = tokio::spawn({
            let inserter = inserter.clone();
            async move { submit_capped(&inserter, key, cap, 1).await }
        });
        // Commit only once the batch is blocked on the key's row lock.
        db.until_a_session_waits_on_a_lock(|| submit.is_finished())
            .await;
        holder.commit().await.unwrap();
        assert_eq!(submit.await.unwrap(), [written]);
        let total = held + i64::from(written);
        assert_eq!(jobs_of(&db, key).await, total);
        assert_eq!(count_of(&db, key).await, total);
    }
}

/// What a submit with `Idempotency-Key` `key` and request hash `sha` (by `owner`, cap 1,000
/// or `cap`) came to, in a short form: `created <id>`, `replayed <id>`, `reused`, `at cap`.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Created(Uuid),
    Replayed(Uuid),
    Reused,
    AtCap,
}

async fn submit_idempotent(
    inserter: &JobInserter,
    owner: Option<(Uuid, i64)>,
    key: &str,
    sha: &str,
) -> Got {
    let id = Uuid::now_v7();
    let job = NewJob::new(id, "https://a.example/i.mp4", VideoSource::Direct);
    let key = IdempotencyKey {
        key,
        request_sha256: sha,
    };
    match inserter.submit(&job, owner, Some(key)).await.unwrap() {
        Written::Created(c) => {
            assert_eq!(c.row.id, id);
            Got::Created(id)
        }
        Written::Replayed(row) => Got::Replayed(row.id),
        Written::KeyReused => Got::Reused,
        Written::AtCap => Got::AtCap,
    }
}

/// In one batch: a key used twice with one request makes one job and a replay of it, used
/// again with another request it is refused, and each caller (two API keys, and none) has
/// its own keys. Later batches replay what earlier ones created.
#[tokio::test]
async fn idempotent_submits_in_one_batch_make_one_job_per_key_and_caller() {
    let db = TestDb::new().await;
    let (a, b) = (db.api_key("a").await, db.api_key("b").await);
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let (one, two, other, of_b, keyless) = tokio::join!(
        submit_idempotent(&inserter, Some((a, 100)), "k", "s1"),
        submit_idempotent(&inserter, Some((a, 100)), "k", "s1"),
        submit_idempotent(&inserter, Some((a, 100)), "k", "s2"),
        submit_idempotent(&inserter, Some((b, 100)), "k", "s1"),
        submit_idempotent(&inserter, None, "k", "s1"),
    );
    let Got::Created(first) = one else {
        panic!("the first submit of a key makes its job: {one:?}")
    };
    assert_eq!(two, Got::Replayed(first));
    assert_eq!(other, Got::Reused);
    assert!(matches!(of_b, Got::Created(_)), "{of_b:?}");
    assert!(matches!(keyless, Got::Created(_)), "{keyless:?}");
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(all, 3);
    // A later batch replays, also without a key.
    let Got::Created(anonymous) = keyless else {
        unreachable!()
    };
    assert_eq!(
        submit_idempotent(&inserter, None, "k", "s1").await,
        Got::Replayed(anonymous)
    );
    assert_eq!(
        submit_idempotent(&inserter, Some((a, 100)), "k", "s1").await,
        Got::Replayed(first)
    );
}

/// A replay is answered before the cap and takes no place under it: with a cap of 2 and one
/// active job, a batch holding that job's replay and a new submit writes the new one.
#[tokio::test]
async fn a_replay_takes_no_place_under_the_cap() {
    let db = TestDb::new().await;
    let key = db.api_key("capped").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let Got::Created(first) = submit_idempotent(&inserter, Some((key, 2)), "x", "s").await else {
        panic!("the first submit is written")
    };
    let (replay, new) = tokio::join!(
        submit_idempotent(&inserter, Some((key, 2)), "x", "s"),
        submit_idempotent(&inserter, Some((key, 2)), "y", "s"),
    );
    assert_eq!(replay, Got::Replayed(first));
    assert!(matches!(new, Got::Created(_)), "{new:?}");
    // Now at the cap: a replay still answers, a new key does not fit.
    let (replay, full) = tokio::join!(
        submit_idempotent(&inserter, Some((key, 2)), "x", "s"),
        submit_idempotent(&inserter, Some((key, 2)), "z", "s"),
    );
    assert_eq!(replay, Got::Replayed(first));
    assert_eq!(full, Got::AtCap);
    assert_eq!(jobs_of(&db, key).await, 2);
}

/// Two API processes racing on one Idempotency-Key, with and without an API key: one job
/// each, and every other submit a replay of it.
#[tokio::test]
async fn racing_inserters_make_one_job_per_idempotency_key() {
    let db = TestDb::new().await;
    let key = db.api_key("raced").await;
    let other = clipstash_db::connect(&db.url.clone().into(), 4)
        .await
        .unwrap();
    let (one, two) = (
        JobInserter::spawn(db.pool.clone(), 2),
        JobInserter::spawn(other, 2),
    );
    for owner in [Some((key, 1_000)), None] {
        for round in 0..10 {
            let k = format!("r{round}");
            let all = join_all((0..16).map(|i| {
                let inserter = if i % 2 == 0 { &one } else { &two };
                let k = k.clone();
                async move { submit_idempotent(inserter, owner, &k, "s").await }
            }))
            .await;
            let created: Vec<Uuid> = all
                .iter()
                .filter_map(|g| match g {
                    Got::Created(id) => Some(*id),
                    _ => None,
                })
                .collect();
            assert_eq!(created.len(), 1, "{owner:?} round {round}: {all:?}");
            assert!(
                all.iter()
                    .all(|g| *g == Got::Created(created[0]) || *g == Got::Replayed(created[0])),
                "{all:?}"
            );
        }
    }
}

/// Only the first submit of a key in a batch is ranked under the cap: with a cap of 2, a
/// batch of [X, X again, Y] writes X and Y.
#[tokio::test]
async fn a_key_twice_in_one_batch_takes_one_place_under_the_cap() {
    let db = TestDb::new().await;
    let key = db.api_key("twice").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let (x, again, y) = tokio::join!(
        submit_idempotent(&inserter, Some((key, 2)), "x", "s"),
        submit_idempotent(&inserter, Some((key, 2)), "x", "s"),
        submit_idempotent(&inserter, Some((key, 2)), "y", "s"),
    );
    let Got::Created(first) = x else {
        panic!("the first submit of x is written: {x:?}")
    };
    assert_eq!(again, Got::Replayed(first));
    assert!(matches!(y, Got::Created(_)), "{y:?}");
    assert_eq!(jobs_of(&db, key).await, 2);
}

/// A keyed batch that waits for its key sees the Idempotency-Key another transaction wrote
/// meanwhile as a replay, which takes no place: with a cap of 2, the batch [X replay, Y new]
/// writes Y.
#[tokio::test]
async fn a_key_written_while_the_batch_waited_is_a_replay_that_takes_no_place() {
    let db = TestDb::new().await;
    let key = db.api_key("held").await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let (holder, held) = db.submit_in_progress(key, 1, Some("x")).await;
    let held = held[0];
    let batch = tokio::spawn({
        let inserter = inserter.clone();
        async move {
            tokio::join!(
                submit_idempotent(&inserter, Some((key, 2)), "x", "s"),
                submit_idempotent(&inserter, Some((key, 2)), "y", "s"),
            )
        }
    });
    db.until_a_session_waits_on_a_lock(|| batch.is_finished())
        .await;
    holder.commit().await.unwrap();
    let (x, y) = batch.await.unwrap();
    assert_eq!(x, Got::Replayed(held));
    assert!(matches!(y, Got::Created(_)), "{y:?}");
}

/// Batches insert their Idempotency-Keys in one order (sorted), so two writers of the same
/// new keys never wait on each other. Another transaction holds `x` uncommitted; a keyless
/// batch [y, x] then waits on `x` before it writes `y`, so the other transaction can still
/// write `y` and commit. In arrival order, the batch would have written `y` first: deadlock.
#[tokio::test]
async fn a_batch_writes_its_keys_in_sorted_order_so_writers_of_the_same_keys_cannot_deadlock() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    let insert_keyed = |id: Uuid, key: &'static str| {
        sqlx::query(
            "INSERT INTO jobs (id, url, source, status, requested_source, idempotency_key, \
             request_sha256) VALUES ($1, 'https://a.example/h.mp4', 'direct', 'queued', 'auto', \
             $2, 's') ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
             DO NOTHING",
        )
        .bind(id)
        .bind(key)
    };
    let mut holder = db.pool.begin().await.unwrap();
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    insert_keyed(x, "x").execute(&mut *holder).await.unwrap();
    let batch = tokio::spawn({
        let inserter = inserter.clone();
        async move {
            tokio::join!(
                submit_idempotent(&inserter, None, "y", "s"),
                submit_idempotent(&inserter, None, "x", "s"),
            )
        }
    });
    db.until_a_session_waits_on_a_lock(|| batch.is_finished())
        .await;
    insert_keyed(y, "y")
        .execute(&mut *holder)
        .await
        .expect("the batch had not written y yet");
    holder.commit().await.unwrap();
    assert_eq!(batch.await.unwrap(), (Got::Replayed(y), Got::Replayed(x)));
}

/// The backends of this database (other than the asking one) whose last statement was a
/// batch's `INSERT INTO jobs`.
async fn backends_that_inserted(db: &TestDb) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
           AND pid <> pg_backend_pid() AND query LIKE 'INSERT INTO jobs%' ORDER BY pid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Batches one after another are written on the one connection the writer keeps: taken from
/// the pool each time, every batch paid sqlx's ping of an idle connection, and each pool
/// connection prepared the statement again. The pool here has four connections open, which
/// it hands out in turn.
#[tokio::test]
async fn batches_are_written_on_one_connection_kept_between_them() {
    let db = TestDb::new().await;
    let pool = clipstash_db::connect(&db.url.clone().into(), 4)
        .await
        .unwrap();
    clipstash_db::open_all(&pool).await.unwrap();
    let inserter = JobInserter::spawn(pool.clone(), 1);
    for _ in 0..6 {
        insert_one(&inserter).await;
    }
    assert_eq!(
        backends_that_inserted(&db).await.len(),
        1,
        "batches went to more than one connection"
    );
}

/// A kept connection that Postgres dropped while it was idle (a restart, a terminated
/// backend) is not written on: after a second unused, it goes back through the pool, whose
/// ping replaces it.
#[tokio::test]
async fn a_kept_connection_dropped_while_idle_is_replaced_before_the_next_batch() {
    let db = TestDb::new().await;
    let inserter = JobInserter::spawn(db.pool.clone(), 1);
    insert_one(&inserter).await;
    let [writer] = backends_that_inserted(&db).await[..] else {
        panic!("one connection wrote the batch");
    };
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(writer)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(killed);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    insert_one(&inserter).await;
}

/// Closing the pool (the API's last step of a shutdown) waits for every connection to come
/// back: the writer gives back the ones it keeps at once (not a second later, when unused
/// ones go back), even while the inserter lives on.
#[tokio::test]
async fn closing_the_pool_takes_back_the_writers_kept_connection() {
    let db = TestDb::new().await;
    let pool = clipstash_db::connect(&db.url.clone().into(), 2)
        .await
        .unwrap();
    let inserter = JobInserter::spawn(pool.clone(), 1);
    insert_one(&inserter).await;
    tokio::time::timeout(std::time::Duration::from_millis(500), pool.close())
        .await
        .expect("the pool closed while the writer kept a connection");
    drop(inserter);
}

/// A kept connection goes back to the pool once no batch has used it for a second: the rest
/// of the pool (key look-ups, reads) may need it.
#[tokio::test]
async fn an_unused_kept_connection_goes_back_to_the_pool() {
    let db = TestDb::new().await;
    let pool = clipstash_db::connect(&db.url.clone().into(), 2)
        .await
        .unwrap();
    let inserter = JobInserter::spawn(pool.clone(), 1);
    insert_one(&inserter).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        pool.num_idle(),
        pool.size() as usize,
        "a connection is still kept"
    );
    drop(inserter);
}

/// A pool warmed with `warm_inserts` (the API's) has the three batch statements prepared on
/// every connection before any batch, and batches of each kind written with those
/// statements (prepared without parameter types) come out right.
#[tokio::test]
async fn every_warmed_connection_has_the_batch_statements_prepared_and_they_write_right() {
    let db = TestDb::new().await;
    let warmed = clipstash_db::connect_warmed(
        &db.url.clone().into(),
        2,
        Some(clipstash_db::batch::warm_inserts),
    )
    .await
    .unwrap();
    let mut both = vec![
        warmed.acquire().await.unwrap(),
        warmed.acquire().await.unwrap(),
    ];
    for conn in &mut both {
        let statements: Vec<String> = sqlx::query_scalar(
            "SELECT statement FROM pg_prepared_statements \
             WHERE (strpos(statement, 'INSERT INTO jobs') > 0 \
                OR strpos(statement, 'submit_jobs_idempotent(') > 0) \
               AND strpos(statement, 'pg_prepared_statements') = 0",
        )
        .fetch_all(&mut **conn)
        .await
        .unwrap();
        assert_eq!(statements.len(), 3, "{statements:#?}");
    }
    drop(both);

    let inserter = JobInserter::spawn(warmed, 1);
    let key = db.api_key("w").await;
    insert_one(&inserter).await;
    assert_eq!(
        submit_capped(&inserter, key, 2, 3).await,
        [true, true, false]
    );
    let first = submit_idempotent(&inserter, None, "warm", "s").await;
    let again = submit_idempotent(&inserter, None, "warm", "s").await;
    match (first, again) {
        (Got::Created(a), Got::Replayed(b)) => assert_eq!(a, b),
        other => panic!("{other:?}"),
    }
    assert_eq!(jobs_of(&db, key).await, 2);
}
