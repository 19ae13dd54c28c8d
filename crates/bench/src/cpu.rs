//! CPU time spent by processes, from `/proc/<pid>/stat` (user + system), so a phase can be
//! charged per job to the API, the workers, Postgres and Redis separately.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ), asked of `getconf` once.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf CLK_TCK");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("getconf CLK_TCK printed a number")
    });
    *TICKS
}

/// `(comm, user + system ticks)` of one process, or `None` if it has gone.
fn stat(pid: u32) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // Fields after comm start at 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time of one process so far. Panics if it cannot be read: a zero would make every
/// figure derived from it look like a success.
pub fn of_pid(pid: u32) -> Duration {
    let (_, ticks) = stat(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}/stat"));
    Duration::from_secs_f64(ticks as f64 / ticks_per_second())
}

/// CPU time of this process's children that have ended and been waited for (user +
/// system, `getrusage(RUSAGE_CHILDREN)`): a short-lived tool such as `curl` is charged as
/// the difference across its run. Running children (the API, the workers) are not in it.
pub fn of_waited_children() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let secs = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU time per process of a group chosen by its command line, kept so that a later
/// [`Group::since`] charges each process only what it used in between (Postgres forks a
/// backend per connection: backends that start later count in full).
pub struct Group {
    select: Box<dyn Fn(&str) -> bool>,
    ticks: std::collections::HashMap<u32, u64>,
}

impl Group {
    /// Processes whose `/proc/<pid>/cmdline` (arguments joined by spaces) satisfies `select`;
    /// for example Postgres backends show `postgres: USER DB ADDR STATE` there.
    pub fn snapshot(select: impl Fn(&str) -> bool + 'static) -> Self {
        let ticks = scan(&select);
        Self {
            select: Box::new(select),
            ticks,
        }
    }

    /// CPU time the group used since the snapshot. Panics if no process matches: a zero
    /// would look like a free phase.
    pub fn since(&self) -> Duration {
        let now = scan(&self.select);
        assert!(!now.is_empty(), "no process left in the measured group");
        let ticks: u64 = now
            .iter()
            .map(|(pid, t)| t.saturating_sub(*self.ticks.get(pid).unwrap_or(&0)))
            .sum();
        Duration::from_secs_f64(ticks as f64 / ticks_per_second())
    }
}

fn scan(select: &dyn Fn(&str) -> bool) -> std::collections::HashMap<u32, u64> {
    let mut found = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if select(cmdline.trim())
            && let Some((_, t)) = stat(pid)
        {
            found.insert(pid, t);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let me = std::process::id();
        let before = of_pid(me);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(
            of_pid(me) > before,
            "300 ms of spinning did not show as CPU time"
        );
    }

    #[test]
    fn a_group_is_charged_only_since_its_snapshot() {
        let me = std::process::id();
        let group = Group::snapshot(|_| true);
        // Spin until this process has used 100 ms of CPU (by its own account).
        let own_before = of_pid(me);
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while of_pid(me) - own_before < Duration::from_millis(100) {
            assert!(std::time::Instant::now() < give_up, "no CPU time seen");
        }
        let used = group.since();
        assert!(used >= Duration::from_millis(100), "{used:?}");
        // Everything on the machine since the snapshot, not since boot.
        assert!(used < Duration::from_secs(60), "{used:?}");
    }

    #[test]
    fn a_waited_child_is_charged_its_cpu_time() {
        let before = of_waited_children();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let used = of_waited_children() - before;
        assert!(used >= Duration::from_millis(20), "{used:?}");
    }

    #[test]
    #[should_panic(expected = "no process left")]
    fn an_empty_group_is_an_error_not_zero() {
        Group::snapshot(|c| c == "no such command line").since();
    }

    #[test]
    #[should_panic(expected = "cannot read")]
    fn a_gone_process_is_an_error_not_zero() {
        of_pid(u32::MAX);
    }
}
