//! Stable, machine-readable error codes: the `code` of every API error body, the
//! `error.code` of a failed job, and the `error_code` label of `errors_total`.
//! Codes are part of the API contract: add new ones, never rename.
//!
//! Each code carries, in the one table of [`ErrorCode::spec`], its class (which is also its
//! retry class) and the HTTP status it is answered with, so no call site picks either by
//! hand.

use serde::{Deserialize, Serialize};

/// What kind of failure a code stands for: the `error_type` label of `errors_total`, and
/// whether a job attempt that ends with it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorType {
    /// The client's request was wrong (API 4xx).
    Validation,
    /// The job failed in a way another attempt would not fix: not retried.
    Permanent,
    /// The job failed in a way worth retrying, with backoff.
    Transient,
    /// A fault of ours or of a dependency (API 5xx).
    Internal,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every error code clipstash emits.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
pub enum ErrorCode {
    // API request errors.
    InvalidJson,
    InvalidRequest,
    InvalidUrl,
    InvalidQuery,
    InvalidCursor,
    InvalidId,
    PayloadTooLarge,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    /// No longer answered (a running job is cancelled now); kept because codes are never
    /// removed from the contract.
    JobRunning,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    /// A `callback_url` from a key with no webhook signing secret (or with auth off).
    WebhookSecretMissing,
    /// A request with `cookies` to an API without `CLIPSTASH_SECRET_KEY`.
    CookiesDisabled,
    /// `cookies` that are neither cookies.txt text nor a `{name: value}` object of cookies.
    InvalidCookies,
    /// `format` of a submit is not a yt-dlp format selector we accept.
    InvalidFormat,
    /// `max_height` of a submit is outside 144-4320.
    InvalidMaxHeight,
    // Access: no key, an unknown or revoked key, a key over one of its limits.
    Unauthenticated,
    InvalidApiKey,
    RateLimited,
    TooManyActiveJobs,
    /// The key has as many event streams open as it may.
    TooManyStreams,
    FileNotFound,
    RangeNotSatisfiable,
    // API dependency failures.
    DatabaseUnavailable,
    QueueUnavailable,
    StorageUnavailable,
    InternalError,
    NotReady,
    // Job failures. Their HTTP status is the one an endpoint that surfaces a source's
    // answer directly (video info) would use.
    SourceNotFound,
    SourceClientError,
    SourceRateLimited,
    SourceServerError,
    ConnectionFailed,
    /// The URL's host name does not exist (the resolver says so definitively).
    HostNotFound,
    Timeout,
    Truncated,
    TooManyRedirects,
    UnsupportedContentType,
    /// The egress guard refused the destination (a loopback, private, link-local, ...
    /// address): answered at submit time for an IP literal, or failing the job at fetch.
    ForbiddenAddress,
    /// A job's sealed cookies do not open in the worker: it has no `CLIPSTASH_SECRET_KEY`,
    /// or another one than the API that sealed them.
    CookiesUnreadable,
    FileTooLarge,
    StorageError,
    StorageFull,
    RedeliveryLimit,
    // yt-dlp's verdicts, classified from its `ERROR:` lines (crates/sources/src/ytdlp/classify.rs).
    /// No extractor takes the URL, or the page holds no video.
    UnsupportedUrl,
    /// The video was removed, never existed, or is not (yet) playable.
    VideoUnavailable,
    PrivateVideo,
    AgeRestricted,
    /// Not available from the worker's location.
    GeoBlocked,
    /// The site wants a signed-in session (cookies), including YouTube's
    /// "confirm you're not a bot" check.
    LoginRequired,
    /// The requested format (or `max_height`) matches none the video has.
    FormatUnavailable,
    /// The job needs yt-dlp and this process runs without it (`CLIPSTASH_YTDLP=off`).
    YtdlpUnavailable,
    /// yt-dlp failed in a way no other code describes; its last `ERROR:` line is the message.
    YtdlpFailed,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = <ErrorCode as strum::VariantArray>::VARIANTS;

    /// The class (retry class and `error_type` label) and HTTP status of each code.
    pub const fn spec(self) -> (ErrorType, u16) {
        use ErrorCode::*;
        use ErrorType::*;
        match self {
            InvalidJson => (Validation, 400),
            InvalidRequest => (Validation, 422),
            InvalidUrl => (Validation, 422),
            InvalidQuery => (Validation, 400),
            InvalidCursor => (Validation, 400),
            InvalidId => (Validation, 400),
            PayloadTooLarge => (Validation, 413),
            UnsupportedMediaType => (Validation, 415),
            NotFound => (Validation, 404),
            MethodNotAllowed => (Validation, 405),
            JobRunning => (Validation, 409),
            InvalidIdempotencyKey => (Validation, 400),
            IdempotencyKeyReused => (Validation, 422),
            WebhookSecretMissing => (Validation, 422),
            CookiesDisabled => (Validation, 422),
            InvalidCookies => (Validation, 422),
            InvalidFormat => (Validation, 422),
            InvalidMaxHeight => (Validation, 422),
            Unauthenticated => (Validation, 401),
            InvalidApiKey => (Validation, 401),
            RateLimited => (Validation, 429),
            TooManyActiveJobs => (Validation, 429),
            TooManyStreams => (Validation, 429),
            FileNotFound => (Validation, 404),
            RangeNotSatisfiable => (Validation, 416),
            DatabaseUnavailable => (Internal, 503),
            QueueUnavailable => (Internal, 503),
            StorageUnavailable => (Internal, 503),
            InternalError => (Internal, 500),
            NotReady => (Internal, 503),
            SourceNotFound => (Permanent, 404),
            SourceClientError => (Permanent, 502),
            SourceRateLimited => (Transient, 503),
            SourceServerError => (Transient, 502),
            ConnectionFailed => (Transient, 502),
            HostNotFound => (Permanent, 404),
            Timeout => (Transient, 504),
            Truncated => (Transient, 502),
            TooManyRedirects => (Permanent, 502),
            UnsupportedContentType => (Permanent, 422),
            ForbiddenAddress => (Permanent, 422),
            CookiesUnreadable => (Permanent, 500),
            FileTooLarge => (Permanent, 413),
            StorageError => (Transient, 503),
            StorageFull => (Transient, 507),
            RedeliveryLimit => (Permanent, 500),
            UnsupportedUrl => (Permanent, 422),
            VideoUnavailable => (Permanent, 404),
            PrivateVideo => (Permanent, 403),
            AgeRestricted => (Permanent, 403),
            GeoBlocked => (Permanent, 451),
            LoginRequired => (Permanent, 403),
            FormatUnavailable => (Permanent, 422),
            YtdlpUnavailable => (Permanent, 503),
            YtdlpFailed => (Transient, 502),
        }
    }

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub const fn error_type(self) -> ErrorType {
        self.spec().0
    }

    /// The HTTP status this code is answered with.
    pub const fn http_status(self) -> u16 {
        self.spec().1
    }

    /// Whether another attempt may succeed.
    pub const fn is_transient(self) -> bool {
        matches!(self.error_type(), ErrorType::Transient)
    }

    /// Counts one occurrence in `errors_total{error_code, error_type}`: the one place that
    /// metric is recorded.
    pub fn record(self) {
        metrics_core::record_error(self.as_str(), self.error_type().as_str());
    }
}

/// A failed job attempt, with its stable code and a message for the job's `error`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_snake_case() {
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), *c);
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
        }
        assert!("nope".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn statuses_follow_the_class() {
        for c in ErrorCode::ALL {
            let s = c.http_status();
            match c.error_type() {
                ErrorType::Validation => assert!((400..500).contains(&s), "{c}: {s}"),
                ErrorType::Internal => assert!((500..600).contains(&s), "{c}: {s}"),
                // A job failure surfaced over HTTP: the source's fault or ours.
                ErrorType::Permanent | ErrorType::Transient => {
                    assert!((400..600).contains(&s), "{c}: {s}")
                }
            }
        }
        assert!(ErrorCode::SourceServerError.is_transient());
        assert!(!ErrorCode::SourceNotFound.is_transient());
        assert!(!ErrorCode::ForbiddenAddress.is_transient());
        assert_eq!(ErrorCode::ForbiddenAddress.http_status(), 422);
    }
}
