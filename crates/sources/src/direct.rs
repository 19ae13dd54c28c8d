//! Direct media links fetched over HTTP with a pooled client, behind the egress guard
//! ([`crate::egress`]) for every connection and every redirect hop.

use std::time::Duration;

use clipstash_domain::{ErrorCode, JobError, Media, VideoSource};
use futures_util::StreamExt;
use metrics_core::{EgressVia, record_egress_refused};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::Source;
use crate::egress::{EgressPolicy, Forbidden, find_forbidden, guarded_client, redirect_policy};

/// Limits applied to every fetch (the size cap is the ingest pipeline's).
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Longest wait for the next bytes (a server that drips bytes still hits the attempt
    /// timeout, enforced by the caller).
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// The direct-link source; build one per process (its client pools connections).
#[derive(Debug, Clone)]
pub struct DirectHttp {
    client: reqwest::Client,
    egress: EgressPolicy,
}

/// What clipstash sends as `User-Agent` (downloads and webhooks).
pub const USER_AGENT: &str = concat!("clipstash/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 5;

impl DirectHttp {
    /// A client whose every connection and redirect hop goes through `egress`.
    pub fn new(limits: FetchLimits, egress: EgressPolicy) -> anyhow::Result<Self> {
        let client = guarded_client(&egress)
            .user_agent(USER_AGENT)
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.idle_timeout)
            .redirect(redirect_policy(egress.clone(), MAX_REDIRECTS))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, egress })
    }
}

/// What a direct link answered with.
#[derive(Debug)]
pub enum Fetched {
    /// Media: its stream.
    Media(Media),
    /// A web page (`text/html`, `application/xhtml+xml`): with `source: auto`, yt-dlp may find
    /// the video in it.
    Page { content_type: String },
}

impl Source for DirectHttp {
    fn kind(&self) -> VideoSource {
        VideoSource::Direct
    }

    async fn open(&self, url: &str) -> Result<Media, JobError> {
        match self.fetch(url).await? {
            Fetched::Media(media) => Ok(media),
            Fetched::Page { content_type } => Err(not_media(&content_type)),
        }
    }
}

fn not_media(content_type: &str) -> JobError {
    JobError::new(
        ErrorCode::UnsupportedContentType,
        format!("source answered with {content_type}, not media"),
    )
}

impl DirectHttp {
    /// Fetches `url`: its media, or word that it is a web page. (Direct fetches are not
    /// `youtube_api_*` calls: those count yt-dlp runs only.)
    pub async fn fetch(&self, url: &str) -> Result<Fetched, JobError> {
        // Parsed once: the guard checks the very host the client will connect to.
        let url = url::Url::parse(url)
            .map_err(|e| JobError::new(ErrorCode::InvalidUrl, format!("unparsable URL: {e}")))?;
        self.egress.check_url(&url).map_err(|f| forbidden(&f))?;
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
        if matches!(content_type.as_str(), "text/html" | "application/xhtml+xml") {
            return Ok(Fetched::Page { content_type });
        }
        if !is_media_type(&content_type) {
            return Err(not_media(&content_type));
        }
        let expected_len = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(Fetched::Media(Media {
            content_type,
            expected_len,
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map_err(classify_body_error))
                .boxed(),
        }))
    }
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

/// A refusal of the egress guard, counted in `egress_refused_total{via="direct"}`.
fn forbidden(f: &Forbidden) -> JobError {
    record_egress_refused(EgressVia::Direct);
    JobError::new(ErrorCode::ForbiddenAddress, f.to_string())
}

fn classify_request_error(e: reqwest::Error) -> JobError {
    if let Some(f) = find_forbidden(&e) {
        return forbidden(f);
    }
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
