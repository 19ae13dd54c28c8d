//! Reading Prometheus text exposition and running promtool.

use std::io::Write;
use std::process::{Command, Stdio};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the samples of a text exposition (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = split_labels(labels);
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

fn split_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, v)) = rest.split_once("=\"") {
        let end = v.find('"').unwrap_or(v.len());
        out.push((k.trim_start_matches(',').to_string(), v[..end].to_string()));
        rest = &v[(end + 1).min(v.len())..];
    }
    out
}

/// Sum of `name` over samples whose labels include all of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filter
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Number of distinct series whose name starts with `prefix`.
pub fn series_count(samples: &[Sample], prefix: &str) -> usize {
    samples
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .count()
}

/// Runs `promtool check metrics` on an exposition; returns its complaints.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package prometheus; `just test` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
