//! Answers for requests no route serves, in the common JSON error format.

use actix_web::HttpResponse;
use clipstash_domain::ErrorCode;

use crate::error::ApiError;

/// Any path no route matches: one `not_found` body (and one `unmatched` metric series).
pub async fn unmatched() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound, "no such route"))
}

/// A known route asked with a method it does not serve.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    ))
}
