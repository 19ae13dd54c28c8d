//! Cancelling running jobs. `DELETE /v1/downloads/{id}` marks the row `cancelled` in Postgres
//! and publishes the id on the queue's cancel channel. Each worker process holds one
//! [`CancellationToken`] per job it runs and learns of cancels two ways: the one subscription
//! of the process ([`Cancels::listen`], within milliseconds) and a check of its jobs' rows
//! every [`POLL_EVERY`] ([`Cancels::poll`]), so a missed message (Redis blinked) delays a
//! cancel by seconds, never loses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clipstash_db::jobs;
use clipstash_queue::events::{self, EventNames};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a worker checks Postgres for cancels of the jobs it runs.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The jobs this process runs, by id, with the token that stops each.
#[derive(Default)]
pub struct Cancels {
    running: Mutex<HashMap<Uuid, CancellationToken>>,
}

/// A job's entry in [`Cancels`]; removed when dropped.
pub struct Registration<'a> {
    cancels: &'a Cancels,
    id: Uuid,
    token: CancellationToken,
}

impl Registration<'_> {
    /// Fires when the job is cancelled.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.id);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CancellationToken>> {
        self.running.lock().expect("not poisoned")
    }

    /// Registers a job this process just claimed.
    pub fn register(&self, id: Uuid) -> Registration<'_> {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        Registration {
            cancels: self,
            id,
            token,
        }
    }

    /// Fires the job's token if this process runs it.
    pub fn cancel(&self, id: Uuid) {
        if let Some(token) = self.lock().get(&id) {
            tracing::info!(%id, "cancel requested; stopping the job");
            token.cancel();
        }
    }

    fn running_ids(&self) -> Vec<Uuid> {
        self.lock()
            .iter()
            .filter(|(_, t)| !t.is_cancelled())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Acts on the cancel channel until `shutdown`.
    pub async fn listen(
        self: Arc<Self>,
        redis_url: SecretString,
        names: EventNames,
        shutdown: CancellationToken,
    ) {
        let on_message = move |payload: &[u8]| {
            if let Some(id) = std::str::from_utf8(payload)
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                self.cancel(id);
            }
        };
        events::subscribe(redis_url, names.cancel_channel(), on_message, shutdown).await
    }

    /// Checks the rows of this process's jobs every [`POLL_EVERY`] until `shutdown`.
    pub async fn poll(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ids = self.running_ids();
            if ids.is_empty() {
                continue;
            }
            match jobs::cancelled_among(&pool, &ids).await {
                Ok(cancelled) => cancelled.into_iter().for_each(|id| self.cancel(id)),
                Err(e) => tracing::warn!(error = %e, "checking running jobs for cancels"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_found_until_dropped() {
        let cancels = Cancels::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ra = cancels.register(a);
        let rb = cancels.register(b);
        cancels.cancel(a);
        assert!(ra.token().is_cancelled());
        assert!(!rb.token().is_cancelled());
        assert_eq!(
            cancels.running_ids(),
            [b],
            "a cancelled job is not checked again"
        );
        drop(rb);
        assert!(cancels.running_ids().is_empty());
        // A cancel for a job this process does not run is ignored.
        cancels.cancel(b);
    }
}
