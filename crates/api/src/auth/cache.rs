//! The key lookup cache. Every request presents its key; looking it up in Postgres each time
//! would put a round trip on every request. A lookup (found or not) is kept here for `ttl`,
//! keyed by the key's SHA-256, so a key revoked in Postgres is refused by every replica at
//! most `ttl` later. `last_used_at` is written at most once a minute per key and process,
//! in the background, the keys due at once in one statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipstash_db::batch::run_batches;
use clipstash_db::{KeyRow, keys};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::keys::hash_key;

/// Most lookups kept; past it expired entries are dropped, and if that is not enough the
/// cache starts over (a flood of random keys cannot grow memory without bound).
const MAX_ENTRIES: usize = 10_000;
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Most keys whose use waits to be written; past it a key's use is written a minute later.
const MAX_TOUCHES: usize = 1_024;

struct Entry {
    row: Option<Arc<KeyRow>>,
    fetched: Instant,
}

/// Lookups by key hash, each valid for `ttl`.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    touched: Mutex<HashMap<Uuid, Instant>>,
    touches: mpsc::Sender<Uuid>,
}

impl KeyCache {
    /// Starts the task that writes keys' uses on `pool`: whatever keys fell due while it
    /// wrote the last ones, in one statement. A burst of keys (every key's first request
    /// after a start, then each minute) was one commit per key, each waiting for the key
    /// rows a batch of submits held.
    pub fn new(ttl: Duration, pool: PgPool) -> Self {
        let (touches, rx) = mpsc::channel(MAX_TOUCHES);
        tokio::spawn(run_batches(rx, 1, MAX_TOUCHES, move |ids: Vec<Uuid>| {
            let pool = pool.clone();
            async move {
                if let Err(e) = keys::touch_last_used(&pool, &ids).await {
                    tracing::warn!(keys = ids.len(), error = %e, "recording keys' last use");
                }
            }
        }));
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            touches,
        }
    }

    /// The live key `token` stands for, or `None` when it is unknown or revoked.
    pub async fn lookup(
        &self,
        pool: &PgPool,
        token: &str,
    ) -> Result<Option<Arc<KeyRow>>, sqlx::Error> {
        let hash = hash_key(token);
        let cached = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .get(&hash)
                .filter(|e| e.fetched.elapsed() < self.ttl)
                .map(|e| e.row.clone())
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let row = keys::find_live_key(pool, &hash).await?.map(Arc::new);
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                if entries.len() >= MAX_ENTRIES {
                    entries.retain(|_, e| e.fetched.elapsed() < self.ttl);
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                }
                entries.insert(
                    hash,
                    Entry {
                        row: row.clone(),
                        fetched: Instant::now(),
                    },
                );
                row
            }
        };
        if let Some(r) = &row {
            self.touch(r.id);
        }
        Ok(row)
    }

    /// Records the key's use in the background when this process has not for a minute.
    fn touch(&self, id: Uuid) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.get(&id).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(id, Instant::now());
        }
        // Full: the writer is behind by a thousand keys; this one is written next minute.
        let _ = self.touches.try_send(id);
    }
}
