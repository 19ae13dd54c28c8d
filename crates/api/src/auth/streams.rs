//! The per-key cap on open event streams (`GET /v1/downloads/{id}/events`), shared by every
//! API replica through Redis (`streams.lua`): `{prefix}:streams:{key id}` holds one entry per
//! open stream, renewed while it is open and removed when it closes; the entries of an API
//! that died lapse after [`ENTRY_TTL`].

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

static STREAMS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("streams.lua")));

/// How long a stream's entry lasts without renewal (an open stream renews it with every
/// keep-alive, well within this).
pub const ENTRY_TTL: Duration = Duration::from_secs(60);
/// A Redis answer slower than this lets the stream open uncounted (fail open, as the rate
/// limit does: Redis down also stops the events themselves).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Counts open streams per key in Redis under the queue's prefix.
#[derive(Clone)]
pub struct StreamLimiter {
    conn: ConnectionManager,
    prefix: String,
}

/// One open stream's entry; removed when dropped.
pub struct StreamSlot {
    limiter: StreamLimiter,
    key: Uuid,
    id: Uuid,
}

impl StreamLimiter {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
        }
    }

    fn redis_key(&self, key: Uuid) -> String {
        format!("{}:streams:{key}", self.prefix)
    }

    async fn call(&self, key: Uuid, stream: Uuid, cap: u32) -> Option<(u8, u32)> {
        let mut conn = self.conn.clone();
        let mut invocation = STREAMS.key(self.redis_key(key));
        invocation
            .arg(stream.to_string())
            .arg(cap)
            .arg(ENTRY_TTL.as_millis() as u64);
        let call = invocation.invoke_async::<(u8, u32)>(&mut conn);
        match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "stream cap check failed; stream let through");
                None
            }
            Err(_) => {
                tracing::warn!("stream cap check timed out; stream let through");
                None
            }
        }
    }

    /// Counts a new stream of `key` against `cap`: `Err(open)` when the key already has
    /// `cap` streams open.
    pub async fn acquire(&self, key: Uuid, cap: u32) -> Result<StreamSlot, u32> {
        let id = Uuid::new_v4();
        match self.call(key, id, cap.max(1)).await {
            Some((0, open)) => Err(open),
            _ => Ok(StreamSlot {
                limiter: self.clone(),
                key,
                id,
            }),
        }
    }
}

impl StreamSlot {
    /// Keeps the entry from lapsing; called with every keep-alive.
    pub async fn renew(&self) {
        self.limiter.call(self.key, self.id, 0).await;
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut conn = self.limiter.conn.clone();
        let key = self.limiter.redis_key(self.key);
        let member = self.id.to_string();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(key).arg(member);
                // If this fails the entry lapses by itself.
                let _ =
                    tokio::time::timeout(CHECK_TIMEOUT, zrem.query_async::<()>(&mut conn)).await;
            });
        }
    }
}
