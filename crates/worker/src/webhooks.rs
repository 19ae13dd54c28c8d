//! Webhook deliveries: every worker runs this loop over the outbox (`webhook_deliveries`,
//! written by the job's terminal transition in `clipstash_db::transitions`). Each pass
//! leases due rows (`FOR UPDATE SKIP LOCKED`, so workers share the table without taking the
//! same row), POSTs each job view signed the Standard Webhooks way, and records the outcome:
//! 2xx delivered; 410 given up; anything else (another status, a redirect, a timeout, a
//! connection error) retried with exponential backoff and jitter until
//! `CLIPSTASH_WEBHOOK_MAX_ATTEMPTS` or `CLIPSTASH_WEBHOOK_MAX_AGE`. The client is behind the
//! same egress guard as downloads and follows no redirects: a callback whose address the
//! guard refuses is given up at once (`refused`). A worker that dies mid-attempt leaves its
//! leased rows to another after the lease: delivery is at least once.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use clipstash_db::jobs;
use clipstash_db::view::JobView;
use clipstash_db::webhooks::{self, Due, Next};
use clipstash_domain::webhook::{StoredSecret, WebhookSecret, message_id};
use clipstash_sources::EgressPolicy;
use clipstash_sources::SecretKey;
use clipstash_sources::direct::USER_AGENT;
use clipstash_sources::egress::{find_forbidden, guarded_client};
use futures_util::StreamExt;
use metrics_core::catalogue::{WEBHOOK_DELIVERIES_TOTAL, WEBHOOK_DELIVERY_DURATION_SECONDS};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Settings of webhook delivery (worker).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// How often an idle worker looks for due webhook deliveries.
    #[arg(long, env = "CLIPSTASH_WEBHOOK_POLL", value_name = "CLIPSTASH_WEBHOOK_POLL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub webhook_poll: Duration,

    /// Webhook deliveries this worker attempts at once.
    #[arg(long, env = "CLIPSTASH_WEBHOOK_CONCURRENCY", value_name = "CLIPSTASH_WEBHOOK_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub webhook_concurrency: u32,

    /// Longest wait for a receiver's answer, per attempt (connecting included).
    #[arg(long, env = "CLIPSTASH_WEBHOOK_TIMEOUT", value_name = "CLIPSTASH_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Delay before the first retry of a delivery; doubles for each further one (up to
    /// CLIPSTASH_WEBHOOK_RETRY_MAX_DELAY), each stretched by a random 0-100%.
    #[arg(long, env = "CLIPSTASH_WEBHOOK_RETRY_BASE", value_name = "CLIPSTASH_WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_retry_base: Duration,

    /// Longest delay between two attempts of a delivery (before jitter).
    #[arg(long, env = "CLIPSTASH_WEBHOOK_RETRY_MAX_DELAY", value_name = "CLIPSTASH_WEBHOOK_RETRY_MAX_DELAY", default_value = "1h", value_parser = humantime::parse_duration)]
    pub webhook_retry_max_delay: Duration,

    /// Attempts of a delivery before it is given up.
    #[arg(long, env = "CLIPSTASH_WEBHOOK_MAX_ATTEMPTS", value_name = "CLIPSTASH_WEBHOOK_MAX_ATTEMPTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_max_attempts: u32,

    /// A delivery is given up when its next attempt would come later than this after the job ended.
    #[arg(long, env = "CLIPSTASH_WEBHOOK_MAX_AGE", value_name = "CLIPSTASH_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_max_age: Duration,
}

/// `webhook_deliveries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    Retried,
    Failed,
    Refused,
}

/// The delivery loop of one worker.
pub struct Deliverer {
    pool: PgPool,
    client: reqwest::Client,
    egress: EgressPolicy,
    args: WebhookArgs,
    server_key: Option<SecretKey>,
}

impl Deliverer {
    /// A deliverer whose client goes through `egress` (as downloads do) and follows no redirect.
    pub fn new(
        pool: PgPool,
        egress: EgressPolicy,
        args: WebhookArgs,
        server_key: Option<SecretKey>,
    ) -> anyhow::Result<Self> {
        let client = guarded_client(&egress)
            .user_agent(USER_AGENT)
            .connect_timeout(args.webhook_timeout)
            .timeout(args.webhook_timeout)
            // A redirect is an answer like any other non-2xx: retried, never followed (the
            // receiver's URL is the one the user gave, and the guard saw).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            pool,
            client,
            egress,
            args,
            server_key,
        })
    }

    /// Runs passes until `shutdown`; an attempt under way finishes first.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let full = match self.pass().await {
                    Ok(n) => n == self.args.webhook_concurrency as usize,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook pass failed; trying again");
                        false
                    }
                };
                // A full batch suggests more are due: go again at once.
                let wait = if full {
                    Duration::ZERO
                } else {
                    self.args.webhook_poll
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// One pass: leases due deliveries and attempts them, up to the concurrency at once.
    /// Returns how many it leased.
    pub async fn pass(&self) -> Result<usize, sqlx::Error> {
        // Longer than any attempt can take, so a row is never attempted twice at once.
        let lease = 2 * self.args.webhook_timeout + Duration::from_secs(30);
        let due = webhooks::lease_due(&self.pool, i64::from(self.args.webhook_concurrency), lease)
            .await?;
        let n = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(None, |d| async move {
                let id = d.id;
                if let Err(e) = self.deliver(d).await {
                    // The lease runs out and another pass tries again.
                    tracing::warn!(delivery = %id, error = %e, "recording a webhook attempt failed");
                }
            })
            .await;
        Ok(n)
    }

    async fn deliver(&self, d: Due) -> Result<(), sqlx::Error> {
        let payload = match d.payload.clone() {
            Some(p) => p,
            None => match jobs::get_job(&self.pool, d.job_id).await? {
                Some(row) => serde_json::to_vec(&JobView::from(row)).expect("the view serialises"),
                // The outbox row goes with its job (ON DELETE CASCADE): nothing to send.
                None => return Ok(()),
            },
        };
        let attempt = match self.secret(&d) {
            Ok(secret) => self.attempt(&d, &secret, &payload).await,
            Err(reason) => Attempt {
                status: None,
                error: Some(reason),
                kind: AttemptKind::Unsignable,
            },
        };
        let (next, outcome) = self.next(&d, attempt.kind);
        webhooks::record_attempt(
            &self.pool,
            d.id,
            &payload,
            attempt.status,
            attempt.error.as_deref(),
            &next,
        )
        .await?;
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => <&str>::from(outcome))
            .increment(1);
        match outcome {
            DeliveryOutcome::Delivered => {
                tracing::debug!(delivery = %d.id, job = %d.job_id, "webhook delivered")
            }
            _ => tracing::info!(
                delivery = %d.id, job = %d.job_id, attempt = d.attempts + 1,
                status = ?attempt.status, error = attempt.error.as_deref().unwrap_or(""),
                outcome = <&str>::from(outcome), "webhook not delivered"
            ),
        }
        Ok(())
    }

    /// The signing secret of the job's key.
    fn secret(&self, d: &Due) -> Result<WebhookSecret, String> {
        let stored = match (&d.webhook_secret, &d.webhook_secret_salt, d.api_key_id) {
            (Some(plain), _, _) => StoredSecret::Plain(plain),
            (None, Some(salt), Some(key_id)) => StoredSecret::Derived { key_id, salt },
            _ => return Err("the job's API key has no webhook secret".into()),
        };
        let server_key = self.server_key.as_ref().map(SecretKey::bytes);
        WebhookSecret::resolve(stored, server_key).map_err(|e| e.to_string())
    }

    async fn attempt(&self, d: &Due, secret: &WebhookSecret, payload: &[u8]) -> Attempt {
        let refused = |e: String| Attempt {
            status: None,
            error: Some(e),
            kind: AttemptKind::Refused,
        };
        let url = match url::Url::parse(&d.url) {
            Ok(u) => u,
            Err(e) => return refused(format!("unparsable callback URL: {e}")),
        };
        // IP literals are never resolved, so the resolver cannot see them: checked here.
        if let Err(f) = self.egress.check_url(&url) {
            return refused(f.to_string());
        }
        let msg_id = message_id(d.id);
        let timestamp = Utc::now().timestamp();
        let started = Instant::now();
        let result = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                secret.sign(&msg_id, timestamp, payload),
            )
            .body(payload.to_vec())
            .send()
            .await;
        metrics::histogram!(WEBHOOK_DELIVERY_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                let status = r.status();
                let kind = if status.is_success() {
                    AttemptKind::Delivered
                } else if status == reqwest::StatusCode::GONE {
                    AttemptKind::Gone
                } else {
                    AttemptKind::Retry
                };
                Attempt {
                    status: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("receiver answered HTTP {status}")),
                    kind,
                }
            }
            Err(e) => match find_forbidden(&e) {
                Some(f) => refused(f.to_string()),
                None => Attempt {
                    status: None,
                    error: Some(error_chain(&e)),
                    kind: AttemptKind::Retry,
                },
            },
        }
    }

    /// What follows an attempt of kind `kind`: done, given up, or retried after a backoff
    /// while attempts and time are left.
    fn next(&self, d: &Due, kind: AttemptKind) -> (Next, DeliveryOutcome) {
        let retry = || {
            let made = d.attempts + 1;
            if made >= self.args.webhook_max_attempts as i32 {
                return (Next::GiveUp, DeliveryOutcome::Failed);
            }
            let delay = self.backoff(made as usize);
            let deadline = d.created_at
                + chrono::Duration::from_std(self.args.webhook_max_age)
                    .unwrap_or(chrono::Duration::MAX);
            let at =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            if at > deadline {
                (Next::GiveUp, DeliveryOutcome::Failed)
            } else {
                (Next::RetryAfter(delay), DeliveryOutcome::Retried)
            }
        };
        match kind {
            AttemptKind::Delivered => (Next::Delivered, DeliveryOutcome::Delivered),
            AttemptKind::Gone => (Next::GiveUp, DeliveryOutcome::Failed),
            AttemptKind::Refused => (Next::GiveUp, DeliveryOutcome::Refused),
            // A worker without CLIPSTASH_SECRET_KEY: another worker, or this one once
            // configured, may sign it; the attempts and age bounds still hold.
            AttemptKind::Retry | AttemptKind::Unsignable => retry(),
        }
    }

    /// The delay after the `made`-th attempt: base x 2^(made-1), capped, with jitter.
    fn backoff(&self, made: usize) -> Duration {
        ExponentialBuilder::new()
            .with_min_delay(self.args.webhook_retry_base)
            .with_factor(2.0)
            .with_max_delay(self.args.webhook_retry_max_delay)
            .with_max_times(usize::MAX)
            .with_jitter()
            .build()
            .nth(made.saturating_sub(1))
            .unwrap_or(self.args.webhook_retry_max_delay)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptKind {
    Delivered,
    Gone,
    Refused,
    Retry,
    Unsignable,
}

struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    kind: AttemptKind,
}

/// The cause chain without the URL (a callback URL may carry a token).
fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
