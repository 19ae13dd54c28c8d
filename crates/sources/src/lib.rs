//! Video sources: each turns a URL into a [`Media`] stream for the storage ingest pipeline.
//! One module per source kind ([`direct`] links, [`ytdlp`] for YouTube and other sites);
//! the egress guard every fetch goes through in [`egress`] (its proxy for programs that
//! connect on their own); a download's cookies, sealed at rest, in [`cookies`].

pub mod cookies;
pub mod direct;
pub mod egress;
pub mod ytdlp;

use std::future::Future;

use clipstash_domain::{JobError, Media, VideoSource};

pub use cookies::{SecretArgs, SecretKey};
pub use direct::{DirectHttp, FetchLimits, Fetched};
pub use egress::{EgressPolicy, EgressProxy, NetworkArgs, ProxyLimits};
pub use ytdlp::{DownloadOptions, Ytdlp, YtdlpArgs, YtdlpLimits, YtdlpProgram};

/// A kind of video source.
pub trait Source {
    /// The `source` of a job and the `provider` label of `downloads_total`.
    fn kind(&self) -> VideoSource;

    /// Opens the media behind `url`. Errors carry their stable code and retry class.
    fn open(&self, url: &str) -> impl Future<Output = Result<Media, JobError>> + Send;
}
