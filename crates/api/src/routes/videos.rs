//! `GET /v1/videos/info`: what yt-dlp knows about a video (the original's
//! `youtube_service.get_video_info`), from `yt-dlp -J` run in the API with a concurrency
//! limit and a timeout, cached briefly in Redis.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use clipstash_domain::ErrorCode;
use clipstash_sources::Ytdlp;
use clipstash_sources::ytdlp::VideoInfo;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use tokio::sync::Semaphore;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::routes::downloads::validate_url;

/// Largest `-J` document read (YouTube's run to a few MiB with every format's details).
const MAX_JSON: usize = 16 * 1024 * 1024;

/// Settings of `GET /v1/videos/info`.
#[derive(Debug, Clone, clap::Args)]
pub struct VideoInfoArgs {
    /// Wall-clock limit of one yt-dlp info run (and of the wait for a free slot).
    #[arg(long, env = "CLIPSTASH_VIDEO_INFO_TIMEOUT", value_name = "CLIPSTASH_VIDEO_INFO_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub video_info_timeout: Duration,

    /// yt-dlp info runs at once in this API process (each is a Python process of ~60 MB).
    #[arg(long, env = "CLIPSTASH_VIDEO_INFO_CONCURRENCY", value_name = "CLIPSTASH_VIDEO_INFO_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub video_info_concurrency: u32,

    /// How long an answer is cached in Redis, per URL; 0s turns the cache off.
    #[arg(long, env = "CLIPSTASH_VIDEO_INFO_CACHE_TTL", value_name = "CLIPSTASH_VIDEO_INFO_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub video_info_cache_ttl: Duration,
}

/// yt-dlp, its slots and its cache.
pub struct VideoInfoService {
    ytdlp: Option<Ytdlp>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    cache: ConnectionManager,
    cache_ttl: Duration,
    prefix: String,
}

impl VideoInfoService {
    pub fn new(
        ytdlp: Option<Ytdlp>,
        args: &VideoInfoArgs,
        cache: ConnectionManager,
        queue_prefix: &str,
    ) -> Self {
        Self {
            ytdlp,
            slots: Arc::new(Semaphore::new(args.video_info_concurrency as usize)),
            timeout: args.video_info_timeout,
            cache,
            cache_ttl: args.video_info_cache_ttl,
            prefix: format!("{queue_prefix}:videoinfo:"),
        }
    }

    /// The cache key of `url`: a hash, so no URL (with its tokens) is a Redis key.
    fn key(&self, url: &str) -> String {
        use sha2::Digest;
        format!(
            "{}{}",
            self.prefix,
            hex::encode(sha2::Sha256::digest(url.as_bytes()))
        )
    }

    async fn cached(&self, key: &str) -> Option<VideoInfo> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let mut conn = self.cache.clone();
        match conn.get::<_, Option<String>>(key).await {
            Ok(Some(json)) => serde_json::from_str(&json).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the video info cache");
                None
            }
        }
    }

    async fn store(&self, key: &str, info: &VideoInfo) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let Ok(json) = serde_json::to_string(info) else {
            return;
        };
        let mut conn = self.cache.clone();
        let ttl = self.cache_ttl.as_secs().max(1);
        if let Err(e) = conn.set_ex::<_, _, ()>(key, json, ttl).await {
            tracing::warn!(error = %e, "writing the video info cache");
        }
    }
}

/// The query of `GET /v1/videos/info`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InfoQuery {
    /// The video's page (or media) URL: absolute http(s), at most 2048 characters.
    #[param(min_length = 1, max_length = 2048, format = Uri, pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*(?::[1-9][0-9]{0,3})?(?:/(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|/)*)?(?:\?(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?(?:#(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2}|[/?])*)?$", example = "https://www.youtube.com/shorts/VIDEO_ID")]
    pub url: String,
}

/// `GET /v1/videos/info?url=...`: the video's metadata and formats.
#[utoipa::path(
    get,
    path = "/v1/videos/info",
    tag = "videos",
    params(InfoQuery),
    responses(
        (status = 200, description = "What yt-dlp found (cached per URL for `CLIPSTASH_VIDEO_INFO_CACHE_TTL`).", body = VideoInfo),
        (status = 400, description = "`invalid_query`: no `url`.", body = ErrorBody),
        (status = 403, description = "`private_video`, `age_restricted` or `login_required`.", body = ErrorBody),
        (status = 404, description = "`video_unavailable` or `source_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_url`, `forbidden_address`, `unsupported_url` or `format_unavailable`.", body = ErrorBody),
        (status = 451, description = "`geo_blocked`.", body = ErrorBody),
        (status = 502, description = "`ytdlp_failed`, `connection_failed`, `source_client_error`, `source_server_error`.", body = ErrorBody),
        (status = 503, description = "`ytdlp_unavailable` (this API runs without yt-dlp) or `source_rate_limited`.", body = ErrorBody),
        (status = 504, description = "`timeout`: yt-dlp (or a free slot) took longer than `CLIPSTASH_VIDEO_INFO_TIMEOUT`.", body = ErrorBody),
    ),
)]
pub async fn video_info(
    state: web::Data<AppState>,
    query: web::Query<InfoQuery>,
) -> Result<HttpResponse, ApiError> {
    let url = validate_url(&query.url, &state.egress)?;
    let svc = &state.video_info;
    let ytdlp = svc.ytdlp.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::YtdlpUnavailable,
            "this API runs without yt-dlp (CLIPSTASH_YTDLP=off)",
        )
    })?;
    let key = svc.key(url.as_str());
    if let Some(view) = svc.cached(&key).await {
        return Ok(HttpResponse::Ok().json(view));
    }
    let _slot = tokio::time::timeout(svc.timeout, svc.slots.acquire())
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Timeout,
                "too many video info requests at once; try again",
            )
        })?
        .map_err(|e| ApiError::from(anyhow::anyhow!("video info slots closed: {e}")))?;
    let info = ytdlp
        .info(url.as_str(), MAX_JSON)
        .await
        .map_err(|e| ApiError::new(e.code, e.message))?;
    svc.store(&key, &info).await;
    Ok(HttpResponse::Ok().json(info))
}
