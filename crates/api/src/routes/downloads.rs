//! `/v1/downloads`: submit, follow, list, cancel and delete download jobs.

use std::sync::Arc;

use actix_web::http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use clipstash_db::batch::{AfterCommit, Written};
use clipstash_db::jobs::{IdempotencyKey, NewJob};
use clipstash_db::usage::storage_usage;
use clipstash_db::{DeleteOutcome, JobRow, jobs, transitions};
use clipstash_domain::{DownloadJob, ErrorCode, JobStatus, RequestedSource, VideoSource};
use clipstash_runtime::gauges;
use clipstash_sources::EgressPolicy;
use clipstash_sources::cookies::{self, SecretKey};
use metrics_core::Task;
use metrics_core::catalogue::TASKS_ENQUEUED_TOTAL;
use serde::{Deserialize, Serialize};
use strum::VariantArray;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::auth::limit::{RATELIMIT, RATELIMIT_POLICY};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{CookiesSchema, JobStatusSchema, RequestedSourceSchema};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

pub use clipstash_db::view::{JobErrorView, JobView, ProgressView};

/// The view of a job with its live progress when it is running.
pub async fn with_progress(job: JobRow, state: &AppState) -> JobView {
    let running = job.status == JobStatus::Running;
    let id = job.id;
    let mut view = JobView::from(job);
    if running {
        view.progress = state.live.progress(id).await.map(ProgressView::from);
    }
    view
}

/// The body of `POST /v1/downloads`.
///
/// The contract's `pattern` for `url` and `callback_url` is a subset of what the server
/// accepts (http or https, a DNS name whose last label starts with a letter, an optional port
/// below 10000, a path of RFC 3986 characters), so every URL it describes is accepted (bar a
/// literal forbidden address); the server also takes IP literals the egress guard allows.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDownload {
    /// An absolute http(s) URL with a host and no credentials, at most 2048 characters.
    #[schema(min_length = 1, max_length = 2048, format = Uri, pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*(?::[1-9][0-9]{0,3})?(?:/(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|/)*)?(?:\?(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?(?:#(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?$", example = "https://media.example.com/clip.mp4")]
    pub url: String,
    /// Where to POST the job view, signed (`webhook-signature`), when the job ends; same rules
    /// as `url`. Needs a key with a webhook secret. See docs/API.md "Webhooks".
    #[schema(min_length = 1, max_length = 2048, format = Uri, pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*(?::[1-9][0-9]{0,3})?(?:/(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|/)*)?(?:\?(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?(?:#(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?$", example = "https://hooks.example.com/clipstash")]
    pub callback_url: Option<String>,
    /// `auto` (default): hosts on `CLIPSTASH_YTDLP_HOSTS` (YouTube and other video sites) go
    /// to yt-dlp, other URLs are fetched directly, and a direct link that answers with a web
    /// page is handed to yt-dlp. `direct` or `ytdlp` force one.
    #[schema(value_type = Option<RequestedSourceSchema>)]
    pub source: Option<RequestedSource>,
    /// A yt-dlp format selector (`b`, `18`, `b[ext=mp4]`, `b[height<=720]/b`): letters,
    /// digits and `_-.,/[]<>=!?*^$~:()`, at most 200 characters. No `+`: merged formats are
    /// not supported. Default: `b`, the best single file.
    #[schema(max_length = 200, pattern = r"^[A-Za-z0-9_.,/\[\]<>=!?*^$~:()-]+$")]
    pub format: Option<String>,
    /// The tallest video wanted, 144-4320. Like `format`, it shapes yt-dlp runs only: a job
    /// that runs as a direct download keeps it in its view and fetches the link as it is.
    /// (A JSON number with no fraction: `720` or `720.0`.)
    #[schema(value_type = Option<i64>, minimum = 144, maximum = 4320)]
    pub max_height: Option<f64>,
    /// Cookies for the site (a signed-in session, for videos that need one): Netscape
    /// `cookies.txt` text, or a `{name: value}` object for the URL's domain. At most 64 KiB.
    /// Encrypted at rest, erased when the job ends, never shown by any response. The server
    /// needs `CLIPSTASH_SECRET_KEY`, else 422 `cookies_disabled`.
    #[schema(value_type = Option<CookiesSchema>)]
    #[serde(default)]
    pub cookies: Option<CookiesField>,
}

/// Longest `format` accepted.
pub const MAX_FORMAT_LEN: usize = 200;
/// `max_height` bounds.
pub const MAX_HEIGHT_RANGE: std::ops::RangeInclusive<i64> = 144..=4320;

/// Checks a yt-dlp format selector: bounded, from a fixed set of characters, and no `+`
/// (merging needs ffmpeg and a file; the media streams instead). It is passed to yt-dlp as
/// one argument after `-f`, never through a shell.
pub fn validate_format(raw: &str) -> Result<String, ApiError> {
    let invalid = |msg: String| ApiError::new(ErrorCode::InvalidFormat, msg);
    if raw.is_empty() || raw.len() > MAX_FORMAT_LEN {
        return Err(invalid(format!(
            "format must be 1 to {MAX_FORMAT_LEN} characters"
        )));
    }
    if raw.contains('+') {
        return Err(invalid(
            "merged formats (`+`) are not supported: choose a single-file format such as `b`"
                .into(),
        ));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.,/[]<>=!?*^$~:()".contains(*c)))
    {
        return Err(invalid(format!(
            "format may hold letters, digits and _-.,/[]<>=!?*^$~:() only, not {c:?}"
        )));
    }
    Ok(raw.to_string())
}

/// Checks `max_height`: 144-4320.
pub fn validate_max_height(h: f64) -> Result<i32, ApiError> {
    if h.fract() == 0.0 && MAX_HEIGHT_RANGE.contains(&(h as i64)) {
        Ok(h as i32)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidMaxHeight,
            format!(
                "max_height must be between {} and {}",
                MAX_HEIGHT_RANGE.start(),
                MAX_HEIGHT_RANGE.end()
            ),
        ))
    }
}

/// `cookies` as the client sent them, any JSON (checked by the handler, so a malformed
/// value is `invalid_cookies` and no parser message ever quotes it). Never printed.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct CookiesField(serde_json::Value);

impl std::fmt::Debug for CookiesField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Checks `cookies`, turns them into cookies.txt text and seals them for job `id`.
fn seal_cookies(
    cookies: Option<&CookiesField>,
    url: &url::Url,
    id: Uuid,
    key: Option<&SecretKey>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(CookiesField(value)) = cookies.filter(|c| !c.0.is_null()) else {
        return Ok(None);
    };
    let key = key.ok_or_else(|| {
        ApiError::new(
            ErrorCode::CookiesDisabled,
            "this server takes no cookies: it has no CLIPSTASH_SECRET_KEY to encrypt them with",
        )
    })?;
    let text = cookies::normalise(value, url)
        .map_err(|e| ApiError::new(ErrorCode::InvalidCookies, e.to_string()))?;
    Ok(Some(key.seal(id, &text)))
}

/// Checks a submitted URL: absolute http(s) with a host, no credentials, bounded length,
/// and no host the egress guard refuses without resolving it (an IP literal such as
/// 127.0.0.1 or 169.254.169.254): fast feedback; names are checked when fetched.
pub fn validate_url(raw: &str, egress: &EgressPolicy) -> Result<url::Url, ApiError> {
    validate_url_field("url", raw, egress)
}

/// [`validate_url`] for the body field `field` (`url`, `callback_url`), named in messages.
pub fn validate_url_field(
    field: &str,
    raw: &str,
    egress: &EgressPolicy,
) -> Result<url::Url, ApiError> {
    let invalid = |msg: &str| ApiError::new(ErrorCode::InvalidUrl, format!("{field} {msg}"));
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(&format!("is longer than {MAX_URL_LEN} characters")));
    }
    // As written, a URI (RFC 3986): no spaces or characters such as `"<>\^{|}` unencoded.
    // The URL parser would quietly percent-encode them; the contract says `format: uri`.
    if let Some(c) = raw.chars().find(|c| !is_uri_char(*c)) {
        return Err(invalid(&format!(
            "contains {c:?}, which a URI must percent-encode"
        )));
    }
    if !percent_escapes_are_valid(raw) {
        return Err(invalid("has a % not followed by two hex digits"));
    }
    // After the authority, `[` and `]` are not URI characters, and `#` starts the one fragment.
    let rest = raw.split_once("://").map_or(raw, |(_, r)| r);
    let rest = rest.find(['/', '?', '#']).map_or("", |i| &rest[i..]);
    if rest.contains(['[', ']']) || rest.matches('#').count() > 1 {
        return Err(invalid(
            "is not a URI: '[', ']' or a second '#' after the host must be percent-encoded",
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|e| invalid(&format!("is not a valid absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    if let Some(url::Host::Domain(name)) = url.host()
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(invalid(
            "host must be a DNS name (letters, digits, '-', '_' and dots) or an IP address",
        ));
    }
    egress
        .check_url(&url)
        .map_err(|f| ApiError::new(ErrorCode::ForbiddenAddress, format!("{field}: {f}")))?;
    Ok(url)
}

/// Characters a URI (RFC 3986) may hold as they are: unreserved, reserved and `%`.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// Every `%` starts a `%XX` escape.
fn percent_escapes_are_valid(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Checks `callback_url`: a URL like `url`, from a caller whose key can sign webhooks.
fn validate_callback(
    raw: Option<&str>,
    caller: &Caller,
    egress: &EgressPolicy,
) -> Result<Option<url::Url>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let url = validate_url_field("callback_url", raw, egress)?;
    match caller {
        Caller::Key(k) if k.has_webhook_secret => Ok(Some(url)),
        Caller::Key(_) => Err(ApiError::new(
            ErrorCode::WebhookSecretMissing,
            "this API key has no webhook signing secret; give it one with `clipstash-api keys rotate-webhook-secret NAME`",
        )),
        Caller::Anonymous => Err(ApiError::new(
            ErrorCode::WebhookSecretMissing,
            "callbacks are signed with the API key's secret, and auth is off (CLIPSTASH_AUTH=off)",
        )),
    }
}

/// Name of the header that makes a submit idempotent.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Reads `Idempotency-Key`: absent, or one value of 1-255 visible ASCII characters.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |msg: &str| ApiError::new(ErrorCode::InvalidIdempotencyKey, msg);
    if values.next().is_some() {
        return Err(invalid("send Idempotency-Key once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid(&format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        )));
    }
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "Idempotency-Key must be visible ASCII characters (no spaces or controls)",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 (hex) of the canonical form of a submit: the normalised URL in a fixed JSON
/// shape, so whitespace, key order or an equivalent spelling of the URL do not count as
/// another body. Cookies count only as present or not: a hash of secrets is not stored.
fn request_sha256(url: &url::Url, job: &NewJob<'_>) -> String {
    use sha2::Digest;
    let mut canonical = serde_json::json!({ "url": url.as_str() });
    // Defaults add nothing, so a plain `{url}` hashes as it always did.
    if job.requested != RequestedSource::Auto {
        canonical["source"] = job.requested.as_str().into();
    }
    if let Some(f) = job.format {
        canonical["format"] = f.into();
    }
    if let Some(h) = job.max_height {
        canonical["max_height"] = h.into();
    }
    if let Some(c) = job.callback_url {
        canonical["callback_url"] = c.into();
    }
    if job.cookies_sealed.is_some() {
        canonical["cookies"] = true.into();
    }
    let canonical = canonical.to_string();
    hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Suggested wait before submitting again when a key is at its active-jobs cap.
const ACTIVE_JOBS_RETRY_AFTER_SECS: u32 = 10;

/// `POST /v1/downloads`: records a job and enqueues it.
///
/// With `Idempotency-Key`, a repeat of the same body by the same caller
/// answers the job the first request created (200 instead of 202, with
/// `Idempotent-Replayed: true`), even when the key is at its active-jobs cap; the same key with
/// another body is refused (422 `idempotency_key_reused`).
#[utoipa::path(
    post,
    path = "/v1/downloads",
    tag = "downloads",
    params(
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[\x21-\x7E]+$",
            description = "Makes the submit idempotent per API key: a repeat with the same body answers the first job (200, `Idempotent-Replayed: true`); another body is refused (422 `idempotency_key_reused`). 1-255 visible ASCII characters, sent once."),
    ),
    request_body(content = CreateDownload, content_type = "application/json", description = "At most 96 KiB."),
    responses(
        (status = 202, description = "Recorded and enqueued.", body = JobView,
            headers(("Location" = String, description = "`/v1/downloads/{id}`"))),
        (status = 200, description = "A replay of an earlier submit with the same `Idempotency-Key` and body: the job it created.", body = JobView,
            headers(("Location" = String, description = "`/v1/downloads/{id}`"),
                    ("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "`invalid_json` (malformed body) or `invalid_idempotency_key`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 96 KiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_request` (wrong fields), `invalid_url` (`url` or `callback_url`), `forbidden_address` (an IP literal the egress guard refuses, in either), `invalid_format`, `invalid_max_height`, `webhook_secret_missing` (a `callback_url` from a key without a webhook secret), `idempotency_key_reused`, `invalid_cookies` or `cookies_disabled` (cookies sent to a server without `CLIPSTASH_SECRET_KEY`).", body = ErrorBody),
        (status = 503, description = "`database_unavailable` or `queue_unavailable` (the job is then marked failed).", body = ErrorBody),
    ),
)]
pub async fn create_download(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<CreateDownload>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(&req)?;
    let url = validate_url(&body.url, &state.egress)?;
    let callback = validate_callback(body.callback_url.as_deref(), &caller, &state.egress)?;
    let format = body.format.as_deref().map(validate_format).transpose()?;
    let max_height = body.max_height.map(validate_max_height).transpose()?;
    let id = Uuid::now_v7();
    let requested = body.source.unwrap_or(RequestedSource::Auto);
    let source = match requested {
        RequestedSource::Direct => VideoSource::Direct,
        RequestedSource::Auto => state.ytdlp_hosts.route(&url),
        RequestedSource::Ytdlp => match state.ytdlp_hosts.route(&url) {
            VideoSource::Youtube => VideoSource::Youtube,
            _ => VideoSource::Ytdlp,
        },
    };
    let sealed = seal_cookies(body.cookies.as_ref(), &url, id, state.secret_key.as_ref())?;
    let new_job = NewJob {
        id,
        url: url.as_str(),
        source,
        requested,
        format: format.as_deref(),
        max_height,
        cookies_sealed: sealed.as_deref(),
        callback_url: callback.as_ref().map(url::Url::as_str),
    };
    let owner = match &caller {
        Caller::Anonymous => None,
        Caller::Key(key) => Some((key.id, key.max_active_jobs)),
    };
    let cap = owner.map_or(0, |(_, cap)| cap);
    let hash = idempotency.as_ref().map(|_| request_sha256(&url, &new_job));
    let key = idempotency
        .as_deref()
        .zip(hash.as_deref())
        .map(|(key, hash)| IdempotencyKey {
            key,
            request_sha256: hash,
        });
    let owner = owner.map(|(id, cap)| (id, i64::from(cap)));
    // Every submit is batched; a new job comes back with its batch's enqueue done (or its
    // error): the API's inserter always has that after-commit stage.
    let (job, enqueued) = match state
        .inserter
        .submit(&new_job, owner, key)
        .await
        .map_err(ApiError::database)?
    {
        Written::Created(committed) => {
            let enqueued = match committed.after {
                Some(pushed) => pushed.map_err(|e| anyhow::anyhow!("{e:#}")),
                None => Err(anyhow::anyhow!("the inserter has no enqueue stage")),
            };
            (committed.row, enqueued)
        }
        Written::Replayed(job) => {
            // Enqueued by the request that created it (or marked failed if that push failed);
            // the sweeper covers a crash in between.
            return Ok(HttpResponse::Ok()
                .insert_header((LOCATION, format!("/v1/downloads/{}", job.id)))
                .insert_header(("Idempotent-Replayed", "true"))
                .json(JobView::from(job)));
        }
        Written::KeyReused => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different request body",
            ));
        }
        Written::AtCap => return Err(too_many_active(cap)),
    };
    if let Err(e) = enqueued {
        // Not enqueued: record that on the job rather than leave it queued forever.
        if let Err(db_err) = transitions::record_failure(
            &state.pool,
            id,
            ErrorCode::QueueUnavailable,
            "could not be enqueued",
            false,
        )
        .await
        {
            tracing::error!(%id, error = ?db_err, "marking an unenqueued job failed");
        }
        return Err(ApiError::dependency(ErrorCode::QueueUnavailable, e));
    }
    metrics::counter!(TASKS_ENQUEUED_TOTAL, "task_name" => Task::ProcessDownload.as_str())
        .increment(1);
    Ok(HttpResponse::Accepted()
        .insert_header((LOCATION, format!("/v1/downloads/{id}")))
        .json(JobView::from(job)))
}

/// The job's queue task: its id is the job's.
fn task_of(job: &JobRow) -> DownloadJob {
    DownloadJob {
        job_id: job.id,
        url: job.url.clone(),
        enqueued_at: job.created_at,
    }
}

/// Debug builds only: the chaos suite's crash between the INSERT and the push.
fn crash_if_marked_after_insert(job: &JobRow) {
    clipstash_runtime::test_hooks::crash_if_marked(
        clipstash_runtime::test_hooks::CRASH_AFTER_INSERT,
        &job.url,
    );
}

/// The batched submits' after-commit stage: every committed job of a batch enqueued with
/// one script, before any of them is answered (so the 202 still means "recorded and
/// enqueued"). Its error reaches each submit, which marks its job failed as a lone push's
/// error does.
pub fn enqueue_committed(queue: clipstash_queue::Queue) -> AfterCommit {
    Arc::new(move |rows: Vec<JobRow>| {
        let queue = queue.clone();
        Box::pin(async move {
            rows.iter().for_each(crash_if_marked_after_insert);
            let tasks: Vec<DownloadJob> = rows.iter().map(task_of).collect();
            queue.push_many(&tasks).await
        })
    })
}

/// The key already has `cap` jobs queued, running or retrying.
fn too_many_active(cap: u32) -> ApiError {
    let value = |s: String| HeaderValue::from_str(&s).expect("ascii");
    ApiError::new(
        ErrorCode::TooManyActiveJobs,
        format!(
            "this key already has {cap} jobs queued, running or retrying; wait for one to end or cancel one"
        ),
    )
    .with_header(RETRY_AFTER, HeaderValue::from(ACTIVE_JOBS_RETRY_AFTER_SECS))
    .with_header(
        RATELIMIT_POLICY.clone(),
        value(format!("\"active-jobs\";q={cap}")),
    )
    .with_header(
        RATELIMIT.clone(),
        value(format!(
            "\"active-jobs\";r=0;t={ACTIVE_JOBS_RETRY_AFTER_SECS}"
        )),
    )
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::new(ErrorCode::InvalidId, "job id must be a UUID"))
}

pub(crate) fn not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no job {id}"))
}

/// `GET /v1/downloads/{id}`: one job of the caller's key.
#[utoipa::path(
    get,
    path = "/v1/downloads/{id}",
    tag = "downloads",
    params(("id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job; while it runs, with its `progress`.", body = JobView),
        (status = 400, description = "`invalid_id`: not a UUID.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this key.", body = ErrorBody),
    ),
)]
pub async fn get_download(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let job = jobs::get_job_of(&state.pool, id, caller.owner())
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(with_progress(job, &state).await))
}

/// The query of `GET /v1/downloads`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status (omit for any).
    #[param(value_type = Option<JobStatusSchema>)]
    pub status: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (omit for the first page).
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/downloads`: the caller's jobs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/downloads",
    tag = "downloads",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs.", body = JobPage),
        (status = 400, description = "`invalid_query` (bad `status` or `limit`) or `invalid_cursor`.", body = ErrorBody),
    ),
)]
pub async fn list_downloads(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let bad = ApiError::new;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<JobStatus>().map_err(|_| {
            let all: Vec<_> = JobStatus::VARIANTS.iter().map(|s| s.as_str()).collect();
            bad(
                ErrorCode::InvalidQuery,
                format!("status must be one of {}", all.join(", ")),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
            bad(
                ErrorCode::InvalidCursor,
                "cursor is not one we issued".into(),
            )
        })?),
    };
    let rows = jobs::list_jobs(
        &state.pool,
        caller.owner(),
        status,
        before,
        i64::from(limit),
    )
    .await
    .map_err(ApiError::database)?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(JobPage {
        items: rows.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// `DELETE /v1/downloads/{id}`: cancels a queued, retrying or running job, or deletes a
/// succeeded job's stored object; answers the job as it now is (repeating it changes nothing).
///
/// A running job's worker stops the download within a second of the cancel and discards the
/// partial upload: nothing is stored or counted.
#[utoipa::path(
    delete,
    path = "/v1/downloads/{id}",
    tag = "downloads",
    params(("id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job after the cancel or delete (unchanged if already done).", body = JobView),
        (status = 400, description = "`invalid_id`: not a UUID.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this key.", body = ErrorBody),
    ),
)]
pub async fn delete_download(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    match transitions::delete_job_of(&state.pool, id, caller.owner())
        .await
        .map_err(ApiError::database)?
    {
        DeleteOutcome::NotFound => Err(not_found(id)),
        DeleteOutcome::Cancelled { job, was } => {
            // The row is the cancel; the message only makes the worker notice at once (it
            // also checks the rows of its jobs every few seconds).
            if was != JobStatus::Queued {
                state.live.publisher.cancel(id);
            }
            state.live.publisher.state(id, JobStatus::Cancelled);
            Ok(HttpResponse::Ok().json(JobView::from(job)))
        }
        DeleteOutcome::Unchanged(job) => Ok(HttpResponse::Ok().json(JobView::from(job))),
        DeleteOutcome::ObjectReleased {
            job,
            provider,
            object_key,
        } => {
            // The accounting is committed first: a failed delete leaves an orphan object
            // (logged), never usage that counts bytes no job owns.
            match state.storage.provider(&provider) {
                Some(p) => {
                    if let Err(e) = p.delete(&object_key).await {
                        tracing::error!(%id, provider, object_key, error = %e, "deleting a released object; it is an orphan until `storage reconcile --fix`");
                    }
                }
                None => {
                    tracing::warn!(%id, provider, "object is on a provider this API is not configured for")
                }
            }
            if let Ok(usage) = storage_usage(&state.pool).await {
                gauges::set_storage(&usage);
            }
            Ok(HttpResponse::Ok().json(JobView::from(job)))
        }
    }
}
