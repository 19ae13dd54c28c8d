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
    /// Wraps a connection on which [`transitions::claim`] just took `id`'s lock.
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
}

impl Drop for LockedConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
