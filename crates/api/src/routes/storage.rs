//! `/v1/storage`: every configured storage provider with its usage and quota.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use clipstash_db::usage::storage_usage;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// One provider's figures.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// The configured name (the `provider` of jobs and metrics).
    pub name: String,
    /// `local`, `s3`, `gcs` or `azure`; `unknown` for a provider that holds files but is no
    /// longer configured.
    pub kind: String,
    pub bytes_used: i64,
    pub files: i64,
    /// 0 when the provider has no quota.
    pub quota_bytes: u64,
    /// `bytes_used / quota_bytes`; null without a quota.
    pub used_ratio: Option<f64>,
}

/// Every configured provider, then any unconfigured one that still holds files.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StorageView {
    pub providers: Vec<ProviderView>,
}

/// `GET /v1/storage`: usage and quota of every storage provider.
#[utoipa::path(
    get,
    path = "/v1/storage",
    tag = "storage",
    responses(
        (status = 200, description = "The providers.", body = StorageView),
        (status = 503, description = "`database_unavailable`.", body = ErrorBody),
    ),
)]
pub async fn storage(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut usage: HashMap<String, (i64, i64)> = storage_usage(&state.pool)
        .await
        .map_err(ApiError::database)?
        .into_iter()
        .map(|u| (u.provider, (u.bytes_used, u.file_count)))
        .collect();
    let view = |name: String, kind: &str, quota: u64, (bytes, files): (i64, i64)| ProviderView {
        used_ratio: (quota > 0).then(|| bytes as f64 / quota as f64),
        name,
        kind: kind.to_string(),
        bytes_used: bytes,
        files,
        quota_bytes: quota,
    };
    let mut providers: Vec<ProviderView> = state
        .storage
        .providers()
        .iter()
        .map(|p| {
            let name = p.name().to_string();
            let used = usage.remove(&name).unwrap_or_default();
            view(name, p.kind().as_str(), p.quota_bytes(), used)
        })
        .collect();
    let mut rest: Vec<_> = usage.into_iter().collect();
    rest.sort();
    providers.extend(
        rest.into_iter()
            .map(|(name, used)| view(name, "unknown", 0, used)),
    );
    Ok(HttpResponse::Ok().json(StorageView { providers }))
}
