//! The job view: the JSON `GET /v1/downloads/{id}` answers and webhooks deliver, in one
//! place so the API and the workers' webhook deliveries cannot differ, with its OpenAPI
//! schema (and the schemas of the domain enums it holds).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use clipstash_domain::{ErrorCode, JobStatus, Progress, RequestedSource, VideoSource};
use serde::{Deserialize, Serialize};
use strum::VariantArray;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::JobRow;

/// A string enum schema listing every variant of a domain enum (from its `VARIANTS`), so a
/// new code or status shows up in the contract without anyone editing it.
macro_rules! string_enum_schema {
    ($ty:ty, $description:literal) => {
        impl PartialSchema for SchemaOf<$ty> {
            fn schema() -> RefOr<Schema> {
                let values: Vec<&'static str> =
                    <$ty>::VARIANTS.iter().map(|v| v.as_str()).collect();
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .description(Some($description))
                    .enum_values(Some(values))
                    .into()
            }
        }
        impl ToSchema for SchemaOf<$ty> {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

/// The schema of a domain type that does not depend on utoipa (`clipstash-domain`).
pub struct SchemaOf<T>(std::marker::PhantomData<T>);

/// `ErrorCode`'s schema.
pub type ErrorCodeSchema = SchemaOf<ErrorCode>;
/// `JobStatus`'s schema.
pub type JobStatusSchema = SchemaOf<JobStatus>;
/// `VideoSource`'s schema.
pub type VideoSourceSchema = SchemaOf<VideoSource>;
/// `RequestedSource`'s schema.
pub type RequestedSourceSchema = SchemaOf<RequestedSource>;

string_enum_schema!(
    ErrorCode,
    "A stable, machine-readable error code: new codes may be added, none is ever renamed."
);
string_enum_schema!(JobStatus, "Where a job is in its lifecycle.");
string_enum_schema!(
    VideoSource,
    "The source that runs a job: `direct` (an HTTP media link), `youtube` or `ytdlp` (yt-dlp, for YouTube or any other site)."
);
string_enum_schema!(
    RequestedSource,
    "The source a submit asks for: `auto` (by host, and a direct link that is a web page goes to yt-dlp), `direct` or `ytdlp`."
);

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub url: String,
    #[schema(value_type = JobStatusSchema)]
    pub status: JobStatus,
    pub attempts: i32,
    /// The source that runs (or ran) the job: planned at submit, `ytdlp` once a direct link
    /// turned out to be a web page handed to yt-dlp.
    #[schema(value_type = VideoSourceSchema)]
    pub source: VideoSource,
    /// The source the submit asked for.
    #[schema(value_type = RequestedSourceSchema)]
    pub requested_source: RequestedSource,
    /// The yt-dlp format selector the submit gave.
    pub format: Option<String>,
    /// The tallest video the submit asked for.
    pub max_height: Option<i32>,
    /// yt-dlp's extractor (`youtube`, `generic`, ...), once yt-dlp has run.
    pub extractor: Option<String>,
    /// The site's id of the video, once yt-dlp has run.
    pub video_id: Option<String>,
    /// The video's title, once yt-dlp has run.
    pub title: Option<String>,
    pub provider: Option<String>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error: Option<JobErrorView>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the stored object was deleted through `DELETE`.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Where the job's end is POSTed (signed), if the submit asked for it.
    pub callback_url: Option<String>,
    /// How far the running attempt has got; null unless the job is running (and in lists).
    pub progress: Option<ProgressView>,
}

/// How far a running attempt has got, measured on the media stream whatever the source;
/// updated a few times a second.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ProgressView {
    /// Bytes received so far in this attempt.
    pub bytes_done: u64,
    /// The length the source announced; null if it did not.
    pub bytes_total: Option<u64>,
    /// Bytes per second over the last few seconds.
    pub speed_bps: u64,
    /// Seconds left at that speed; null without a total or while nothing moves.
    pub eta_s: Option<u64>,
}

impl From<Progress> for ProgressView {
    fn from(p: Progress) -> Self {
        ProgressView {
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            speed_bps: p.speed_bps,
            eta_s: p.eta_s,
        }
    }
}

/// Why the job's last attempt failed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobErrorView {
    #[schema(value_type = ErrorCodeSchema)]
    pub code: ErrorCode,
    pub message: String,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        let status = r.status;
        let error = r.error_code.map(|code| JobErrorView {
            code,
            message: r.error_message.unwrap_or_default(),
        });
        JobView {
            id: r.id,
            url: r.url,
            status,
            attempts: r.attempts,
            source: r.source,
            requested_source: r.requested_source,
            format: r.format,
            max_height: r.max_height,
            extractor: r.extractor,
            video_id: r.video_id,
            title: r.title,
            provider: r.provider,
            object_key: r.object_key,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            content_type: r.content_type,
            // A retrying job shows its last error; a succeeded one never does.
            error: if status == JobStatus::Succeeded {
                None
            } else {
                error
            },
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            deleted_at: r.deleted_at,
            callback_url: r.callback_url,
            progress: None,
        }
    }
}
