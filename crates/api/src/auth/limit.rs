//! The per-key request rate, shared by every API replica through Redis.
//!
//! No well-kept crate does Redis-backed GCRA on redis 1.x (`governor` is in-process only;
//! `redis-cell` is a Redis module we cannot assume), so it is one Lua script
//! (`gcra.lua`): read, decide and write in one atomic call, on Redis's clock. Concurrent
//! requests share a call, as submits share a batch (`clipstash_db::batch`): whatever checks
//! queued up while the previous calls ran go in the next one, judged in arrival order, so a
//! burst costs Redis one script run and one round trip instead of one per request (a call
//! per request was ~8% of a keyed submit's CPU, docs/BENCHMARKS.md). A lone request still
//! goes straight through. Headers follow draft-ietf-httpapi-ratelimit-headers-10:
//! `RateLimit-Policy: "default";q=60;w=60` and `RateLimit: "default";r=12;t=5`.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use clipstash_db::batch::run_batches;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
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
/// Most requests judged by one script call.
const MAX_BATCH: usize = 256;
/// Script calls in flight at once; while all are, checks queue up for the next call.
const IN_FLIGHT: usize = 4;

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

/// Per-key GCRA in Redis under `{prefix}:ratelimit:{key id}`; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    tx: mpsc::Sender<Check>,
}

/// One request waiting for its verdict.
struct Check {
    key: Uuid,
    per_minute: u32,
    reply: oneshot::Sender<Decision>,
}

impl RateLimiter {
    /// Starts the task that batches checks into script calls on `conn`. `prefix` is the
    /// queue name, so a deployment's (and a test's) keys stay together.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * IN_FLIGHT);
        let prefix = prefix.to_owned();
        tokio::spawn(run_batches(rx, IN_FLIGHT, MAX_BATCH, move |batch| {
            let (mut conn, prefix) = (conn.clone(), prefix.clone());
            async move { judge(&mut conn, &prefix, batch).await }
        }));
        Self { tx }
    }

    /// Counts one request of `key` against `per_minute`. `None` when Redis did not answer in
    /// time or failed: the request is let through (fail open) and logged. Redis down also
    /// stops submissions (the queue), and the active-jobs cap is in Postgres, so failing
    /// closed would only add an outage of reads.
    pub async fn check(&self, key: Uuid, per_minute: u32) -> Option<Decision> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            let check = Check {
                key,
                per_minute,
                reply,
            };
            self.tx.send(check).await.ok()?;
            // A failed call drops its replies (and logs once for the whole batch).
            answer.await.ok()
        };
        let decided = tokio::time::timeout(CHECK_TIMEOUT, asked).await;
        if decided.is_err() {
            tracing::warn!("rate limit check timed out; request let through");
        }
        decided.ok().flatten()
    }
}

/// One script call for `batch`; each check gets its [`Decision`], or nothing (let through)
/// if the call failed or its key could not be judged. Checks whose request stopped waiting
/// (timed out) are left out, so they spend no budget.
async fn judge(conn: &mut ConnectionManager, prefix: &str, mut batch: Vec<Check>) {
    batch.retain(|c| !c.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let mut invocation = GCRA.prepare_invoke();
    invocation.arg(WINDOW.as_millis() as u64);
    for c in &batch {
        invocation
            .key(format!("{prefix}:ratelimit:{}", c.key))
            .arg(c.per_minute);
    }
    // Bounded like a request's wait, so a stalled Redis holds a call slot no longer.
    let call = invocation.invoke_async::<Vec<u64>>(conn);
    let answers = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(Ok(a)) if a.len() == 4 * batch.len() => a,
        Ok(Ok(a)) => {
            tracing::warn!(
                requests = batch.len(),
                values = a.len(),
                "rate limit script answered the wrong number of values; requests let through"
            );
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, requests = batch.len(), "rate limit check failed; requests let through");
            return;
        }
        // `check` has logged each request's timeout.
        Err(_) => return,
    };
    for (c, a) in batch.into_iter().zip(answers.chunks_exact(4)) {
        if a[0] > 1 {
            tracing::warn!(key_id = %c.key, "rate limit state unreadable or unwritable in Redis; request let through");
            continue;
        }
        let _ = c.reply.send(Decision {
            allowed: a[0] == 1,
            limit: c.per_minute,
            remaining: a[1],
            retry_after_ms: a[2],
            reset_ms: a[3],
        });
    }
}
