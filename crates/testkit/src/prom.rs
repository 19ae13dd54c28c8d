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

/// Parses the samples of a text exposition (comments skipped). Label values may hold
/// commas, braces, `=` and the escapes `\\`, `\"` and `\n`; a malformed line panics.
///
/// Kept by hand: `prometheus-parse` 0.2.5 cuts a value at its first comma and drops lines
/// whose values hold `=` or `}`, the crates that parse escapes correctly are 0.1 releases on
/// an old nom, or LGPL. This is 40 lines with tests for exactly those cases.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("bad exposition line: {l}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_with_commas_quotes_braces_and_escapes() {
        let text = concat!(
            "# HELP m help\n",
            "m{a=\"x,\\\"y\\\"\",b=\"z\"} 1\n",
            "m{a=\"back\\\\slash\",b=\"new\\nline\"} 2\n",
            "m{a=\"brace}eq=\",} 3\n",
            "plain 4.5\n",
            "h_bucket{le=\"+Inf\"} 7 1700000000\n",
        );
        let s = parse(text);
        let labels = |i: usize| s[i].labels.clone();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(labels(0), [kv("a", "x,\"y\""), kv("b", "z")]);
        assert_eq!(labels(1), [kv("a", "back\\slash"), kv("b", "new\nline")]);
        assert_eq!(labels(2), [kv("a", "brace}eq=")]);
        assert_eq!(
            (s[2].value, s[3].name.as_str(), s[3].value),
            (3.0, "plain", 4.5)
        );
        assert!(s[3].labels.is_empty());
        assert_eq!(s[4].value, 7.0);
        assert_eq!(sum(&s, "m", &[("b", "z")]), 1.0);
    }

    #[test]
    fn malformed_lines_fail() {
        for bad in ["m{a=x} 1", "m{a=\"x} 1", "m 1x"] {
            assert!(parse_line(bad).is_none(), "{bad}");
        }
    }
}
