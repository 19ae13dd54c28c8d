//! Answers for requests no route serves, in the common JSON error format.

use actix_web::HttpResponse;
use actix_web::http::header::{ALLOW, HeaderValue};
use clipstash_domain::ErrorCode;

use crate::error::ApiError;

/// Any path no route matches: one `not_found` body (and one `unmatched` metric series).
pub async fn unmatched() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound, "no such route"))
}

/// The answer of a known route asked with a method it does not serve: 405 with the `Allow`
/// header RFC 9110 requires, listing `methods` (e.g. `"GET, DELETE"`).
pub fn method_not_allowed(
    methods: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move || {
        std::future::ready(Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("method not allowed on this route; allowed: {methods}"),
        )
        .with_header(ALLOW, HeaderValue::from_static(methods))))
    }
}
