//! The pooled connection that holds a job's advisory lock for the whole attempt loop.

use clipstash_db::transitions;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use uuid::Uuid;

/// A pooled connection holding a job's advisory lock. Released explicitly when the job is
/// done; if dropped instead (cancelled, panic), the connection is closed rather than
/// returned to the pool, which releases the lock in Postgres.
pub struct LockedConn {
    conn: Option<PoolConnection<Postgres>>,
    id: Uuid,
}

impl LockedConn {
    /// Wraps the connection [`transitions::claim`] is about to run on, before it runs: a
    /// claim cut short (the job's future dropped while the statement is in flight, as apalis
    /// does when it restarts its worker after a Redis error) may already hold the lock, and
    /// a pooled connection must never keep one.
    pub fn new(conn: PoolConnection<Postgres>, id: Uuid) -> Self {
        Self {
            conn: Some(conn),
            id,
        }
    }

    pub fn get(&mut self) -> &mut sqlx::PgConnection {
        self.conn.as_mut().expect("connection held until release")
    }

    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.take().expect("connection held until release");
        transitions::release(&mut conn, self.id).await
    }

    /// Returns the connection to the pool as it is: only after a claim that completed and
    /// reported holding no lock (busy elsewhere, or not runnable and already released), or
    /// after a completion, whose statement released the lock.
    pub fn unlocked(mut self) {
        drop(self.conn.take());
    }
}

impl Drop for LockedConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
