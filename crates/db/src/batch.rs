//! Group commit for submits: concurrent inserts of new jobs are written as one multi-row
//! `INSERT`, so a burst of submits costs Postgres one statement and one commit instead of
//! one per job (docs/BENCHMARKS.md has the figures).
//!
//! Nothing waits to fill a batch: a batch is whatever queued up while the previous ones
//! were being written, so a lone submit goes straight through and a burst shares its
//! commits. Each caller still gets its own row back only after the commit, so "the row
//! exists before the 202" holds exactly as with a single `INSERT`.

use std::collections::HashMap;
use std::sync::Arc;

use clipstash_domain::{JobStatus, RequestedSource, VideoSource};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::jobs::{JOB_COLUMNS, JobRow, NewJob};

/// Most rows in one `INSERT` (10 parameters each, well under Postgres' 65,535).
pub const MAX_BATCH: usize = 256;

/// What a caller gets back: its row, or the error its batch met (shared by the batch).
pub type Inserted = Result<JobRow, Arc<sqlx::Error>>;

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
    reply: oneshot::Sender<Inserted>,
}

impl JobInserter {
    /// Starts the batching task on `pool`, writing at most `in_flight` batches at once (each
    /// takes one pooled connection). It ends when the last clone is dropped.
    pub fn spawn(pool: PgPool, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * in_flight.max(1));
        tokio::spawn(run(pool, rx, Arc::new(Semaphore::new(in_flight.max(1)))));
        Self { tx }
    }

    /// Inserts a new queued job (no API key) and returns its row once committed.
    pub async fn insert(&self, job: &NewJob<'_>) -> Inserted {
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
            reply,
        };
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        self.tx.send(pending).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Pending>, slots: Arc<Semaphore>) {
    while let Some(first) = rx.recv().await {
        // Wait for a free slot before taking the batch: while every slot is busy, submits
        // keep queueing and the next batch grows.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(slot);
        });
    }
}

/// One multi-row `INSERT`; every caller of the batch gets its row or the shared error.
async fn write(pool: &PgPool, batch: Vec<Pending>) {
    let mut query = QueryBuilder::<Postgres>::new(
        "INSERT INTO jobs (id, url, source, status, requested_source, format, max_height, \
         cookies_sealed, callback_url) ",
    );
    query.push_values(&batch, |mut row, p| {
        row.push_bind(p.id)
            .push_bind(&p.url)
            .push_bind(p.source)
            .push_bind(JobStatus::Queued)
            .push_bind(p.requested)
            .push_bind(&p.format)
            .push_bind(p.max_height)
            .push_bind(&p.cookies_sealed)
            .push_bind(&p.callback_url);
    });
    query.push(format_args!(" RETURNING {JOB_COLUMNS}"));
    match query.build_query_as::<JobRow>().fetch_all(pool).await {
        Ok(rows) => {
            let mut rows: HashMap<Uuid, JobRow> = rows.into_iter().map(|r| (r.id, r)).collect();
            for p in batch {
                let row = rows
                    .remove(&p.id)
                    .ok_or_else(|| Arc::new(sqlx::Error::RowNotFound));
                let _ = p.reply.send(row);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}
