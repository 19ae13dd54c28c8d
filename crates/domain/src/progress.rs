//! A running job's live progress and the events workers publish about jobs: what the worker
//! measures, what the API shows (`progress` in the job view, the SSE stream) and what travels
//! between them over Redis pub/sub. Kept out of Postgres: a row changes only with the state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::JobStatus;

/// How far a running attempt has got. Measured on the media stream, so it is the same for
/// every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes received so far in this attempt.
    pub bytes_done: u64,
    /// The length the source announced, if it did.
    pub bytes_total: Option<u64>,
    /// Bytes per second over the last few seconds.
    pub speed_bps: u64,
    /// Seconds left at that speed; `None` without a total or while nothing moves.
    pub eta_s: Option<u64>,
}

/// A message on the job events channel: a job's state changed, or its progress moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobEvent {
    State { job_id: Uuid, status: JobStatus },
    Progress { job_id: Uuid, progress: Progress },
}

impl JobEvent {
    pub fn job_id(&self) -> Uuid {
        match self {
            JobEvent::State { job_id, .. } | JobEvent::Progress { job_id, .. } => *job_id,
        }
    }
}

/// Turns byte counts sampled over time into [`Progress`]: the speed is the bytes moved over
/// the last [`SpeedWindow::WINDOW`] (so a stall shows as a falling speed, not a frozen one).
#[derive(Debug)]
pub struct SpeedWindow {
    samples: VecDeque<(Instant, u64)>,
    total: Option<u64>,
}

impl SpeedWindow {
    /// How far back the speed looks.
    pub const WINDOW: Duration = Duration::from_secs(3);

    pub fn new(total: Option<u64>, start: Instant) -> Self {
        Self {
            samples: VecDeque::from([(start, 0)]),
            total,
        }
    }

    /// Records that `bytes_done` bytes had arrived at `now` and returns the progress then.
    pub fn sample(&mut self, now: Instant, bytes_done: u64) -> Progress {
        self.samples.push_back((now, bytes_done));
        // Keep one sample at or before the window's start, so the window is always covered.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let speed_bps = if secs > 0.0 {
            (bytes_done.saturating_sub(b0) as f64 / secs) as u64
        } else {
            0
        };
        let eta_s = match self.total {
            Some(total) if speed_bps > 0 => {
                Some(total.saturating_sub(bytes_done).div_ceil(speed_bps))
            }
            _ => None,
        };
        Progress {
            bytes_done,
            bytes_total: self.total,
            speed_bps,
            eta_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_is_taken_over_the_recent_window_and_eta_from_it() {
        let t = Instant::now();
        let mut w = SpeedWindow::new(Some(10_000), t);
        let p = w.sample(t + Duration::from_secs(1), 1_000);
        assert_eq!(
            (p.bytes_done, p.speed_bps, p.eta_s),
            (1_000, 1_000, Some(9))
        );
        let p = w.sample(t + Duration::from_secs(2), 3_000);
        assert_eq!((p.speed_bps, p.eta_s), (1_500, Some(5)));
        // A stall: the old fast seconds leave the window and the speed falls to nothing.
        for s in 3..=8 {
            w.sample(t + Duration::from_secs(s), 3_000);
        }
        let p = w.sample(t + Duration::from_secs(9), 3_000);
        assert_eq!((p.speed_bps, p.eta_s), (0, None));
        assert_eq!(p.bytes_total, Some(10_000));
    }

    #[test]
    fn without_a_total_there_is_no_eta() {
        let t = Instant::now();
        let mut w = SpeedWindow::new(None, t);
        let p = w.sample(t + Duration::from_millis(500), 500);
        assert_eq!((p.speed_bps, p.eta_s, p.bytes_total), (1_000, None, None));
        // The first sample at the start itself divides by nothing.
        let mut w = SpeedWindow::new(None, t);
        assert_eq!(w.sample(t, 0).speed_bps, 0);
    }

    #[test]
    fn events_carry_their_type_on_the_wire() {
        let id = Uuid::nil();
        let e = JobEvent::State {
            job_id: id,
            status: JobStatus::Cancelled,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "state");
        assert_eq!(json["status"], "cancelled");
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), e);
    }
}
