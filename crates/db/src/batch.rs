//! Group commit for submits: concurrent inserts of new jobs are written as one multi-row
//! `INSERT`, so a burst of submits costs Postgres one statement and one commit instead of
//! one per job (docs/BENCHMARKS.md has the figures).
//!
//! Nothing waits to fill a batch: a batch is whatever queued up while the previous ones
//! were being written and enqueued, so a lone submit goes straight through and a burst shares its
//! commits. Each caller still gets its own row back only after the commit, so "the row
//! exists before the 202" holds exactly as with a single `INSERT`.
//!
//! An [`AfterCommit`] stage runs on each committed batch before its callers are answered:
//! the API enqueues the batch's jobs there, in one round trip to Redis. A batch keeps its
//! place (one of the batches in flight) until its stage has run: the submits that arrive
//! meanwhile wait for the next batch, which is larger for it. Writing the next batch while
//! this one was enqueued made batches of ~10 at 32 clients where this makes ~14, and cost
//! ~10% more CPU per submit on the whole machine (docs/BENCHMARKS.md, stop 24). A committed
//! batch still gives its connection back before its stage.
//!
//! Submits made with an API key carry the key's cap on active jobs
//! ([`JobInserter::insert_capped`]). A batch with such submits is still one statement (one
//! call of a function of the schema with `Idempotency-Key`s, [`IDEMPOTENT_INSERT`]): it
//! locks each of its keys once (in one order, so concurrent batches cannot deadlock), reads
//! the key's count of active jobs (`api_keys.active_jobs`), admits that key's submits in
//! submit order while the count stays within the cap, and adds what it admitted to the
//! count. The others are answered [`AtCap`]. Triggers on `jobs` keep the count in step with
//! every other change (a job ending, a deletion).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use clipstash_domain::{JobStatus, RequestedSource, VideoSource};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::jobs::{IdempotencyKey, JOB_COLUMNS, JobRow, NewJob};

/// Most rows in one `INSERT`.
pub const MAX_BATCH: usize = 256;

/// What a caller gets back: its row, or the error its batch met (shared by the batch).
pub type Inserted = Result<Committed, Arc<sqlx::Error>>;

/// What a caller with an API key gets back: its row, or [`AtCap`], or the batch's error.
pub type InsertedCapped = Result<Result<Committed, AtCap>, Arc<sqlx::Error>>;

/// The submit was not written: its key already had its cap of active jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCap;

/// What a submit with an `Idempotency-Key` came to ([`JobInserter::submit`]).
#[derive(Debug)]
pub enum Written {
    /// A new job, committed (and its batch's after-commit stage run).
    Created(Committed),
    /// The key had created this job before (in this batch or earlier), from the same
    /// request: it is answered again, and not enqueued again.
    Replayed(JobRow),
    /// The key had been used before, by the same caller, with another request.
    KeyReused,
    /// Not written: the API key already had its cap of active jobs.
    AtCap,
}

/// A submit's [`Written`], or the error its batch met (shared by the batch).
pub type Outcome = Result<Written, Arc<sqlx::Error>>;

/// A committed row, and how the batch's [`AfterCommit`] stage went.
#[derive(Debug)]
pub struct Committed {
    pub row: JobRow,
    /// The after-commit stage's outcome, shared by every row of the batch; `None` when the
    /// inserter has no stage ([`JobInserter::spawn`]).
    pub after: Option<Result<(), Arc<anyhow::Error>>>,
}

/// Runs on each committed batch's rows (in submit order) before their callers are
/// answered; its error reaches every caller of the batch, with its row.
pub type AfterCommit =
    Arc<dyn Fn(Vec<JobRow>) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Hands new jobs to the batching task; cheap to clone.
#[derive(Clone)]
pub struct JobInserter {
    tx: mpsc::Sender<Pending>,
}

/// A [`NewJob`] owned, to cross into the batching task.
struct Pending {
    id: Uuid,
    url: String,
    source: VideoSource,
    requested: RequestedSource,
    format: Option<String>,
    max_height: Option<i32>,
    cookies_sealed: Option<Vec<u8>>,
    callback_url: Option<String>,
    /// The API key and its cap on active jobs.
    owner: Option<(Uuid, i64)>,
    /// The `Idempotency-Key` and the SHA-256 of the request it came with.
    idempotency: Option<(String, String)>,
    reply: oneshot::Sender<Outcome>,
}

impl JobInserter {
    /// Starts the batching task on `pool`, with at most `in_flight` batches at once, each
    /// written (on a pooled connection the task keeps between batches, and gives back once
    /// unused for a second) and then through its after-commit stage. It ends when the last
    /// clone is dropped.
    pub fn spawn(pool: PgPool, in_flight: usize) -> Self {
        Self::start(pool, in_flight, None)
    }

    /// Like [`spawn`](Self::spawn), running `after` on every committed batch.
    pub fn spawn_then(pool: PgPool, in_flight: usize, after: AfterCommit) -> Self {
        Self::start(pool, in_flight, Some(after))
    }

    fn start(pool: PgPool, in_flight: usize, after: Option<AfterCommit>) -> Self {
        let in_flight = in_flight.max(1);
        let (tx, rx) = mpsc::channel(MAX_BATCH * in_flight);
        tokio::spawn(run(pool, rx, in_flight, after));
        Self { tx }
    }

    /// Inserts a new queued job (no API key) and returns its row once committed.
    pub async fn insert(&self, job: &NewJob<'_>) -> Inserted {
        match self.submit(job, None, None).await? {
            Written::Created(c) => Ok(c),
            // Only a submit with a key has a cap, only one with an Idempotency-Key a replay.
            other => Err(unexpected(other)),
        }
    }

    /// Inserts a new queued job of `api_key_id` if the key has fewer than `max_active`
    /// jobs queued, running or retrying (counting the submits of the same batch before it).
    pub async fn insert_capped(
        &self,
        job: &NewJob<'_>,
        api_key_id: Uuid,
        max_active: i64,
    ) -> InsertedCapped {
        match self
            .submit(job, Some((api_key_id, max_active)), None)
            .await?
        {
            Written::Created(c) => Ok(Ok(c)),
            Written::AtCap => Ok(Err(AtCap)),
            other => Err(unexpected(other)),
        }
    }

    /// Any submit: with an API key and its cap (`owner`) or not, with an `Idempotency-Key`
    /// or not. Under an `Idempotency-Key` it creates a job or answers the one the key created
    /// before; keys are scoped to their caller (the API key, or none when auth is off), and
    /// a replay is answered before the cap is checked. [`insert`](Self::insert) and
    /// [`insert_capped`](Self::insert_capped) are its narrower forms.
    pub async fn submit(
        &self,
        job: &NewJob<'_>,
        owner: Option<(Uuid, i64)>,
        key: Option<IdempotencyKey<'_>>,
    ) -> Outcome {
        let idempotency = key.map(|k| (k.key.to_owned(), k.request_sha256.to_owned()));
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            id: job.id,
            url: job.url.to_owned(),
            source: job.source,
            requested: job.requested,
            format: job.format.map(str::to_owned),
            max_height: job.max_height,
            cookies_sealed: job.cookies_sealed.map(<[u8]>::to_vec),
            callback_url: job.callback_url.map(str::to_owned),
            owner,
            idempotency,
            reply,
        };
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        self.tx.send(pending).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// An answer a submit could not get (no key, so no cap; no Idempotency-Key, so no replay).
fn unexpected(w: Written) -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::Protocol(format!(
        "batch answered {w:?} to a submit that cannot get it"
    )))
}

async fn run(
    pool: PgPool,
    rx: mpsc::Receiver<Pending>,
    in_flight: usize,
    after: Option<AfterCommit>,
) {
    // Open the connections batches are written on before the first burst needs them: a
    // burst that has to open them pays a connection set-up (and TLS) per batch in flight.
    let held = Arc::new(Held {
        pool: pool.clone(),
        idle: Mutex::new(Vec::new()),
    });
    let warm = futures_util::future::join_all((0..in_flight).map(|_| pool.acquire())).await;
    for conn in warm.into_iter().flatten() {
        held.give_back(conn, Instant::now());
    }
    // Kept connections go back to the pool once unused for `HELD_IDLE` (the rest of the
    // pool may need them), and at once when the pool closes (`PgPool::close` waits for
    // every connection). When the writer and its last batch end, `Held` drops with them.
    let keeper = Arc::downgrade(&held);
    let closing = pool.close_event();
    tokio::spawn(async move {
        let mut closing = std::pin::pin!(closing);
        loop {
            let closed = tokio::select! {
                _ = &mut closing => true,
                _ = tokio::time::sleep(HELD_IDLE) => false,
            };
            let Some(held) = keeper.upgrade() else { return };
            held.release(closed);
            if closed {
                return;
            }
        }
    });
    run_batches(rx, in_flight, MAX_BATCH, move |batch| {
        let (held, after) = (held.clone(), after.clone());
        async move { write(&held, batch, after).await }
    })
    .await;
}

/// Prepares the batch statements on a new connection (a [`crate::Warm`]). The writer
/// takes whichever pooled connection is free, and each one's first batch used to parse the
/// statement there (3.7 ms) and plan it. After a start, the first burst waited for that
/// (docs/BENCHMARKS.md). Every parameter carries a cast or takes its column's type (`$9`,
/// the status, is `text` like `jobs.status`), so the statements prepared here are the ones a
/// batch binds.
pub fn warm_inserts(conn: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Executor;
        for sql in [&*PLAIN_INSERT, &*CAPPED_INSERT, &*IDEMPOTENT_INSERT] {
            let sql = sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql.as_str()));
            conn.prepare(sql).await?;
        }
        Ok(())
    })
}

/// A kept connection unused for longer than this goes back to the pool, whose ping replaces
/// a connection Postgres has dropped (a restart, an idle timeout) before the next batch.
const HELD_IDLE: Duration = Duration::from_secs(1);

/// A connection is kept at most this long in a row, so the pool's `max_lifetime` (30 min)
/// still recycles it under unbroken load.
const HELD_AT_MOST: Duration = Duration::from_secs(600);

/// The connections batches are written on, kept by the writer between batches. Taking one
/// from the pool for every batch cost a round trip (sqlx pings an idle connection before
/// handing it out), and each pool connection's first batch prepared the statement and
/// looked its types up (3-5 ms): with one batch in flight, both were on every submit's path,
/// and the second made the first second after a start slow (docs/BENCHMARKS.md).
///
/// The price: a batch on a kept connection that Postgres dropped within [`HELD_IDLE`] of its
/// last batch fails (its submits are answered with the database error), where the pool's
/// ping would have replaced the connection first; any batch in flight when Postgres goes
/// away fails the same way.
struct Held {
    pool: PgPool,
    idle: Mutex<Vec<Kept>>,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    used: Instant,
    /// When the writer took it from the pool.
    since: Instant,
}

impl Held {
    /// A kept connection used within [`HELD_IDLE`], else one from the pool; with the time
    /// it left the pool. A stale one goes back to the pool as it is dropped, and the pool
    /// checks it before handing it out again.
    async fn take(&self) -> Result<(PoolConnection<Postgres>, Instant), sqlx::Error> {
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(k) if k.used.elapsed() < HELD_IDLE && k.since.elapsed() < HELD_AT_MOST => {
                Ok((k.conn, k.since))
            }
            _ => Ok((self.pool.acquire().await?, Instant::now())),
        }
    }

    /// Keeps `conn` for the next batch, unless the pool is closing. A connection whose batch
    /// failed is dropped instead (back to the pool, which checks it).
    fn give_back(&self, conn: PoolConnection<Postgres>, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !self.pool.is_closed() {
            idle.push(Kept {
                conn,
                used: Instant::now(),
                since,
            });
        }
    }

    /// Gives the pool back every kept connection unused for [`HELD_IDLE`], or all of them.
    fn release(&self, all: bool) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| !all && k.used.elapsed() < HELD_IDLE);
    }
}

/// Runs `write` on batches taken from `rx` until it closes: each batch is whatever queued up
/// while the earlier ones were in `write` (at most `max`), and at most `in_flight` are in
/// it at once. Nothing waits to fill a batch. The API's rate limiter batches its
/// checks with it too.
pub async fn run_batches<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    in_flight: usize,
    max: usize,
    write: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot before taking the batch: while every slot is busy, items keep
        // queueing and the next batch grows.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let written = write(batch);
        tokio::spawn(async move {
            written.await;
            drop(slot);
        });
    }
}

/// One `INSERT` of the whole batch, then (for submits with an `Idempotency-Key` it did not
/// write) one look-up of the jobs their keys name. Then, with the connection given back but
/// the batch's place kept, the after-commit stage and the answers ([`answer`]).
async fn write(held: &Held, batch: Vec<Pending>, after: Option<AfterCommit>) {
    let (mut conn, since) = match held.take().await {
        Ok(taken) => taken,
        Err(e) => return fail_all(batch, e),
    };
    let written = match insert_batch(&mut conn, &batch).await {
        Ok(rows) => rows,
        Err(e) => return fail_all(batch, e),
    };
    let mut rows: HashMap<Uuid, JobRow> = written.into_iter().map(|r| (r.id, r)).collect();
    let answers: Vec<(Pending, Option<JobRow>)> = batch
        .into_iter()
        .map(|p| {
            let row = rows.remove(&p.id);
            (p, row)
        })
        .collect();
    let unwritten: Vec<&Pending> = answers
        .iter()
        .filter(|(p, row)| row.is_none() && p.idempotency.is_some())
        .map(|(p, _)| p)
        .collect();
    // A failed look-up is the error of the submits it was for; the written ones go on.
    let earlier = if unwritten.is_empty() {
        Ok(HashMap::new())
    } else {
        jobs_of_keys(&mut conn, &unwritten).await.map_err(Arc::new)
    };
    if earlier.is_ok() {
        held.give_back(conn, since);
    }
    answer(answers, earlier, after).await;
}

/// The after-commit stage on a committed batch's rows, then every caller's [`Written`].
async fn answer(
    answers: Vec<(Pending, Option<JobRow>)>,
    earlier: Result<EarlierJobs, Arc<sqlx::Error>>,
    after: Option<AfterCommit>,
) {
    let committed: Vec<JobRow> = answers.iter().filter_map(|(_, r)| r.clone()).collect();
    let outcome = match after {
        // A panicking stage is an error of the batch, not callers left without an answer
        // (which would read as the database being gone).
        Some(after) => Some(
            match AssertUnwindSafe(async move { after(committed).await })
                .catch_unwind()
                .await
            {
                Ok(done) => done.map_err(Arc::new),
                Err(_) => Err(Arc::new(anyhow::anyhow!("the after-commit stage panicked"))),
            },
        ),
        None => None,
    };
    for (p, row) in answers {
        let answer = match (row, &p.idempotency, p.owner) {
            (Some(row), ..) => Ok(Written::Created(Committed {
                row,
                after: outcome.clone(),
            })),
            // Not written: its key named a job already there (a replay, answered before
            // the cap), or its key was new and the cap left it out.
            (None, Some((key, sha)), owner) => match &earlier {
                Err(e) => Err(e.clone()),
                Ok(earlier) => match earlier.get(&(owner.map(|(k, _)| k), key.clone())) {
                    // Also the second of two submits of one key in one batch.
                    Some((hash, row)) if hash.as_deref() == Some(sha.as_str()) => {
                        Ok(Written::Replayed(row.clone()))
                    }
                    Some(_) => Ok(Written::KeyReused),
                    None if owner.is_some() => Ok(Written::AtCap),
                    // The job its key named went (retention) between the two statements.
                    None => Err(Arc::new(sqlx::Error::RowNotFound)),
                },
            },
            (None, None, Some(_)) => Ok(Written::AtCap),
            (None, None, None) => Err(Arc::new(sqlx::Error::RowNotFound)),
        };
        let _ = p.reply.send(answer);
    }
}

fn fail_all(batch: Vec<Pending>, e: sqlx::Error) {
    let e = Arc::new(e);
    for p in batch {
        let _ = p.reply.send(Err(e.clone()));
    }
}

/// The jobs the `Idempotency-Key`s of `unwritten` name, with the request hash each was
/// created with, by (API key, Idempotency-Key). A statement of its own, after the batch's
/// commit, so it sees the jobs of a concurrent batch that won the key.
async fn jobs_of_keys(
    conn: &mut PgConnection,
    unwritten: &[&Pending],
) -> Result<EarlierJobs, sqlx::Error> {
    let owners: Vec<Option<Uuid>> = unwritten.iter().map(|p| p.owner.map(|(k, _)| k)).collect();
    let keys: Vec<&str> = unwritten
        .iter()
        .filter_map(|p| p.idempotency.as_ref().map(|(k, _)| k.as_str()))
        .collect();
    let found: Vec<KeyedJob> = sqlx::query_as(sqlx::AssertSqlSafe(JOBS_OF_KEYS.as_str()))
        .bind(owners)
        .bind(keys)
        .fetch_all(conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|f| ((f.owner, f.key), (f.request_sha256, f.row)))
        .collect())
}

/// By (API key, `Idempotency-Key`): the request hash a job was created with, and the job.
type EarlierJobs = HashMap<(Option<Uuid>, String), (Option<String>, JobRow)>;

/// [`jobs_of_keys`]'s statement: two branches, each an index scan of `(api_key_id,
/// idempotency_key)` (one join condition with an OR for the keyless case read the whole
/// table).
static JOBS_OF_KEYS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT w.owner, w.key, request_sha256, {JOB_COLUMNS} \
         FROM UNNEST($1::uuid[], $2::text[]) AS w(owner, key) \
         CROSS JOIN LATERAL ( \
           SELECT * FROM jobs WHERE api_key_id = w.owner AND idempotency_key = w.key \
           UNION ALL \
           SELECT * FROM jobs WHERE w.owner IS NULL AND api_key_id IS NULL \
             AND idempotency_key = w.key) j"
    )
});

/// A job an `Idempotency-Key` names, found by [`jobs_of_keys`].
#[derive(sqlx::FromRow)]
struct KeyedJob {
    owner: Option<Uuid>,
    key: String,
    request_sha256: Option<String>,
    #[sqlx(flatten)]
    row: JobRow,
}

/// The batch's rows as one statement: the rows travel as one array per column (`UNNEST`),
/// so every batch size is the same statement, prepared once per connection. Submits with
/// a key are admitted in submit order while the key's active jobs stay within its cap, and
/// submits with an `Idempotency-Key` only when their key is new ([`CAPPED_INSERT`],
/// [`IDEMPOTENT_INSERT`]).
async fn insert_batch(
    conn: &mut PgConnection,
    batch: &[Pending],
) -> Result<Vec<JobRow>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|p| p.id).collect();
    let urls: Vec<&str> = batch.iter().map(|p| p.url.as_str()).collect();
    let sources: Vec<&str> = batch.iter().map(|p| p.source.as_str()).collect();
    let requested: Vec<&str> = batch.iter().map(|p| p.requested.as_str()).collect();
    let formats: Vec<Option<&str>> = batch.iter().map(|p| p.format.as_deref()).collect();
    let heights: Vec<Option<i32>> = batch.iter().map(|p| p.max_height).collect();
    let cookies: Vec<Option<&[u8]>> = batch.iter().map(|p| p.cookies_sealed.as_deref()).collect();
    let callbacks: Vec<Option<&str>> = batch.iter().map(|p| p.callback_url.as_deref()).collect();
    let keyed = batch.iter().any(|p| p.owner.is_some());
    let idempotent = batch.iter().any(|p| p.idempotency.is_some());
    let sql = match (keyed, idempotent) {
        (false, false) => &*PLAIN_INSERT,
        (_, false) => &*CAPPED_INSERT,
        (_, true) => &*IDEMPOTENT_INSERT,
    };
    let query = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(ids)
        .bind(urls)
        .bind(sources)
        .bind(requested)
        .bind(formats)
        .bind(heights)
        .bind(cookies)
        .bind(callbacks)
        .bind(JobStatus::Queued);
    if !keyed && !idempotent {
        return query.fetch_all(conn).await;
    }
    let keys: Vec<Option<Uuid>> = batch.iter().map(|p| p.owner.map(|(k, _)| k)).collect();
    let caps: Vec<Option<i64>> = batch.iter().map(|p| p.owner.map(|(_, c)| c)).collect();
    let query = query.bind(keys).bind(caps);
    if !idempotent {
        return query.fetch_all(conn).await;
    }
    let idem: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.idempotency.as_ref().map(|(k, _)| k.as_str()))
        .collect();
    let hashes: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.idempotency.as_ref().map(|(_, h)| h.as_str()))
        .collect();
    query.bind(idem).bind(hashes).fetch_all(conn).await
}

/// The batch `INSERT` when no submit in it has a key: nothing to count. The capped one
/// cost Postgres about a third more CPU per keyless submit (measured).
static PLAIN_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO jobs (id, url, source, status, requested_source, format, max_height, \
         cookies_sealed, callback_url) \
         SELECT id, url, source, $9, requested_source, format, max_height, cookies_sealed, \
         callback_url \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], \
         $7::bytea[], $8::text[]) \
         AS b(id, url, source, requested_source, format, max_height, cookies_sealed, callback_url) \
         RETURNING {JOB_COLUMNS}"
    )
});

/// The batch `INSERT` with keyed submits. `k` locks the batch's keys in id order (as the
/// triggers that keep `active_jobs` do, so nothing deadlocks) and reads each key's count of
/// active jobs: a key another transaction holds is waited for, then read as that
/// transaction committed it. `counted` adds the jobs `inserted` wrote (all queued, so all
/// active) to their keys' counts in the same statement, before the locks go at commit: this
/// and [`IDEMPOTENT_INSERT`] (which does the same) are the only statements that insert jobs
/// with a key, so no insert trigger does it
/// (`migrations/20261130000012_submits_count_themselves.sql`).
static CAPPED_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH b AS ( \
           SELECT u.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::int4[], $7::bytea[], $8::text[], $10::uuid[], $11::int8[]) \
           WITH ORDINALITY AS u(id, url, source, requested_source, format, max_height, \
             cookies_sealed, callback_url, api_key_id, cap, ord) \
         ), k AS ( \
           SELECT id, active_jobs FROM api_keys \
           WHERE id IN (SELECT api_key_id FROM b WHERE api_key_id IS NOT NULL) \
           ORDER BY id FOR NO KEY UPDATE \
         ), ranked AS ( \
           SELECT b.*, row_number() OVER (PARTITION BY b.api_key_id ORDER BY b.ord) AS rn \
           FROM b \
         ), inserted AS ( \
           INSERT INTO jobs (id, url, source, status, api_key_id, requested_source, format, \
             max_height, cookies_sealed, callback_url) \
           SELECT r.id, r.url, r.source, $9, r.api_key_id, r.requested_source, r.format, \
             r.max_height, r.cookies_sealed, r.callback_url \
           FROM ranked r LEFT JOIN k ON k.id = r.api_key_id \
           WHERE r.api_key_id IS NULL OR k.active_jobs + r.rn <= r.cap \
           RETURNING {JOB_COLUMNS}, api_key_id \
         ), counted AS ( \
           UPDATE api_keys a SET active_jobs = a.active_jobs + n.n \
           FROM (SELECT api_key_id, count(*) AS n FROM inserted \
                 WHERE api_key_id IS NOT NULL GROUP BY api_key_id) n \
           WHERE a.id = n.api_key_id \
         ) \
         SELECT {JOB_COLUMNS} FROM inserted"
    )
});

/// The batch with `Idempotency-Key`s ($12, with each request's hash in $13), keyed or not:
/// [`CAPPED_INSERT`]'s statement in a function of the schema that locks the batch's keys
/// first, in a statement of its own, so the insert sees what a concurrent batch committed
/// while this one waited (`migrations/20261130000013_idempotent_submits_in_one_call.sql`):
/// one round trip, not four (`BEGIN`, the lock, the insert, `COMMIT`). A submit whose key
/// already named a job (a replay, or a reuse with another request), and every submit of a key
/// after its first in the batch, is left out before the cap is counted, so a replay never
/// takes a place. A key a concurrent keyless batch is writing is left out by `ON CONFLICT`
/// (the partial unique index on `(api_key_id, idempotency_key)`); rows go in sorted by that
/// key, so two batches never wait on each other's. [`jobs_of_keys`] then tells each left-out
/// submit which job its key named.
static IDEMPOTENT_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {JOB_COLUMNS} FROM submit_jobs_idempotent($1::uuid[], $2::text[], \
         $3::text[], $4::text[], $5::text[], $6::int4[], $7::bytea[], $8::text[], $9::text, \
         $10::uuid[], $11::int8[], $12::text[], $13::text[])"
    )
});
