//! Access to `/v1`: API keys (`Authorization: Bearer <key>`), looked up through a short-lived
//! in-process cache ([`cache`]), and per-key request rates kept in Redis ([`limit`]) so every
//! replica enforces the same budget. The per-key cap on active jobs is enforced in Postgres
//! at submit (`clipstash_db::batch::JobInserter::submit`, batched with other submits).
//! `keys` is the `clipstash-api keys` command.

pub mod cache;
pub mod keys;
pub mod limit;
pub mod streams;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError, web};
use clipstash_db::Owner;
use clipstash_domain::ErrorCode;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
pub use cache::KeyCache;
pub use limit::RateLimiter;
pub use streams::StreamLimiter;

/// Whether `/v1` needs a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every `/v1` request needs `Authorization: Bearer <key>`.
    Required,
    /// No key is asked for and no per-key limit applies: local runs and tests only.
    Off,
}

/// Access settings of `clipstash-api serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Whether /v1 routes need an API key (`required`) or not (`off`: local runs only).
    #[arg(
        long,
        env = "CLIPSTASH_AUTH",
        value_name = "CLIPSTASH_AUTH",
        value_enum,
        default_value = "required"
    )]
    pub auth: AuthMode,

    /// Requests per minute per key, for keys created without --rate (1-100000).
    #[arg(long, env = "CLIPSTASH_RATE_PER_MINUTE", value_name = "CLIPSTASH_RATE_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_per_minute: u32,

    /// Jobs queued, running or retrying at once per key, for keys created without --max-active (1-100000).
    #[arg(long, env = "CLIPSTASH_MAX_ACTIVE_JOBS", value_name = "CLIPSTASH_MAX_ACTIVE_JOBS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_active_jobs: u32,

    /// Event streams (`GET /v1/downloads/{id}/events`) open at once per key, across all API replicas (1-10000).
    #[arg(long, env = "CLIPSTASH_MAX_STREAMS_PER_KEY", value_name = "CLIPSTASH_MAX_STREAMS_PER_KEY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_streams_per_key: u32,

    /// How long a key lookup is cached in this process; a revoked key is refused by every replica within this time (1s to 60s; 0s caches nothing). Keys in use are read again every half of it, in the background.
    #[arg(long, env = "CLIPSTASH_AUTH_CACHE_TTL", value_name = "CLIPSTASH_AUTH_CACHE_TTL", default_value = "10s", value_parser = parse_ttl)]
    pub auth_cache_ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(60) {
        return Err("must be at most 60s".into());
    }
    // Keys in use are read again every half TTL: a shorter one would be a statement per
    // timer tick, for nothing a revocation needs.
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err("must be 0s (no cache) or at least 1s".into());
    }
    Ok(d)
}

/// The caller of a `/v1` request, put there by [`authenticate`]; handlers take it as an
/// extractor.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off.
    Anonymous,
    Key(Arc<KeyIdentity>),
}

/// An authenticated key with its limits resolved against the server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: Uuid,
    pub rate_per_minute: u32,
    pub max_active_jobs: u32,
    /// Whether the key can sign webhooks (it has a webhook secret).
    pub has_webhook_secret: bool,
}

impl Caller {
    /// Whose jobs this caller sees.
    pub fn owner(&self) -> Owner {
        match self {
            Caller::Anonymous => Owner::Any,
            Caller::Key(k) => Owner::Key(k.id),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Missing only if a route was mounted outside the authenticated scope: refuse.
        ready(req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "this route needs an API key")
        }))
    }
}

/// What the auth middleware needs, shared by every worker thread.
pub struct Access {
    pub mode: AuthMode,
    pub cache: KeyCache,
    pub limiter: RateLimiter,
    pub default_rate_per_minute: u32,
    pub default_max_active_jobs: u32,
    /// Counts open event streams per key.
    pub streams: StreamLimiter,
    pub max_streams_per_key: u32,
}

impl Access {
    fn identity(&self, row: &clipstash_db::KeyRow) -> KeyIdentity {
        let positive = |v: Option<i32>, default: u32| {
            v.and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        KeyIdentity {
            id: row.id,
            rate_per_minute: positive(row.rate_per_minute, self.default_rate_per_minute),
            max_active_jobs: positive(row.max_active_jobs, self.default_max_active_jobs),
            has_webhook_secret: row.has_webhook_secret,
        }
    }
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `/v1` middleware: checks the key, then the key's request rate, and adds the rate's
/// `RateLimit-Policy` / `RateLimit` headers to the answer. Refusals are answered here, in the
/// common JSON format, so the HTTP metrics see their real status.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError("no state"));
    };
    let access = &state.access;
    if access.mode == AuthMode::Off {
        req.extensions_mut().insert(Caller::Anonymous);
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let refuse = |req: ServiceRequest, e: ApiError| {
        Ok(req.into_response(e.error_response()).map_into_right_body())
    };
    let Some(token) = bearer(&req) else {
        return refuse(
            req,
            ApiError::new(
                ErrorCode::Unauthenticated,
                "send an API key: Authorization: Bearer <key>",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"clipstash\""),
            ),
        );
    };
    let row = match access.cache.lookup(&state.pool, token).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return refuse(
                req,
                ApiError::new(
                    ErrorCode::InvalidApiKey,
                    "the API key is unknown or revoked",
                )
                .with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"clipstash\", error=\"invalid_token\""),
                ),
            );
        }
        Err(e) => return refuse(req, ApiError::database(e)),
    };
    let key = Arc::new(access.identity(&row));
    let decision = access.limiter.check(key.id, key.rate_per_minute).await;
    if let Some(d) = &decision
        && !d.allowed
    {
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} requests per minute with this key; retry in {} s",
                key.rate_per_minute,
                d.retry_after_secs()
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(d.retry_after_secs()));
        for (name, value) in d.headers() {
            e = e.with_header(name, value);
        }
        return refuse(req, e);
    }
    req.extensions_mut().insert(Caller::Key(key));
    let mut res = next.call(req).await?;
    if let Some(d) = decision {
        for (name, value) in d.headers() {
            res.headers_mut().append(name, value);
        }
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_ttl_is_off_or_between_one_second_and_a_minute() {
        for ok in ["0s", "1s", "10s", "60s"] {
            assert!(parse_ttl(ok).is_ok(), "{ok}");
        }
        for bad in ["1ns", "500ms", "61s", "ten"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
