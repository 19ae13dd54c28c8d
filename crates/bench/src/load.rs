//! The load generator: `n` requests from `clients` concurrent loops, with latencies.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

pub struct Load {
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// Request `i`'s latency at `i`: in the order they were sent.
    pub in_order: Vec<Duration>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies, in milliseconds.
    pub fn pct(&self, p: f64) -> f64 {
        quantile_ms(&self.latencies, p)
    }

    /// The `p` quantile, in milliseconds, of the first `n` requests sent.
    pub fn first_pct(&self, n: usize, p: f64) -> f64 {
        let mut first = self.in_order[..n.min(self.in_order.len())].to_vec();
        first.sort();
        quantile_ms(&first, p)
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
    let done: Vec<(usize, Duration)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let req = make(i);
            async move {
                let t = Instant::now();
                let r = req.send().await.expect("request");
                assert!(r.status().is_success(), "HTTP {}", r.status());
                let _ = r.bytes().await;
                (i, t.elapsed())
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mut in_order = vec![Duration::ZERO; n];
    for (i, d) in done {
        in_order[i] = d;
    }
    let mut latencies = in_order.clone();
    latencies.sort();
    Load {
        elapsed,
        latencies,
        in_order,
    }
}

/// The `p` quantile of `sorted`, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pct_looks_only_at_the_first_requests_sent() {
        let ms = Duration::from_millis;
        // Sent first: two slow ones; then eight fast ones.
        let in_order = vec![
            ms(20),
            ms(30),
            ms(1),
            ms(1),
            ms(2),
            ms(1),
            ms(1),
            ms(2),
            ms(1),
            ms(1),
        ];
        let mut latencies = in_order.clone();
        latencies.sort();
        let load = Load {
            elapsed: ms(100),
            latencies,
            in_order,
        };
        assert_eq!(load.first_pct(2, 0.0), 20.0);
        assert_eq!(load.first_pct(2, 0.99), 30.0);
        assert_eq!(load.first_pct(4, 0.5), 20.0);
        assert_eq!(load.pct(0.5), 1.0);
    }
}
