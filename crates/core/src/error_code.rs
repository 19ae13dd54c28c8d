//! Stable, machine-readable error codes: the `code` of every API error body, the
//! `error.code` of a failed job, and the `error_code` label of `errors_total`.
//! Codes are part of the API contract: add new ones, never rename.

use serde::Serialize;

/// What kind of failure a code stands for: the `error_type` label of `errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The client's request was wrong (API 4xx).
    Validation,
    /// The job failed in a way another attempt would not fix.
    Permanent,
    /// The job failed in a way worth retrying.
    Transient,
    /// A fault of ours or of a dependency (API 5xx).
    Internal,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Validation => "validation",
            ErrorType::Permanent => "permanent",
            ErrorType::Transient => "transient",
            ErrorType::Internal => "internal",
        }
    }
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $ty:ident;)*) => {
        /// Every error code clipstash emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            /// All codes, for docs and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable snake_case code.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            pub fn error_type(self) -> ErrorType {
                match self { $(ErrorCode::$variant => ErrorType::$ty,)* }
            }

            /// Parses a stored code back (job rows keep the string).
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    // API request errors.
    InvalidJson = "invalid_json", Validation;
    InvalidRequest = "invalid_request", Validation;
    InvalidUrl = "invalid_url", Validation;
    InvalidQuery = "invalid_query", Validation;
    InvalidCursor = "invalid_cursor", Validation;
    InvalidId = "invalid_id", Validation;
    PayloadTooLarge = "payload_too_large", Validation;
    UnsupportedMediaType = "unsupported_media_type", Validation;
    NotFound = "not_found", Validation;
    MethodNotAllowed = "method_not_allowed", Validation;
    JobRunning = "job_running", Validation;
    // API dependency failures.
    DatabaseUnavailable = "database_unavailable", Internal;
    QueueUnavailable = "queue_unavailable", Internal;
    StorageUnavailable = "storage_unavailable", Internal;
    InternalError = "internal_error", Internal;
    NotReady = "not_ready", Internal;
    // Job failures.
    SourceNotFound = "source_not_found", Permanent;
    SourceClientError = "source_client_error", Permanent;
    SourceRateLimited = "source_rate_limited", Transient;
    SourceServerError = "source_server_error", Transient;
    ConnectionFailed = "connection_failed", Transient;
    Timeout = "timeout", Transient;
    Truncated = "truncated", Transient;
    TooManyRedirects = "too_many_redirects", Permanent;
    UnsupportedContentType = "unsupported_content_type", Permanent;
    FileTooLarge = "file_too_large", Permanent;
    StorageError = "storage_error", Transient;
    RedeliveryLimit = "redelivery_limit", Permanent;
}

impl ErrorCode {
    /// Whether another attempt may succeed.
    pub fn is_transient(self) -> bool {
        self.error_type() == ErrorType::Transient
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()));
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_')
            );
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
