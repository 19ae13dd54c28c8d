//! `GET /v1/downloads/{id}/file`: the stored media, streamed from whichever provider holds
//! it (with `Range`), or a redirect to a short-lived signed URL where the provider can sign.

use std::ops::Range;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use clipstash_db::{JobRow, jobs};
use clipstash_domain::{ErrorCode, JobStatus};
use futures_util::TryStreamExt;
use object_store::GetRange;
use serde::Deserialize;

use super::downloads::{not_found, parse_id};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

/// How long a signed URL handed out by `?redirect=true` stays valid.
pub const SIGNED_URL_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// Answer 302 to a signed URL on providers that can sign (S3, GCS, Azure).
    pub redirect: Option<bool>,
}

/// What a succeeded job stored.
struct StoredFile {
    provider: String,
    key: String,
    size: u64,
    sha256: String,
    content_type: String,
}

fn stored_file(job: JobRow) -> Result<StoredFile, ApiError> {
    let no_file = |why: String| ApiError::new(ErrorCode::FileNotFound, why);
    if job.status != JobStatus::Succeeded {
        return Err(no_file(format!(
            "job {} has no file: it is {}",
            job.id, job.status
        )));
    }
    if job.deleted_at.is_some() {
        return Err(no_file(format!("job {}'s file was deleted", job.id)));
    }
    match (job.provider, job.object_key, job.size_bytes, job.sha256) {
        (Some(provider), Some(key), Some(size), Some(sha256)) => Ok(StoredFile {
            provider,
            key,
            size: size as u64,
            sha256,
            content_type: job
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
        }),
        _ => Err(no_file(format!("job {} has no file recorded", job.id))),
    }
}

/// `GET /v1/downloads/{id}/file`: a succeeded job's media.
#[utoipa::path(
    get,
    path = "/v1/downloads/{id}/file",
    tag = "downloads",
    params(
        ("id" = uuid::Uuid, Path, description = "The job's id."),
        FileQuery,
        ("Range" = Option<String>, Header, description = "One range, `bytes=a-b`, `bytes=a-` or `bytes=-n`; several ranges, another unit or bad syntax are ignored (the whole file is sent)."),
        ("If-None-Match" = Option<String>, Header, description = "ETags (the file's SHA-256 in quotes) or `*`: 304 when one matches."),
    ),
    responses(
        (status = 200, description = "The whole file.", content_type = "*/*", body = crate::openapi::Media,
            headers(
                ("Content-Type" = String, description = "The stored media type (`application/octet-stream` if unknown)."),
                ("Content-Length" = u64),
                ("ETag" = String, description = "The file's SHA-256 in quotes."),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("Content-Disposition" = String, description = "`attachment; filename=\"...\"`"),
            )),
        (status = 206, description = "The requested range.", content_type = "*/*", body = crate::openapi::Media,
            headers(
                ("Content-Range" = String, description = "`bytes a-b/size`"),
                ("Content-Type" = String),
                ("Content-Length" = u64),
                ("ETag" = String),
                ("Accept-Ranges" = String),
                ("Content-Disposition" = String),
            )),
        (status = 302, description = "`redirect=true` on a provider that can sign (S3, GCS, Azure): a signed URL valid for 5 minutes.",
            headers(
                ("Location" = String, description = "The signed URL."),
                ("Cache-Control" = String, description = "`no-store`"),
            )),
        (status = 304, description = "`If-None-Match` matched.", headers(("ETag" = String))),
        (status = 400, description = "`invalid_id` or `invalid_query` (an unknown parameter, a `redirect` that is not a boolean).", body = ErrorBody),
        (status = 404, description = "`not_found` (no such job for this key) or `file_not_found` (the job has no file: not succeeded, deleted, or missing from storage).", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end.", body = ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */size`"))),
        (status = 503, description = "`storage_unavailable` (or `database_unavailable`).", body = ErrorBody),
    ),
)]
pub async fn download_file(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<FileQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    // Another key's job is a 404, like a missing one.
    let job = jobs::get_job_of(&state.pool, id, caller.owner())
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| not_found(id))?;
    let name = safe_file_name(&job.url, id, job.content_type.as_deref());
    let file = stored_file(job)?;
    let provider = state.storage.provider(&file.provider).ok_or_else(|| {
        ApiError::dependency(
            ErrorCode::StorageUnavailable,
            anyhow::anyhow!("provider '{}' is not configured on this API", file.provider),
        )
    })?;
    let storage_error = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => ApiError::new(
            ErrorCode::FileNotFound,
            format!("job {id}'s file is missing from its storage"),
        ),
        e => ApiError::dependency(ErrorCode::StorageUnavailable, e),
    };

    let etag = format!("\"{}\"", file.sha256);
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    if query.redirect == Some(true)
        && let Some(url) = provider
            .signed_get_url(&file.key, SIGNED_URL_TTL)
            .await
            .map_err(storage_error)?
    {
        return Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, url.to_string()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }

    let range = match requested_range(&req, file.size) {
        Ok(r) => r,
        Err(()) => {
            ErrorCode::RangeNotSatisfiable.record();
            return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{}", file.size)))
                .json(serde_json::json!({"error": {
                    "code": ErrorCode::RangeNotSatisfiable.as_str(),
                    "message": format!("the file has {} bytes", file.size),
                }})));
        }
    };
    let result = provider
        .get(&file.key, range.clone().map(GetRange::Bounded))
        .await
        .map_err(storage_error)?;
    let served = result.range.clone();
    let body = SizedStream::new(
        served.end - served.start,
        result.into_stream().map_err(std::io::Error::other),
    );
    let mut res = match range {
        Some(_) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", served.start, served.end - 1, file.size),
            ));
            r
        }
        None => HttpResponse::Ok(),
    };
    res.insert_header((header::CONTENT_TYPE, file.content_type))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
        ));
    Ok(res.body(body))
}

/// The byte range a `Range` header asks for: `None` for the whole file (no header, a header
/// we ignore as RFC 9110 allows: several ranges, another unit, bad syntax), `Err` when the
/// range starts past the end.
fn requested_range(req: &HttpRequest, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (Ok(a), Err(_)) if last.is_empty() => a..size,
        (Ok(a), Ok(b)) if a <= b => a..(b + 1).min(size),
        _ => return Ok(None),
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// A file name safe in a header and on any file system: the URL's last path segment with only
/// `A-Za-z0-9._-` kept, else `<job id>` plus an extension from the content type.
fn safe_file_name(url: &str, id: uuid::Uuid, content_type: Option<&str>) -> String {
    let from_url: String = url::Url::parse(url)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    let from_url = from_url.trim_start_matches('.');
    if from_url.chars().any(|c| c.is_ascii_alphanumeric()) {
        return from_url.to_string();
    }
    let ext = match content_type.unwrap_or_default() {
        "video/mp4" | "application/mp4" => ".mp4",
        "video/webm" | "audio/webm" => ".webm",
        "video/quicktime" => ".mov",
        "audio/mpeg" => ".mp3",
        "audio/mp4" => ".m4a",
        "video/x-matroska" => ".mkv",
        _ => "",
    };
    format!("{id}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(h: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
        let mut req = actix_web::test::TestRequest::default();
        if let Some(h) = h {
            req = req.insert_header((header::RANGE, h));
        }
        requested_range(&req.to_http_request(), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(range(None, 10), Ok(None));
        assert_eq!(range(Some("bytes=0-3"), 10), Ok(Some(0..4)));
        assert_eq!(range(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(range(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(range(Some("bytes=-30"), 10), Ok(Some(0..10)));
        assert_eq!(range(Some("bytes=8-100"), 10), Ok(Some(8..10)));
        assert_eq!(range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(range(Some("bytes=0-0"), 0), Err(()));
        assert_eq!(range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(range(Some("bytes=5-2"), 10), Ok(None));
    }

    #[test]
    fn file_names_are_safe() {
        let id = uuid::Uuid::nil();
        assert_eq!(
            safe_file_name("https://a.example/v/clip.mp4?x=1", id, None),
            "clip.mp4"
        );
        assert_eq!(
            safe_file_name("https://a.example/%22%0d%0aSet-Cookie.mp4", id, None),
            "220d0aSet-Cookie.mp4"
        );
        assert_eq!(
            safe_file_name("https://a.example/", id, Some("video/mp4")),
            format!("{id}.mp4")
        );
        assert_eq!(
            safe_file_name("https://a.example/..", id, None),
            id.to_string()
        );
    }
}
