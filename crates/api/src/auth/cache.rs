//! The key lookup cache. Every request presents its key; looking it up in Postgres each time
//! would put a round trip on every request. A lookup (found or not) is kept here for `ttl`,
//! keyed by the key's SHA-256, so a key revoked in Postgres is refused by every replica at
//! most `ttl` later. `last_used_at` is written at most once a minute per key and process,
//! in the background, the keys due within a second in one statement.
//!
//! A key in use does not wait for Postgres: every `ttl / 2` a background task reads again,
//! in one statement, every found key used since its last read, so a key used at least once
//! in every half `ttl` is fresh before it expires (a revoked one comes back missing and is
//! refused from then on). At start the most recently used keys are loaded
//! ([`KeyCache::preload`]), so the first request of each after a restart is not a lookup
//! either: a burst right after a deploy had every key's first submit wait behind its own
//! lookup (docs/BENCHMARKS.md, "Keys cached before they are asked for"). Unknown keys are
//! never read again: they expire, and are the first evicted when the cache is full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clipstash_db::{KeyRow, keys};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::keys::hash_key;

/// Most lookups kept; past it expired entries are dropped, and if that is not enough the
/// cache starts over (a flood of random keys cannot grow memory without bound).
const MAX_ENTRIES: usize = 10_000;
/// Keys loaded at start-up: half the cache, so that lookups of other keys (new ones, made-up
/// ones) find room without evicting the loaded ones.
const PRELOADED: usize = MAX_ENTRIES / 2;
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Most keys written by one statement.
const MAX_TOUCHES: usize = 1_024;
/// How long the first key to fall due waits for others before their uses are written: the
/// keys of a burst (every key's first request after a start, then each minute) go in one
/// statement, after the burst rather than inside it, where each statement's key-row locks
/// held up the submit batches locking the same rows (docs/BENCHMARKS.md).
const TOUCH_GATHER: Duration = Duration::from_secs(1);

struct Entry {
    row: Option<Arc<KeyRow>>,
    /// When Postgres was asked (before the answer, so the entry never outlives `ttl`).
    fetched: Instant,
    /// Used since it was last read: the refresh reads it again.
    used: bool,
}

type Entries = Mutex<HashMap<[u8; 32], Entry>>;

/// Lookups by key hash, each valid for `ttl`.
pub struct KeyCache {
    ttl: Duration,
    entries: Arc<Entries>,
    touched: Mutex<HashMap<Uuid, Instant>>,
    /// Unbounded, and bounded all the same: a key is sent at most once a minute.
    touches: mpsc::UnboundedSender<Uuid>,
}

impl KeyCache {
    /// Starts the task that keeps used keys fresh (unless `ttl` is zero: nothing is cached)
    /// and the one that writes keys' uses on `pool`: the keys that fell due within
    /// [`TOUCH_GATHER`] of each other, in one statement.
    pub fn new(ttl: Duration, pool: PgPool) -> Self {
        let entries = Arc::new(Mutex::new(HashMap::new()));
        if !ttl.is_zero() {
            tokio::spawn(refresh_loop(Arc::downgrade(&entries), ttl, pool.clone()));
        }
        let (touches, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_touches(rx, pool));
        Self {
            ttl,
            entries,
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
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .get_mut(&hash)
                .filter(|e| e.fetched.elapsed() < self.ttl)
                .map(|e| {
                    e.used = true;
                    e.row.clone()
                })
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let fetched = Instant::now();
                let row = keys::find_live_key(pool, &hash).await?.map(Arc::new);
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                if entries.len() >= MAX_ENTRIES {
                    // Expired entries first, then misses (a flood of made-up keys), and
                    // only then the live keys too.
                    entries.retain(|_, e| e.fetched.elapsed() < self.ttl);
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, e| e.row.is_some());
                    }
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                }
                entries.insert(
                    hash,
                    Entry {
                        row: row.clone(),
                        fetched,
                        used: false,
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

    /// Loads the most recently used live keys, [`PRELOADED`] at most; returns how many.
    /// Each stays until `ttl` unless it is used, then it is kept fresh.
    pub async fn preload(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        if self.ttl.is_zero() {
            return Ok(0);
        }
        let fetched = Instant::now();
        let found = keys::recent_live_keys(pool, PRELOADED as i64).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for k in &found {
            if let Ok(hash) = <[u8; 32]>::try_from(k.key_hash.as_slice()) {
                entries.entry(hash).or_insert_with(|| Entry {
                    row: Some(Arc::new(k.row.clone())),
                    fetched,
                    used: false,
                });
            }
        }
        Ok(found.len())
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
        // Fails only once the writer has stopped (the process is ending).
        let _ = self.touches.send(id);
    }
}

/// Every `ttl / 2`, reads again the keys used since they were last read, until the cache
/// is dropped: a key used at least once in every half `ttl` is read again before it
/// expires. A failed read is logged and tried at the next tick; meanwhile entries age as
/// they would without it, and a lookup past `ttl` goes to Postgres itself.
async fn refresh_loop(entries: Weak<Entries>, ttl: Duration, pool: PgPool) {
    let mut tick = tokio::time::interval(ttl / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(entries) = entries.upgrade() else {
            return;
        };
        if let Err(e) = refresh(&entries, &pool).await {
            tracing::warn!(error = %e, "refreshing cached API keys; lookups go to Postgres as entries expire");
        }
    }
}

/// One refresh: a statement for every found key used since its last read.
async fn refresh(entries: &Entries, pool: &PgPool) -> Result<(), sqlx::Error> {
    let due: Vec<[u8; 32]> = {
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter_mut()
            .filter(|(_, e)| e.used && e.row.is_some())
            .map(|(hash, e)| {
                e.used = false;
                *hash
            })
            .collect()
    };
    if due.is_empty() {
        return Ok(());
    }
    let fetched = Instant::now();
    let found: HashMap<Vec<u8>, KeyRow> = match keys::find_live_keys(pool, &due).await {
        Ok(found) => found.into_iter().map(|k| (k.key_hash, k.row)).collect(),
        Err(e) => {
            // Still due: the next tick reads them.
            let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            for hash in &due {
                if let Some(e) = entries.get_mut(hash) {
                    e.used = true;
                }
            }
            return Err(e);
        }
    };
    let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
    for hash in due {
        // An entry a lookup replaced meanwhile is newer than this read.
        if let Some(e) = entries.get_mut(&hash).filter(|e| e.fetched < fetched) {
            // Missing now: revoked (or deleted), refused from here on.
            e.row = found.get(&hash[..]).cloned().map(Arc::new);
            e.fetched = fetched;
        }
    }
    Ok(())
}

/// Writes keys' uses until the cache is dropped: from the first key due, whatever falls due
/// in the next [`TOUCH_GATHER`], in statements of at most [`MAX_TOUCHES`] keys.
async fn write_touches(mut rx: mpsc::UnboundedReceiver<Uuid>, pool: PgPool) {
    while let Some(first) = rx.recv().await {
        let until = tokio::time::Instant::now() + TOUCH_GATHER;
        let mut ids = vec![first];
        // Ends early when the cache is dropped: what was gathered is still written.
        while let Ok(Some(id)) = tokio::time::timeout_at(until, rx.recv()).await {
            ids.push(id);
        }
        for chunk in ids.chunks(MAX_TOUCHES) {
            if let Err(e) = keys::touch_last_used(&pool, chunk).await {
                tracing::warn!(keys = chunk.len(), error = %e, "recording keys' last use");
            }
        }
    }
}
