//! The values behind bounded metric labels. The original plan's label `provider` means the
//! video source on `downloads_total` and the storage backend on `storage_*`; the names are
//! kept, and each meaning gets its own type so the two cannot be mixed up in code: a
//! [`metrics_core::Tracker`] of a [`VideoSource`] records downloads, one of a
//! [`StorageProvider`] records uploads.

use std::sync::Arc;

use metrics::SharedString;
use metrics_core::trackers::{DOWNLOADS, Family, SOURCE_CALLS, Tracked};

/// Where a URL's media comes from: the `provider` label of `downloads_total` and the
/// `source` of a job.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "lowercase"))]
pub enum VideoSource {
    /// A direct media link fetched over HTTP.
    Direct,
    /// YouTube, through yt-dlp (its extractor is one of yt-dlp's `Youtube*`).
    Youtube,
    /// Any other site, through yt-dlp (a site extractor or its generic one).
    Ytdlp,
}

impl VideoSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether yt-dlp runs this source.
    pub fn uses_ytdlp(self) -> bool {
        matches!(self, VideoSource::Youtube | VideoSource::Ytdlp)
    }

    /// The source a yt-dlp run is counted as, from its extractor key (`Youtube`,
    /// `YoutubeTab`, `Generic`, `Vimeo`, ...).
    pub fn for_extractor(extractor_key: &str) -> Self {
        if extractor_key.starts_with("Youtube") {
            VideoSource::Youtube
        } else {
            VideoSource::Ytdlp
        }
    }
}

/// The source a submit asked for: `auto` routes by host (and falls back from a direct link
/// that answers with a web page to yt-dlp), the others force one.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "lowercase"))]
pub enum RequestedSource {
    #[default]
    Auto,
    Direct,
    Ytdlp,
}

impl RequestedSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Tracked for VideoSource {
    const FAMILY: &'static Family = &DOWNLOADS;
    fn label_value(&self) -> SharedString {
        self.as_str().into()
    }
}

/// A configured storage provider's name: the `provider` label of `storage_*` and the
/// `provider` column of stored files. Bounded by configuration, never user input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageProvider(Arc<str>);

impl serde::Serialize for StorageProvider {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl StorageProvider {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StorageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Tracked for StorageProvider {
    const FAMILY: &'static Family = &metrics_core::trackers::UPLOADS;
    fn label_value(&self) -> SharedString {
        self.0.to_string().into()
    }
}

/// A call to a video source's API: the `operation` label of `youtube_api_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum SourceOperation {
    /// A yt-dlp download run, until its media starts to flow.
    DownloadVideo,
    /// A yt-dlp metadata run (`-J`) for `GET /v1/videos/info`.
    GetVideoInfo,
}

impl Tracked for SourceOperation {
    const FAMILY: &'static Family = &SOURCE_CALLS;
    fn label_value(&self) -> SharedString {
        <&'static str>::from(*self).into()
    }
}
