//! The quicker fault scenarios, with the real binaries against a Postgres and a Redis of
//! each test's own (`cargo build --workspace --bins` first; `just test` does). One at a
//! time: each starts a whole cluster, and they would only slow each other down on a small
//! machine. The full suite with the 30 s Redis stall: `just chaos`.

use std::sync::Mutex;

use clipstash_chaos::{Options, run, table};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[allow(clippy::await_holding_lock)]
async fn scenario(name: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let v = run(name, &Options::quick()).await;
    println!("{}", table(std::slice::from_ref(&v)));
    assert!(
        v.ok(),
        "{name} broke the promise: {:#?}\nnotes: {:#?}",
        v.problems,
        v.notes
    );
    assert!(
        v.accepted > 0 && v.succeeded > 0,
        "no load reached the workers: {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence_loses_no_job() {
    scenario("redis-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_refuses_or_accepts_but_loses_nothing_and_readyz_names_it() {
    scenario("redis-pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_restart_loses_no_job_and_counts_none_twice() {
    scenario("postgres-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_download_lose_no_job() {
    scenario("worker-kill9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_crash_between_insert_and_push_loses_no_job() {
    scenario("api-crash-after-insert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_sigterm_of_every_worker_fails_no_job() {
    scenario("rolling-sigterm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_ends_redelivery_limit_and_loses_nothing() {
    scenario("poison").await;
}
