//! Fetching media from a source URL and streaming it into storage.
//!
//! Bytes flow from the socket into the object store in bounded parts: memory does not grow
//! with file size. Size, SHA-256 and content type are computed on the way.

use std::time::Duration;

use futures_util::StreamExt;
use metrics_core::{SourceCallTracker, UploadTracker};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use sha2::{Digest, Sha256};

use crate::db::StoredObject;
use crate::error_code::ErrorCode;
use crate::storage::{Storage, UPLOAD_PARTS_IN_FLIGHT};

/// A failed attempt, with its stable code and a message for the job's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Limits applied to every fetch.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Largest accepted file; larger fails as `file_too_large`.
    pub max_bytes: u64,
    /// Longest wait for the next bytes (a server that drips bytes still hits the attempt
    /// timeout, enforced by the caller).
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// Pooled HTTP client for sources; build one per process.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    limits: FetchLimits,
}

const USER_AGENT: &str = concat!("clipstash/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    pub fn new(limits: FetchLimits) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.idle_timeout)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, limits })
    }

    /// Downloads `url` into `storage` at `key`. On any error the partial upload is aborted,
    /// so nothing is left at `key`.
    pub async fn download_to(
        &self,
        url: &str,
        storage: &Storage,
        key: &str,
    ) -> Result<StoredObject, JobError> {
        let call = SourceCallTracker::start("download_video");
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(classify_request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(classify_status(status));
        }
        call.success();

        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_string());
        if !is_media_type(&content_type) {
            return Err(JobError::new(
                ErrorCode::UnsupportedContentType,
                format!("source answered with {content_type}, not media"),
            ));
        }
        let expected_len = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = expected_len.filter(|&l| l > self.limits.max_bytes) {
            return Err(too_large(len, self.limits.max_bytes));
        }

        let upload_tracker = UploadTracker::start(storage.provider());
        let mut upload = storage
            .start_upload(key)
            .await
            .map_err(|e| JobError::new(ErrorCode::StorageError, format!("starting upload: {e}")))?;
        match self.stream_body(response, &mut upload, expected_len).await {
            Ok((size, sha256)) => {
                upload.finish().await.map_err(|e| {
                    JobError::new(ErrorCode::StorageError, format!("finishing upload: {e}"))
                })?;
                upload_tracker.success();
                Ok(StoredObject {
                    provider: storage.provider().to_string(),
                    object_key: key.to_string(),
                    size_bytes: size as i64,
                    sha256,
                    content_type,
                })
            }
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(key, error = %abort, "aborting a failed upload");
                }
                Err(e)
            }
        }
    }

    async fn stream_body(
        &self,
        response: reqwest::Response,
        upload: &mut object_store::WriteMultipart,
        expected_len: Option<u64>,
    ) -> Result<(u64, String), JobError> {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(classify_body_error)?;
            size += chunk.len() as u64;
            if size > self.limits.max_bytes {
                return Err(too_large(size, self.limits.max_bytes));
            }
            hasher.update(&chunk);
            upload
                .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| JobError::new(ErrorCode::StorageError, format!("writing: {e}")))?;
            upload.put(chunk);
        }
        if let Some(len) = expected_len.filter(|&l| l != size) {
            return Err(JobError::new(
                ErrorCode::Truncated,
                format!("got {size} of {len} bytes"),
            ));
        }
        Ok((size, hex::encode(hasher.finalize())))
    }
}

fn too_large(size: u64, max: u64) -> JobError {
    JobError::new(
        ErrorCode::FileTooLarge,
        format!("file is larger than the limit of {max} bytes (at least {size})"),
    )
}

/// Media types accepted from direct links; anything else (an HTML page, JSON) is refused.
fn is_media_type(ct: &str) -> bool {
    ct.starts_with("video/")
        || ct.starts_with("audio/")
        || matches!(
            ct,
            "application/octet-stream"
                | "binary/octet-stream"
                | "application/mp4"
                | "application/ogg"
        )
}

fn classify_status(status: StatusCode) -> JobError {
    let code = match status.as_u16() {
        404 | 410 => ErrorCode::SourceNotFound,
        408 | 425 | 429 => ErrorCode::SourceRateLimited,
        400..=499 => ErrorCode::SourceClientError,
        _ => ErrorCode::SourceServerError,
    };
    JobError::new(code, format!("source answered HTTP {status}"))
}

fn classify_request_error(e: reqwest::Error) -> JobError {
    let code = if e.is_redirect() {
        ErrorCode::TooManyRedirects
    } else if e.is_timeout() {
        ErrorCode::Timeout
    } else {
        ErrorCode::ConnectionFailed
    };
    JobError::new(code, error_chain(e))
}

fn classify_body_error(e: reqwest::Error) -> JobError {
    let code = if e.is_timeout() {
        ErrorCode::Timeout
    } else {
        ErrorCode::Truncated
    };
    JobError::new(code, format!("reading the body: {}", error_chain(e)))
}

/// The whole cause chain, without the URL (users' URLs may carry tokens).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for (status, code, transient) in [
            (StatusCode::NOT_FOUND, ErrorCode::SourceNotFound, false),
            (StatusCode::GONE, ErrorCode::SourceNotFound, false),
            (StatusCode::FORBIDDEN, ErrorCode::SourceClientError, false),
            (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::SourceRateLimited,
                true,
            ),
            (StatusCode::BAD_GATEWAY, ErrorCode::SourceServerError, true),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::SourceServerError,
                true,
            ),
        ] {
            let got = classify_status(status).code;
            assert_eq!((got, got.is_transient()), (code, transient), "{status}");
        }
    }

    #[test]
    fn media_types() {
        assert!(is_media_type("video/mp4"));
        assert!(is_media_type("audio/webm"));
        assert!(is_media_type("application/octet-stream"));
        assert!(!is_media_type("text/html"));
        assert!(!is_media_type("application/json"));
    }
}
