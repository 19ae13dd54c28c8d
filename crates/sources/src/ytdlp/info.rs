//! What yt-dlp tells about a video: the `CLIPSTASH_INFO` line of a download (the chosen
//! format) and the `-J` document of `GET /v1/videos/info`.

use serde::{Deserialize, Serialize};

/// The format a download chose, from the `CLIPSTASH_INFO` line printed before it starts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Chosen {
    pub id: Option<String>,
    pub title: Option<String>,
    pub ext: Option<String>,
    /// yt-dlp's extractor name (`youtube`, `generic`, `html5`, ...).
    pub extractor: Option<String>,
    /// The extractor's key (`Youtube`, `Generic`, ...): what the job's `source` follows.
    pub extractor_key: Option<String>,
    /// Exact size when the site announces it (YouTube does for most formats).
    pub filesize: Option<u64>,
    pub format_id: Option<String>,
    /// Set when the format is several merged into one (`bv+ba`): not streamable.
    pub requested_formats: Option<serde_json::Value>,
}

/// The fields the `CLIPSTASH_INFO` template prints (missing ones are left out by yt-dlp).
pub const CHOSEN_FIELDS: &str =
    "id,title,ext,extractor,extractor_key,filesize,format_id,requested_formats";

/// A video as yt-dlp sees it: what `GET /v1/videos/info` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = VideoInfoView))]
pub struct VideoInfo {
    /// The site's id of the video.
    pub id: String,
    pub title: Option<String>,
    pub duration_s: Option<f64>,
    pub uploader: Option<String>,
    pub thumbnail: Option<String>,
    pub webpage_url: Option<String>,
    /// yt-dlp's extractor (`youtube`, `generic`, `html5`, ...).
    pub extractor: Option<String>,
    pub formats: Vec<FormatInfo>,
}

/// One format the video is offered in; its `format_id` can be a submit's `format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FormatView))]
pub struct FormatInfo {
    pub format_id: String,
    pub ext: Option<String>,
    pub height: Option<u32>,
    /// `none` for an audio-only format; null when unknown.
    pub vcodec: Option<String>,
    /// `none` for a video-only format; null when unknown.
    pub acodec: Option<String>,
    /// Exact size in bytes, when the site announces it.
    pub filesize: Option<u64>,
}

/// The part of yt-dlp's `-J` document we read.
#[derive(Debug, Deserialize)]
struct Dump {
    #[serde(rename = "_type")]
    kind: Option<String>,
    id: Option<String>,
    title: Option<String>,
    duration: Option<f64>,
    uploader: Option<String>,
    thumbnail: Option<String>,
    webpage_url: Option<String>,
    extractor: Option<String>,
    #[serde(default)]
    formats: Vec<DumpFormat>,
}

#[derive(Debug, Deserialize)]
struct DumpFormat {
    format_id: Option<String>,
    ext: Option<String>,
    height: Option<f64>,
    vcodec: Option<String>,
    acodec: Option<String>,
    filesize: Option<f64>,
}

/// Parses a `-J` document; `Err` says what is wrong with it.
pub fn parse_dump(json: &[u8]) -> Result<VideoInfo, String> {
    let d: Dump = serde_json::from_slice(json).map_err(|e| format!("unreadable -J output: {e}"))?;
    if d.kind.as_deref().is_some_and(|k| k != "video") {
        return Err(format!(
            "the URL is a {}, not a single video",
            d.kind.unwrap_or_default()
        ));
    }
    Ok(VideoInfo {
        id: d.id.unwrap_or_default(),
        title: d.title,
        duration_s: d.duration,
        uploader: d.uploader,
        thumbnail: d.thumbnail,
        webpage_url: d.webpage_url,
        extractor: d.extractor,
        formats: d
            .formats
            .into_iter()
            .filter_map(|f| {
                Some(FormatInfo {
                    format_id: f.format_id?,
                    ext: f.ext,
                    height: f.height.filter(|h| *h > 0.0).map(|h| h as u32),
                    vcodec: f.vcodec,
                    acodec: f.acodec,
                    filesize: f.filesize.filter(|s| *s >= 0.0).map(|s| s as u64),
                })
            })
            .collect(),
    })
}

/// The MIME type of a file yt-dlp writes with extension `ext`.
pub fn content_type_of(ext: Option<&str>) -> &'static str {
    match ext.unwrap_or("").to_ascii_lowercase().as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "flv" => "video/x-flv",
        "3gp" => "video/3gpp",
        "ts" => "video/mp2t",
        "avi" => "video/x-msvideo",
        "m4a" => "audio/mp4",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_fields_are_read_and_playlists_refused() {
        let json = br#"{"_type":"video","id":"page-1","title":"My page (1)","duration":null,
            "extractor":"html5","webpage_url":"http://127.0.0.1:1/page.html",
            "formats":[{"format_id":"0","ext":"mp4","height":null,"vcodec":null,"acodec":null,"filesize":null,"url":"x"},
                       {"format_id":"18","ext":"mp4","height":360,"vcodec":"avc1","acodec":"mp4a","filesize":1234}]}"#;
        let info = parse_dump(json).unwrap();
        assert_eq!(info.id, "page-1");
        assert_eq!(info.extractor.as_deref(), Some("html5"));
        assert_eq!(info.formats.len(), 2);
        assert_eq!(info.formats[1].height, Some(360));
        assert_eq!(info.formats[1].filesize, Some(1234));
        assert!(parse_dump(br#"{"_type":"playlist","id":"x","entries":[]}"#).is_err());
        assert!(parse_dump(b"not json").is_err());
        assert_eq!(content_type_of(Some("MP4")), "video/mp4");
        assert_eq!(content_type_of(None), "application/octet-stream");
    }
}
