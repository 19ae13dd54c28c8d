//! `check_schema`, which `serve` and `run` call at start: a database behind the build is
//! refused with what to do, one at or ahead of it is accepted. And `open_all`, which `serve`
//! calls next.

use clipstash_db::{MIGRATOR, check_schema};
use clipstash_testkit::TestDb;

#[tokio::test]
async fn a_database_without_migrations_is_refused() {
    let db = TestDb::empty().await;
    let e = check_schema(&db.pool).await.unwrap_err().to_string();
    assert!(e.contains("run `migrate` first"), "{e}");
}

#[tokio::test]
async fn a_database_behind_the_build_is_refused_naming_what_it_lacks() {
    let last = MIGRATOR.iter().map(|m| m.version).max().unwrap();
    let db = TestDb::migrated_before(&last.to_string()).await;
    let e = check_schema(&db.pool).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("lacks 1 migration(s) this build needs ({last} ")),
        "{e}"
    );
    assert!(e.contains("clipstash-api migrate"), "{e}");
    clipstash_db::migrate(&db.pool).await.unwrap();
    check_schema(&db.pool).await.unwrap();
}

/// A rolling upgrade: the next version migrated the database while this one still runs.
#[tokio::test]
async fn a_database_ahead_of_the_build_is_accepted() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from a later build', true, '\\x00', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    check_schema(&db.pool).await.unwrap();
}

/// `open_all` opens every connection the pool may hold (the API does before it serves, so
/// the first burst of requests does not open them), and leaves them idle in the pool.
#[tokio::test]
async fn open_all_opens_every_connection_of_the_pool() {
    let db = clipstash_testkit::TestDb::new().await;
    let pool = clipstash_db::connect(&db.url.clone().into(), 5)
        .await
        .unwrap();
    clipstash_db::open_all(&pool).await.unwrap();
    assert_eq!(pool.size(), 5);
    // A connection goes back to the pool in a task of its own once dropped.
    for _ in 0..100 {
        if pool.num_idle() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(pool.num_idle(), 5);
    pool.close().await;
}
