//! Process metrics in the names Python's client exports by default, read from `/proc`.
//!
//! Rendered as text next to the recorder's output because `process_cpu_seconds_total` is a
//! fractional counter, which the `metrics` facade (integer counters) cannot carry.

use std::fmt::Write;
use std::sync::OnceLock;

/// Appends the process metrics to `out`; on systems without `/proc` it appends nothing.
pub fn render_into(out: &mut String) {
    let Some(s) = read() else { return };
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        s.cpu_seconds,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        s.resident_bytes,
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        s.virtual_bytes,
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time_seconds,
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        s.open_fds,
    );
    if let Some(max) = s.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    metric(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        s.threads,
    );
}

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: Option<f64>,
    pub threads: f64,
}

/// Reads the current process's figures, or `None` where `/proc` is missing.
pub fn read() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Index = field number (1-based, from proc(5)) - 3.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let (ticks, page) = sys_constants();
    let utime = num(11)?;
    let stime = num(12)?;
    let threads = num(17)?;
    let start_ticks = num(19)?;
    let vsize = num(20)?;
    let rss_pages = num(21)?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .ok()?;
    Some(Sample {
        cpu_seconds: (utime + stime) / ticks,
        resident_bytes: rss_pages * page,
        virtual_bytes: vsize,
        start_time_seconds: boot_time()? + start_ticks / ticks,
        open_fds,
        max_fds: max_fds(),
        threads,
    })
}

fn sys_constants() -> (f64, f64) {
    static C: OnceLock<(f64, f64)> = OnceLock::new();
    *C.get_or_init(|| {
        // SAFETY: sysconf only reads process-wide constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (
            if ticks > 0 { ticks as f64 } else { 100.0 },
            if page > 0 { page as f64 } else { 4096.0 },
        )
    })
}

fn boot_time() -> Option<f64> {
    static B: OnceLock<Option<f64>> = OnceLock::new();
    *B.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
    })
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_figures_from_proc() {
        let s = read().expect("/proc is available on Linux");
        assert!(s.resident_bytes > 1_000_000.0, "{s:?}");
        assert!(s.threads >= 1.0);
        assert!(s.open_fds >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 3600.0,
            "{s:?}"
        );
        let mut out = String::new();
        render_into(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(out.contains("process_resident_memory_bytes "));
    }
}
