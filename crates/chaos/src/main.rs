use std::time::Duration;

use clap::Parser;
use clipstash_chaos::{ALL, Options, run, table};

/// clipstash's fault suite: runs the real debug binaries (build them first with
/// `cargo build --workspace --bins`) against a Postgres (initdb) and a Redis of their own on
/// free loopback ports, sends a steady stream of jobs and injects one fault per scenario,
/// then checks that every accepted job reached exactly one terminal state and was counted
/// once. Prints a table; exits 1 when any scenario broke the promise.
#[derive(Debug, Parser)]
#[command(name = "clipstash-chaos", version)]
struct Cli {
    /// Scenarios to run (default: all): redis-restart, redis-pause, postgres-restart,
    /// worker-kill9, api-crash-after-insert, rolling-sigterm, poison.
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// The short timings of `just test` instead of the full ones.
    #[arg(long)]
    quick: bool,
    /// How long Redis stays stopped (SIGSTOP) in redis-pause [full: 30s, quick: 4s].
    #[arg(long, value_parser = humantime::parse_duration)]
    redis_pause: Option<Duration>,
    /// Jobs submitted per second [full: 20, quick: 8].
    #[arg(long)]
    rate: Option<f64>,
    /// Worker processes [full: 3, quick: 2].
    #[arg(long)]
    workers: Option<usize>,
    /// kill -9 rounds in worker-kill9 [full: 5, quick: 2].
    #[arg(long)]
    kills: Option<u32>,
    /// Print the processes' log tails of failing scenarios.
    #[arg(long)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut o = if cli.quick {
        Options::quick()
    } else {
        Options::full()
    };
    if let Some(d) = cli.redis_pause {
        o.redis_pause = d;
    }
    if let Some(r) = cli.rate {
        o.rate = r;
    }
    if let Some(w) = cli.workers {
        o.workers = w;
    }
    if let Some(k) = cli.kills {
        o.kills = k;
    }
    let names: Vec<String> = if cli.scenarios.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        cli.scenarios.clone()
    };
    for n in &names {
        anyhow::ensure!(
            ALL.contains(&n.as_str()),
            "unknown scenario {n}; known: {ALL:?}"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for name in &names {
        eprintln!("== {name}");
        // On SIGINT/SIGTERM the scenario is dropped: its processes, Redis and Postgres
        // are stopped and their directories removed before the suite exits.
        let Some(v) = rt.block_on(async {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(clipstash_runtime_signal(stop.clone()));
            tokio::select! {
                v = run(name, &o) => Some(v),
                _ = stop.cancelled() => None,
            }
        }) else {
            eprintln!("interrupted; cleaned up");
            std::process::exit(130);
        };
        for n in &v.notes {
            if cli.verbose || !n.starts_with("logs:") {
                eprintln!("   note: {n}");
            }
        }
        for p in &v.problems {
            eprintln!("   PROBLEM: {p}");
        }
        eprintln!(
            "   {}",
            if v.ok() {
                "promise held"
            } else {
                "PROMISE BROKEN"
            }
        );
        rows.push(v);
    }
    println!("{}", table(&rows));
    let broken = rows.iter().filter(|v| !v.ok()).count();
    if broken > 0 {
        eprintln!("{broken} scenario(s) broke the promise");
        std::process::exit(1);
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM, then cancels `stop`.
async fn clipstash_runtime_signal(stop: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
}
