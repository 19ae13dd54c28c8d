//! Live job events in the API: the latest progress of a running job for its view, and the
//! relay that feeds event streams. Each API process keeps one subscription to the queue's
//! events channel ([`Live::relay`]) and hands every event to the streams of this process that
//! follow its job ([`Hub`]), so streams work on any replica whichever worker runs the job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clipstash_domain::{JobEvent, Progress};
use clipstash_queue::RedisArgs;
use clipstash_queue::events::{self, EventNames, Publisher};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events one stream may have waiting; more are dropped (a later progress supersedes an
/// earlier one, and streams re-read the state from Postgres anyway).
const STREAM_BUFFER: usize = 32;

/// What the API needs of live events.
pub struct Live {
    conn: ConnectionManager,
    names: EventNames,
    /// Cancel requests and state changes the API makes.
    pub publisher: Publisher,
    pub hub: Arc<Hub>,
    /// Fires when the API stops: open streams end so draining does not wait for them.
    pub closing: CancellationToken,
}

impl Live {
    pub fn new(conn: ConnectionManager, queue: &str) -> Self {
        let names = EventNames::new(queue);
        Self {
            publisher: Publisher::spawn(conn.clone(), names.clone()),
            conn,
            names,
            hub: Arc::new(Hub::default()),
            closing: CancellationToken::new(),
        }
    }

    /// The latest progress of a running job, if one is known and Redis answers quickly.
    pub async fn progress(&self, id: Uuid) -> Option<Progress> {
        events::read_progress(&self.conn, &self.names, id).await
    }

    /// Relays the events channel into [`Hub`] until `shutdown`.
    pub fn relay(
        &self,
        redis: &RedisArgs,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hub = self.hub.clone();
        events::subscribe(
            redis.redis_url.clone(),
            self.names.events_channel(),
            move |payload| hub.dispatch(payload),
            shutdown,
        )
    }
}

type Senders = Vec<(u64, mpsc::Sender<JobEvent>)>;

/// The streams of this process, by the job they follow.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    listeners: Mutex<HashMap<Uuid, Senders>>,
}

/// A stream's subscription to one job's events; removed when dropped.
pub struct Listener {
    hub: Arc<Hub>,
    job: Uuid,
    n: u64,
    pub rx: mpsc::Receiver<JobEvent>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Senders>> {
        self.listeners.lock().expect("not poisoned")
    }

    /// Starts receiving `job`'s events.
    pub fn listen(self: &Arc<Self>, job: Uuid) -> Listener {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(job).or_default().push((n, tx));
        Listener {
            hub: self.clone(),
            job,
            n,
            rx,
        }
    }

    /// Hands one message of the events channel to the streams following its job.
    pub fn dispatch(&self, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<JobEvent>(payload) else {
            tracing::debug!("ignoring a malformed job event");
            return;
        };
        if let Some(senders) = self.lock().get(&event.job_id()) {
            for (_, tx) in senders {
                let _ = tx.try_send(event.clone());
            }
        }
    }

    /// Streams open in this process (for tests and diagnostics).
    pub fn streams(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        if let Some(senders) = map.get_mut(&self.job) {
            senders.retain(|(n, _)| *n != self.n);
            if senders.is_empty() {
                map.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipstash_domain::JobStatus;

    #[tokio::test]
    async fn events_reach_only_the_streams_of_their_job_and_listeners_clean_up() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut la = hub.listen(a);
        let mut la2 = hub.listen(a);
        let mut lb = hub.listen(b);
        let event = JobEvent::State {
            job_id: a,
            status: JobStatus::Running,
        };
        hub.dispatch(&serde_json::to_vec(&event).unwrap());
        hub.dispatch(b"not json");
        assert_eq!(la.rx.recv().await.unwrap(), event);
        assert_eq!(la2.rx.recv().await.unwrap(), event);
        assert!(lb.rx.try_recv().is_err());
        drop(la);
        assert_eq!(hub.streams(), 2);
        drop((la2, lb));
        assert_eq!(hub.streams(), 0);
        assert!(hub.lock().is_empty());
    }
}
