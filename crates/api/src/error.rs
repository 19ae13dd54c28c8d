//! The API's one error type and its JSON body: `{"error": {"code", "message"}}`. Extractor
//! failures (bad JSON, bad query, bad path) go through the same format.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use clipstash_core::ErrorCode;
use serde::Serialize;

/// An error answered to the client.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// The client's fault: a 4xx with a message saying what was wrong.
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    /// A dependency failed: a 5xx whose body leaks nothing; the cause is logged.
    #[error("{code}")]
    Unavailable {
        code: ErrorCode,
        #[source]
        source: anyhow::Error,
    },
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl std::fmt::Debug for ApiError {
    // Prints the whole cause chain in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Client { code, message, .. } => write!(f, "{code}: {message}"),
            ApiError::Unavailable { code, source } => write!(f, "{code}: {source:?}"),
            ApiError::Unexpected(e) => write!(f, "{e:?}"),
        }
    }
}

impl ApiError {
    pub fn client(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn database(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            code: ErrorCode::DatabaseUnavailable,
            source: e.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Client { code, .. } | ApiError::Unavailable { code, .. } => *code,
            ApiError::Unexpected(_) => ErrorCode::InternalError,
        }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'static str,
    pub message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.code();
        metrics_core::record_error(code.as_str(), code.error_type().as_str());
        let message = match self {
            ApiError::Client { message, .. } => message.as_str(),
            ApiError::Unavailable { .. } => "a backing service is unavailable, try again later",
            ApiError::Unexpected(_) => "internal error",
        };
        if !matches!(self, ApiError::Client { .. }) {
            tracing::error!(error = ?self, "request failed");
        }
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: ErrorDetail {
                code: code.as_str(),
                message,
            },
        })
    }
}

/// Maps body-parsing failures onto stable codes.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let e = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        }
        JsonPayloadError::ContentType => ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ),
        JsonPayloadError::Deserialize(de) if de.is_data() => ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            de.to_string(),
        ),
        JsonPayloadError::Deserialize(de) => ApiError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("malformed JSON: {de}"),
        ),
        other => ApiError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            other.to_string(),
        ),
    };
    e.into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::client(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidQuery,
        format!("bad query string: {err}"),
    )
    .into()
}

pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::client(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        format!("bad path: {err}"),
    )
    .into()
}
