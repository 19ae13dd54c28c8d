//! A job's states, the transitions between them, and the task payload carried by the queue.
//!
//! This is the one place that says which state changes are legal: the SQL of every
//! transition (crate `clipstash-db`) guards on [`Transition::from`] and writes
//! [`Transition::to`], so a row can only move along the arrows below.
//!
//! ```text
//!            claim              succeed
//!  queued ─────────► running ───────────► succeeded
//!    │  ▲ fail(enqueue)│  ▲ │ fail
//!    │  │            retry │ resume  └────────► failed
//!    │  │              ▼  │
//!    │  └─────────── retrying ──► cancelled ◄── cancel (queued, running)
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Lifecycle of a download job. Stored as lower-case text; a row holding any other value
/// fails to decode instead of being read as some default.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "lowercase"))]
pub enum JobStatus {
    /// Recorded and enqueued; no attempt has started.
    Queued,
    /// A worker holds the job and an attempt is under way.
    Running,
    /// The last attempt failed transiently; the same worker tries again after a backoff.
    Retrying,
    /// The media is stored (and counted in its provider's usage).
    Succeeded,
    /// Failed for good: a permanent error, or retries exhausted.
    Failed,
    /// Cancelled by the client: before it ran, between attempts, or while running (the
    /// worker then stops the download and discards the partial upload).
    Cancelled,
}

impl JobStatus {
    /// The stable lower-case name (`queued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether no transition leads from this state to another one.
    pub fn is_terminal(self) -> bool {
        Transition::ALL
            .iter()
            .all(|t| !t.allowed_from(self) || t.to() == self)
    }
}

/// A legal change of a job's state. Each has a fixed set of states it may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray)]
pub enum Transition {
    /// A worker takes the job for its first attempt, or again after the worker that held it
    /// died (`running` → `running`, the lock it held died with it).
    Claim,
    /// The attempt failed transiently; another follows after a backoff.
    Retry,
    /// The backoff is over; the next attempt starts.
    Resume,
    /// The media is stored. Repeating it is a no-op (a job delivered twice counts once).
    Succeed,
    /// Failed for good. From `queued` when the job could not be enqueued.
    Fail,
    /// The client cancelled the job. A running one is stopped by its worker, which notices
    /// the row (or the cancel message) and drops the attempt.
    Cancel,
}

impl Transition {
    pub const ALL: &'static [Transition] = <Transition as strum::VariantArray>::VARIANTS;

    /// States the transition may start from.
    pub fn from(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Transition::Claim => &[Queued, Retrying, Running],
            Transition::Retry => &[Running],
            Transition::Resume => &[Retrying],
            Transition::Succeed => &[Running, Succeeded],
            Transition::Fail => &[Queued, Running, Retrying],
            Transition::Cancel => &[Queued, Retrying, Running],
        }
    }

    /// The state the transition ends in.
    pub fn to(self) -> JobStatus {
        match self {
            Transition::Claim | Transition::Resume => JobStatus::Running,
            Transition::Retry => JobStatus::Retrying,
            Transition::Succeed => JobStatus::Succeeded,
            Transition::Fail => JobStatus::Failed,
            Transition::Cancel => JobStatus::Cancelled,
        }
    }

    /// Whether a job in `status` may take this transition.
    pub fn allowed_from(self, status: JobStatus) -> bool {
        self.from().contains(&status)
    }

    /// The `from` states as text, for SQL guards (`array_position($n::text[], status) IS NOT
    /// NULL`: `clipstash_db::transitions` says why not `status = ANY($n)`).
    pub fn from_names(self) -> Vec<&'static str> {
        self.from().iter().map(|s| s.as_str()).collect()
    }
}

/// The task carried through Redis. Everything else about the job lives in Postgres, so the
/// payload stays small and a cancelled job is recognised by its row, not by the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadJob {
    pub job_id: Uuid,
    pub url: String,
    /// When the API enqueued it (for `task_queue_wait_seconds`).
    pub enqueued_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in JobStatus::VARIANTS {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        assert!("paused".parse::<JobStatus>().is_err());
        assert!("Queued".parse::<JobStatus>().is_err());
    }

    #[test]
    fn terminal_states_are_exactly_the_ends_of_the_diagram() {
        let terminal: Vec<_> = JobStatus::VARIANTS
            .iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                &JobStatus::Succeeded,
                &JobStatus::Failed,
                &JobStatus::Cancelled
            ]
        );
    }

    #[test]
    fn the_transition_table() {
        use JobStatus::*;
        let legal = |from, to| {
            Transition::ALL
                .iter()
                .any(|t| t.allowed_from(from) && t.to() == to)
        };
        assert!(legal(Queued, Running));
        assert!(
            legal(Running, Running),
            "a dead worker's job is claimed again"
        );
        assert!(legal(Running, Retrying));
        assert!(legal(Retrying, Running));
        assert!(legal(Queued, Failed), "a job that could not be enqueued");
        assert!(legal(Retrying, Cancelled));
        assert!(legal(Running, Cancelled), "a running job is cancelled");
        assert!(!legal(Failed, Running));
        assert!(!legal(Cancelled, Running));
        assert!(!legal(Succeeded, Failed));
        assert!(!legal(Queued, Succeeded));
    }
}
