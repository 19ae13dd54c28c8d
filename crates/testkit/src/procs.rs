//! Running the real `clipstash-api` and `clipstash-worker` binaries.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Path of a workspace binary, next to the running test's target folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // A test runs from target/<profile>/deps/, a binary (the bench) from target/<profile>/.
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (just test does)",
        path.display()
    );
    path
}

/// A child process killed when dropped; its output goes to a log file kept for failures.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let log =
            std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(binary(name));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            // Both binaries refuse to start without a working yt-dlp; tests that need it
            // pass CLIPSTASH_YTDLP themselves (it overrides this).
            .env("CLIPSTASH_YTDLP", "off")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits up to `limit` for a clean exit; returns whether it exited 0.
    pub async fn terminate(&mut self, limit: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        matches!(tokio::time::timeout(limit, self.child.wait()).await, Ok(Ok(s)) if s.success())
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Waits until `url` answers 2xx, or panics with the process log.
pub async fn wait_healthy(proc: &Proc, url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became healthy; log:\n{}", proc.log_text());
}

/// Peak resident memory of a process (VmHWM from /proc), in bytes. Panics when it cannot
/// be read: a memory test must fail, not pass, when it cannot measure.
pub fn peak_rss(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot measure peak RSS: reading {path}: {e}"));
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("cannot measure peak RSS: no VmHWM in {path}"));
    assert!(kb > 0, "cannot measure peak RSS: VmHWM is 0 in {path}");
    kb * 1024
}

/// Live (not zombie) processes, from /proc: `(pid, process group, command line)`.
fn live_processes() -> Vec<(u32, i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`: comm may hold spaces, so split after its `)`.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
            continue;
        }
        let pgrp = fields.get(2).and_then(|s| s.parse().ok()).unwrap_or(-1);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, pgrp, cmdline));
    }
    out
}

/// Live processes whose command line contains `needle` (a test's unique URL tag).
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains(needle))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Live processes in process group `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|(_, g, _)| *g == pgid)
        .map(|(pid, _, _)| pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_measures_or_fails() {
        assert!(peak_rss(std::process::id()) > 1024 * 1024);
        // No such process: a panic, never a 0 a memory test would take as "flat".
        assert!(std::panic::catch_unwind(|| peak_rss(u32::MAX)).is_err());
    }
}
