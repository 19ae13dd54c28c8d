//! Fault-injection hooks for the chaos suite (`crates/chaos`, `just chaos`): they let it
//! crash a process at an exact point no timing can reach reliably. They exist only in debug
//! builds; a release binary (`cargo build --release`, every deployment) has no such code
//! and ignores the variables.
//!
//! - `CLIPSTASH_TEST_CRASH_AFTER_INSERT=<marker>`: the API aborts right after writing a job
//!   whose URL contains `<marker>`, before pushing it to Redis.
//! - `CLIPSTASH_TEST_CRASH_ON_URL=<marker>`: a worker aborts when it starts an attempt of a
//!   job whose URL contains `<marker>` (a poison job).

/// Aborts the process (no cleanup, like `kill -9`) when `var` is set, non-empty and `url`
/// contains its value. A no-op in release builds.
#[inline]
pub fn crash_if_marked(var: &str, url: &str) {
    #[cfg(debug_assertions)]
    if let Ok(marker) = std::env::var(var)
        && !marker.is_empty()
        && url.contains(&marker)
    {
        eprintln!("{var}: aborting on {url} (test hook)");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = (var, url);
}

/// The API's hook between the INSERT of a job and its push to Redis.
pub const CRASH_AFTER_INSERT: &str = "CLIPSTASH_TEST_CRASH_AFTER_INSERT";
/// The worker's hook at the start of an attempt.
pub const CRASH_ON_URL: &str = "CLIPSTASH_TEST_CRASH_ON_URL";
