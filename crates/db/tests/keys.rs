//! API key rows (`clipstash_db::keys`) against a real Postgres.

use clipstash_db::keys;
use clipstash_testkit::TestDb;
use uuid::Uuid;

/// One statement records the use of many keys (the API writes whatever keys fell due
/// together), each at most once a minute.
#[tokio::test]
async fn touching_many_keys_records_each_at_most_once_a_minute() {
    let db = TestDb::new().await;
    let mut ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    for (i, id) in ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, prefix) VALUES ($1, $2, $3, 'cs_test')",
        )
        .bind(id)
        .bind(format!("k{i}"))
        .bind([*id.as_bytes(), *id.as_bytes()].concat())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Recorded 10 s ago: left as it is. Two minutes ago: recorded again.
    for (id, ago) in [(ids[3], "10 seconds"), (ids[4], "2 minutes")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET last_used_at = now() - interval '{ago}' WHERE id = $1"
        )))
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    keys::touch_last_used(&db.pool, &ids).await.unwrap();
    let fresh: Vec<bool> = sqlx::query_scalar(
        "SELECT COALESCE(last_used_at > now() - interval '5 seconds', false) \
         FROM api_keys ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(fresh, [true, true, true, false, true]);
    let old: bool = sqlx::query_scalar(
        "SELECT last_used_at < now() - interval '9 seconds' FROM api_keys WHERE id = $1",
    )
    .bind(ids[3])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(old, "a key recorded within the minute was written again");
}
