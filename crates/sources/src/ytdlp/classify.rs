//! yt-dlp's output into stable error codes. yt-dlp exits 1 for nearly every failure, so
//! the verdict comes from its last `ERROR:` line (the messages are yt-dlp's own, e.g.
//! `extractor/youtube/_video.py` and `extractor/common.py` in the pinned version); a
//! `[download] File is larger than max-filesize` notice is a refusal that exits 0.

use clipstash_domain::{ErrorCode, JobError};

/// Longest message kept on a job.
const MAX_MESSAGE: usize = 500;

/// The code of one yt-dlp message (an `ERROR:` line or a notice), matched
/// case-insensitively; `None` when nothing specific matches. Order matters: YouTube's
/// private, age and bot messages all end with a hint to pass cookies.
pub fn code_of(message: &str) -> Option<ErrorCode> {
    let m = message.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let code = if has(&["file is larger than max-filesize"]) {
        ErrorCode::FileTooLarge
    } else if has(&["not a bot", "requiring a captcha"]) {
        ErrorCode::LoginRequired
    } else if has(&[
        "http error 429",
        "too many requests",
        "rate-limited",
        "rate limit",
        "try again later",
    ]) {
        ErrorCode::SourceRateLimited
    } else if has(&["private video", "video is private"]) {
        ErrorCode::PrivateVideo
    } else if has(&[
        "confirm your age",
        "age-restricted",
        "age restricted",
        "inappropriate for some users",
        "age verification",
    ]) {
        ErrorCode::AgeRestricted
    } else if has(&[
        "available in your country",
        "not available from your location",
        "geo restriction",
        "geo-restricted",
        "geo restricted",
        "use a vpn",
    ]) {
        ErrorCode::GeoBlocked
    } else if has(&[
        "members-only",
        "join this channel",
        "only available for registered users",
        "login required",
        "requires authentication",
        "sign in",
        "log in",
        "--cookies",
        "account credentials",
    ]) {
        ErrorCode::LoginRequired
    } else if has(&["unsupported url"]) {
        ErrorCode::UnsupportedUrl
    } else if has(&[
        "requested format is not available",
        "no video formats found",
        "drm protected",
    ]) {
        ErrorCode::FormatUnavailable
    } else if has(&[
        "video unavailable",
        "video is not available",
        "video is unavailable",
        "has been removed",
        "has been terminated",
        "no longer available",
        "does not exist",
        "live event will begin",
        "premieres in",
        "content isn't available",
        "content isn\u{2019}t available",
    ]) {
        ErrorCode::VideoUnavailable
    } else if has(&["http error 404", "http error 410"]) {
        ErrorCode::SourceNotFound
    } else if has(&["http error 5"]) {
        ErrorCode::SourceServerError
    } else if has(&["http error 4"]) {
        ErrorCode::SourceClientError
    } else if has(&["timed out", "timeout"]) {
        ErrorCode::Timeout
    } else if has(&["bytes, expected", "incompleteread", "incomplete read"]) {
        ErrorCode::Truncated
    } else if has(&[
        "connection refused",
        "connection reset",
        "name resolution",
        "name or service not known",
        "network is unreachable",
        "no route to host",
        "unable to connect",
        "transporterror",
        "[errno",
    ]) {
        ErrorCode::ConnectionFailed
    } else {
        return None;
    };
    Some(code)
}

/// The error of a run that failed (or ended without media): the last `ERROR:` line decides;
/// without one, a max-filesize notice; otherwise `ytdlp_failed` with what is known. `url` is
/// cut out of the message (users' URLs may carry tokens).
pub fn classify(lines: &[String], exit: Option<i32>, url: &str) -> JobError {
    // The egress proxy refused a connection yt-dlp tried (CONNECT or plain request): whatever
    // yt-dlp made of it afterwards, that is why the run failed.
    if let Some(refused) = lines
        .iter()
        .rev()
        .find(|l| crate::egress::proxy::is_refusal(l))
    {
        let text = refused.trim_start_matches("ERROR:").trim();
        return JobError::new(ErrorCode::ForbiddenAddress, tidy(text, url));
    }
    let error = lines.iter().rev().find(|l| l.starts_with("ERROR:"));
    let notice = lines
        .iter()
        .rev()
        .find(|l| code_of(l) == Some(ErrorCode::FileTooLarge));
    let (code, text) = match (error, notice) {
        (Some(e), _) => (
            code_of(e).unwrap_or(ErrorCode::YtdlpFailed),
            e.trim_start_matches("ERROR:").trim().to_string(),
        ),
        (None, Some(n)) => (ErrorCode::FileTooLarge, n.trim().to_string()),
        (None, None) => (
            ErrorCode::YtdlpFailed,
            match exit {
                Some(0) => "yt-dlp ended without writing any media".to_string(),
                Some(c) => format!("yt-dlp exited with status {c} and no error message"),
                None => "yt-dlp was killed by a signal".to_string(),
            },
        ),
    };
    JobError::new(code, tidy(&text, url))
}

/// The message without the user's URL, bounded.
pub fn tidy(text: &str, url: &str) -> String {
    let text = if url.is_empty() {
        text.to_string()
    } else {
        text.replace(url, "<url>")
    };
    let mut out: String = text.chars().take(MAX_MESSAGE).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCode::*;

    /// Real yt-dlp lines: seen offline against a local server (the notes in
    /// shared/notes), or built from the pinned yt-dlp's source strings for YouTube.
    const CASES: &[(&str, ErrorCode)] = &[
        // YouTube: extractor/youtube/_video.py (reason + the login hint of common.py).
        (
            "ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u{2019}re not a bot. Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/Extractors#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies",
            LoginRequired,
        ),
        (
            "ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users. Use --cookies-from-browser or --cookies for the authentication.",
            AgeRestricted,
        ),
        (
            "ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video. Use --cookies-from-browser or --cookies for the authentication.",
            PrivateVideo,
        ),
        (
            "ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
            VideoUnavailable,
        ),
        (
            "ERROR: [youtube] abc: Video unavailable. This video is no longer available because the YouTube account associated with this video has been terminated.",
            VideoUnavailable,
        ),
        ("ERROR: [youtube] abc: Video unavailable", VideoUnavailable),
        (
            "ERROR: [youtube] abc: The uploader has not made this video available in your country. This video is available in Canada, United States. You might want to use a VPN or a proxy server (with --proxy) to workaround.",
            GeoBlocked,
        ),
        (
            "ERROR: [youtube] abc: This content isn't available, try again later. The current session has been rate-limited by YouTube for up to an hour. It is recommended to use `-t sleep` to add a delay between video requests to avoid exceeding the rate limit.",
            SourceRateLimited,
        ),
        (
            "ERROR: [youtube] abc: Join this channel to get access to members-only content like this video, and other exclusive perks.",
            LoginRequired,
        ),
        (
            "ERROR: [youtube] abc: This live event will begin in 3 days.",
            VideoUnavailable,
        ),
        (
            "ERROR: [youtube] abc: This video is DRM protected",
            FormatUnavailable,
        ),
        (
            "ERROR: [youtube] abc: Requested format is not available. Use --list-formats for a list of available formats",
            FormatUnavailable,
        ),
        (
            "ERROR: [vimeo] 123: This video is only available for registered users. Use --cookies, --cookies-from-browser, --username and --password",
            LoginRequired,
        ),
        // Seen offline against a local HTTP server.
        (
            "ERROR: [generic] missing: Unable to download webpage: HTTP Error 404: File not found (caused by <HTTPError 404: File not found>)",
            SourceNotFound,
        ),
        (
            "ERROR: [generic] v: Unable to download webpage: HTTP Error 429: Too Many Requests (caused by <HTTPError 429: Too Many Requests>)",
            SourceRateLimited,
        ),
        (
            "ERROR: [generic] v: Unable to download webpage: HTTP Error 403: Forbidden (caused by <HTTPError 403: Forbidden>)",
            SourceClientError,
        ),
        (
            "ERROR: [generic] v: Unable to download webpage: HTTP Error 500: Internal Server Error (caused by <HTTPError 500: Internal Server Error>)",
            SourceServerError,
        ),
        (
            "ERROR: [generic] v: Unable to download webpage: [Errno 111] Connection refused (caused by TransportError('[Errno 111] Connection refused'))",
            ConnectionFailed,
        ),
        (
            "ERROR: Unsupported URL: http://127.0.0.1:8765/page.html",
            UnsupportedUrl,
        ),
        (
            "ERROR: [download] Got error: Downloaded 100000 bytes, expected 2000000 bytes. Giving up after 2 retries",
            Truncated,
        ),
        (
            "ERROR: [download] Got error: The read operation timed out. Giving up after 1 retries",
            Timeout,
        ),
        (
            "[download] File is larger than max-filesize (3000000 bytes > 1048576 bytes). Aborting.",
            FileTooLarge,
        ),
    ];

    #[test]
    fn a_refusal_of_the_egress_proxy_is_forbidden_address_whatever_follows() {
        // yt-dlp 2026.10.26's lines for this proxy's 403 on CONNECT and on a plain GET,
        // then a later error of its own.
        for refused in [
            "WARNING: [youtube] ('Unable to connect to proxy', OSError('Tunnel connection failed: 403 Forbidden (clipstash egress guard: forbidden_address: 127.0.0.1 is a loopback address, which the egress guard refuses)')). Retrying (1/3)...",
            "ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden (clipstash egress guard: forbidden_address: localhost resolves only to addresses the egress guard refuses (127.0.0.1 is loopback)) (caused by <HTTPError 403: Forbidden (clipstash egress guard: forbidden_address)>)",
        ] {
            let lines = vec![
                refused.to_string(),
                "ERROR: Unsupported URL: http://a.example/x".to_string(),
            ];
            let e = classify(&lines, Some(1), "http://a.example/x");
            assert_eq!(e.code, ForbiddenAddress, "{refused}");
            assert!(e.message.contains("loopback"), "{}", e.message);
            assert!(!e.code.is_transient());
        }
        // A source's own 403 is not the guard's.
        let lines = vec![
            "ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden".to_string(),
        ];
        assert_ne!(classify(&lines, Some(1), "").code, ForbiddenAddress);
    }

    #[test]
    fn real_lines_get_their_codes() {
        for (line, want) in CASES {
            assert_eq!(code_of(line), Some(*want), "{line}");
        }
        assert_eq!(code_of("ERROR: something nobody foresaw"), None);
    }

    #[test]
    fn each_code_has_its_retry_class() {
        for (code, transient) in [
            (SourceRateLimited, true),
            (Timeout, true),
            (ConnectionFailed, true),
            (YtdlpFailed, true),
            (VideoUnavailable, false),
            (PrivateVideo, false),
            (AgeRestricted, false),
            (GeoBlocked, false),
            (LoginRequired, false),
            (UnsupportedUrl, false),
            (FileTooLarge, false),
            (FormatUnavailable, false),
        ] {
            assert_eq!(code.is_transient(), transient, "{code}");
        }
    }

    #[test]
    fn the_last_error_line_decides_and_the_url_is_cut() {
        let url = "http://127.0.0.1:1/page.html?token=secret";
        let lines = vec![
            "WARNING: [generic] Falling back on generic information extractor".to_string(),
            format!("ERROR: Unsupported URL: {url}"),
        ];
        let e = classify(&lines, Some(1), url);
        assert_eq!(e.code, UnsupportedUrl);
        assert_eq!(e.message, "Unsupported URL: <url>");
        assert!(!e.message.contains("secret"));
        // No ERROR: the max-filesize notice (exit 0), else a plain ytdlp_failed.
        let notice = vec![
            "[download] File is larger than max-filesize (3 bytes > 1 bytes). Aborting.".into(),
        ];
        assert_eq!(classify(&notice, Some(0), url).code, FileTooLarge);
        let e = classify(&[], Some(0), url);
        assert_eq!(
            (e.code, e.message.as_str()),
            (YtdlpFailed, "yt-dlp ended without writing any media")
        );
        assert_eq!(classify(&[], Some(2), url).code, YtdlpFailed);
        // An unknown ERROR is still an error, with its text.
        let e = classify(&["ERROR: [x] y: odd".into()], Some(1), url);
        assert_eq!((e.code, e.message.as_str()), (YtdlpFailed, "[x] y: odd"));
    }
}
