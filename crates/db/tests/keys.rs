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

/// Statements prepared in this connection's session whose text contains `part`.
async fn prepared(conn: &mut sqlx::PgConnection, part: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
    )
    .bind(part)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// A pool made with `warm_key_lookup` hands out connections on which the key look-up is
/// already prepared: the first request with a key does not parse and plan it (the API's
/// first burst after a start looked up every key on a cold connection).
#[tokio::test]
async fn every_new_connection_comes_with_the_key_lookup_prepared() {
    let db = TestDb::new().await;
    let lookup = "FROM api_keys WHERE key_hash = $1";
    let plain = clipstash_db::connect(&db.url.clone().into(), 1)
        .await
        .unwrap();
    assert_eq!(
        prepared(&mut plain.acquire().await.unwrap(), lookup).await,
        0
    );

    let warmed =
        clipstash_db::connect_warmed(&db.url.clone().into(), 2, Some(keys::warm_key_lookup))
            .await
            .unwrap();
    let (mut a, mut b) = (
        warmed.acquire().await.unwrap(),
        warmed.acquire().await.unwrap(),
    );
    assert_eq!(prepared(&mut a, lookup).await, 1);
    assert_eq!(prepared(&mut b, lookup).await, 1);
    // The look-up a request runs finds that statement: none is prepared again.
    assert!(
        keys::find_live_key(&mut *a, &[7; 32])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(prepared(&mut a, lookup).await, 1);
}
