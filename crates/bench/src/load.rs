//! The load generator: `n` requests from `clients` concurrent loops, with latencies.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

pub struct Load {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies, in milliseconds.
    pub fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }

    pub fn print(&self, name: &str, baseline: Option<f64>) {
        let ratio = baseline.map_or("-".to_string(), |b| format!("{:.2}x", self.rate() / b));
        crate::row(
            name,
            &format!("{:.0}", self.rate()),
            &format!("{:.2}", self.pct(0.5)),
            &format!("{:.2}", self.pct(0.99)),
            &ratio,
        );
    }
}

/// Sends `n` requests from `clients` concurrent loops; fails on any non-2xx.
pub async fn load(
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Load {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..n)
        .map(|i| {
            let req = make(i);
            async move {
                let t = Instant::now();
                let r = req.send().await.expect("request");
                assert!(r.status().is_success(), "HTTP {}", r.status());
                let _ = r.bytes().await;
                t.elapsed()
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let elapsed = start.elapsed();
    latencies.sort();
    Load { elapsed, latencies }
}
