//! HTTP metrics middleware: the route template (never the raw path) labels every series,
//! and `X-Process-Time` carries the handling time like the original.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use metrics_core::HttpTracker;

static X_PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// Records `http_requests_*` for every request from a guard, so a request whose client
/// went away mid-flight still counts (as 499).
pub async fn track_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let tracker = HttpTracker::start(req.method().as_str());
    let mut res = next.call(req).await?;
    let elapsed = tracker.elapsed_seconds();
    if let Ok(v) = HeaderValue::from_str(&format!("{elapsed:.6}")) {
        res.headers_mut().insert(X_PROCESS_TIME.clone(), v);
    }
    // Matched after routing; `None` (no route) becomes the one `unmatched` series.
    let endpoint = res.request().match_pattern();
    tracker.finish(endpoint, res.status().as_u16());
    Ok(res)
}
