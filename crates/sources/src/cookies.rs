//! Cookies a client sends with a download (`cookies` of `POST /v1/downloads`): secrets.
//!
//! - The API checks them and turns them into Netscape `cookies.txt` text ([`normalise`]),
//!   what yt-dlp reads, and seals that with AES-256-GCM under `CLIPSTASH_SECRET_KEY`
//!   ([`SecretKey::seal`]): a random nonce per value and the job id as associated data, so
//!   a sealed value copied onto another job does not open. Only the sealed bytes are
//!   stored (the job's Postgres row); they are erased when the job ends.
//! - The worker opens them ([`SecretKey::open`]) when yt-dlp runs and writes them to a
//!   0600 file in the job's temp dir ([`CookieFile`]), removed when the run ends.
//!
//! Plain text only ever lives in a [`SecretString`]; nothing here prints a cookie, and no
//! error message quotes one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::{Host, Url};
use uuid::Uuid;

/// Largest `cookies` accepted, as sent (text) or as normalised (an object).
pub const MAX_COOKIES_BYTES: usize = 64 * 1024;

/// Sealed-value format version: `[1] ++ nonce (12) ++ ciphertext ++ tag (16)`.
const FORMAT_V1: u8 = 1;

/// `CLIPSTASH_SECRET_KEY`: 32 random bytes that seal secrets at rest. Never printed.
#[derive(Clone)]
pub struct SecretKey(Arc<RandomizedNonceKey>, Arc<SecretBox<Vec<u8>>>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// Why a `CLIPSTASH_SECRET_KEY` was refused (the message never contains the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be 32 random bytes written as base64 (44 characters) or hex (64 characters); generate one with `openssl rand -base64 32`"
)]
pub struct BadSecretKey;

impl SecretKey {
    /// Parses 32 bytes written as base64 (standard or URL-safe, padding optional) or hex.
    pub fn parse(text: &SecretString) -> Result<Self, BadSecretKey> {
        let s = text.expose_secret().trim();
        let bytes: SecretBox<Vec<u8>> = SecretBox::new(Box::new(
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(s).map_err(|_| BadSecretKey)?
            } else {
                let s = s.trim_end_matches('=');
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(s)
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
                    .map_err(|_| BadSecretKey)?
            },
        ));
        if bytes.expose_secret().len() != 32 {
            return Err(BadSecretKey);
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes.expose_secret())
            .map_err(|_| BadSecretKey)?;
        Ok(Self(Arc::new(key), Arc::new(bytes)))
    }

    /// The key's 32 bytes, as the input of other derivations (webhook signing secrets are
    /// HMAC-derived from it, `clipstash_domain::webhook`), never for sealing anything else.
    pub fn bytes(&self) -> &[u8] {
        self.1.expose_secret()
    }

    /// Seals `plain` for job `job_id`: a fresh random nonce, the job id as associated data.
    pub fn seal(&self, job_id: Uuid, plain: &SecretString) -> Vec<u8> {
        let mut in_out = plain.expose_secret().as_bytes().to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(job_id.as_bytes()), &mut in_out)
            .expect("AES-GCM seals any input shorter than 64 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Opens what [`seal`](Self::seal) sealed for the same job with the same key. Fails on
    /// any other key, job id, or a changed byte.
    pub fn open(&self, job_id: Uuid, sealed: &[u8]) -> Result<SecretString, Unreadable> {
        let (&version, rest) = sealed.split_first().ok_or(Unreadable)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(Unreadable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unreadable)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(job_id.as_bytes()), &mut in_out)
            .map_err(|_| Unreadable)?;
        let text = std::str::from_utf8(plain).map_err(|_| Unreadable)?;
        Ok(SecretString::from(text))
    }
}

/// A sealed value that does not open: another key, another job, or altered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job's cookies do not open with this process's CLIPSTASH_SECRET_KEY (another key than the API's?)"
)]
pub struct Unreadable;

/// The setting both binaries (and the `keys` commands) read.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecretArgs {
    /// Key that protects secrets at rest: it encrypts the cookies of a download (in
    /// Postgres) and derives each API key's webhook signing secret (only a salt is stored).
    /// 32 random bytes as base64 or hex, e.g. from `openssl rand -base64 32`. The API, the
    /// `keys` commands and every worker need the same key. Unset: requests with cookies are
    /// refused (422 cookies_disabled) and new webhook secrets are stored as they are.
    #[arg(long, env = "CLIPSTASH_SECRET_KEY", value_name = "CLIPSTASH_SECRET_KEY", hide_env_values = true, value_parser = KeyParser)]
    pub secret_key: Option<SecretKey>,
}

impl SecretArgs {
    /// The key's bytes, if set (the input of webhook secret derivation).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.secret_key.as_ref().map(SecretKey::bytes)
    }
}

/// Parses the key without ever quoting it: clap's usual error repeats the bad value.
#[derive(Clone)]
struct KeyParser;

impl clap::builder::TypedValueParser for KeyParser {
    type Value = SecretKey;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretKey, clap::Error> {
        let text = SecretString::from(value.to_string_lossy().into_owned());
        SecretKey::parse(&text).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid CLIPSTASH_SECRET_KEY: {e}\n"),
            )
            .with_cmd(cmd)
        })
    }
}

/// Why `cookies` were refused. Messages name lines and fields, never their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCookies(String);

fn invalid(msg: impl Into<String>) -> InvalidCookies {
    InvalidCookies(msg.into())
}

/// The `cookies` of a request as Netscape `cookies.txt` text: either that text itself
/// (checked line by line) or a `{name: value}` object, which becomes cookies for the URL's
/// host (without a leading `www.`) and its subdomains, on every path, over http and https.
pub fn normalise(cookies: &serde_json::Value, url: &Url) -> Result<SecretString, InvalidCookies> {
    let out = match cookies {
        serde_json::Value::String(text) => from_netscape(text)?,
        serde_json::Value::Object(pairs) => from_pairs(pairs, url)?,
        _ => {
            return Err(invalid(
                "cookies must be Netscape cookies.txt text or an object of name: value strings",
            ));
        }
    };
    if out.len() > MAX_COOKIES_BYTES {
        return Err(invalid(format!(
            "cookies are larger than {MAX_COOKIES_BYTES} bytes"
        )));
    }
    Ok(SecretString::from(out))
}

const HEADER: &str = "# Netscape HTTP Cookie File\n";

fn from_netscape(text: &str) -> Result<String, InvalidCookies> {
    if text.len() > MAX_COOKIES_BYTES {
        return Err(invalid(format!(
            "cookies are larger than {MAX_COOKIES_BYTES} bytes"
        )));
    }
    let mut out = String::with_capacity(text.len() + HEADER.len());
    out.push_str(HEADER);
    let mut count = 0;
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let body = line.strip_prefix("#HttpOnly_").unwrap_or(line);
        if line.trim().is_empty() || (body.len() == line.len() && line.starts_with('#')) {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [domain, subdomains, path, secure, expires, name, value] = fields[..] else {
            return Err(invalid(format!(
                "cookies line {n}: a cookies.txt line has 7 tab-separated fields (domain, subdomains, path, secure, expires, name, value), not {}",
                fields.len()
            )));
        };
        let field = |what: &str| invalid(format!("cookies line {n}: bad {what}"));
        let domain_body = domain.strip_prefix("#HttpOnly_").unwrap_or(domain);
        if domain_body.is_empty() || !domain_body.bytes().all(is_domain_byte) {
            return Err(field("domain"));
        }
        if !is_flag(subdomains) {
            return Err(field("subdomains flag (TRUE or FALSE)"));
        }
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(field("path"));
        }
        if !is_flag(secure) {
            return Err(field("secure flag (TRUE or FALSE)"));
        }
        if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) || expires.len() > 12
        {
            return Err(field("expiry (seconds since 1970)"));
        }
        if !is_cookie_name(name) {
            return Err(field("name"));
        }
        if !is_cookie_value(value) {
            return Err(field("value"));
        }
        out.push_str(
            &[
                domain,
                &subdomains.to_ascii_uppercase(),
                path,
                &secure.to_ascii_uppercase(),
                expires,
                name,
                value,
            ]
            .join("\t"),
        );
        out.push('\n');
        count += 1;
    }
    if count == 0 {
        return Err(invalid("cookies hold no cookie line"));
    }
    Ok(out)
}

fn from_pairs(
    pairs: &serde_json::Map<String, serde_json::Value>,
    url: &Url,
) -> Result<String, InvalidCookies> {
    if pairs.is_empty() {
        return Err(invalid("cookies hold no cookie"));
    }
    // Cookies "for the URL's domain": its host without `www.`, subdomains included, so
    // www.youtube.com's cookies reach youtube.com and m.youtube.com too. An address is
    // matched exactly.
    let (domain, subdomains) = match url.host() {
        Some(Host::Domain(d)) => (format!(".{}", d.strip_prefix("www.").unwrap_or(d)), "TRUE"),
        Some(Host::Ipv4(ip)) => (ip.to_string(), "FALSE"),
        Some(Host::Ipv6(ip)) => (format!("[{ip}]"), "FALSE"),
        None => return Err(invalid("cookies need a URL with a host")),
    };
    let mut out = String::from(HEADER);
    for (name, value) in pairs {
        if !is_cookie_name(name) {
            return Err(invalid(
                "a cookie name is empty or has characters a cookie name cannot have",
            ));
        }
        let Some(value) = value.as_str().filter(|v| is_cookie_value(v)) else {
            return Err(invalid(format!(
                "cookie {name:?}: the value must be a string of characters a cookie value can have"
            )));
        };
        // Expiry 0: a session cookie, which yt-dlp keeps for the run.
        out.push_str(&format!(
            "{domain}\t{subdomains}\t/\tFALSE\t0\t{name}\t{value}\n"
        ));
        if out.len() > MAX_COOKIES_BYTES {
            break;
        }
    }
    Ok(out)
}

fn is_flag(s: &str) -> bool {
    s.eq_ignore_ascii_case("TRUE") || s.eq_ignore_ascii_case("FALSE")
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
}

/// RFC 6265 `token`: visible ASCII without separators.
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Visible ASCII and spaces inside, but nothing that ends a cookie in a `Cookie` header
/// (`;`) or breaks a cookies.txt line (tabs, line breaks, other control characters).
fn is_cookie_value(s: &str) -> bool {
    s.bytes()
        .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b';')
}

/// Cookies written for one yt-dlp run: a 0600 file, removed when this is dropped (yt-dlp
/// writes its cookie jar back into it, so every run gets its own).
#[derive(Debug)]
pub struct CookieFile {
    path: PathBuf,
}

impl CookieFile {
    /// Writes `cookies` to a new file `dir/cookies.txt`, readable by this user only.
    pub async fn write(dir: &Path, cookies: &SecretString) -> io::Result<Self> {
        use tokio::io::AsyncWriteExt;
        let path = dir.join("cookies.txt");
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        let this = Self { path };
        file.write_all(cookies.expose_secret().as_bytes()).await?;
        file.flush().await?;
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CookieFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::parse(&SecretString::from(
            base64::engine::general_purpose::STANDARD.encode([b; 32]),
        ))
        .unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    const TEXT: &str =
        "# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t1900000000\tSID\ts3cr3t-value\n";

    #[test]
    fn sealing_round_trips_and_nothing_else_opens() {
        let (k, job) = (key(1), Uuid::now_v7());
        let plain = SecretString::from(TEXT);
        let sealed = k.seal(job, &plain);
        assert_eq!(k.open(job, &sealed).unwrap().expose_secret(), TEXT);
        assert!(
            !sealed.windows(6).any(|w| w == b"s3cr3t"),
            "the plain text shows through"
        );
        // A fresh nonce each time: the same text seals differently.
        assert_ne!(k.seal(job, &plain), sealed);
        // Another job id (associated data), another key, any flipped byte: refused.
        assert_eq!(k.open(Uuid::now_v7(), &sealed).err(), Some(Unreadable));
        assert_eq!(key(2).open(job, &sealed).err(), Some(Unreadable));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.open(job, &bad).err(), Some(Unreadable), "byte {i}");
        }
        assert_eq!(
            k.open(job, &sealed[..sealed.len() - 1]).err(),
            Some(Unreadable)
        );
        assert_eq!(k.open(job, &[]).err(), Some(Unreadable));
        assert_eq!(k.open(job, &sealed[..5]).err(), Some(Unreadable));
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_never_print() {
        let raw = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let hexed = hex::encode(raw);
        let job = Uuid::now_v7();
        let sealed = key(7).seal(job, &SecretString::from("x"));
        for text in [
            b64.clone(),
            b64.trim_end_matches('=').to_string(),
            format!(" {b64}\n"),
            hexed.clone(),
            hexed.to_uppercase(),
        ] {
            let k = SecretKey::parse(&SecretString::from(text.clone())).unwrap();
            assert_eq!(k.open(job, &sealed).unwrap().expose_secret(), "x", "{text}");
            assert_eq!(format!("{k:?}"), "SecretKey([REDACTED])");
        }
        for bad in [
            "",
            "short",
            &base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
            &base64::engine::general_purpose::STANDARD.encode([7u8; 33]),
            &hexed[..62],
            "not base64 at all!!",
        ] {
            assert!(SecretKey::parse(&SecretString::from(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_key_fails_start_up_without_quoting_it() {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            secrets: SecretArgs,
        }
        use clap::Parser;
        let err = Cli::try_parse_from(["x", "--secret-key", "hunter2-not-a-key"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CLIPSTASH_SECRET_KEY"), "{msg}");
        assert!(msg.contains("openssl rand -base64 32"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let ok = Cli::try_parse_from(["x", "--secret-key", &hex::encode([1u8; 32])]).unwrap();
        assert!(!format!("{ok:?}").contains(&hex::encode([1u8; 32])));
    }

    #[test]
    fn netscape_text_is_checked_and_normalised() {
        let text = "# Netscape HTTP Cookie File\r\n# a comment\r\n\r\n\
                    .youtube.com\ttrue\t/\tTRUE\t0\tSID\tabc\r\n\
                    #HttpOnly_.youtube.com\tTRUE\t/\tFALSE\t1900000000\tHSID\tx y=z\n";
        let out = normalise(
            &serde_json::json!(text),
            &url("https://www.youtube.com/shorts/x"),
        )
        .unwrap();
        assert_eq!(
            out.expose_secret(),
            "# Netscape HTTP Cookie File\n\
             .youtube.com\tTRUE\t/\tTRUE\t0\tSID\tabc\n\
             #HttpOnly_.youtube.com\tTRUE\t/\tFALSE\t1900000000\tHSID\tx y=z\n"
        );
        let u = url("https://a.example/");
        for (bad, why) in [
            ("", "no cookie line"),
            ("# only a comment\n", "no cookie line"),
            (".a.example\tTRUE\t/\tFALSE\t0\tSID", "7 tab-separated"),
            (".a.example TRUE / FALSE 0 SID v", "7 tab-separated"),
            (".a.example\tYES\t/\tFALSE\t0\tSID\tv", "subdomains"),
            (".a.example\tTRUE\tx\tFALSE\t0\tSID\tv", "path"),
            (".a.example\tTRUE\t/\tFALSE\tsoon\tSID\tv", "expiry"),
            (".a.example\tTRUE\t/\tFALSE\t0\t\tv", "name"),
            (".a.example\tTRUE\t/\tFALSE\t0\tS;D\tv", "name"),
            (".a.example\tTRUE\t/\tFALSE\t0\tSID\tv;x", "value"),
            ("a b.example\tTRUE\t/\tFALSE\t0\tSID\tv", "domain"),
        ] {
            let e = normalise(&serde_json::json!(bad), &u).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        // Messages never quote a cookie.
        let e = normalise(
            &serde_json::json!(".a.example\tTRUE\t/\tFALSE\t0\tSID\ttopsecret;"),
            &u,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
        let big = format!(
            ".a.example\tTRUE\t/\tFALSE\t0\tSID\t{}",
            "v".repeat(MAX_COOKIES_BYTES)
        );
        assert!(normalise(&serde_json::json!(big), &u).is_err());
    }

    #[test]
    fn an_object_becomes_cookies_for_the_urls_domain() {
        let out = normalise(
            &serde_json::json!({"SID": "abc", "PREF": "f6=40000000&hl=en"}),
            &url("https://www.youtube.com/shorts/x"),
        )
        .unwrap();
        let text = out.expose_secret();
        assert!(text.starts_with("# Netscape HTTP Cookie File\n"), "{text}");
        assert!(
            text.contains(".youtube.com\tTRUE\t/\tFALSE\t0\tSID\tabc\n"),
            "{text}"
        );
        assert!(
            text.contains(".youtube.com\tTRUE\t/\tFALSE\t0\tPREF\tf6=40000000&hl=en\n"),
            "{text}"
        );
        let out = normalise(
            &serde_json::json!({"a": "1"}),
            &url("http://127.0.0.1:8080/v"),
        )
        .unwrap();
        assert!(
            out.expose_secret()
                .contains("\n127.0.0.1\tFALSE\t/\tFALSE\t0\ta\t1\n")
        );

        let u = url("https://a.example/");
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"": "v"}),
            serde_json::json!({"a b": "v"}),
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": "line\nbreak"}),
            serde_json::json!({"a": "tab\there"}),
            serde_json::json!({"a": "semi;colon"}),
            serde_json::json!(["a", "b"]),
            serde_json::json!(42),
            serde_json::json!({"a": "v".repeat(MAX_COOKIES_BYTES)}),
        ] {
            let e = normalise(&bad, &u).unwrap_err();
            assert!(!e.to_string().contains("line\nbreak"), "{e}");
        }
    }

    #[tokio::test]
    async fn the_cookie_file_is_private_and_goes_away() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("clipstash-cookies-{}", Uuid::now_v7()));
        std::fs::create_dir(&dir).unwrap();
        let file = CookieFile::write(&dir, &SecretString::from(TEXT))
            .await
            .unwrap();
        let path = file.path().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TEXT);
        // A second run in the same dir gets its own file or fails, never shares one.
        assert!(
            CookieFile::write(&dir, &SecretString::from(TEXT))
                .await
                .is_err()
        );
        drop(file);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }
}
