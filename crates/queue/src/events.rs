//! Live job events in Redis, under the queue's prefix like every other key of a deployment
//! (and of a test): workers publish state changes and progress, the API relays them to
//! Server-Sent Events and publishes cancel requests that workers act on.
//!
//! - `{queue}:progress:{job id}`: the latest [`Progress`] of a running job as JSON, with a
//!   short TTL ([`PROGRESS_TTL`]), for `GET /v1/downloads/{id}`; deleted on a state change.
//! - `{queue}:events` (pub/sub): every [`JobEvent`] as JSON; each API process subscribes once
//!   and hands events to its open streams.
//! - `{queue}:cancel` (pub/sub): job ids whose cancel was requested; each worker process
//!   subscribes once.
//!
//! Nothing here is the source of truth: Postgres holds every state, and both sides re-check it
//! on a timer, so a lost message costs a little latency, never a wrong outcome. Publishing is
//! fire-and-forget through a bounded buffer: a slow or absent Redis drops events, never blocks
//! or fails a job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clipstash_domain::{JobEvent, JobStatus, Progress};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a progress entry outlives its last update (a worker refreshes it every few
/// seconds while the job runs; a dead worker's entry goes away by itself).
pub const PROGRESS_TTL: Duration = Duration::from_secs(30);
/// Messages waiting to be published per process; more are dropped.
const BUFFER: usize = 1024;
/// Longest wait for one pipeline of publishes before it is given up (its messages are dropped).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most messages sent in one pipeline.
const BATCH: usize = 128;
/// Longest wait for a progress read on the request path.
const READ_TIMEOUT: Duration = Duration::from_millis(300);
/// How often a subscription checks that its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Longest delay between attempts to subscribe again.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The Redis names of a queue's events.
#[derive(Debug, Clone)]
pub struct EventNames {
    prefix: String,
}

impl EventNames {
    /// `queue` is the queue name (`CLIPSTASH_QUEUE`), the prefix of all its keys.
    pub fn new(queue: &str) -> Self {
        Self {
            prefix: queue.to_string(),
        }
    }

    pub fn progress_key(&self, id: Uuid) -> String {
        format!("{}:progress:{id}", self.prefix)
    }

    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }
}

enum Outgoing {
    Event(JobEvent),
    Cancel(Uuid),
}

/// Publishes job events without ever waiting: messages go into a bounded buffer that one
/// task per process sends; when Redis is slow or gone they are dropped (and logged, at most
/// once a minute).
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Outgoing>,
}

impl Publisher {
    /// Starts the sending task on `conn`; it ends when the last clone is dropped.
    pub fn spawn(conn: ConnectionManager, names: EventNames) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(send_loop(conn, names, rx));
        Self { tx }
    }

    fn offer(&self, msg: Outgoing) {
        // Full (Redis slow or gone) or closed: the message is dropped, the caller goes on.
        let _ = self.tx.try_send(msg);
    }

    /// A running job's progress: stored for the job view and published.
    pub fn progress(&self, job_id: Uuid, progress: Progress) {
        self.offer(Outgoing::Event(JobEvent::Progress { job_id, progress }));
    }

    /// A state change the caller just committed to Postgres.
    pub fn state(&self, job_id: Uuid, status: JobStatus) {
        self.offer(Outgoing::Event(JobEvent::State { job_id, status }));
    }

    /// Asks the worker running `job_id` to stop it (its row is already `cancelled`).
    pub fn cancel(&self, job_id: Uuid) {
        self.offer(Outgoing::Cancel(job_id));
    }
}

async fn send_loop(
    mut conn: ConnectionManager,
    names: EventNames,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let events = names.events_channel();
    let cancel = names.cancel_channel();
    let mut last_warning: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    // Whatever queued up while the previous pipeline was in flight goes in the next one: one
    // round trip for many events under load, in the order they were offered.
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for msg in batch.drain(..) {
            add(&mut pipe, &names, &events, &cancel, &msg);
        }
        let sent = tokio::time::timeout(SEND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        let error = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            last_warning = Some(Instant::now());
            tracing::warn!(%error, "publishing job events to Redis failed; progress and events are dropped until it answers (jobs are not affected)");
        }
    }
}

/// Adds `msg`'s commands to `pipe`.
fn add(pipe: &mut redis::Pipeline, names: &EventNames, events: &str, cancel: &str, msg: &Outgoing) {
    match msg {
        Outgoing::Event(event) => {
            let json = serde_json::to_string(event).expect("events serialise");
            let key = names.progress_key(event.job_id());
            match event {
                JobEvent::Progress { progress, .. } => {
                    let stored = serde_json::to_string(progress).expect("progress serialises");
                    pipe.set_ex(&key, stored, PROGRESS_TTL.as_secs()).ignore();
                }
                // Another attempt, a retry or the end: the last progress no longer holds.
                JobEvent::State { .. } => {
                    pipe.del(&key).ignore();
                }
            }
            pipe.publish(events, &json).ignore();
        }
        Outgoing::Cancel(id) => {
            pipe.publish(cancel, id.to_string()).ignore();
        }
    }
}

/// The latest progress of a running job, or `None` (none yet, expired, or Redis did not
/// answer within a few hundred milliseconds: the view goes without it).
pub async fn read_progress(
    conn: &ConnectionManager,
    names: &EventNames,
    id: Uuid,
) -> Option<Progress> {
    let mut conn = conn.clone();
    let mut get = redis::cmd("GET");
    get.arg(names.progress_key(id));
    let json = tokio::time::timeout(READ_TIMEOUT, get.query_async::<Option<String>>(&mut conn))
        .await
        .ok()?
        .ok()??;
    serde_json::from_str(&json).ok()
}

/// Keeps a subscription to `channel` open until `shutdown`, handing each message's payload to
/// `on_message`; after a lost connection it subscribes again with a growing delay (up to
/// 5 s). `on_message` must not block: it runs on the subscription's task.
pub async fn subscribe(
    url: SecretString,
    channel: String,
    on_message: impl Fn(&[u8]) + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let on_message = Arc::new(on_message);
    let mut delay = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), open(&url, &channel)) => c,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                delay = Duration::from_millis(100);
                tracing::debug!(channel, "subscribed");
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.tick().await;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = stream.next() => match msg {
                            Some(m) => on_message(m.get_payload_bytes()),
                            None => break,
                        },
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(
                                Duration::from_secs(5),
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(channel, "lost the Redis subscription; subscribing again");
            }
            Ok(Err(e)) => tracing::warn!(channel, error = %e, "cannot subscribe to Redis"),
            Err(_) => tracing::warn!(channel, "subscribing to Redis timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

async fn open(url: &SecretString, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(url.expose_secret())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_queue_prefix() {
        let n = EventNames::new("cs-test:abc");
        let id = Uuid::nil();
        for name in [n.progress_key(id), n.events_channel(), n.cancel_channel()] {
            assert!(name.starts_with("cs-test:abc:"), "{name}");
        }
    }
}
