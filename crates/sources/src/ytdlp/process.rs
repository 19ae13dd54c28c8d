//! One yt-dlp process, supervised: its own process group in its own temp dir, stderr read
//! line by line (machine-readable `CLIPSTASH_*` lines, `ERROR:` lines kept for the
//! classifier), and a [`Guard`] whose `Drop` kills the whole group and removes the dir.
//!
//! The guard travels inside whatever the caller holds (the media stream of a download), so
//! cancelling a job, its timeout, the size cap and worker shutdown, which all simply drop
//! the attempt, leave no process and no file behind.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipstash_domain::{ErrorCode, JobError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;

/// Prefix of the line yt-dlp prints (to stderr, as stdout carries the media) once it has
/// chosen a format, right before the download starts.
pub const INFO_PREFIX: &str = "CLIPSTASH_INFO ";
/// Prefix of yt-dlp's progress lines (JSON), at most every `--progress-delta` seconds.
pub const PROGRESS_PREFIX: &str = "CLIPSTASH_PROGRESS ";
/// `ERROR:`/`WARNING:` lines kept per run for the classifier and the job's message.
const KEPT_LINES: usize = 16;
/// Longest stderr line kept (a title or a page's text can be long).
const MAX_KEPT_LINE: usize = 2000;

/// A per-run directory (mode 0700) under the system temp dir; removed with everything in
/// it when dropped. yt-dlp runs in it (`TMPDIR` too), and a cookie file would live in it.
#[derive(Debug)]
pub struct JobDir {
    path: PathBuf,
}

impl JobDir {
    pub fn create(root: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = root.join(format!("clipstash-ytdlp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "removing a yt-dlp job dir");
        }
    }
}

/// What the stderr reader saw, shared with the process's owner.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Last output of any kind (stdout bytes count too): the idle watchdog's clock.
    last_activity: Mutex<Instant>,
    /// The last `ERROR:`/`WARNING:` and `[download]` notice lines.
    lines: Mutex<VecDeque<String>>,
}

impl Seen {
    pub(crate) fn touch(&self) {
        *self.last_activity.lock().unwrap() = Instant::now();
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.last_activity.lock().unwrap().elapsed()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().cloned().collect()
    }
}

/// Kills the process group and removes the run's dir when dropped.
#[derive(Debug)]
pub struct Guard {
    child: Option<Child>,
    /// The group id (the leader's pid) while the group may still hold processes.
    pgid: Option<i32>,
    stderr_task: Option<tokio::task::AbortHandle>,
    // Dropped after the kill: a process still writing there is gone first.
    dir: Option<JobDir>,
}

impl Guard {
    /// Process group id of the run, while it may hold processes (for tests and logs).
    pub fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// SIGKILL to every process of the group (yt-dlp and anything it started: ffmpeg,
    /// deno). A group already gone is not an error.
    pub fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; pgid is our child's own group (it was
            // spawned with process_group(0)), taken once so it is never signalled again.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    /// Waits for yt-dlp to exit (up to `limit`), then kills what is left of its group.
    pub(crate) async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        // Right after the leader is reaped, before its pid could be reused: helpers it
        // left behind go with the group.
        self.kill_group();
        status
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(task) = self.stderr_task.take() {
            task.abort();
        }
        // `kill_on_drop` makes tokio reap the leader in the background.
        drop(self.child.take());
        drop(self.dir.take());
    }
}

/// A started yt-dlp: its guard, its stdout, what its stderr said so far, and the
/// `CLIPSTASH_INFO` line once it comes.
pub(crate) struct Spawned {
    pub guard: Guard,
    pub stdout: ChildStdout,
    pub seen: Arc<Seen>,
    pub info: oneshot::Receiver<String>,
    /// Ends when stderr closes (the process and its helpers are gone).
    pub stderr_done: tokio::task::JoinHandle<()>,
    pub started: Instant,
}

/// Starts `program args` in `dir` in a process group of its own, stdin closed.
pub(crate) fn spawn(
    program: &Path,
    args: &[OsString],
    dir: JobDir,
    progress: Option<super::ProgressHook>,
) -> Result<Spawned, JobError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir.path())
        .env("TMPDIR", dir.path())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        JobError::new(
            ErrorCode::YtdlpUnavailable,
            format!("cannot start yt-dlp ({}): {e}", program.display()),
        )
    })?;
    let pgid = child.id().map(|p| p as i32);
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let seen = Arc::new(Seen {
        last_activity: Mutex::new(Instant::now()),
        lines: Mutex::new(VecDeque::new()),
    });
    let (info_tx, info) = oneshot::channel();
    let stderr_done = tokio::spawn(read_stderr(stderr, seen.clone(), info_tx, progress));
    Ok(Spawned {
        guard: Guard {
            child: Some(child),
            pgid,
            stderr_task: Some(stderr_done.abort_handle()),
            dir: Some(dir),
        },
        stdout,
        seen,
        info,
        stderr_done,
        started: Instant::now(),
    })
}

async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    seen: Arc<Seen>,
    info_tx: oneshot::Sender<String>,
    progress: Option<super::ProgressHook>,
) {
    let mut reader = BufReader::new(stderr);
    let mut info_tx = Some(info_tx);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        seen.touch();
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_matches(['\r', '\n']);
        if let Some(json) = line.strip_prefix(INFO_PREFIX) {
            if let Some(tx) = info_tx.take() {
                let _ = tx.send(json.to_string());
            }
        } else if let Some(json) = line.strip_prefix(PROGRESS_PREFIX) {
            if let Some(f) = &progress {
                f(json);
            }
        } else if is_notice(line) {
            let mut kept: String = line.chars().take(MAX_KEPT_LINE).collect();
            kept.shrink_to_fit();
            let mut lines = seen.lines.lock().unwrap();
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(kept);
        }
    }
}

/// Lines worth keeping for the classifier: errors, warnings, and the downloader's own
/// notices (`[download] File is larger than max-filesize ...`).
fn is_notice(line: &str) -> bool {
    line.starts_with("ERROR:") || line.starts_with("WARNING:") || line.starts_with("[download]")
}
