//! HTTP handlers.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use clipstash_core::db::{self, DeleteOutcome, JobRow};
use clipstash_core::model::Source;
use clipstash_core::{DownloadJob, ErrorCode, JobStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobView {
    pub id: Uuid,
    pub url: String,
    pub status: JobStatus,
    pub attempts: i32,
    pub source: String,
    pub provider: Option<String>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error: Option<JobErrorView>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the stored object was deleted through `DELETE`.
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        let status = r.status();
        let error = r.error_code.map(|code| JobErrorView {
            code,
            message: r.error_message.unwrap_or_default(),
        });
        JobView {
            id: r.id,
            url: r.url,
            status,
            attempts: r.attempts,
            source: r.source,
            provider: r.provider,
            object_key: r.object_key,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            content_type: r.content_type,
            // A retrying job shows its last error; a succeeded one never does.
            error: if status == JobStatus::Succeeded {
                None
            } else {
                error
            },
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            deleted_at: r.deleted_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDownload {
    pub url: String,
}

/// Checks a submitted URL: absolute http(s) with a host, no credentials, bounded length.
pub fn validate_url(raw: &str) -> Result<url::Url, ApiError> {
    let invalid =
        |msg: &str| ApiError::client(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidUrl, msg);
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("url must not be empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(&format!(
            "url is longer than {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| invalid(&format!("url is not a valid absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url must not contain credentials"));
    }
    Ok(url)
}

pub async fn create_download(
    state: web::Data<AppState>,
    body: web::Json<CreateDownload>,
) -> Result<HttpResponse, ApiError> {
    let url = validate_url(&body.url)?;
    let id = Uuid::now_v7();
    let job = db::insert_job(
        &state.pool,
        id,
        url.as_str(),
        Source::for_url(&url).as_str(),
    )
    .await
    .map_err(ApiError::database)?;
    let task = DownloadJob {
        job_id: id,
        url: job.url.clone(),
        enqueued_at: job.created_at,
    };
    if let Err(e) = state.queue.push(&task).await {
        // Not enqueued: record that on the job rather than leave it queued forever.
        if let Err(db_err) = db::record_failure(
            &state.pool,
            id,
            ErrorCode::QueueUnavailable,
            "could not be enqueued",
            false,
        )
        .await
        {
            tracing::error!(%id, error = ?db_err, "marking an unenqueued job failed");
        }
        return Err(ApiError::Unavailable {
            code: ErrorCode::QueueUnavailable,
            source: e,
        });
    }
    metrics::counter!(metrics_core::catalogue::TASKS_ENQUEUED_TOTAL, "task_name" => metrics_core::catalogue::TASK_PROCESS_DOWNLOAD)
        .increment(1);
    Ok(HttpResponse::Accepted()
        .insert_header((LOCATION, format!("/v1/downloads/{id}")))
        .json(JobView::from(job)))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId,
            "job id must be a UUID",
        )
    })
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::client(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no job {id}"),
    )
}

pub async fn get_download(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let job = db::get_job(&state.pool, id)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

pub async fn list_downloads(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let bad = |code, msg: String| ApiError::client(StatusCode::BAD_REQUEST, code, msg);
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            let all: Vec<_> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            bad(
                ErrorCode::InvalidQuery,
                format!("status must be one of {}", all.join(", ")),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
            bad(
                ErrorCode::InvalidCursor,
                "cursor is not one we issued".into(),
            )
        })?),
    };
    let rows = db::list_jobs(&state.pool, status, before, i64::from(limit))
        .await
        .map_err(ApiError::database)?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(JobPage {
        items: rows.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

pub async fn delete_download(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    match db::delete_job(&state.pool, id)
        .await
        .map_err(ApiError::database)?
    {
        DeleteOutcome::NotFound => Err(not_found(id)),
        DeleteOutcome::Running(_) => Err(ApiError::client(
            StatusCode::CONFLICT,
            ErrorCode::JobRunning,
            "the job is running; cancel it while it is queued or delete its object once it has succeeded",
        )),
        DeleteOutcome::Cancelled(job) | DeleteOutcome::Unchanged(job) => {
            Ok(HttpResponse::Ok().json(JobView::from(job)))
        }
        DeleteOutcome::ObjectReleased {
            job,
            provider,
            object_key,
        } => {
            // The accounting is committed first: a failed delete leaves an orphan object
            // (logged), never usage that counts bytes no job owns.
            if provider == state.storage.provider() {
                if let Err(e) = state.storage.delete(&object_key).await {
                    tracing::error!(%id, object_key, error = %e, "deleting a released object");
                }
            } else {
                tracing::warn!(%id, provider, "object is on a provider this API is not configured for");
            }
            if let Ok(usage) = db::storage_usage(&state.pool).await {
                clipstash_core::gauges::set_storage(&usage);
            }
            Ok(HttpResponse::Ok().json(JobView::from(job)))
        }
    }
}

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
    let usage = db::storage_usage(&state.pool)
        .await
        .map_err(ApiError::database)?;
    let own = state.storage.provider();
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

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when Postgres and Redis both answer within a second.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = std::time::Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool));
    let redis = tokio::time::timeout(timeout, state.queue.ping());
    let (pg, redis) = tokio::join!(pg, redis);
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let checks = serde_json::json!({ "postgres": word(pg_ok), "redis": word(redis_ok) });
    if pg_ok && redis_ok {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "checks": checks }));
    }
    let failed: Vec<&str> = [("postgres", pg_ok), ("redis", redis_ok)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let code = ErrorCode::NotReady;
    metrics_core::record_error(code.as_str(), code.error_type().as_str());
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "error": { "code": code.as_str(), "message": format!("unavailable: {}", failed.join(", ")) },
        "checks": checks,
    }))
}

pub async fn unmatched() -> Result<HttpResponse, ApiError> {
    Err(ApiError::client(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route",
    ))
}

pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    ))
}
