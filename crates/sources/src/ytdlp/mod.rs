//! Videos from YouTube and the other sites yt-dlp understands, through the pinned yt-dlp
//! (`deploy/ytdlp/`) run as a supervised subprocess ([`process`]).
//!
//! A download streams: yt-dlp writes the chosen single-file format to stdout (`-o -`) and
//! the bytes flow through the same ingest pipeline (size cap, SHA-256, multipart upload) as
//! a direct link, with no temp file. Its stderr carries a `CLIPSTASH_INFO` line once a
//! format is chosen, `CLIPSTASH_PROGRESS` JSON lines, and `ERROR:` lines the classifier
//! ([`classify`]) turns into stable codes. Each run has its own process group and temp dir;
//! dropping the returned media (cancel, timeout, size cap, shutdown) kills the group and
//! removes the dir.
//!
//! Merged formats (`bv+ba`) need ffmpeg and a file to merge into: they are refused at
//! submit (`invalid_format`), and the default selector picks the best single file (`b`).

pub mod classify;
pub mod info;
pub mod process;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clipstash_domain::{ErrorCode, JobError, Media, SourceOperation, VideoSource};
use futures_util::StreamExt;
use metrics_core::Tracker;
use tokio::io::AsyncReadExt;

use crate::Source;
use crate::egress::{EgressPolicy, EgressProxy, Forbidden, ProxyLimits};
pub use info::{Chosen, FormatInfo, VideoInfo};
pub use process::{Guard, JobDir};

/// Hosts `source: auto` sends to yt-dlp by default: YouTube's, and a handful of popular
/// video sites with yt-dlp extractors. An entry matches the host and its subdomains.
pub const DEFAULT_HOSTS: &str = "youtube.com,youtu.be,youtube-nocookie.com,vimeo.com,\
dailymotion.com,dai.ly,twitch.tv,tiktok.com,instagram.com,x.com,twitter.com,facebook.com,\
fb.watch,reddit.com,v.redd.it,streamable.com,soundcloud.com,bilibili.com";

/// YouTube's hosts: a yt-dlp job for one of them is planned as source `youtube`.
const YOUTUBE_HOSTS: &[&str] = &["youtube.com", "youtu.be", "youtube-nocookie.com"];

/// yt-dlp settings of both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct YtdlpArgs {
    /// The yt-dlp to run: a path, a name on PATH, or `off` (jobs that need yt-dlp then fail
    /// with ytdlp_unavailable, and video info answers 503). Checked at start-up with
    /// `--version`: a missing or broken yt-dlp stops the process. `deploy/ytdlp/ensure.sh`
    /// installs the pinned one (just up and just test do).
    #[arg(long = "ytdlp", env = "CLIPSTASH_YTDLP", value_name = "CLIPSTASH_YTDLP", default_value = "yt-dlp", value_parser = parse_program)]
    pub ytdlp: YtdlpProgram,

    /// Hosts whose URLs `source: auto` sends to yt-dlp (comma-separated; an entry matches
    /// the host and its subdomains). Other URLs are fetched directly, and handed to yt-dlp
    /// when they answer with a web page.
    #[arg(long, env = "CLIPSTASH_YTDLP_HOSTS", value_name = "CLIPSTASH_YTDLP_HOSTS", default_value = DEFAULT_HOSTS, value_parser = parse_hosts)]
    pub ytdlp_hosts: YtdlpHosts,
}

/// `CLIPSTASH_YTDLP`: a program, or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YtdlpProgram {
    Off,
    Program(PathBuf),
}

fn parse_program(s: &str) -> Result<YtdlpProgram, String> {
    match s.trim() {
        "" => Err("empty: give a path to yt-dlp, or off".into()),
        "off" => Ok(YtdlpProgram::Off),
        p => Ok(YtdlpProgram::Program(PathBuf::from(p))),
    }
}

/// The hosts `auto` routes to yt-dlp, lower-case, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YtdlpHosts(Arc<Vec<String>>);

fn parse_hosts(s: &str) -> Result<YtdlpHosts, String> {
    let mut hosts = Vec::new();
    for h in s.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        if h.contains(['/', ':', ' ', '@']) && !h.starts_with('[') {
            return Err(format!(
                "{h:?} is not a host name (no scheme, port or path)"
            ));
        }
        hosts.push(h);
    }
    Ok(YtdlpHosts(Arc::new(hosts)))
}

impl std::str::FromStr for YtdlpHosts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_hosts(s)
    }
}

impl YtdlpHosts {
    /// The source `auto` plans for `url`: yt-dlp (as `youtube` or `ytdlp`) when its host is
    /// listed, otherwise a direct fetch.
    pub fn route(&self, url: &url::Url) -> VideoSource {
        let Some(host) = url.host_str() else {
            return VideoSource::Direct;
        };
        // Asked on every submit: compared in place, without a lower-cased copy of the host
        // or a `.{entry}` string per entry.
        let host = host.trim_end_matches('.').as_bytes();
        let under = |entry: &str| {
            let entry = entry.as_bytes();
            let Some(start) = host.len().checked_sub(entry.len()) else {
                return false;
            };
            host[start..].eq_ignore_ascii_case(entry) && (start == 0 || host[start - 1] == b'.')
        };
        if !self.0.iter().any(|e| under(e)) {
            VideoSource::Direct
        } else if YOUTUBE_HOSTS.iter().any(|e| under(e)) {
            VideoSource::Youtube
        } else {
            VideoSource::Ytdlp
        }
    }
}

/// Time limits of a yt-dlp run.
#[derive(Debug, Clone)]
pub struct YtdlpLimits {
    /// yt-dlp's own `--socket-timeout` (connect and each read).
    pub socket_timeout: Duration,
    /// Once media flows: longest time without any output (bytes or a line) before the run
    /// is killed as a `timeout`.
    pub idle_timeout: Duration,
    /// Wall-clock limit of the whole run, extraction included.
    pub wall_timeout: Duration,
}

/// What a job asks of yt-dlp (validated by the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadOptions {
    /// A yt-dlp format selector; default `b` (the best single file).
    pub format: Option<String>,
    /// Tallest video wanted (144-4320): filters the default selector, and sorts a given one.
    pub max_height: Option<u32>,
    /// yt-dlp's `--max-filesize`: an early refusal when the size is announced (the ingest
    /// pipeline's count is the real cap).
    pub max_bytes: Option<u64>,
}

/// The configured yt-dlp, probed at start-up; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ytdlp {
    program: PathBuf,
    version: String,
    limits: YtdlpLimits,
    egress: EgressPolicy,
    /// The egress proxy every run goes through (`--proxy`); `None` only in unit tests.
    proxy: Option<Arc<EgressProxy>>,
    temp_root: PathBuf,
}

impl Ytdlp {
    /// Runs `program --version` (30 s at most): a program that is missing, broken or prints
    /// no version is an error naming `CLIPSTASH_YTDLP`.
    pub async fn probe(
        program: &Path,
        limits: YtdlpLimits,
        egress: EgressPolicy,
    ) -> anyhow::Result<Self> {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(program)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "CLIPSTASH_YTDLP={}: `--version` did not answer within 30s",
                program.display()
            )
        })?
        .map_err(|e| {
            anyhow::anyhow!(
                "CLIPSTASH_YTDLP={}: cannot run it ({e}); install the pinned yt-dlp with deploy/ytdlp/ensure.sh and point CLIPSTASH_YTDLP at it, or set CLIPSTASH_YTDLP=off",
                program.display()
            )
        })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let looks_right = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c));
        anyhow::ensure!(
            out.status.success() && looks_right,
            "CLIPSTASH_YTDLP={}: `--version` failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // yt-dlp resolves and connects on its own: it gets no network but through the egress
        // proxy, which applies the guard to every connection. Its timeouts outlast yt-dlp's
        // own, so yt-dlp reports a slow source itself.
        let proxy = EgressProxy::start(
            egress.clone(),
            ProxyLimits {
                connect_timeout: limits.socket_timeout,
                idle_timeout: limits.socket_timeout.max(limits.idle_timeout) * 2,
                ..ProxyLimits::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the egress proxy for yt-dlp: {e}"))?;
        Ok(Self {
            program: program.to_path_buf(),
            version,
            limits,
            egress,
            proxy: Some(Arc::new(proxy)),
            temp_root: std::env::temp_dir(),
        })
    }

    /// What `--version` printed.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A download of `url` with `opts`, ready to be adjusted (proxy, cookies) and opened;
    /// its temp dir exists from here on and goes with it.
    pub fn download(&self, url: &str, opts: &DownloadOptions) -> Result<YtdlpRun, JobError> {
        let dir = JobDir::create(&self.temp_root).map_err(|e| {
            JobError::new(
                ErrorCode::InternalError,
                format!("creating a temp dir: {e}"),
            )
        })?;
        Ok(YtdlpRun {
            ytdlp: self.clone(),
            url: url.to_string(),
            dir,
            extra: Vec::new(),
            format: opts.format.clone(),
            max_height: opts.max_height,
            max_bytes: opts.max_bytes,
            progress: None,
        })
    }

    /// `yt-dlp -J`: the video's metadata and formats, within the wall-clock limit, its
    /// output capped at `max_json` bytes.
    pub async fn info(&self, url: &str, max_json: usize) -> Result<VideoInfo, JobError> {
        check_egress(&self.egress, url).await?;
        let dir = JobDir::create(&self.temp_root).map_err(|e| {
            JobError::new(
                ErrorCode::InternalError,
                format!("creating a temp dir: {e}"),
            )
        })?;
        let mut args = self.base_args();
        args.extend(["-J".into(), "--".into(), url.into()]);
        let call = Tracker::start(&SourceOperation::GetVideoInfo);
        let mut p = process::spawn(&self.program, &args, dir, None)?;
        let deadline = p.started + self.limits.wall_timeout;
        let mut out = Vec::new();
        let read = async {
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = p.stdout.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<bool, std::io::Error>(true);
                }
                if out.len() + n > max_json {
                    return Ok(false);
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        let complete = match tokio::time::timeout_at(deadline.into(), read).await {
            Err(_) => {
                return Err(JobError::new(
                    ErrorCode::Timeout,
                    format!(
                        "yt-dlp gave no answer within {:?}",
                        self.limits.wall_timeout
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(JobError::new(
                    ErrorCode::YtdlpFailed,
                    format!("reading yt-dlp: {e}"),
                ));
            }
            Ok(Ok(c)) => c,
        };
        if !complete {
            return Err(JobError::new(
                ErrorCode::YtdlpFailed,
                format!("yt-dlp's answer is larger than {max_json} bytes"),
            ));
        }
        let status = p.guard.wait(Duration::from_secs(10)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut p.stderr_done).await;
        if status.is_some_and(|s| s.success()) {
            let info = parse_dump_for(&out, url)?;
            call.success();
            Ok(info)
        } else {
            Err(classify::classify(
                &p.seen.lines(),
                status.and_then(|s| s.code()),
                url,
            ))
        }
    }
}

fn parse_dump_for(out: &[u8], url: &str) -> Result<VideoInfo, JobError> {
    info::parse_dump(out).map_err(|e| {
        let code = if e.contains("not a single video") {
            ErrorCode::UnsupportedUrl
        } else {
            ErrorCode::YtdlpFailed
        };
        JobError::new(code, classify::tidy(&e, url))
    })
}

impl Ytdlp {
    /// Options every run gets: the egress proxy, no config files, one video, no colours,
    /// yt-dlp's socket timeout.
    fn base_args(&self) -> Vec<OsString> {
        let mut args = base_args(&self.limits);
        if let Some(proxy) = &self.proxy {
            args.extend(["--proxy".into(), proxy.url().into()]);
        }
        args
    }
}

/// Options every run gets: no config files, one video, no colours, yt-dlp's socket timeout.
fn base_args(limits: &YtdlpLimits) -> Vec<OsString> {
    let socket = limits.socket_timeout.as_secs().max(1);
    ["--ignore-config", "--no-playlist", "--no-colors"]
        .map(OsString::from)
        .into_iter()
        .chain([
            "--socket-timeout".into(),
            socket.to_string().into(),
            "--retries".into(),
            "3".into(),
            "--fragment-retries".into(),
            "5".into(),
            "--extractor-retries".into(),
            "1".into(),
        ])
        .collect()
}

/// Fast feedback before a yt-dlp run: the URL's host (an IP literal, or every address its
/// name resolves to now) must be one the guard allows. Every connection yt-dlp then makes
/// (redirects, URLs found inside pages, fragments) is checked by the egress proxy.
pub async fn check_egress(egress: &EgressPolicy, url: &str) -> Result<(), JobError> {
    if !egress.is_enabled() {
        return Ok(());
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| JobError::new(ErrorCode::InvalidUrl, format!("unparsable URL: {e}")))?;
    let forbidden = |f: Forbidden| JobError::new(ErrorCode::ForbiddenAddress, f.to_string());
    egress.check_url(&parsed).map_err(forbidden)?;
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(0);
        let addrs = tokio::net::lookup_host((name, port)).await.map_err(|e| {
            // glibc's EAI_NONAME / EAI_NODATA: the name does not exist, asking again will not
            // change that; anything else (EAI_AGAIN, a resolver outage) may pass.
            let text = e.to_string();
            let code = if text.contains("Name or service not known")
                || text.contains("No address associated with hostname")
            {
                ErrorCode::HostNotFound
            } else {
                ErrorCode::ConnectionFailed
            };
            JobError::new(code, format!("resolving {name}: {e}"))
        })?;
        for a in addrs {
            egress.check_resolved(name, a.ip()).map_err(forbidden)?;
        }
    }
    Ok(())
}

/// One download, built step by step: extra arguments (an egress `--proxy`, a `--cookies`
/// file written into [`dir`](YtdlpRun::dir)) are one call each, then [`open`](YtdlpRun::open).
pub struct YtdlpRun {
    ytdlp: Ytdlp,
    url: String,
    dir: JobDir,
    extra: Vec<OsString>,
    format: Option<String>,
    max_height: Option<u32>,
    max_bytes: Option<u64>,
    progress: Option<ProgressHook>,
}

/// Called with each `CLIPSTASH_PROGRESS` JSON line (`status`, `downloaded_bytes`,
/// `total_bytes`, `total_bytes_estimate`, `speed`, `eta`; unknown ones are null).
pub type ProgressHook = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for YtdlpRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YtdlpRun")
            .field("dir", &self.dir)
            .field("extra", &self.extra)
            .field("format", &self.format)
            .field("max_height", &self.max_height)
            .finish_non_exhaustive()
    }
}

/// A yt-dlp download whose media started: the stream (the guard inside it) and what yt-dlp
/// said about the video.
#[derive(Debug)]
pub struct YtdlpMedia {
    pub media: Media,
    pub chosen: Chosen,
    /// The source the run counts as (`youtube` for YouTube's extractors, else `ytdlp`).
    pub source: VideoSource,
    /// The process group of the run, for tests that check nothing outlives it.
    pub pgid: Option<i32>,
}

impl YtdlpRun {
    /// The run's own temp dir (0700), removed when the run ends.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--proxy URL`: every request yt-dlp makes goes through it.
    pub fn proxy(self, proxy_url: &str) -> Self {
        self.arg("--proxy").arg(proxy_url)
    }

    /// `--cookies FILE` (a Netscape cookies.txt; put it in [`dir`](Self::dir)).
    pub fn cookies(self, file: &Path) -> Self {
        self.arg("--cookies").arg(file)
    }

    /// Calls `hook` with each progress line while the download runs.
    pub fn on_progress(mut self, hook: ProgressHook) -> Self {
        self.progress = Some(hook);
        self
    }

    /// Any other option, placed before `--` and the URL. Never pass user input here.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The full argument list (without the program).
    pub fn args(&self) -> Vec<OsString> {
        let mut args = self.ytdlp.base_args();
        let format = match (&self.format, self.max_height) {
            (Some(f), _) => f.clone(),
            (None, Some(h)) => format!("b[height<=?{h}]"),
            (None, None) => "b".to_string(),
        };
        args.extend(
            [
                "--newline",
                "--progress",
                "--progress-delta",
                "0.5",
                "--progress-template",
                "download:CLIPSTASH_PROGRESS %(progress.{status,downloaded_bytes,total_bytes,total_bytes_estimate,speed,eta})j",
                "--no-simulate",
                "-f",
            ]
            .map(OsString::from),
        );
        args.push(format.into());
        if let (Some(_), Some(h)) = (&self.format, self.max_height) {
            args.extend(["-S".into(), format!("res:{h}").into()]);
        }
        args.extend([
            "--print".into(),
            format!(
                "before_dl:{}%(.{{{}}})j",
                process::INFO_PREFIX,
                info::CHOSEN_FIELDS
            )
            .into(),
            // `--print` implies `--quiet`, which would hide notices the classifier needs
            // (`File is larger than max-filesize`); all of it goes to stderr with `-o -`.
            "--no-quiet".into(),
        ]);
        if let Some(max) = self.max_bytes {
            args.extend(["--max-filesize".into(), max.to_string().into()]);
        }
        args.extend(self.extra.iter().cloned());
        args.extend([
            "-o".into(),
            "-".into(),
            "--".into(),
            self.url.clone().into(),
        ]);
        args
    }

    /// Starts yt-dlp and waits until it has chosen a format (or failed); the returned media
    /// streams its stdout. Errors are classified; the process group and temp dir are gone
    /// when this returns an error, or when the media is dropped.
    pub async fn open(self) -> Result<YtdlpMedia, JobError> {
        check_egress(&self.ytdlp.egress, &self.url).await?;
        let args = self.args();
        let limits = self.ytdlp.limits.clone();
        let url = self.url.clone();
        let call = Tracker::start(&SourceOperation::DownloadVideo);
        let mut p = process::spawn(&self.ytdlp.program, &args, self.dir, self.progress)?;
        let deadline = p.started + limits.wall_timeout;
        // Until the format is chosen: the wall clock (extraction may be quiet for a while).
        let chosen = tokio::select! {
            line = &mut p.info => line.ok(),
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err(JobError::new(ErrorCode::Timeout, format!(
                    "yt-dlp chose no format within {:?}", limits.wall_timeout)));
            }
        };
        let Some(line) = chosen else {
            // stderr closed without the line: yt-dlp has ended.
            let status = p.guard.wait(Duration::from_secs(10)).await;
            return Err(classify::classify(
                &p.seen.lines(),
                status.and_then(|s| s.code()),
                &url,
            ));
        };
        let chosen: Chosen = serde_json::from_str(&line).map_err(|e| {
            JobError::new(
                ErrorCode::YtdlpFailed,
                format!("unreadable CLIPSTASH_INFO line: {e}"),
            )
        })?;
        if chosen.requested_formats.is_some() {
            return Err(JobError::new(
                ErrorCode::FormatUnavailable,
                "the format selects several streams to merge; choose a single-file format",
            ));
        }
        call.success();
        let source = VideoSource::for_extractor(chosen.extractor_key.as_deref().unwrap_or(""));
        let pgid = p.guard.pgid();
        let media = Media {
            content_type: info::content_type_of(chosen.ext.as_deref()).to_string(),
            expected_len: chosen.filesize.filter(|&n| n > 0),
            body: body(p, limits, deadline, url).boxed(),
        };
        Ok(YtdlpMedia {
            media,
            chosen,
            source,
            pgid,
        })
    }
}

/// yt-dlp's stdout as a stream of chunks, ending with an error when the run fails. The
/// process's guard lives in the stream's state: dropping the stream kills the group.
fn body(
    p: process::Spawned,
    limits: YtdlpLimits,
    deadline: Instant,
    url: String,
) -> impl futures_util::Stream<Item = Result<Bytes, JobError>> + Send + 'static {
    struct State {
        p: process::Spawned,
        limits: YtdlpLimits,
        deadline: Instant,
        url: String,
        bytes: u64,
        done: bool,
    }
    let state = State {
        p,
        limits,
        deadline,
        url,
        bytes: 0,
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = next_chunk(&mut s.p, &s.limits, s.deadline, &s.url, s.bytes).await;
        match &item {
            Ok(Some(chunk)) => s.bytes += chunk.len() as u64,
            Ok(None) => return None,
            Err(_) => s.done = true,
        }
        // Errors end the stream after they are yielded; the guard goes with the state.
        Some((item.map(|c| c.expect("checked above")), s))
    })
}

/// The next chunk of stdout; `None` at a clean end (exit 0 with media written).
async fn next_chunk(
    p: &mut process::Spawned,
    limits: &YtdlpLimits,
    deadline: Instant,
    url: &str,
    bytes: u64,
) -> Result<Option<Bytes>, JobError> {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    // The idle watchdog looks at any output; check at a fraction of its period.
    let tick = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    loop {
        let read = tokio::select! {
            read = p.stdout.read_buf(&mut buf) => Some(read),
            _ = tokio::time::sleep(tick) => None,
        };
        let Some(read) = read else {
            if Instant::now() >= deadline {
                return Err(JobError::new(
                    ErrorCode::Timeout,
                    format!("yt-dlp ran longer than {:?}", limits.wall_timeout),
                ));
            }
            if p.seen.idle_for() >= limits.idle_timeout {
                return Err(JobError::new(
                    ErrorCode::Timeout,
                    format!("yt-dlp sent nothing for {:?}", limits.idle_timeout),
                ));
            }
            continue;
        };
        let n = read.map_err(|e| {
            JobError::new(
                ErrorCode::YtdlpFailed,
                format!("reading yt-dlp's output: {e}"),
            )
        })?;
        if n > 0 {
            p.seen.touch();
            return Ok(Some(buf.freeze()));
        }
        // stdout closed: yt-dlp is ending; its status and stderr decide.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let status = p.guard.wait(left.min(Duration::from_secs(30))).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut p.stderr_done).await;
        if status.is_some_and(|s| s.success()) && bytes > 0 {
            return Ok(None);
        }
        return Err(classify::classify(
            &p.seen.lines(),
            status.and_then(|s| s.code()),
            url,
        ));
    }
}

impl Source for Ytdlp {
    fn kind(&self) -> VideoSource {
        VideoSource::Ytdlp
    }

    /// The best single-file format, no other options.
    async fn open(&self, url: &str) -> Result<Media, JobError> {
        Ok(self
            .download(url, &DownloadOptions::default())?
            .open()
            .await?
            .media)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ytdlp() -> Ytdlp {
        Ytdlp {
            program: "yt-dlp".into(),
            version: "x".into(),
            limits: YtdlpLimits {
                socket_timeout: Duration::from_secs(20),
                idle_timeout: Duration::from_secs(30),
                wall_timeout: Duration::from_secs(60),
            },
            egress: EgressPolicy::off(),
            proxy: None,
            temp_root: std::env::temp_dir(),
        }
    }

    #[test]
    fn args_put_the_url_last_after_double_dash_and_extras_before() {
        let run = ytdlp()
            .download(
                "https://www.youtube.com/shorts/abc",
                &DownloadOptions {
                    format: None,
                    max_height: Some(720),
                    max_bytes: Some(1000),
                },
            )
            .unwrap()
            .proxy("http://127.0.0.1:9/")
            .cookies(Path::new("/tmp/c.txt"));
        let dir = run.dir().to_path_buf();
        assert!(dir.is_dir());
        let args: Vec<String> = run
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let n = args.len();
        assert_eq!(
            &args[n - 4..],
            ["-o", "-", "--", "https://www.youtube.com/shorts/abc"]
        );
        for needed in ["--ignore-config", "--no-playlist", "--proxy", "--cookies"] {
            assert!(args.iter().any(|a| a == needed), "{needed} in {args:?}");
        }
        let f = args.iter().position(|a| a == "-f").unwrap();
        assert_eq!(args[f + 1], "b[height<=?720]");
        let m = args.iter().position(|a| a == "--max-filesize").unwrap();
        assert_eq!(args[m + 1], "1000");
        drop(run);
        assert!(!dir.exists(), "the temp dir goes with the run");
    }

    #[test]
    fn hosts_route_auto() {
        let hosts: YtdlpHosts = DEFAULT_HOSTS.parse().unwrap();
        let route = |u: &str| hosts.route(&url::Url::parse(u).unwrap());
        assert_eq!(
            route("https://www.youtube.com/shorts/abc"),
            VideoSource::Youtube
        );
        assert_eq!(
            route("https://m.youtube.com/watch?v=abc"),
            VideoSource::Youtube
        );
        assert_eq!(
            route("https://music.youtube.com/watch?v=abc"),
            VideoSource::Youtube
        );
        assert_eq!(route("https://youtu.be/abc"), VideoSource::Youtube);
        assert_eq!(
            route("https://www.youtube-nocookie.com/embed/abc"),
            VideoSource::Youtube
        );
        assert_eq!(route("https://vimeo.com/1"), VideoSource::Ytdlp);
        assert_eq!(route("https://notyoutube.com/v.mp4"), VideoSource::Direct);
        assert_eq!(route("https://cdn.example/v.mp4"), VideoSource::Direct);
        // A listed host itself, with the root's trailing dot; a host shorter than any entry.
        assert_eq!(route("https://youtube.com./x"), VideoSource::Youtube);
        assert_eq!(route("https://be/x"), VideoSource::Direct);
        let lo: YtdlpHosts = "127.0.0.1".parse().unwrap();
        assert_eq!(
            lo.route(&url::Url::parse("http://127.0.0.1:8080/x").unwrap()),
            VideoSource::Ytdlp
        );
        assert!("https://youtube.com".parse::<YtdlpHosts>().is_err());
    }
}
