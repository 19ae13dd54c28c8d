//! `DATABASE_URL`'s `sslmode` reaches the connection: the pool the binaries open
//! (`clipstash_db::connect`) encrypts when asked to and does not when told not to
//! (docs/CONFIGURATION.md#postgres-and-tls).

use clipstash_testkit::TestDb;
use sqlx::PgPool;

/// `url` with its `sslmode` (if any) replaced by `mode`.
fn with_sslmode(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    let mode = format!("sslmode={mode}");
    params.push(&mode);
    format!("{base}?{}", params.join("&"))
}

/// Whether this pool's connection is encrypted, as the server sees it.
async fn encrypted(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_in_the_url_decides_whether_the_connection_is_encrypted() {
    let db = TestDb::new().await;
    let offers_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let plain = clipstash_db::connect(&with_sslmode(&db.url, "disable").into(), 1)
        .await
        .unwrap();
    assert!(!encrypted(&plain).await, "sslmode=disable must not encrypt");

    let required = clipstash_db::connect(&with_sslmode(&db.url, "require").into(), 1).await;
    if offers_tls == "on" {
        let pool = required.expect("the server offers TLS: sslmode=require connects");
        assert!(encrypted(&pool).await, "sslmode=require must encrypt");
    } else {
        // A server without TLS: `require` must refuse rather than fall back to plain text.
        assert!(
            required.is_err(),
            "sslmode=require connected to a server without TLS"
        );
    }
}

#[test]
fn with_sslmode_replaces_the_mode_and_keeps_the_rest() {
    assert_eq!(
        with_sslmode(
            "postgres://h/db?sslmode=disable&application_name=x",
            "require"
        ),
        "postgres://h/db?application_name=x&sslmode=require"
    );
    assert_eq!(
        with_sslmode("postgres://h/db", "disable"),
        "postgres://h/db?sslmode=disable"
    );
}
