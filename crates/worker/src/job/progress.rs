//! Live progress and prompt cancel of an attempt, measured on the media stream itself, so
//! they work the same for every source: [`watch`] wraps the body a source opened before it
//! goes into the ingest pipeline.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clipstash_domain::progress::SpeedWindow;
use clipstash_domain::{ErrorCode, JobError, Media};
use clipstash_queue::events::Publisher;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

/// At most this many progress updates per second per job (4/s).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// An update is sent at least this often even when nothing moved, so the stored progress
/// (kept for `PROGRESS_TTL`) stays fresh and the speed falls during a stall.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The byte count of one attempt's stream, shared with the stream that updates it.
pub struct Watch {
    bytes: Arc<AtomicU64>,
    window: Mutex<SpeedWindow>,
}

/// Wraps `media`'s body: every chunk is counted in the returned [`Watch`], and once `cancel`
/// fires the stream ends with an error at its next poll (even while it waits for bytes), so
/// the ingest pipeline drops the source's body at once and aborts its upload.
pub fn watch(media: Media, cancel: CancellationToken) -> (Media, Watch) {
    let bytes = Arc::new(AtomicU64::new(0));
    let watch = Watch {
        bytes: bytes.clone(),
        window: Mutex::new(SpeedWindow::new(media.expected_len, Instant::now())),
    };
    let body = Watched {
        inner: Some(media.body),
        bytes,
        cancelled: Box::pin(cancel.cancelled_owned()),
    };
    (
        Media {
            body: body.boxed(),
            ..media
        },
        watch,
    )
}

/// The error a cancelled attempt ends with. The attempt loop recognises a cancel by its
/// token, not by this code: it is never recorded on the job or in metrics.
pub fn cancelled() -> JobError {
    JobError::new(ErrorCode::InternalError, "cancelled")
}

struct Watched {
    /// `None` once the stream has ended (the source's body dropped).
    inner: Option<BoxStream<'static, Result<Bytes, JobError>>>,
    bytes: Arc<AtomicU64>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Stream for Watched {
    type Item = Result<Bytes, JobError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.cancelled.as_mut().poll(cx).is_ready() {
            // Drop the source's body now: its connection (or process) goes with it.
            this.inner = None;
            return Poll::Ready(Some(Err(cancelled())));
        }
        let next = inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Poll::Ready(None) => this.inner = None,
            _ => {}
        }
        next
    }
}

impl Watch {
    fn publish(&self, events: &Publisher, id: Uuid) -> u64 {
        let done = self.bytes.load(Ordering::Relaxed);
        let progress = self
            .window
            .lock()
            .expect("not poisoned")
            .sample(Instant::now(), done);
        events.progress(id, progress);
        done
    }

    /// Publishes the progress every [`PUBLISH_EVERY`] while bytes arrive, and every
    /// [`REFRESH_EVERY`] while they do not; runs until dropped.
    pub async fn report(&self, events: &Publisher, id: Uuid) -> Infallible {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent: Option<(u64, Instant)> = None;
        loop {
            tick.tick().await;
            let done = self.bytes.load(Ordering::Relaxed);
            let due = match sent {
                None => true,
                Some((bytes, at)) => bytes != done || at.elapsed() >= REFRESH_EVERY,
            };
            if due {
                sent = Some((self.publish(events, id), Instant::now()));
            }
        }
    }

    /// The last update of an attempt, whatever the throttle says.
    pub fn finish(&self, events: &Publisher, id: Uuid) {
        self.publish(events, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn media(chunks: Vec<Result<Bytes, JobError>>) -> Media {
        Media {
            content_type: "video/mp4".into(),
            expected_len: Some(10),
            body: stream::iter(chunks).chain(stream::pending()).boxed(),
        }
    }

    #[tokio::test]
    async fn counts_bytes_and_ends_with_an_error_once_cancelled() {
        let cancel = CancellationToken::new();
        let (m, watch) = watch(
            media(vec![
                Ok(Bytes::from_static(b"abc")),
                Ok(Bytes::from_static(b"de")),
            ]),
            cancel.clone(),
        );
        let mut body = m.body;
        assert_eq!(body.next().await.unwrap().unwrap(), "abc");
        assert_eq!(body.next().await.unwrap().unwrap(), "de");
        assert_eq!(watch.bytes.load(Ordering::Relaxed), 5);
        // The source has nothing more for now: the stream waits until the cancel wakes it.
        let waiting = tokio::spawn(async move {
            let e = body.next().await.unwrap().unwrap_err();
            (e, body.next().await.is_none())
        });
        tokio::task::yield_now().await;
        cancel.cancel();
        let (e, ended) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the cancel ends the wait")
            .unwrap();
        assert_eq!(e, cancelled());
        assert!(ended, "nothing follows the cancel");
    }
}
