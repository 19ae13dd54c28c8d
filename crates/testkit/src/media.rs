//! A local HTTP server serving generated media and the failure modes the worker must handle.
//!
//! Routes (the trailing `tag` makes a URL unique so its hits can be counted alone):
//! - `/media/{bytes}/{seed}/{tag}`: 200 `video/mp4` with Content-Length
//! - `/chunked/{bytes}/{seed}/{tag}`: 200 `video/mp4`, chunked, no length
//! - `/slow/{bytes}/{seed}/{ms_per_64k}/{tag}`: like media, paced
//! - `/held/{bytes}/{seed}/{gate}/{tag}`: like media, but after the first 64 KiB it trickles
//!   one byte every 100 ms (never idle) until the test calls [`MediaServer::release`]`(gate)`:
//!   a download that is still running for exactly as long as the test wants, no timer to race
//! - `/status/{code}/{tag}`: that status
//! - `/flaky/{fails}/{bytes}/{seed}/{tag}`: 500 for the first `fails` hits, then media
//! - `/truncated/{bytes}/{seed}/{tag}`: announces `bytes`, sends half, closes
//! - `/stall/{tag}`: headers and 1 KiB, then nothing until the client leaves
//! - `/html/{tag}`: a `text/html` page
//! - `/page/{bytes}/{seed}/{tag}`: a `text/html` page titled `Clip {tag}` embedding
//!   `<video src="/media/{bytes}/{seed}/{tag}.mp4">` (yt-dlp's generic extractor finds it)
//!
//! Every request's headers are kept, by path ([`MediaServer::request_headers`]).
//! - `/redirect/{host}/{port}/{path...}`: 302 to `http://{host}:{port}/{path...}` (host as
//!   written: `127.0.0.1`, `localhost`, `2130706433`, ...), for the egress guard's
//!   redirect checks

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const BLOCK: usize = 64 * 1024;

/// Length of the media's repeating pattern: a prime, so the pattern never lines up with a
/// power-of-two part or block size (parts written out of order, twice or not at all change
/// the file's hash, and a range off by any power of two reads other bytes).
const PERIOD: usize = 65_521;

/// One period of the media's bytes: a multiplicative hash, computed once.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..PERIOD as u64)
            .map(|p| (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8)
            .collect()
    })
}

/// Fills `buf` with the bytes at `offset..` of media `seed`: the pattern, rotated by the
/// seed, so different seeds give different files. Copying the pattern costs about what a
/// file server's read from the page cache does; generating every byte anew cost the bench's
/// load generator a core of its own (docs/BENCHMARKS.md).
fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let pattern = pattern();
    let mut at = (offset.wrapping_add(seed.wrapping_mul(7919)) % PERIOD as u64) as usize;
    let mut out = buf;
    while !out.is_empty() {
        let n = out.len().min(PERIOD - at);
        out[..n].copy_from_slice(&pattern[at..at + n]);
        out = &mut out[n..];
        at = 0;
    }
}

/// SHA-256 (hex) of media `seed` of `len` bytes, as the server sends it.
pub fn media_sha256(len: u64, seed: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(BLOCK as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    hex::encode(h.finalize())
}

type Gates = Arc<Mutex<HashMap<String, watch::Sender<bool>>>>;
type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// Counts a response to `path` as being sent until dropped (sent, or the client left).
struct Sending(Counts, String);

impl Sending {
    fn start(counts: &Counts, path: &str) -> Self {
        *counts.lock().unwrap().entry(path.to_string()).or_insert(0) += 1;
        Self(counts.clone(), path.to_string())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(n) = self.0.lock().unwrap().get_mut(&self.1) {
            *n -= 1;
        }
    }
}

/// The headers of the last request for each path (names lowercased).
type Headers = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

#[derive(Clone)]
pub struct MediaServer {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    headers: Headers,
    gates: Gates,
    sending: Counts,
}

/// The gate named `name`, created closed on first use.
fn gate(gates: &Gates, name: &str) -> watch::Receiver<bool> {
    gates
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_insert_with(|| watch::channel(false).0)
        .subscribe()
}

impl MediaServer {
    /// Binds 127.0.0.1 on a port from the OS and serves until the runtime ends.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let headers = Headers::default();
        let gates = Gates::default();
        let sending = Counts::default();
        let (h, hd, g, s) = (
            hits.clone(),
            headers.clone(),
            gates.clone(),
            sending.clone(),
        );
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (h, hd, g, s) = (h.clone(), hd.clone(), g.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, h, hd, g, s).await;
                });
            }
        });
        Self {
            addr,
            hits,
            headers,
            gates,
            sending,
        }
    }

    /// Responses to `path` being sent right now: a download the client abandoned drops to
    /// zero once the server notices the closed connection (its next write fails).
    pub fn sending(&self, path: &str) -> u64 {
        self.sending.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Opens gate `name`: every `/held/.../{name}/...` response, waiting or to come, sends
    /// the rest of its body.
    pub fn release(&self, name: &str) {
        gate(&self.gates, name);
        if let Some(tx) = self.gates.lock().unwrap().get(name) {
            tx.send_replace(true);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The headers of the last request for `path` (names lowercased, in order); empty when
    /// none came.
    pub fn request_headers(&self, path: &str) -> Vec<(String, String)> {
        self.headers
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests received for `path` so far.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn serve(
    sock: TcpStream,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    headers: Headers,
    gates: Gates,
    sending: Counts,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut received = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                received.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        headers.lock().unwrap().insert(path.clone(), received);
        let count = {
            let mut h = hits.lock().unwrap();
            let c = h.entry(path.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let sock = reader.get_mut();
        let _sending = Sending::start(&sending, &path);
        let keep_alive = match parts.first().copied() {
            Some("media") => send_media(sock, num(1), num(2), Pace::Full).await?,
            Some("held") => {
                let gate = gate(&gates, parts.get(3).copied().unwrap_or(""));
                send_media(sock, num(1), num(2), Pace::Held(gate)).await?
            }
            Some("slow") => {
                send_media(
                    sock,
                    num(1),
                    num(2),
                    Pace::Slow(Duration::from_millis(num(3))),
                )
                .await?
            }
            Some("chunked") => send_chunked(sock, num(1), num(2)).await?,
            Some("status") => send_status(sock, num(1) as u16).await?,
            Some("flaky") if count <= num(1) => send_status(sock, 500).await?,
            Some("flaky") => send_media(sock, num(2), num(3), Pace::Full).await?,
            Some("truncated") => {
                let len = num(1);
                sock.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len}\r\n\r\n").as_bytes()).await?;
                let mut buf = vec![0u8; (len / 2) as usize];
                fill(num(2), 0, &mut buf);
                sock.write_all(&buf).await?;
                sock.flush().await?;
                false
            }
            Some("stall") => {
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 102400\r\n\r\n",
                )
                .await?;
                sock.write_all(&[7u8; 1024]).await?;
                sock.flush().await?;
                // Hold the connection open until the client gives up.
                let mut sink = [0u8; 1024];
                while reader.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            Some("redirect") if parts.len() >= 3 => {
                let location = format!("http://{}:{}/{}", parts[1], parts[2], parts[3..].join("/"));
                sock.write_all(
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
                true
            }
            Some("page") => {
                let tag = parts.get(3).copied().unwrap_or("");
                let body = format!(
                    "<!DOCTYPE html><html><head><title>Clip {tag}</title></head><body>\
                     <video src=\"/media/{}/{}/{tag}.mp4\" controls></video></body></html>",
                    num(1),
                    num(2)
                );
                sock.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
                true
            }
            Some("html") => {
                let body = "<html><body>not a video</body></html>";
                sock.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
                true
            }
            _ => send_status(sock, 404).await?,
        };
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn send_status(sock: &mut TcpStream, code: u16) -> std::io::Result<bool> {
    let body = format!("status {code}");
    sock.write_all(
        format!(
            "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    Ok(true)
}

/// How `send_media` spaces its 64 KiB blocks.
enum Pace {
    Full,
    /// This long after each block.
    Slow(Duration),
    /// After the first block, one byte every 100 ms (so no idle timeout fires) until the
    /// gate opens, then the rest at full speed.
    Held(watch::Receiver<bool>),
}

async fn send_media(
    sock: &mut TcpStream,
    len: u64,
    seed: u64,
    mut pace: Pace,
) -> std::io::Result<bool> {
    sock.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len}\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(BLOCK as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        sock.write_all(&buf[..n]).await?;
        off += n as u64;
        match &mut pace {
            Pace::Full => {}
            Pace::Slow(p) => {
                sock.flush().await?;
                tokio::time::sleep(*p).await;
            }
            Pace::Held(gate) => {
                sock.flush().await?;
                while !*gate.borrow_and_update() && off + 1 < len {
                    fill(seed, off, &mut buf[..1]);
                    sock.write_all(&buf[..1]).await?;
                    sock.flush().await?;
                    off += 1;
                    tokio::select! {
                        changed = gate.changed() => if changed.is_err() { return Ok(false) },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
    sock.flush().await?;
    Ok(true)
}

async fn send_chunked(sock: &mut TcpStream, len: u64, seed: u64) -> std::io::Result<bool> {
    sock.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await?;
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(BLOCK as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        sock.write_all(format!("{n:x}\r\n").as_bytes()).await?;
        sock.write_all(&buf[..n]).await?;
        sock.write_all(b"\r\n").await?;
        off += n as u64;
    }
    sock.write_all(b"0\r\n\r\n").await?;
    sock.flush().await?;
    Ok(true)
}
