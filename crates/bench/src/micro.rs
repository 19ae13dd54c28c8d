//! In-process measurements of two pieces every request and scrape pays for: rendering
//! `/metrics` and the HTTP metrics middleware.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, middleware::from_fn, web};
use metrics_core::Exporter;
use metrics_core::catalogue::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

use crate::cpu;
use crate::load::{Load, load, quantile_ms};

/// Series (sample lines) in a Prometheus text exposition.
pub fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Adds HTTP series (a counter per status and a latency histogram per endpoint, the
/// shapes the API exports) until the exposition holds at least `target` series.
fn grow_to(exporter: &Exporter, target: usize, next: &mut usize) -> usize {
    loop {
        let n = series(&exporter.render());
        if n >= target {
            return n;
        }
        for _ in 0..20 {
            let endpoint = format!("/v1/bench/{next}");
            *next += 1;
            for status in ["2xx", "4xx", "5xx"] {
                metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => "GET",
                    "endpoint" => endpoint.clone(), "status" => status)
                .increment(1);
            }
            metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => "GET",
                "endpoint" => endpoint)
            .record(0.003);
        }
    }
}

/// Renders timed at each size: the p99 of 200 was the second-slowest render, so one
/// scheduling hiccup (of ~8 ms, against a 4 ms render) set it.
const RENDERS: usize = 1_000;

/// Render time (p50, p99 in ms) of `/metrics` at about 1,000 and 10,000 series, on the
/// recorder this process installed.
pub fn render(exporter: &Exporter) -> Vec<(usize, f64, f64)> {
    let mut next = 0;
    [1_000, 10_000]
        .into_iter()
        .map(|target| {
            let n = grow_to(exporter, target, &mut next);
            let mut times: Vec<Duration> = (0..RENDERS)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(exporter.render());
                    t.elapsed()
                })
                .collect();
            times.sort();
            (n, quantile_ms(&times, 0.5), quantile_ms(&times, 0.99))
        })
        .collect()
}

/// The middleware's own work per request, timed alone on one thread over `n` rounds: its
/// tracker (clock, in-flight gauge, counter, histogram), the route's label and the
/// `X-Process-Time` header. Excludes the `from_fn` plumbing around it.
pub fn middleware_work(n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let tracker = metrics_core::HttpTracker::start("GET");
        let elapsed = tracker.elapsed_seconds();
        std::hint::black_box(actix_web::http::header::HeaderValue::from_str(&format!(
            "{elapsed:.6}"
        )))
        .ok();
        tracker.finish(Some("/bench".to_string()), 200);
    }
    t.elapsed() / n as u32
}

async fn ok() -> &'static str {
    "ok"
}

/// Serves `GET /bench` on a loopback port, bare or behind the API's metrics middleware.
fn serve(with_middleware: bool) -> anyhow::Result<(String, actix_web::dev::ServerHandle)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/bench", listener.local_addr()?);
    let server = HttpServer::new(move || {
        let app = App::new().wrap(actix_web::middleware::Condition::new(
            with_middleware,
            from_fn(clipstash_api::middleware::track_http),
        ));
        app.route("/bench", web::get().to(ok))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((url, handle))
}

/// One side of the middleware comparison: its best run (least disturbed by the rest of the
/// machine), and the CPU this process (server and client) spent per request over all runs.
pub struct Side {
    pub best: Load,
    pub cpu_us: f64,
}

/// The bare handler and the same handler behind the middleware, `rounds` times each,
/// alternating.
pub async fn middleware(
    client: &reqwest::Client,
    n: usize,
    clients: usize,
    rounds: usize,
) -> anyhow::Result<(Side, Side)> {
    let (bare_url, bare) = serve(false)?;
    let (wrapped_url, wrapped) = serve(true)?;
    let me = std::process::id();
    let mut best: [Option<Load>; 2] = [None, None];
    let mut cpu = [Duration::ZERO; 2];
    for _ in 0..rounds {
        for (slot, url) in [(0, &bare_url), (1, &wrapped_url)] {
            let before = cpu::of_pid(me);
            let run = load(n, clients, |_| client.get(url)).await;
            cpu[slot] += cpu::of_pid(me) - before;
            if best[slot].as_ref().is_none_or(|b| run.rate() > b.rate()) {
                best[slot] = Some(run);
            }
        }
    }
    bare.stop(true).await;
    wrapped.stop(true).await;
    let [Some(b), Some(w)] = best else {
        unreachable!("rounds >= 1")
    };
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / (n * rounds) as f64;
    Ok((
        Side {
            best: b,
            cpu_us: per_request(cpu[0]),
        },
        Side {
            best: w,
            cpu_us: per_request(cpu[1]),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_counts_samples_not_comments() {
        let text = "# HELP a x\n# TYPE a counter\na{b=\"1\"} 1\na{b=\"2\"} 2\n\nc 3\n";
        assert_eq!(series(text), 3);
    }
}
