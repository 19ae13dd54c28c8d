//! A steady stream of jobs of mixed size and outcome, sent like a careful client would: every
//! submit carries an `Idempotency-Key`, and a request that got no answer (connection refused
//! or reset, timeout) is sent again with the same key until it gets one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a job should end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Success,
    /// Fails with this error code, by design (a 404, a poison job).
    Failure(&'static str),
}

/// How the API answered a submit in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202, or a 200 replay of one: the promise applies.
    Accepted(Uuid),
    /// A refusal with an error code (e.g. 503 `queue_unavailable`): not accepted.
    Refused(u16, String),
    /// No answer before the client gave up.
    NoAnswer(String),
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub url: String,
    pub expect: Expect,
    pub answer: Answer,
    pub sent: Instant,
}

/// The kinds of job in the stream.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Paced media of `bytes`: a download that takes a while.
    Slow { bytes: u64, ms_per_64k: u64 },
    /// 404: an expected failure.
    NotFound,
    /// A media job whose submit crashes the API after its INSERT.
    CrashApi,
    /// Crashes every worker that attempts it.
    Poison,
    /// Holds forever (a trickle, never idle): ends by the attempt timeout.
    Hang,
}

impl Kind {
    pub fn url(self, media: &clipstash_testkit::MediaServer, n: u64) -> (String, Expect) {
        use crate::cluster::{CRASH_AFTER_INSERT_MARKER, POISON_MARKER};
        match self {
            Kind::Slow { bytes, ms_per_64k } => (
                media.url(&format!("/slow/{bytes}/{n}/{ms_per_64k}/chaos-{n}")),
                Expect::Success,
            ),
            Kind::NotFound => (
                media.url(&format!("/status/404/chaos-{n}")),
                Expect::Failure("source_not_found"),
            ),
            Kind::CrashApi => (
                media.url(&format!(
                    "/slow/200000/{n}/5/{CRASH_AFTER_INSERT_MARKER}-{n}"
                )),
                Expect::Success,
            ),
            Kind::Poison => (
                media.url(&format!("/media/1000/{n}/{POISON_MARKER}-{n}")),
                Expect::Failure("redelivery_limit"),
            ),
            Kind::Hang => (
                media.url(&format!("/held/100000/{n}/never/chaos-hang-{n}")),
                Expect::Failure("timeout"),
            ),
        }
    }
}

/// The default mix: mostly downloads of 16 KiB – 3 MiB taking up to ~1.5 s, one in eight a
/// 404.
pub fn mixed(n: u64) -> Kind {
    if n % 8 == 7 {
        return Kind::NotFound;
    }
    let bytes = 16 * 1024 + fastrand::u64(0..3 * 1024 * 1024);
    Kind::Slow {
        bytes,
        ms_per_64k: 30,
    }
}

/// The submissions so far, shared with the sender task.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<Submission>>>);

impl Ledger {
    pub fn all(&self) -> Vec<Submission> {
        self.0.lock().unwrap().clone()
    }
    fn push(&self, s: Submission) {
        self.0.lock().unwrap().push(s)
    }
}

/// Sends one job; retries on no answer with the same key for up to `patience`.
pub async fn submit(
    client: &reqwest::Client,
    api: &str,
    url: &str,
    expect: Expect,
    patience: Duration,
) -> Submission {
    let key = Uuid::new_v4().to_string();
    let sent = Instant::now();
    let body = serde_json::json!({ "url": url });
    let mut last = String::new();
    while sent.elapsed() < patience {
        let r = client
            .post(format!("{api}/v1/downloads"))
            .header("Idempotency-Key", &key)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let answer = if status == 202 || status == 200 {
                    match v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                        // A replay of a submit whose push failed is a refusal in the end.
                        Some(_) if v["error"]["code"] == "queue_unavailable" => {
                            Answer::Refused(status, "queue_unavailable".into())
                        }
                        Some(id) => Answer::Accepted(id),
                        None => Answer::Refused(status, format!("no id in {v}")),
                    }
                } else {
                    let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
                    // 503 not_ready-like answers from a restarting API are retried; a refusal
                    // with queue_unavailable is final (the job is recorded as failed).
                    if status == 503 && code == "database_unavailable" {
                        last = code;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Answer::Refused(status, code)
                };
                return Submission {
                    url: url.to_string(),
                    expect,
                    answer,
                    sent,
                };
            }
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Submission {
        url: url.to_string(),
        expect,
        answer: Answer::NoAnswer(last),
        sent,
    }
}

/// A stream of `rate` jobs a second from `kind(n)` until stopped.
pub struct Load {
    pub ledger: Ledger,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(
        client: reqwest::Client,
        api: String,
        media: clipstash_testkit::MediaServer,
        rate: f64,
        kind: fn(u64) -> Kind,
    ) -> Self {
        let ledger = Ledger::default();
        let stop = CancellationToken::new();
        let (l, s) = (ledger.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut inflight = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (url, expect) = kind(n).url(&media, 1_000_000 + n);
                n += 1;
                let (client, api, l) = (client.clone(), api.clone(), l.clone());
                inflight.spawn(async move {
                    l.push(submit(&client, &api, &url, expect, Duration::from_secs(90)).await);
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Self { ledger, stop, task }
    }

    /// Stops sending; waits for every request in flight to get its answer.
    pub async fn stop(self) -> Vec<Submission> {
        self.stop.cancel();
        let _ = self.task.await;
        self.ledger.all()
    }
}
