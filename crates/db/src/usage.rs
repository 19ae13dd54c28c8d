//! Stored files and per-provider storage usage.

use sqlx::PgPool;

/// Bytes and objects per storage provider.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Usage {
    pub provider: String,
    pub bytes_used: i64,
    pub file_count: i64,
}

pub async fn storage_usage(pool: &PgPool) -> Result<Vec<Usage>, sqlx::Error> {
    sqlx::query_as("SELECT provider, bytes_used, file_count FROM storage_usage ORDER BY provider")
        .fetch_all(pool)
        .await
}
