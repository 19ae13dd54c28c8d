//! `/v1/storage`: bytes and files per storage provider.

use actix_web::{HttpResponse, web};
use clipstash_db::usage::storage_usage;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize)]
pub struct ProviderUsage {
    pub provider: String,
    pub bytes_used: i64,
    pub file_count: i64,
    /// Configured quota, 0 when none.
    pub quota_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StorageView {
    pub providers: Vec<ProviderUsage>,
}

pub async fn storage(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let usage = storage_usage(&state.pool)
        .await
        .map_err(ApiError::database)?;
    let own = state.storage.provider().as_str();
    let mut providers: Vec<ProviderUsage> = usage
        .into_iter()
        .map(|u| ProviderUsage {
            quota_bytes: if u.provider == own {
                state.storage.quota_bytes()
            } else {
                0
            },
            provider: u.provider,
            bytes_used: u.bytes_used,
            file_count: u.file_count,
        })
        .collect();
    if !providers.iter().any(|p| p.provider == own) {
        providers.push(ProviderUsage {
            provider: own.into(),
            bytes_used: 0,
            file_count: 0,
            quota_bytes: state.storage.quota_bytes(),
        });
    }
    Ok(HttpResponse::Ok().json(StorageView { providers }))
}
