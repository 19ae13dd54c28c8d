//! The promise, checked against Postgres, the storage directory and the workers' metrics.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cluster::Cluster;
use crate::load::{Answer, Expect, Submission};

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub scenario: String,
    /// Submits sent.
    pub submitted: usize,
    /// Answered 202 (or a 200 replay): the promise applies.
    pub accepted: usize,
    /// Refused with an error code (e.g. 503 queue_unavailable while Redis stalls).
    pub refused: usize,
    pub succeeded: usize,
    /// Failed as designed (404, poison).
    pub failed_expected: usize,
    /// Failed although they should have succeeded, with their error codes.
    pub failed_unexpected: Vec<(Uuid, String)>,
    /// Accepted but not terminal within the bound, or with no row.
    pub lost: Vec<Uuid>,
    /// Counted more than once: usage, files or `tasks_total` above the truth.
    pub double_counted: u64,
    /// Jobs still queued/running/retrying at the end (any row, accepted or not).
    pub stuck: u64,
    /// From the end of the fault until no job written before it was live (Postgres'
    /// view, polled every 200 ms).
    pub recovery: Duration,
    /// Longest time from accept to a terminal state among accepted jobs.
    pub longest_job: Duration,
    /// Problems found, in words; empty when the promise held.
    pub problems: Vec<String>,
    /// Observations that are not violations (what /readyz said, restarts).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Waits until every job in `ids` is terminal or `bound` passes; returns the ids that are not.
pub async fn wait_terminal(c: &mut Cluster, ids: &[Uuid], bound: Duration) -> Vec<Uuid> {
    let end = Instant::now() + bound;
    loop {
        let pending = not_terminal(c, ids).await;
        if pending.is_empty() || Instant::now() > end {
            return pending;
        }
        c.tick().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn not_terminal(c: &Cluster, ids: &[Uuid]) -> Vec<Uuid> {
    let rows: Result<Vec<(Uuid,)>, _> = sqlx::query_as(
        "SELECT id FROM jobs WHERE id = ANY($1) AND status IN ('succeeded', 'failed', 'cancelled')",
    )
    .bind(ids)
    .fetch_all(&c.pool)
    .await;
    match rows {
        Ok(rows) => {
            let done: std::collections::HashSet<Uuid> = rows.into_iter().map(|r| r.0).collect();
            ids.iter()
                .filter(|id| !done.contains(id))
                .copied()
                .collect()
        }
        // Postgres is restarting: nothing is known to be terminal yet.
        Err(_) => ids.to_vec(),
    }
}

/// Files under the storage directory: (complete objects, staging leftovers of object_store).
fn files_on_disk(dir: &Path) -> (u64, u64) {
    let mut objects = 0;
    let mut staging = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains('#'))
            {
                staging += 1;
            } else {
                objects += 1;
            }
        }
    }
    (objects, staging)
}

/// Checks the promise after a scenario. `fault_end` is when the last fault was over. The
/// `tasks_total` sums must never exceed the truth; they must match it unless a process
/// exited between two scrapes or attempts were interrupted.
pub async fn verdict(
    c: &mut Cluster,
    scenario: &str,
    subs: &[Submission],
    fault_end: Instant,
    bound: Duration,
) -> Verdict {
    let mut v = Verdict {
        scenario: scenario.to_string(),
        submitted: subs.len(),
        ..Default::default()
    };
    let mut expect: HashMap<Uuid, Expect> = HashMap::new();
    let mut before_fault_end = Vec::new();
    for s in subs {
        match &s.answer {
            Answer::Accepted(id) => {
                expect.insert(*id, s.expect);
                if s.sent < fault_end {
                    before_fault_end.push(*id);
                }
            }
            Answer::Refused(status, code) => {
                v.refused += 1;
                if !(*status == 503 && code == "queue_unavailable") {
                    v.problems
                        .push(format!("a submit was refused with {status} {code}"));
                }
            }
            Answer::NoAnswer(e) => {
                v.problems
                    .push(format!("a submit never got an answer: {e}"));
            }
        }
    }
    v.accepted = expect.len();
    let ids: Vec<Uuid> = expect.keys().copied().collect();

    // Every accepted job terminal within the bound; how long after the fault the last one
    // accepted before its end got there.
    let pending = wait_terminal(c, &before_fault_end, bound).await;
    v.recovery = fault_end.elapsed();
    let mut lost = pending;
    lost.extend(wait_terminal(c, &ids, bound).await);
    lost.sort();
    lost.dedup();
    v.lost = lost;

    // Let the gauges refresh and every worker be scraped once more.
    c.run_for(Duration::from_secs(1)).await;

    let rows: Vec<(Uuid, String, Option<String>, Option<f64>)> = sqlx::query_as(
        "SELECT id, status, error_code, EXTRACT(EPOCH FROM finished_at - created_at)::float8 FROM jobs",
    )
    .fetch_all(&c.pool)
    .await
    .expect("reading jobs");
    let mut seen = 0usize;
    let mut failed_by_worker = 0u64;
    let mut succeeded_rows = 0u64;
    for (id, status, code, took) in &rows {
        if matches!(status.as_str(), "queued" | "running" | "retrying") {
            v.stuck += 1;
        }
        if status == "succeeded" {
            succeeded_rows += 1;
        }
        if status == "failed" && code.as_deref() != Some("queue_unavailable") {
            failed_by_worker += 1;
        }
        let Some(want) = expect.get(id) else { continue };
        seen += 1;
        if let Some(t) = took {
            v.longest_job = v.longest_job.max(Duration::from_secs_f64(t.max(0.0)));
        }
        match (status.as_str(), want) {
            ("succeeded", Expect::Success) => v.succeeded += 1,
            ("failed", Expect::Failure(c)) if code.as_deref() == Some(*c) => v.failed_expected += 1,
            ("queued" | "running" | "retrying", _) => {}
            (s, _) => v
                .failed_unexpected
                .push((*id, format!("{s} {}", code.clone().unwrap_or_default()))),
        }
    }
    if seen != expect.len() {
        v.problems
            .push(format!("{} accepted jobs have no row", expect.len() - seen));
    }
    if v.stuck > 0 {
        v.problems
            .push(format!("{} jobs stuck queued/running/retrying", v.stuck));
    }
    if !v.lost.is_empty() {
        v.problems.push(format!(
            "{} accepted jobs not terminal within {bound:?}: {:?}",
            v.lost.len(),
            &v.lost[..v.lost.len().min(5)]
        ));
    }
    if !v.failed_unexpected.is_empty() {
        v.problems.push(format!(
            "{} jobs failed that should have succeeded: {:?}",
            v.failed_unexpected.len(),
            &v.failed_unexpected[..v.failed_unexpected.len().min(5)]
        ));
    }

    // Storage: one object and one file row per succeeded job, usage = the sum of the rows.
    let (files_rows, files_bytes): (i64, i64) =
        sqlx::query_as("SELECT count(*), COALESCE(sum(size_bytes), 0)::int8 FROM stored_files")
            .fetch_one(&c.pool)
            .await
            .unwrap();
    let (usage_files, usage_bytes): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(file_count), 0)::int8, COALESCE(sum(bytes_used), 0)::int8 FROM storage_usage",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    let (reservations,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM storage_reservations r JOIN jobs j ON j.id = r.job_id \
         WHERE j.status IN ('succeeded', 'failed', 'cancelled')",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    let (objects, staging) = files_on_disk(&c.storage_dir);
    let mut double = 0u64;
    let mut mismatch = |what: &str, got: i64, want: i64, v: &mut Verdict| {
        if got != want {
            if got > want {
                double += (got - want) as u64;
            }
            v.problems.push(format!("{what}: {got}, truth {want}"));
        }
    };
    mismatch(
        "stored_files rows",
        files_rows,
        succeeded_rows as i64,
        &mut v,
    );
    mismatch("usage file_count", usage_files, files_rows, &mut v);
    mismatch("usage bytes", usage_bytes, files_bytes, &mut v);
    mismatch("objects on disk", objects as i64, files_rows, &mut v);
    if staging > 0 {
        v.notes
            .push(format!("{staging} partial uploads left on disk"));
    }
    if reservations > 0 {
        v.problems.push(format!(
            "{reservations} quota reservations left for finished jobs"
        ));
    }

    // Metrics: tasks_total over every worker process lifetime; a process that died between
    // scrapes may have taken its last increments with it, never added any.
    // An attempt dropped while its final write was on the wire may have committed and
    // still count as `interrupted`: each interruption may leave one outcome uncounted.
    let success: f64 = c.scraped.values().map(|s| s.success).sum();
    let failed: f64 = c.scraped.values().map(|s| s.failed).sum();
    let interrupted: f64 = c.scraped.values().map(|s| s.interrupted).sum();
    let exact = c.unscraped_exits == 0;
    for (what, got, want) in [
        (
            "tasks_total{status=\"success\"}",
            success as i64,
            succeeded_rows as i64,
        ),
        (
            "tasks_total{status=\"failed\"}",
            failed as i64,
            failed_by_worker as i64,
        ),
    ] {
        if got > want {
            double += (got - want) as u64;
            v.problems.push(format!("{what}: {got}, truth {want}"));
        } else if got < want {
            if exact && (want - got) as f64 > interrupted {
                v.problems.push(format!(
                    "{what}: {got}, truth {want} ({interrupted} interrupted)"
                ));
            } else if exact {
                v.notes.push(format!(
                    "{what} {got} of {want}: attempts interrupted as their outcome committed"
                ));
            } else {
                v.notes.push(format!(
                    "{what} {got} of {want}: {} processes exited between scrapes",
                    c.unscraped_exits
                ));
            }
        }
    }
    // Storage gauges: every live worker samples the same truth.
    for w in &c.workers {
        if let Some(s) = c.scrape(w.port).await
            && (s.usage_bytes as i64 != usage_bytes || s.files as i64 != usage_files)
        {
            v.problems.push(format!(
                "worker gauges storage_usage_bytes {} storage_files {}, truth {usage_bytes} {usage_files}",
                s.usage_bytes, s.files
            ));
        }
        // Nothing is live any more: no stuck-job age either.
        if let Some(s) = c.scrape(w.port).await
            && v.stuck == 0
            && (s.stale != 0.0 || s.stale_series != 3)
        {
            v.problems.push(format!(
                "jobs_stale_seconds {} over {} series with no live job",
                s.stale, s.stale_series
            ));
        }
    }
    v.double_counted = double;
    if c.restarts > 0 {
        v.notes
            .push(format!("{} processes started again", c.restarts));
    }
    v
}

/// The table, as printed by `clipstash-chaos` and kept in docs/RELIABILITY.md.
pub fn table(rows: &[Verdict]) -> String {
    let mut s = String::from(
        "| scenario | submitted | accepted | refused (503) | succeeded | failed (expected) | failed (unexpected) | lost | double-counted | stuck | recovery | longest job |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}s | {:.1}s |\n",
            v.scenario,
            v.submitted,
            v.accepted,
            v.refused,
            v.succeeded,
            v.failed_expected,
            v.failed_unexpected.len(),
            v.lost.len(),
            v.double_counted,
            v.stuck,
            v.recovery.as_secs_f64(),
            v.longest_job.as_secs_f64(),
        ));
    }
    s
}
