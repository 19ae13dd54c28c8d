//! The timer that wakes the apalis worker to fetch jobs and heartbeat.
//!
//! apalis-core 1.0.0's `IntervalStrategy` (what `poll_with_interval` uses) loses its wake-up:
//! when its delay fires it makes a new one without polling it, so no timer is armed. The
//! worker's task then depends on something else waking it. After a fetch that outlived the
//! poll interval and the heartbeat's due time and came back empty (a Redis stall produces
//! exactly that), nothing else does: the worker never fetches or heartbeats again, logs
//! nothing and does not stop, while its process stays healthy. The chaos suite's `redis-pause`
//! scenario caught it (docs/RELIABILITY.md). [`Every`] arms its next wake-up before it returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::time::{Instant, Sleep};

/// Wakes the worker every `interval`, always with a timer armed.
pub struct Every {
    interval: Duration,
    /// Made on first use, inside the runtime.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Every {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sleep: None,
        }
    }
}

impl Clone for Every {
    fn clone(&self) -> Self {
        Self::new(self.interval)
    }
}

impl PollStrategy for Every {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let interval = self.interval;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Arm the next wake-up now: the caller may go on to return `Pending` with nothing
        // else armed.
        sleep.as_mut().reset(Instant::now() + interval);
        let _pending = sleep.as_mut().poll(cx);
        Poll::Ready(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use apalis::prelude::IntervalStrategy;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `strategy` once its timer fired, as the worker does, then polls it no more and
    /// reports whether it still wakes the task afterwards.
    async fn wakes_again_after_ready(mut strategy: impl PollStrategy) -> bool {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let snapshot = PollSnapshot::default();
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the first timer fires");
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_ready());
        // Nothing polls the strategy from here on: only its own timer can wake the task.
        tokio::time::sleep(Duration::from_millis(200)).await;
        count.0.load(Ordering::SeqCst) > 1
    }

    #[tokio::test]
    async fn every_arms_its_next_wake_up_when_it_fires() {
        assert!(wakes_again_after_ready(Every::new(Duration::from_millis(20))).await);
    }

    /// The upstream bug this module works around. When this fails, apalis fixed it: drop
    /// `Every` for `poll_with_interval`.
    #[tokio::test]
    async fn apalis_interval_strategy_loses_its_wake_up() {
        assert!(!wakes_again_after_ready(IntervalStrategy::new(Duration::from_millis(20))).await);
    }
}
