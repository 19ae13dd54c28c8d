//! An in-process **fake** of the Google Cloud Storage XML API: exactly the calls
//! `object_store` 0.14's GCS client makes (`src/gcp/client.rs`), in memory, on a free
//! loopback port. No emulator on the reachable registries speaks this API (see
//! docs/STORAGE.md), so this is the GCS provider's test double. It is a fake, written from
//! what the client sends and what GCS documents; it is not GCS.
//!
//! Implemented, with GCS's status codes and XML shapes:
//! - `PUT /{bucket}/{object}`: upload (`x-goog-if-generation-match` honoured: `0` = must not
//!   exist, `N` = must be generation `N`; 412 otherwise), or copy with `x-goog-copy-source`.
//!   Every write answers with an `ETag` and `x-goog-generation`.
//! - `GET` / `HEAD /{bucket}/{object}`: `Range` (`bytes=a-b`, `a-`, `-n`: 206 with
//!   `Content-Range`; past the end: 416 with `Content-Range: bytes */size`; several ranges:
//!   the whole object), `If-Match`, `If-None-Match`, `If-Modified-Since`,
//!   `If-Unmodified-Since`, `?generation=`.
//! - `DELETE /{bucket}/{object}`: 204, 404 when missing.
//! - `GET /{bucket}?list-type=2`: `ListBucketResult` with `prefix`, `delimiter`
//!   (`CommonPrefixes`), `start-after`, `max-keys` and `continuation-token` pagination; the
//!   page size can be made small ([`GcsFake::set_page_size`]) so a test pages.
//! - Multipart: `POST ?uploads` (`UploadId`), `PUT ?partNumber=N&uploadId=` (`ETag`),
//!   `POST ?uploadId=` with `CompleteMultipartUpload` (parts must be listed in ascending
//!   order with the ETags the parts were answered with, and all but the last must be at
//!   least 5 MiB, as on GCS), `DELETE ?uploadId=` (abort). Nothing is visible at the key
//!   until the upload completes.
//! - Authentication: every request must carry the RS256 self-signed JWT `object_store`
//!   makes from the service account (checked against the account's public key, issuer and
//!   expiry), or be a V4 signed URL (`X-Goog-Algorithm=GOOG4-RSA-SHA256`, signature checked
//!   against the public key, expiry checked). The service account's RSA key is generated
//!   when the fake first starts; it exists only in this process and a temporary file.
//!
//! Not implemented: the JSON API, resumable uploads, object versioning (only the latest
//! generation is kept), metadata (`x-goog-meta-*` and content headers other than
//! `Content-Type` are dropped), storage classes, ACLs, IAM, CRC32C/MD5 checks
//! (`x-goog-hash` is not sent; ETags are an opaque hash, not GCS's MD5), bucket creation
//! over HTTP ([`GcsFake::bucket`] makes one), and rate limits or transient errors.
//!
//! Signed URLs: `object_store` always signs for host `storage.googleapis.com` (the host real
//! GCS sees), whatever the base URL; the fake stands in for that host and verifies with it.

// A handler's early return is the HTTP response itself; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

type Bytes = actix_web::web::Bytes;

/// GCS's smallest part but the last in an XML multipart upload.
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The host `object_store` signs URLs for (its `DEFAULT_GCS_SIGN_BLOB_HOST`).
const SIGNED_HOST: &str = "storage.googleapis.com";
const XMLNS: &str = "http://doc.s3.amazonaws.com/2006-03-01";

/// The throwaway service account the fake trusts: generated once per test process.
struct Account {
    email: String,
    key_id: String,
    private_key_pem: String,
    /// PKCS#1 DER of the public key.
    public_key: Vec<u8>,
}

fn account() -> &'static Account {
    static ACCOUNT: OnceLock<Account> = OnceLock::new();
    ACCOUNT.get_or_init(|| {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("RSA key generation");
        let der: Pkcs8V1Der = pair.as_der().expect("PKCS#8 encoding");
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Account {
            email: "clipstash-test@fake-project.iam.gserviceaccount.com".into(),
            key_id: uuid::Uuid::new_v4().simple().to_string(),
            private_key_pem: pem,
            public_key: aws_lc_rs::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec(),
        }
    })
}

#[derive(Clone)]
struct Object {
    data: Bytes,
    generation: u64,
    etag: String,
    updated: DateTime<Utc>,
    content_type: String,
}

struct Upload {
    bucket: String,
    key: String,
    content_type: String,
    parts: BTreeMap<u32, (Bytes, String)>,
}

#[derive(Default)]
struct State {
    buckets: HashMap<String, BTreeMap<String, Object>>,
    uploads: HashMap<String, Upload>,
    last_generation: u64,
    page_size: Option<usize>,
    /// `METHOD query-keys [Range]` of every request, in order (no values: they hold keys).
    calls: Vec<String>,
}

impl State {
    /// Generations are microsecond timestamps on GCS; here they only have to increase.
    fn next_generation(&mut self) -> u64 {
        let now = Utc::now().timestamp_micros().max(0) as u64;
        self.last_generation = now.max(self.last_generation + 1);
        self.last_generation
    }
}

type Shared = Arc<Mutex<State>>;

/// A running fake; dropping it stops the server and removes its service-account files.
pub struct GcsFake {
    pub addr: SocketAddr,
    state: Shared,
    server: actix_web::dev::ServerHandle,
    files: Mutex<Vec<PathBuf>>,
}

impl GcsFake {
    /// Binds 127.0.0.1 on a port from the OS and serves in the background.
    pub async fn start() -> Self {
        let _ = account(); // generate the key before the first request
        let state = Shared::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            addr,
            state,
            server: handle,
            files: Mutex::default(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lists at most `n` entries per page (GCS: 1000), so that listing pages.
    pub fn set_page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = Some(n.max(1));
    }

    /// Creates bucket `name` and returns its `gs://` storage URL, with a service-account file
    /// (pointing `object_store` at this fake, holding the fake's key) as
    /// `google_service_account`.
    pub fn bucket(&self, name: &str) -> String {
        self.state
            .lock()
            .unwrap()
            .buckets
            .entry(name.to_string())
            .or_default();
        let a = account();
        let sa = serde_json::json!({
            "type": "service_account",
            "client_email": a.email,
            "private_key": a.private_key_pem,
            "private_key_id": a.key_id,
            "gcs_base_url": self.endpoint(),
            "disable_oauth": false,
        });
        let path =
            std::env::temp_dir().join(format!("cs-gcs-sa-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, sa.to_string()).unwrap();
        self.files.lock().unwrap().push(path.clone());
        let mut url = url::Url::parse(&format!("gs://{name}")).unwrap();
        url.query_pairs_mut()
            .append_pair("google_service_account", path.to_str().unwrap());
        url.to_string()
    }

    /// The names of the objects in `bucket`.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .buckets
            .get(bucket)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every authenticated request so far as `METHOD` followed by its query's parameter names (sorted) and
    /// `Range` when it had one, e.g. `GET continuation-token,list-type,prefix`: what a test
    /// exercised, without values.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Multipart uploads started in `bucket` and neither completed nor aborted.
    pub fn uploads_in_progress(&self, bucket: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .uploads
            .values()
            .filter(|u| u.bucket == bucket)
            .count()
    }
}

impl Drop for GcsFake {
    fn drop(&mut self) {
        // The stop command is sent on the call; there is nothing to wait for here.
        drop(self.server.stop(false));
        for f in self.files.lock().unwrap().drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/xml; charset=UTF-8")
        .body(format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>\
             <Message>{}</Message></Error>",
            xml_escape(message)
        ))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 3986 unreserved characters kept, everything else `%XX` (GCS's canonical query).
fn strict_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn etag_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    format!("\"{}\"", hex::encode(&h.finalize()[..16]))
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

fn verify_rs256(message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &account().public_key)
        .verify(message, signature)
        .is_ok()
}

/// The bearer token must be the service account's self-signed JWT.
fn check_bearer(req: &HttpRequest) -> Result<(), HttpResponse> {
    let unauthenticated = |why: &str| {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            why,
        ))
    };
    let Some(token) = header(req, "authorization").and_then(|h| h.strip_prefix("Bearer ")) else {
        return unauthenticated("no bearer token");
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts[..] else {
        return unauthenticated("not a JWT");
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let (Some(head), Some(claims), Ok(sig)) = (decode(h), decode(c), URL_SAFE_NO_PAD.decode(s))
    else {
        return unauthenticated("malformed JWT");
    };
    let a = account();
    if head["alg"] != "RS256" || head["kid"] != a.key_id.as_str() {
        return unauthenticated("unknown key");
    }
    if !verify_rs256(format!("{h}.{c}").as_bytes(), &sig) {
        return unauthenticated("bad JWT signature");
    }
    if claims["iss"] != a.email.as_str()
        || claims["exp"].as_i64().is_none_or(|exp| exp <= now_secs())
        || !claims["scope"].as_str().is_some_and(|s| {
            s.split(' ').any(|s| {
                s == "https://www.googleapis.com/auth/cloud-platform"
                    || s.starts_with("https://www.googleapis.com/auth/devstorage.")
            })
        })
    {
        return unauthenticated("JWT issuer, scope or expiry wrong");
    }
    Ok(())
}

/// A V4 signed URL: `object_store`'s `GCSAuthorizer::sign_with`, checked.
fn check_signed_url(req: &HttpRequest, query: &[(String, String)]) -> Result<(), HttpResponse> {
    let denied = |why: &str| Err(error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", why));
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(alg), Some(cred), Some(date), Some(expires), Some(signed), Some(sig)) = (
        get("X-Goog-Algorithm"),
        get("X-Goog-Credential"),
        get("X-Goog-Date"),
        get("X-Goog-Expires"),
        get("X-Goog-SignedHeaders"),
        get("X-Goog-Signature"),
    ) else {
        return denied("missing X-Goog-* parameters");
    };
    let a = account();
    let Some(scope) = cred.strip_prefix(&format!("{}/", a.email)) else {
        return denied("unknown credential");
    };
    if alg != "GOOG4-RSA-SHA256" || !scope.ends_with("/auto/storage/goog4_request") {
        return denied("wrong algorithm or scope");
    }
    let (Ok(when), Ok(expires)) = (
        NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ"),
        expires.parse::<i64>(),
    ) else {
        return denied("bad date or expiry");
    };
    let when = when.and_utc().timestamp();
    if !(1..=604_800).contains(&expires) || now_secs() > when + expires {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ExpiredToken",
            "Invalid argument.",
        ));
    }
    let mut canonical_query: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Goog-Signature")
        .map(|(k, v)| (strict_encode(k), strict_encode(v)))
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = Vec::new();
    for name in signed.split(';') {
        let value = if name == "host" {
            SIGNED_HOST.to_string()
        } else {
            header(req, name).unwrap_or_default().trim().to_string()
        };
        canonical_headers.push(format!("{name}:{value}"));
    }
    let canonical = format!(
        "{}\n{}\n{canonical_query}\n{}\n\n{signed}\nUNSIGNED-PAYLOAD",
        req.method(),
        req.uri().path(),
        canonical_headers.join("\n"),
    );
    let to_sign = format!(
        "GOOG4-RSA-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    match hex::decode(sig) {
        Ok(sig) if verify_rs256(to_sign.as_bytes(), &sig) => Ok(()),
        _ => {
            denied("The request signature we calculated does not match the signature you provided.")
        }
    }
}

async fn handle(req: HttpRequest, body: Bytes, state: web::Data<Shared>) -> HttpResponse {
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let auth = if query.iter().any(|(k, _)| k == "X-Goog-Signature") {
        check_signed_url(&req, &query)
    } else {
        check_bearer(&req)
    };
    if let Err(resp) = auth {
        return resp;
    }
    let raw = req.uri().path().trim_start_matches('/');
    let (bucket, object) = match raw.split_once('/') {
        Some((b, o)) => (b, Some(o)),
        None => (raw, None),
    };
    let (Some(bucket), object) = (percent_decode(bucket), object.map(percent_decode)) else {
        return error(StatusCode::BAD_REQUEST, "InvalidURI", "bad encoding");
    };
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut state = state.lock().unwrap();
    let mut names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let range = if req.headers().contains_key("range") {
        " Range"
    } else {
        ""
    };
    state
        .calls
        .push(format!("{} {}{range}", req.method(), names.join(",")));
    if !state.buckets.contains_key(&bucket) {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    }
    let method = req.method().clone();
    let object = match object {
        Some(Some(o)) if !o.is_empty() => o,
        Some(None) => return error(StatusCode::BAD_REQUEST, "InvalidURI", "bad encoding"),
        _ => {
            return if method == Method::GET && q("list-type") == Some("2") {
                list(&state, &bucket, q)
            } else {
                error(
                    StatusCode::NOT_IMPLEMENTED,
                    "NotImplemented",
                    "Only list-type=2 listing is faked on a bucket.",
                )
            };
        }
    };
    match (method, q("uploads"), q("uploadId"), q("partNumber")) {
        (Method::POST, Some(_), None, None) => initiate(&mut state, &req, &bucket, &object),
        (Method::PUT, None, Some(id), Some(n)) => {
            put_part(&mut state, &bucket, &object, id, n, body)
        }
        (Method::POST, None, Some(id), None) => complete(&mut state, &bucket, &object, id, &body),
        (Method::DELETE, None, Some(id), None) => abort(&mut state, &bucket, &object, id),
        (Method::PUT, None, None, None) => match header(&req, "x-goog-copy-source") {
            Some(src) => copy(&mut state, &req, &bucket, &object, src),
            None => put(&mut state, &req, &bucket, &object, body),
        },
        (Method::DELETE, None, None, None) => {
            match state.buckets.get_mut(&bucket).unwrap().remove(&object) {
                Some(_) => HttpResponse::NoContent().finish(),
                None => no_such_key(),
            }
        }
        // actix answers HEAD with the body's length and without the body.
        (Method::GET | Method::HEAD, None, None, None) => {
            read(&state, &req, &bucket, &object, q("generation"))
        }
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This call is not faked.",
        ),
    }
}

fn no_such_key() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

/// `x-goog-if-generation-match`: `0` = must not exist, `N` = must be at generation `N`.
fn generation_matches(req: &HttpRequest, existing: Option<&Object>) -> Result<(), HttpResponse> {
    let Some(want) = header(req, "x-goog-if-generation-match") else {
        return Ok(());
    };
    let ok = match (want.parse::<u64>(), existing) {
        (Ok(0), None) => true,
        (Ok(g), Some(o)) => o.generation == g,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        ))
    }
}

fn written(o: &Object) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("ETag", o.etag.clone()))
        .insert_header(("x-goog-generation", o.generation.to_string()))
        .insert_header(("x-goog-metageneration", "1"))
        .finish()
}

fn store(
    state: &mut State,
    bucket: &str,
    key: &str,
    data: Bytes,
    etag: String,
    ct: String,
) -> Object {
    let o = Object {
        data,
        generation: state.next_generation(),
        etag,
        updated: Utc::now(),
        content_type: ct,
    };
    state
        .buckets
        .get_mut(bucket)
        .unwrap()
        .insert(key.to_string(), o.clone());
    o
}

fn content_type(req: &HttpRequest) -> String {
    header(req, "content-type")
        .unwrap_or("application/octet-stream")
        .to_string()
}

fn put(state: &mut State, req: &HttpRequest, bucket: &str, key: &str, body: Bytes) -> HttpResponse {
    if let Err(r) = generation_matches(req, state.buckets[bucket].get(key)) {
        return r;
    }
    let etag = etag_of(&[&body]);
    written(&store(state, bucket, key, body, etag, content_type(req)))
}

fn copy(state: &mut State, req: &HttpRequest, bucket: &str, key: &str, src: &str) -> HttpResponse {
    let Some((sb, so)) = src
        .split_once('/')
        .and_then(|(b, o)| Some((percent_decode(b)?, percent_decode(o)?)))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "bad copy source",
        );
    };
    let Some(source) = state.buckets.get(&sb).and_then(|b| b.get(&so)).cloned() else {
        return no_such_key();
    };
    if let Err(r) = generation_matches(req, state.buckets[bucket].get(key)) {
        return r;
    }
    written(&store(
        state,
        bucket,
        key,
        source.data,
        source.etag,
        source.content_type,
    ))
}

fn read(
    state: &State,
    req: &HttpRequest,
    bucket: &str,
    key: &str,
    generation: Option<&str>,
) -> HttpResponse {
    let Some(o) = state.buckets[bucket].get(key) else {
        return no_such_key();
    };
    if generation.is_some_and(|g| g != o.generation.to_string()) {
        return no_such_key();
    }
    let tag_in = |list: &str| {
        list.split(',')
            .any(|t| t.trim() == "*" || t.trim() == o.etag)
    };
    let date = |name: &str| {
        header(req, name).and_then(|d| DateTime::parse_from_rfc2822(d).ok().map(|d| d.timestamp()))
    };
    let updated = o.updated.timestamp();
    let failed = header(req, "if-match").is_some_and(|l| !tag_in(l))
        || date("if-unmodified-since").is_some_and(|d| updated > d);
    if failed {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        );
    }
    let not_modified = match header(req, "if-none-match") {
        Some(l) => tag_in(l),
        None => date("if-modified-since").is_some_and(|d| updated <= d),
    };
    let mut resp = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header(("ETag", o.etag.clone()))
        .insert_header(("Last-Modified", http_date(o.updated)))
        .insert_header(("x-goog-generation", o.generation.to_string()))
        .insert_header(("x-goog-metageneration", "1"))
        .insert_header(("x-goog-stored-content-length", o.data.len().to_string()))
        .insert_header(("Accept-Ranges", "bytes"));
    if not_modified {
        return resp.finish();
    }
    resp.content_type(o.content_type.clone());
    let len = o.data.len() as u64;
    let range = header(req, "range").and_then(|r| parse_range(r, len));
    let body = match range {
        None => o.data.clone(),
        Some(None) => {
            return HttpResponse::RangeNotSatisfiable()
                .insert_header(("Content-Range", format!("bytes */{len}")))
                .content_type("application/xml; charset=UTF-8")
                .body(
                    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidRange</Code>\
                     <Message>The requested range cannot be satisfied.</Message></Error>",
                );
        }
        Some(Some((a, b))) => {
            resp.status(StatusCode::PARTIAL_CONTENT)
                .insert_header(("Content-Range", format!("bytes {a}-{b}/{len}")));
            o.data.slice(a as usize..=b as usize)
        }
    };
    resp.body(body)
}

/// `None`: no usable single range (the whole object is sent); `Some(None)`: unsatisfiable;
/// `Some(Some((first, last)))`: inclusive.
fn parse_range(h: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    Some(if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
    } else {
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() {
            u64::MAX
        } else {
            let b = b.parse().ok()?;
            if b < a {
                return None;
            }
            b
        };
        (a < len).then(|| (a, b.min(len - 1)))
    })
}

fn initiate(state: &mut State, req: &HttpRequest, bucket: &str, key: &str) -> HttpResponse {
    let id = format!("ABPnzm{}", uuid::Uuid::new_v4().simple());
    state.uploads.insert(
        id.clone(),
        Upload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type: content_type(req),
            parts: BTreeMap::new(),
        },
    );
    xml(format!(
        "<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key>\
         <UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
        xml_escape(bucket),
        xml_escape(key)
    ))
}

fn xml(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/xml; charset=UTF-8")
        .body(format!("<?xml version='1.0' encoding='UTF-8'?>{body}"))
}

fn upload<'a>(
    state: &'a mut State,
    bucket: &str,
    key: &str,
    id: &str,
) -> Result<&'a mut Upload, HttpResponse> {
    match state.uploads.get_mut(id) {
        Some(u) if u.bucket == bucket && u.key == key => Ok(u),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The requested upload was not found.",
        )),
    }
}

fn put_part(
    state: &mut State,
    bucket: &str,
    key: &str,
    id: &str,
    n: &str,
    body: Bytes,
) -> HttpResponse {
    let n = match n.parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Invalid part number.",
            );
        }
    };
    let u = match upload(state, bucket, key, id) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let etag = etag_of(&[&body]);
    u.parts.insert(n, (body, etag.clone()));
    HttpResponse::Ok().insert_header(("ETag", etag)).finish()
}

fn complete(state: &mut State, bucket: &str, key: &str, id: &str, body: &[u8]) -> HttpResponse {
    let invalid = |code: &str, msg: &str| error(StatusCode::BAD_REQUEST, code, msg);
    let Ok(body) = std::str::from_utf8(body) else {
        return invalid("MalformedXML", "not UTF-8");
    };
    let listed: Option<Vec<(u32, String)>> = body
        .split("<Part>")
        .skip(1)
        .map(|p| {
            let n = between(p, "<PartNumber>", "</PartNumber>")?
                .trim()
                .parse()
                .ok()?;
            let etag = between(p, "<ETag>", "</ETag>")?.replace("&quot;", "\"");
            Some((n, etag.trim().to_string()))
        })
        .collect();
    let Some(listed) =
        listed.filter(|l| !l.is_empty() && body.contains("<CompleteMultipartUpload"))
    else {
        return invalid("MalformedXML", "The XML you provided was not well-formed.");
    };
    let u = match upload(state, bucket, key, id) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return invalid(
            "InvalidPartOrder",
            "The list of parts was not in ascending order.",
        );
    }
    let mut chosen = Vec::with_capacity(listed.len());
    for (i, (n, etag)) in listed.iter().enumerate() {
        match u.parts.get(n) {
            Some((data, e)) if e == etag => {
                if i + 1 < listed.len() && data.len() < MIN_PART_BYTES {
                    return invalid(
                        "EntityTooSmall",
                        "Your proposed upload is smaller than the minimum allowed object size.",
                    );
                }
                chosen.push((data.clone(), e.clone()));
            }
            _ => {
                return invalid(
                    "InvalidPart",
                    "One or more of the specified parts could not be found.",
                );
            }
        }
    }
    let u = state.uploads.remove(id).unwrap();
    let mut joined = Vec::with_capacity(chosen.iter().map(|(d, _)| d.len()).sum());
    for (d, _) in &chosen {
        joined.extend_from_slice(d);
    }
    let tags: Vec<&[u8]> = chosen.iter().map(|(_, e)| e.as_bytes()).collect();
    let etag = format!(
        "{}-{}\"",
        etag_of(&tags).trim_end_matches('"'),
        chosen.len()
    );
    let o = store(
        state,
        bucket,
        key,
        Bytes::from(joined),
        etag,
        u.content_type,
    );
    let mut resp = xml(format!(
        "<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>/{b}/{k}</Location>\
         <Bucket>{b}</Bucket><Key>{k}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        xml_escape(&o.etag),
        b = xml_escape(bucket),
        k = xml_escape(key),
    ));
    resp.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("x-goog-generation"),
        o.generation.to_string().parse().unwrap(),
    );
    resp
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

fn abort(state: &mut State, bucket: &str, key: &str, id: &str) -> HttpResponse {
    if let Err(r) = upload(state, bucket, key, id) {
        return r;
    }
    state.uploads.remove(id);
    HttpResponse::NoContent().finish()
}

fn list<'a>(state: &State, bucket: &str, q: impl Fn(&str) -> Option<&'a str>) -> HttpResponse {
    let prefix = q("prefix").unwrap_or_default();
    let delimiter = q("delimiter").filter(|d| !d.is_empty());
    let start_after = q("start-after").unwrap_or_default();
    let token = match q("continuation-token").map(|t| URL_SAFE_NO_PAD.decode(t)) {
        None => None,
        Some(Ok(t)) => match String::from_utf8(t) {
            Ok(t) => Some(t),
            Err(_) => return error(StatusCode::BAD_REQUEST, "InvalidArgument", "bad token"),
        },
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "InvalidArgument", "bad token"),
    };
    let page = state.page_size.unwrap_or(1000);
    let max_keys = match q("max-keys").map(str::parse::<usize>) {
        None => page,
        Some(Ok(n)) => n.min(page),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "InvalidArgument", "bad max-keys"),
    };
    // Entries in name order: objects, and common prefixes folding the keys below them.
    enum Entry<'o> {
        Object(&'o str, &'o Object),
        Prefix(String),
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (k, o) in &state.buckets[bucket] {
        if !k.starts_with(prefix) || k.as_str() <= start_after {
            continue;
        }
        let folded = delimiter.and_then(|d| {
            k[prefix.len()..]
                .find(d)
                .map(|i| k[..prefix.len() + i + d.len()].to_string())
        });
        match folded {
            Some(p) => {
                if !matches!(entries.last(), Some(Entry::Prefix(last)) if *last == p) {
                    entries.push(Entry::Prefix(p));
                }
            }
            None => entries.push(Entry::Object(k, o)),
        }
    }
    let name = |e: &Entry| match e {
        Entry::Object(k, _) => k.to_string(),
        Entry::Prefix(p) => p.clone(),
    };
    let rest: Vec<&Entry> = entries
        .iter()
        .filter(|e| token.as_ref().is_none_or(|t| name(e) > *t))
        .collect();
    let shown = &rest[..rest.len().min(max_keys)];
    let truncated = rest.len() > shown.len();
    let mut out = format!(
        "<ListBucketResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix>\
         <KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(bucket),
        xml_escape(prefix),
        shown.len()
    );
    if let Some(d) = delimiter {
        out.push_str(&format!("<Delimiter>{}</Delimiter>", xml_escape(d)));
    }
    if let Some(t) = q("continuation-token") {
        out.push_str(&format!(
            "<ContinuationToken>{}</ContinuationToken>",
            xml_escape(t)
        ));
    }
    if truncated && let Some(last) = shown.last() {
        out.push_str(&format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            URL_SAFE_NO_PAD.encode(name(last))
        ));
    }
    for e in shown {
        match e {
            Entry::Object(k, o) => out.push_str(&format!(
                "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>1</MetaGeneration>\
                 <LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                xml_escape(k),
                o.generation,
                o.updated.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                xml_escape(&o.etag),
                o.data.len()
            )),
            Entry::Prefix(p) => out.push_str(&format!(
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                xml_escape(p)
            )),
        }
    }
    out.push_str("</ListBucketResult>");
    xml(out)
}
