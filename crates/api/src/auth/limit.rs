//! The per-key request rate, shared by every API replica through Redis.
//!
//! No well-kept crate does Redis-backed GCRA on redis 1.x (`governor` is in-process only;
//! `redis-cell` is a Redis module we cannot assume), so it is one Lua script
//! (`gcra.lua`): read, decide and write in one atomic call, on Redis's clock, one round trip
//! per request. Headers follow draft-ietf-httpapi-ratelimit-headers-10:
//! `RateLimit-Policy: "default";q=60;w=60` and `RateLimit: "default";r=12;t=5`.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use redis::aio::ConnectionManager;
use uuid::Uuid;

static GCRA: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The window every request rate is expressed over.
const WINDOW: Duration = Duration::from_secs(60);
/// A Redis answer slower than this lets the request through (see [`RateLimiter::check`]).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One request's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub reset_ms: u64,
}

fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl Decision {
    /// Whole seconds until a refused request may be retried (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        secs_ceil(self.retry_after_ms).max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` for this verdict.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        let policy = format!("\"default\";q={};w={}", self.limit, WINDOW.as_secs());
        let t = if self.allowed {
            secs_ceil(self.reset_ms)
        } else {
            self.retry_after_secs()
        };
        let now = format!("\"default\";r={};t={t}", self.remaining);
        [
            (
                RATELIMIT_POLICY.clone(),
                HeaderValue::from_str(&policy).expect("ascii"),
            ),
            (
                RATELIMIT.clone(),
                HeaderValue::from_str(&now).expect("ascii"),
            ),
        ]
    }
}

/// Per-key GCRA in Redis under `{prefix}:ratelimit:{key id}`.
#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
}

impl RateLimiter {
    /// `prefix` is the queue name, so a deployment's (and a test's) keys stay together.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
        }
    }

    /// Counts one request of `key` against `per_minute`. `None` when Redis did not answer in
    /// time: the request is let through (fail open) and logged. Redis down also stops
    /// submissions (the queue), and the active-jobs cap is in Postgres, so failing closed
    /// would only add an outage of reads.
    pub async fn check(&self, key: Uuid, per_minute: u32) -> Option<Decision> {
        let mut conn = self.conn.clone();
        let mut invocation = GCRA.key(format!("{}:ratelimit:{key}", self.prefix));
        invocation.arg(per_minute).arg(WINDOW.as_millis() as u64);
        let call = invocation.invoke_async::<(u8, u64, u64, u64)>(&mut conn);
        match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(Ok((allowed, remaining, retry_after_ms, reset_ms))) => Some(Decision {
                allowed: allowed == 1,
                limit: per_minute,
                remaining,
                retry_after_ms,
                reset_ms,
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate limit check failed; request let through");
                None
            }
            Err(_) => {
                tracing::warn!("rate limit check timed out; request let through");
                None
            }
        }
    }
}
