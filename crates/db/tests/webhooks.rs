//! The webhook outbox against a real Postgres: rows written by the terminal transitions, and
//! leases that several workers can take at once without sharing a row.

use std::time::Duration;

use clipstash_db::webhooks::{self, Next};
use clipstash_db::{DeleteOutcome, jobs, transitions};
use clipstash_domain::{ErrorCode, VideoSource};
use clipstash_testkit::TestDb;
use uuid::Uuid;

/// A queued job with a callback URL, then cancelled: one outbox row.
async fn cancelled_with_callback(db: &TestDb) -> Uuid {
    let id = Uuid::now_v7();
    jobs::insert_job(&db.pool, id, "https://a.example/v.mp4", VideoSource::Direct)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET callback_url = 'https://hooks.example/x' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        transitions::delete_job(&db.pool, id).await.unwrap(),
        DeleteOutcome::Cancelled { .. }
    ));
    id
}

#[tokio::test]
async fn only_terminal_transitions_of_jobs_with_a_callback_write_a_delivery() {
    let db = TestDb::new().await;
    let with = cancelled_with_callback(&db).await;
    // A retry is not an end; the final failure is.
    let failing = Uuid::now_v7();
    jobs::insert_job(
        &db.pool,
        failing,
        "https://a.example/f.mp4",
        VideoSource::Direct,
    )
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET callback_url = 'https://hooks.example/y', status = 'running' WHERE id = $1")
        .bind(failing)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        transitions::record_failure(&db.pool, failing, ErrorCode::Timeout, "slow", true)
            .await
            .unwrap()
    );
    assert!(
        webhooks::deliveries_of(&db.pool, failing)
            .await
            .unwrap()
            .is_empty()
    );
    sqlx::query("UPDATE jobs SET status = 'running' WHERE id = $1")
        .bind(failing)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        transitions::record_failure(&db.pool, failing, ErrorCode::Timeout, "slow", false)
            .await
            .unwrap()
    );
    // Without a callback URL: nothing.
    let without = Uuid::now_v7();
    jobs::insert_job(
        &db.pool,
        without,
        "https://a.example/n.mp4",
        VideoSource::Direct,
    )
    .await
    .unwrap();
    transitions::delete_job(&db.pool, without).await.unwrap();

    for (id, url) in [
        (with, "https://hooks.example/x"),
        (failing, "https://hooks.example/y"),
    ] {
        let rows = webhooks::deliveries_of(&db.pool, id).await.unwrap();
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(
            (
                rows[0].url.as_str(),
                rows[0].state.as_str(),
                rows[0].attempts
            ),
            (url, "pending", 0)
        );
    }
    assert!(
        webhooks::deliveries_of(&db.pool, without)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn leases_are_shared_out_without_overlap_and_expire() {
    let db = TestDb::new().await;
    for _ in 0..6 {
        cancelled_with_callback(&db).await;
    }
    // Three workers lease at once: each row goes to exactly one of them.
    let lease = Duration::from_secs(60);
    let (a, b, c) = tokio::join!(
        webhooks::lease_due(&db.pool, 3, lease),
        webhooks::lease_due(&db.pool, 3, lease),
        webhooks::lease_due(&db.pool, 3, lease),
    );
    let mut ids: Vec<Uuid> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .map(|d| d.id)
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (6, 6), "every row leased once");
    assert!(
        webhooks::lease_due(&db.pool, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not due"
    );

    // A retry is due after its delay; a delivered row never again.
    let short = webhooks::lease_due(&db.pool, 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(short.is_empty());
    webhooks::record_attempt(
        &db.pool,
        ids[0],
        b"{}",
        Some(500),
        Some("HTTP 500"),
        &Next::RetryAfter(Duration::ZERO),
    )
    .await
    .unwrap();
    webhooks::record_attempt(&db.pool, ids[1], b"{}", Some(200), None, &Next::Delivered)
        .await
        .unwrap();
    let due = webhooks::lease_due(&db.pool, 10, lease).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(
        (due[0].attempts, due[0].payload.as_deref()),
        (1, Some(&b"{}"[..]))
    );
}
