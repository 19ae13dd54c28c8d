//! The API's one error type and its JSON body: `{"error": {"code", "message"}}`. Extractor
//! failures (bad JSON, bad query, bad path) go through the same format.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use clipstash_domain::ErrorCode;
use metrics_core::catalogue::HTTP_REQUESTS_REJECTED_TOTAL;
use serde::Serialize;

/// The `reason` label of `http_requests_rejected_total`: a closed set, never a key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No key, or an unknown or revoked one.
    Unauthenticated,
    RateLimited,
    TooManyActiveJobs,
    TooManyStreams,
}

impl Rejection {
    pub fn of(code: ErrorCode) -> Option<Self> {
        match code {
            ErrorCode::Unauthenticated | ErrorCode::InvalidApiKey => Some(Self::Unauthenticated),
            ErrorCode::RateLimited => Some(Self::RateLimited),
            ErrorCode::TooManyActiveJobs => Some(Self::TooManyActiveJobs),
            ErrorCode::TooManyStreams => Some(Self::TooManyStreams),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::RateLimited => "rate_limited",
            Self::TooManyActiveJobs => "too_many_active_jobs",
            Self::TooManyStreams => "too_many_streams",
        }
    }
}

/// An error answered to the client. Its HTTP status comes from its code
/// ([`ErrorCode::http_status`]); a 5xx body leaks nothing, its cause is logged.
pub struct ApiError {
    code: ErrorCode,
    message: String,
    source: Option<anyhow::Error>,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, `RateLimit`, ...).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for ApiError {
    // Prints the whole cause chain in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source:?}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A client error: `message` says what was wrong and is shown as is.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
            headers: Vec::new(),
        }
    }

    /// Adds a response header (appended: a name may repeat).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A dependency failed: answered with `code`'s status and a message that leaks nothing.
    pub fn dependency(code: ErrorCode, source: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            message: "a backing service is unavailable, try again later".into(),
            source: Some(source.into()),
            headers: Vec::new(),
        }
    }

    pub fn database(e: impl Into<anyhow::Error>) -> Self {
        Self::dependency(ErrorCode::DatabaseUnavailable, e)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: ErrorCode::InternalError,
            message: "internal error".into(),
            source: Some(e),
            headers: Vec::new(),
        }
    }
}

/// The JSON body of every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorBody)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorDetail<'a> {
    #[schema(value_type = crate::openapi::ErrorCodeSchema)]
    pub code: &'static str,
    /// What was wrong, for people; match on `code`, not on this.
    #[schema(value_type = String)]
    pub message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        self.code.record();
        if let Some(reason) = Rejection::of(self.code) {
            metrics::counter!(HTTP_REQUESTS_REJECTED_TOTAL, "reason" => reason.as_str())
                .increment(1);
        }
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut res = HttpResponse::build(status);
        for (name, value) in &self.headers {
            res.append_header((name.clone(), value.clone()));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
            },
        })
    }
}

/// Maps body-parsing failures onto stable codes.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let e = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ),
        JsonPayloadError::Deserialize(de) if de.is_data() => {
            ApiError::new(ErrorCode::InvalidRequest, de.to_string())
        }
        JsonPayloadError::Deserialize(de) => {
            ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {de}"))
        }
        other => ApiError::new(ErrorCode::InvalidJson, other.to_string()),
    };
    e.into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidQuery, format!("bad query string: {err}")).into()
}

pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidId, format!("bad path: {err}")).into()
}
