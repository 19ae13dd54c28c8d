//! The worker's lock session: one Postgres connection that holds the advisory lock of every
//! job this process runs, and claims, completes and releases them in batches.
//!
//! A job runs only while a live session holds its lock, so a duplicate delivery cannot run
//! it twice at once, and a killed worker's locks vanish with its connection. Holding every
//! lock on one session lets the locks travel with the statements that need them: whatever
//! claims (or completions, or releases) queued up while the previous statement ran become
//! the next statement, one round trip and one commit for many jobs ([`transitions::claim_many`],
//! [`transitions::complete_many`]). Nothing waits to fill a batch: a lone job goes straight
//! through.
//!
//! Session locks are re-entrant, so the session itself refuses a second claim of a job it
//! already holds (a duplicate delivery to the same worker is `Busy`, as it would be from
//! another worker). If a statement fails, the session closes its connection, which releases
//! every lock it held, and starts a new generation on a new connection: jobs that held a
//! lock of the old generation cannot complete ([`Lost`]) and are delivered again.

use std::collections::HashSet;

use clipstash_db::{Claim, Usage, transitions};
use clipstash_domain::StoredObject;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most operations taken into one round of statements.
const MAX_BATCH: usize = 256;

/// Why a session operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The session's connection failed after the claim, taking the job's lock with it.
    #[error("the job's lock was lost with the worker's lock session")]
    Lost,
    /// The session task is gone (the process is shutting down).
    #[error("the lock session has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, SessionError>>;
/// A claim's answer: what the claim found, and the lock when the job is ours.
type Claimed = (Claim, Option<JobLock>);

enum Op {
    Claim {
        id: Uuid,
        reply: Reply<Claimed>,
    },
    Complete {
        id: Uuid,
        generation: u64,
        object: StoredObject,
        reply: Reply<Option<Usage>>,
    },
    Release {
        id: Uuid,
        generation: u64,
    },
}

/// Handle to the session task; cheap to clone.
#[derive(Clone)]
pub struct LockSession {
    tx: mpsc::UnboundedSender<Op>,
}

impl LockSession {
    /// Starts the session task; its connection comes from `pool` (and leaves it: a pooled
    /// connection must never keep a lock) when the first operation arrives.
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // Weak: the session hands out the locks it claims, yet stops once every handle is gone.
        tokio::spawn(run(pool, tx.downgrade(), rx));
        Self { tx }
    }

    /// [`transitions::claim`] on the session. A claimed job comes with its [`JobLock`],
    /// made by the session before it answers: dropped at any point (before the claim runs,
    /// while it runs, or with the answer unread), the claim still runs and a lock it took is
    /// released.
    pub async fn claim(&self, id: Uuid) -> Result<Claimed, SessionError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::Claim { id, reply })
            .map_err(|_| SessionError::Stopped)?;
        answer.await.map_err(|_| SessionError::Stopped)?
    }
}

/// A claimed job's lock, held by the session until [`complete`](JobLock::complete) moves
/// the job (which releases it in the same statement) or this is dropped (which releases it:
/// at the end of the attempt loop, or as a cancelled or panicking job unwinds).
pub struct JobLock {
    id: Uuid,
    generation: u64,
    session: Option<LockSession>,
}

impl JobLock {
    /// [`transitions::complete`] on the session: `Some(usage)` when the job moved to
    /// `succeeded` (its lock is gone with it), `None` when it was in no state to (cancelled
    /// meanwhile; the lock stays held until this is dropped).
    pub async fn complete(&mut self, object: StoredObject) -> Result<Option<Usage>, SessionError> {
        let session = self.session.as_ref().ok_or(SessionError::Lost)?;
        let (reply, answer) = oneshot::channel();
        session
            .tx
            .send(Op::Complete {
                id: self.id,
                generation: self.generation,
                object,
                reply,
            })
            .map_err(|_| SessionError::Stopped)?;
        let usage = answer.await.map_err(|_| SessionError::Stopped)??;
        if usage.is_some() {
            self.session = None;
        }
        Ok(usage)
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Fails only when the session task is gone, and its connection with it.
            let _ = session.tx.send(Op::Release {
                id: self.id,
                generation: self.generation,
            });
        }
    }
}

/// The session's state: its connection, the jobs it holds, and its generation (bumped each
/// time the connection is dropped with every lock on it).
struct Session {
    pool: PgPool,
    /// For the locks it hands out: each releases itself through it when dropped.
    handle: mpsc::WeakUnboundedSender<Op>,
    conn: Option<PgConnection>,
    held: HashSet<Uuid>,
    generation: u64,
}

async fn run(
    pool: PgPool,
    handle: mpsc::WeakUnboundedSender<Op>,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let mut s = Session {
        pool,
        handle,
        conn: None,
        held: HashSet::new(),
        generation: 0,
    };
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        s.round(std::mem::take(&mut ops)).await;
    }
}

impl Session {
    /// One round: releases first (a new claim of a job whose last holder just finished must
    /// see it free), then claims, then completions; a statement each.
    async fn round(&mut self, ops: Vec<Op>) {
        let mut releases = Vec::new();
        let mut claims = Vec::new();
        let mut completes = Vec::new();
        for op in ops {
            match op {
                Op::Release { id, generation } => {
                    if generation == self.generation && self.held.remove(&id) {
                        releases.push(id);
                    }
                }
                Op::Claim { id, reply } => claims.push((id, reply)),
                Op::Complete {
                    id,
                    generation,
                    object,
                    reply,
                } => {
                    if generation == self.generation && self.held.contains(&id) {
                        completes.push((id, object, reply));
                    } else {
                        let _ = reply.send(Err(SessionError::Lost));
                    }
                }
            }
        }
        if !releases.is_empty()
            && let Err(e) = self.release(&releases).await
        {
            tracing::warn!(error = %e, "releasing job locks; the session starts over");
        }
        if !claims.is_empty() {
            self.claim(claims).await;
        }
        if !completes.is_empty() {
            self.complete(completes).await;
        }
    }

    async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?.detach());
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// Drops the connection, and every lock on it with it.
    fn start_over(&mut self) {
        self.conn = None;
        self.held.clear();
        self.generation += 1;
    }

    async fn release(&mut self, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        let result = match self.conn().await {
            Ok(conn) => transitions::release_many(conn, ids).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.start_over();
        }
        result
    }

    async fn claim(&mut self, claims: Vec<(Uuid, Reply<Claimed>)>) {
        // Held here already, or twice in this round: a duplicate delivery to this worker.
        let mut asked = Vec::with_capacity(claims.len());
        let mut replies = Vec::with_capacity(claims.len());
        for (id, reply) in claims {
            if self.held.contains(&id) || asked.contains(&id) {
                let _ = reply.send(Ok((Claim::Busy, None)));
            } else {
                asked.push(id);
                replies.push(reply);
            }
        }
        if asked.is_empty() {
            return;
        }
        let result = match self.conn().await {
            Ok(conn) => transitions::claim_many(conn, &asked).await,
            Err(e) => Err(e),
        };
        let claims = match result {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, jobs = asked.len(), "claiming jobs; the session starts over");
                self.start_over();
                for reply in replies {
                    let _ = reply.send(Err(SessionError::Database(clone_error(&e))));
                }
                return;
            }
        };
        for ((id, claim), reply) in asked.into_iter().zip(claims).zip(replies) {
            let lock = matches!(claim, Claim::Claimed { .. }).then(|| {
                self.held.insert(id);
                JobLock {
                    id,
                    generation: self.generation,
                    session: self.handle.upgrade().map(|tx| LockSession { tx }),
                }
            });
            // If its job is gone (the delivery dropped mid-claim), or goes before reading the
            // answer, the lock is dropped with the answer and releases itself next round.
            let _ = reply.send(Ok((claim, lock)));
        }
    }

    async fn complete(&mut self, completes: Vec<(Uuid, StoredObject, Reply<Option<Usage>>)>) {
        let done: Vec<(Uuid, &StoredObject)> =
            completes.iter().map(|(id, o, _)| (*id, o)).collect();
        let result = match self.conn().await {
            Ok(conn) => transitions::complete_many(conn, &done).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(completed) => {
                for ((id, object, reply), moved) in completes.into_iter().zip(completed.moved) {
                    let answer = if moved {
                        self.held.remove(&id);
                        // The statement returns the total of every provider it counted in.
                        completed
                            .usage
                            .iter()
                            .find(|u| u.provider == object.provider.as_str())
                            .cloned()
                            .map(Some)
                            .ok_or_else(|| {
                                SessionError::Database(sqlx::Error::Protocol(format!(
                                    "completion returned no usage for provider {}",
                                    object.provider.as_str()
                                )))
                            })
                    } else {
                        Ok(None)
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = completes.len(), "completing jobs; the session starts over");
                self.start_over();
                for (_, _, reply) in completes {
                    let _ = reply.send(Err(SessionError::Database(clone_error(&e))));
                }
            }
        }
    }
}

/// `sqlx::Error` is not `Clone`; every job of a failed statement gets its text.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clipstash_domain::VideoSource;
    use clipstash_testkit::{TestDb, wait_for};

    use super::*;

    async fn locked(db: &TestDb, id: Uuid) -> bool {
        let mut c = db.pool.acquire().await.unwrap();
        transitions::is_locked(&mut c, id).await.unwrap()
    }

    /// apalis drops a job's future whenever it restarts its worker: also after the session
    /// answered the claim but before the job read the answer. The lock must not outlive it
    /// (a job stuck `running` behind a lock nobody holds on purpose: the chaos suite's
    /// redis-restart found it).
    #[tokio::test]
    async fn a_claim_whose_answer_is_never_read_releases_its_lock() {
        let db = TestDb::new().await;
        let session = LockSession::spawn(db.pool.clone());
        let id = Uuid::now_v7();
        clipstash_db::jobs::insert_job(&db.pool, id, "https://a.example/v", VideoSource::Direct)
            .await
            .unwrap();
        let (reply, answer) = oneshot::channel();
        session.tx.send(Op::Claim { id, reply }).unwrap();
        // The session claims and answers; nobody reads the answer.
        let limit = Duration::from_secs(10);
        wait_for("the claim to take the lock", limit, || async {
            locked(&db, id).await.then_some(())
        })
        .await;
        drop(answer);
        wait_for("the unread claim's lock to be released", limit, || async {
            (!locked(&db, id).await).then_some(())
        })
        .await;
        // And the next delivery may claim it.
        assert!(matches!(
            session.claim(id).await.unwrap().0,
            Claim::Claimed { attempts: 2, .. }
        ));
    }
}
