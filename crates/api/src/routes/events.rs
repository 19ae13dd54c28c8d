//! `GET /v1/downloads/{id}/events`: a job's state changes and progress as Server-Sent Events.
//!
//! The stream starts with the job as Postgres has it (`event: state`), then relays what the
//! worker publishes (`event: progress`, and `event: state` on every change of status, read
//! back from Postgres so it is the whole job view), and ends after a terminal state. The
//! state is also re-read every [`RECHECK`], so a missed message delays an update, never
//! loses the end. A comment line every [`KEEP_ALIVE`] keeps proxies from closing an idle
//! stream.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use clipstash_db::{Owner, jobs};
use clipstash_domain::{ErrorCode, JobEvent, JobStatus};
use serde::Serialize;
use tokio::time::{Instant, Interval, interval_at};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::auth::limit::{RATELIMIT, RATELIMIT_POLICY};
use crate::auth::streams::StreamSlot;
use crate::error::{ApiError, ErrorBody};
use crate::events::Listener;
use crate::routes::downloads::{JobView, ProgressView, not_found, parse_id};

/// How often an open stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream re-reads the job's state from Postgres.
pub const RECHECK: Duration = Duration::from_secs(3);
/// Suggested wait before opening another stream when a key is at its cap.
const STREAMS_RETRY_AFTER_SECS: u32 = 5;

/// `GET /v1/downloads/{id}/events`: follow one job of the caller's key.
///
/// `event: state` carries the job view (the first one at once, then one per change of
/// status); `event: progress` carries `{bytes_done, bytes_total, speed_bps, eta_s}` a few
/// times a second while the job runs; lines starting with `:` are keep-alives. The stream
/// ends after a state of `succeeded`, `failed` or `cancelled`.
/// One Server-Sent Event of a job's stream, as its fields arrive on the wire.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the stream is written as text
pub struct SseEvent {
    /// `state` (`data` is a `JobView`) or `progress` (`data` is a `ProgressView`).
    #[schema(example = "progress")]
    event: String,
    /// The JSON document of the event, on one line.
    data: String,
}

#[utoipa::path(
    get,
    path = "/v1/downloads/{id}/events",
    tag = "downloads",
    params(("id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "Server-Sent Events until the job ends: `event: state` with a `JobView`, `event: progress` with a `ProgressView`, `:` keep-alive comments.",
            content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "`invalid_id`: not a UUID.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this key.", body = ErrorBody),
    ),
)]
pub async fn job_events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let owner = caller.owner();
    // Listening starts before the first read, so no event falls between the two.
    let listener = state.live.hub.listen(id);
    let job = jobs::get_job_of(&state.pool, id, owner)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| not_found(id))?;
    let slot = match &caller {
        Caller::Key(key) => {
            let cap = state.access.max_streams_per_key;
            Some(
                state
                    .access
                    .streams
                    .acquire(key.id, cap)
                    .await
                    .map_err(|_| too_many_streams(cap))?,
            )
        }
        Caller::Anonymous => None,
    };
    let first = super::downloads::with_progress(job, &state).await;
    let start = Instant::now();
    let mut follow = Follow {
        state,
        owner,
        id,
        listener,
        slot,
        status: first.status,
        pending: VecDeque::new(),
        done: false,
        recheck: interval_at(start + RECHECK, RECHECK),
        keep_alive: interval_at(start + KEEP_ALIVE, KEEP_ALIVE),
    };
    follow.send_state(&first);
    let body = futures_util::stream::unfold(follow, |mut f| async move {
        f.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), f))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, "no-cache"))
        // Tells nginx not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// The key already has `cap` streams open.
fn too_many_streams(cap: u32) -> ApiError {
    let value = |s: String| HeaderValue::from_str(&s).expect("ascii");
    ApiError::new(
        ErrorCode::TooManyStreams,
        format!("this key already has {cap} event streams open; close one first"),
    )
    .with_header(RETRY_AFTER, HeaderValue::from(STREAMS_RETRY_AFTER_SECS))
    .with_header(
        RATELIMIT_POLICY.clone(),
        value(format!("\"streams\";q={cap}")),
    )
    .with_header(
        RATELIMIT.clone(),
        value(format!("\"streams\";r=0;t={STREAMS_RETRY_AFTER_SECS}")),
    )
}

/// One open stream: its subscription, its place under the key's cap, what it last sent.
struct Follow {
    state: web::Data<AppState>,
    owner: Owner,
    id: Uuid,
    listener: Listener,
    slot: Option<StreamSlot>,
    status: JobStatus,
    pending: VecDeque<Bytes>,
    done: bool,
    recheck: Interval,
    keep_alive: Interval,
}

fn event(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).expect("views serialise");
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

impl Follow {
    fn send_state(&mut self, view: &JobView) {
        self.status = view.status;
        self.pending.push_back(event("state", view));
        if view.status.is_terminal() {
            self.done = true;
        }
    }

    /// Sends the job's state if it changed since the last one sent.
    async fn reread(&mut self) {
        match jobs::get_job_of(&self.state.pool, self.id, self.owner).await {
            Ok(Some(job)) if job.status != self.status => self.send_state(&JobView::from(job)),
            Ok(Some(_)) => {}
            // Gone (row retention): nothing more will happen to it.
            Ok(None) => self.done = true,
            Err(e) => tracing::warn!(id = %self.id, error = %e, "re-reading a followed job"),
        }
    }

    /// The next chunk of the stream, or `None` once it is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                _ = self.state.live.closing.cancelled() => self.done = true,
                e = self.listener.rx.recv() => match e {
                    Some(JobEvent::Progress { progress, .. }) => {
                        self.pending.push_back(event("progress", &ProgressView::from(progress)));
                    }
                    Some(JobEvent::State { status, .. }) if status != self.status => {
                        self.reread().await;
                    }
                    Some(JobEvent::State { .. }) => {}
                    None => self.done = true,
                },
                _ = self.recheck.tick() => self.reread().await,
                _ = self.keep_alive.tick() => {
                    self.pending.push_back(Bytes::from_static(b": keep-alive\n\n"));
                    if let Some(slot) = &self.slot {
                        slot.renew().await;
                    }
                }
            }
        }
    }
}
