//! The egress proxy: an HTTP proxy on loopback inside the worker that applies the
//! [`EgressPolicy`] to every request, for programs that resolve and connect on their own
//! (yt-dlp runs with `--proxy` pointing here).
//!
//! It speaks exactly what such a client sends to an HTTP proxy:
//! - `CONNECT host:port` (HTTPS and anything else tunnelled): checked, connected, answered
//!   `200`, then bytes are copied both ways until either side is done or the tunnel idles;
//! - an absolute-form request, `GET http://host/path HTTP/1.1` (plain HTTP): checked,
//!   connected, sent on in origin form with `Connection: close`, and the answer copied back
//!   with `Connection: close` in its head.
//!
//! The check is the direct client's: [`EgressPolicy::check_url`] on the host as parsed (so
//! `127.1`, `2130706433`, `0x7f.0.0.1` and `[::ffff:127.0.0.1]` are 127.0.0.1), then for a
//! name the [`GuardedResolver`]'s lookup, and the proxy connects only to the addresses that
//! lookup allowed: the check and the connection see the same addresses, so DNS rebinding
//! cannot slip in between. A refusal is a `403` whose reason phrase carries
//! [`REFUSAL_MARKER`] (yt-dlp prints the reason phrase both for a refused CONNECT and for a
//! refused plain request, see [`is_refusal`]) and counts in
//! `egress_refused_total{via="proxy"}`.
//!
//! Heads are parsed with `httparse` (already in the tree through hyper) and the rest of the
//! connection is copied as bytes: one request per connection, no keep-alive (both heads say
//! `Connection: close`), so the bytes after a checked request head only ever reach the
//! address checked for it. A hyper server would add keep-alive, which a proxy in front of one
//! subprocess on loopback does not need, at the price of forwarding bodies frame by frame.
//!
//! Nothing here logs a URL: paths and queries may carry tokens. Only the host and port of a
//! refused destination are logged.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_core::{EgressVia, record_egress_refused};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use url::{Host, Url};

use super::{EgressPolicy, Forbidden, GuardedResolver};

/// In the reason phrase and body of every refusal: what a client's error output shows, and
/// what [`is_refusal`] looks for.
pub const REFUSAL_MARKER: &str = "clipstash egress guard: forbidden_address";

/// The header every refusal carries, for clients that show headers.
pub const REFUSAL_HEADER: &str = "X-Clipstash-Egress";

/// Whether a client's output (yt-dlp's stderr) reports a refusal of this proxy. yt-dlp
/// prints the proxy's reason phrase for a refused CONNECT (`Tunnel connection failed: 403
/// Forbidden (clipstash egress guard: forbidden_address: ...)`) and for a refused plain
/// request (`HTTP Error 403: Forbidden (clipstash egress guard: forbidden_address: ...)`).
pub fn is_refusal(output: &str) -> bool {
    output.contains(REFUSAL_MARKER)
}

/// Limits of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    /// Connections served at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// Longest wait for a client's request head.
    pub head_timeout: Duration,
    /// Longest wait to connect to the destination.
    pub connect_timeout: Duration,
    /// A connection with no bytes moving in either direction for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            head_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A running egress proxy on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct EgressProxy {
    addr: SocketAddr,
    _task: AbortOnDropHandle<()>,
}

impl EgressProxy {
    /// Binds `127.0.0.1` on a port from the OS and serves until dropped.
    pub async fn start(policy: EgressPolicy, limits: ProxyLimits) -> io::Result<Self> {
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            resolver: GuardedResolver::new(policy.clone()),
            policy,
            limits,
        });
        let task = tokio::spawn(serve(listener, shared));
        Ok(Self {
            addr,
            _task: AbortOnDropHandle::new(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for a client's proxy setting: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Shared {
    policy: EgressPolicy,
    resolver: GuardedResolver,
    limits: ProxyLimits,
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    // Owned here, so stopping the proxy (dropping this task) aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Bound to 127.0.0.1, so only local clients can reach it; refuse anything else
        // anyway, in case that ever changes.
        if !peer.ip().is_loopback() {
            continue;
        }
        let shared = shared.clone();
        conns.spawn(async move {
            let _permit = permit;
            handle(stream, &shared).await;
        });
    }
}

/// The largest request head accepted (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// What the client asked for.
struct Target {
    connect: bool,
    url: Url,
    port: u16,
}

/// An answer that ends a connection before any byte reaches a destination.
struct Reject {
    status: u16,
    reason: String,
    body: String,
}

impl Reject {
    fn new(status: u16, reason: &str, body: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_string(),
            body: body.into(),
        }
    }

    /// The reason phrase says why too: it is all of the answer yt-dlp prints.
    fn forbidden(f: &Forbidden) -> Self {
        let why: String = f
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
            .collect();
        Self {
            status: 403,
            reason: format!("Forbidden ({REFUSAL_MARKER}: {why})"),
            body: format!("{REFUSAL_MARKER}: {why}"),
        }
    }

    fn is_refusal(&self) -> bool {
        self.status == 403
    }
}

async fn handle(mut client: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let head =
        match tokio::time::timeout(shared.limits.head_timeout, read_head(&mut client, &mut buf))
            .await
        {
            Ok(Ok(Some(head))) => head,
            // Timed out, closed before a whole head, or unreadable: nothing to answer.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
        };
    let (target, upstream_head) = match parse(&buf[..head]) {
        Ok(t) => t,
        Err(r) => return reject(&mut client, r).await,
    };
    let upstream = match connect(&target, shared).await {
        Ok(s) => s,
        Err(r) => {
            if r.is_refusal() {
                record_egress_refused(EgressVia::Proxy);
                tracing::info!(
                    host = target.url.host_str().unwrap_or(""),
                    port = target.port,
                    reason = %r.body,
                    "egress proxy refused a destination"
                );
            }
            return reject(&mut client, r).await;
        }
    };
    let mut upstream = upstream;
    let sent = async {
        if target.connect {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
        } else {
            upstream.write_all(&upstream_head).await?;
        }
        // Bytes the client sent after its head (a TLS hello, a request body) go on.
        upstream.write_all(&buf[head..]).await
    };
    if sent.await.is_err() {
        return;
    }
    let response = if target.connect {
        Response::Tunnel
    } else {
        Response::CloseAfter
    };
    tunnel(client, upstream, response, shared.limits.idle_timeout).await;
}

/// Reads until a whole request head is in `buf`; returns its length, or `None` when the
/// client closed first. Answers 431 itself when the head is too large.
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > MAX_HEAD {
            reject(
                client,
                Reject::new(
                    431,
                    "Request Header Fields Too Large",
                    "request head too large",
                ),
            )
            .await;
            return Ok(None);
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Headers that concern only this hop (RFC 9110 7.6.1) or the proxy itself: never sent on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// Parses a request head into its target and, for a plain request, the head to send on.
fn parse(head: &[u8]) -> Result<(Target, Vec<u8>), Reject> {
    let bad = |msg: &str| Reject::new(400, "Bad Request", msg.to_string());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(
                431,
                "Request Header Fields Too Large",
                "too many headers",
            ));
        }
        Err(e) => return Err(bad(&format!("malformed request: {e}"))),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    if method.eq_ignore_ascii_case("CONNECT") {
        let (url, port) = parse_authority(target).ok_or_else(|| {
            bad("CONNECT needs host:port (a name, an IPv4 address or [IPv6]:port)")
        })?;
        return Ok((
            Target {
                connect: true,
                url,
                port,
            },
            Vec::new(),
        ));
    }
    let url = Url::parse(target)
        .map_err(|_| bad("a proxy request names an absolute http:// URL (or CONNECT host:port)"))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err(bad("for https://, use CONNECT host:443")),
        _ => return Err(bad("only http:// URLs and CONNECT are proxied")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("URLs with credentials are not proxied"));
    }
    if url.host().is_none() {
        return Err(bad("the URL has no host"));
    }
    let port = url.port_or_known_default().unwrap_or(80);

    // On in origin form, with this hop's headers dropped and a Host for the checked target.
    let connection_named: Vec<String> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::with_capacity(head.len() + 64);
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => out.extend_from_slice(format!("Host: {host}:{p}\r\n").as_bytes()),
        None => out.extend_from_slice(format!("Host: {host}\r\n").as_bytes()),
    }
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) || connection_named.contains(&name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // One request per connection: what follows on it is not parsed, so it must not be
    // another request meant for somewhere else.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok((
        Target {
            connect: false,
            url,
            port,
        },
        out,
    ))
}

/// `host:port` of a CONNECT, host parsed as a URL's host (so every spelling of an address is
/// that address); the port must be given.
fn parse_authority(authority: &str) -> Option<(Url, u16)> {
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"/?#@\\".contains(&b))
    {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
        return None;
    }
    if !host.starts_with('[') && host.contains(':') {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let url = Url::parse(&format!("http://{host}:{port}/")).ok()?;
    url.host()?;
    Some((url, port))
}

/// Checks the target as the direct client does, then connects to one of the addresses the
/// check allowed, and to nothing else.
async fn connect(target: &Target, shared: &Shared) -> Result<TcpStream, Reject> {
    shared
        .policy
        .check_url(&target.url)
        .map_err(|f| Reject::forbidden(&f))?;
    let addrs: Vec<SocketAddr> = match target.url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), target.port)],
        // An IPv4-mapped literal is the IPv4 address it carries (as the policy classified it).
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.to_canonical(), target.port)],
        Some(Host::Domain(name)) => match shared.resolver.lookup(name).await {
            Ok(addrs) => addrs
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), target.port))
                .collect(),
            Err(e) => {
                return Err(match e.downcast_ref::<Forbidden>() {
                    Some(f) => Reject::forbidden(f),
                    None => Reject::new(502, "Bad Gateway", format!("cannot resolve {name}")),
                });
            }
        },
        None => return Err(Reject::forbidden(&Forbidden::NoHost)),
    };
    let mut last = Reject::new(502, "Bad Gateway", "no address to connect to");
    for addr in addrs {
        match tokio::time::timeout(shared.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                last = Reject::new(502, "Bad Gateway", format!("connecting to {addr}: {e}"));
            }
            Err(_) => {
                last = Reject::new(
                    504,
                    "Gateway Timeout",
                    format!("connecting to {addr} timed out"),
                );
            }
        }
    }
    Err(last)
}

async fn reject(client: &mut TcpStream, r: Reject) {
    let body = format!("{}\n", r.body);
    let marker = if r.is_refusal() {
        format!("{REFUSAL_HEADER}: refused\r\n")
    } else {
        String::new()
    };
    let answer = format!(
        "HTTP/1.1 {} {}\r\n{marker}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        r.status,
        r.reason,
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// What flows back from the destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Response {
    /// Bytes of a tunnel, copied as they are.
    Tunnel,
    /// The answer to a plain request: its head says `Connection: close`, so the client does
    /// not send its next request on this connection (it would reach this destination,
    /// whatever host it names).
    CloseAfter,
}

/// Copies bytes both ways until both directions are done, or nothing moved for `idle`.
async fn tunnel(
    mut client: TcpStream,
    mut upstream: TcpStream,
    response: Response,
    idle: Duration,
) {
    let moved = AtomicU64::new(0);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let back = async {
        if response == Response::CloseAfter
            && relay_response_head(&mut ur, &mut cw, &moved).await.is_err()
        {
            let _ = cw.shutdown().await;
            return;
        }
        copy_half(&mut ur, &mut cw, &moved).await
    };
    let copies = async { tokio::join!(copy_half(&mut cr, &mut uw, &moved), back) };
    let watchdog = async {
        let mut seen = moved.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle).await;
            let now = moved.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    tokio::select! {
        _ = copies => {}
        _ = watchdog => {}
    }
}

/// Reads the destination's response head(s) and sends them on with `Connection: close`
/// (an interim 1xx head goes on as it is, then the final one is read), followed by the body
/// bytes read with the head.
async fn relay_response_head<R, W>(from: &mut R, to: &mut W, moved: &AtomicU64) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = find_head_end(&buf) else {
            if buf.len() > MAX_HEAD {
                return Err(io::Error::other("response head too large"));
            }
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            moved.fetch_add(n as u64, Ordering::Relaxed);
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        res.parse(&buf[..end])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let code = res.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            to.write_all(&buf[..end]).await?;
            buf.drain(..end);
            continue;
        }
        let mut out = Vec::with_capacity(end + 32);
        out.extend_from_slice(
            format!("HTTP/1.1 {code} {}\r\n", res.reason.unwrap_or("")).as_bytes(),
        );
        for h in res.headers.iter() {
            if ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&buf[end..]);
        return to.write_all(&out).await;
    }
}

/// Copies `from` to `to` until end of stream or an error, then shuts `to`'s write side so
/// the far end sees the end too.
async fn copy_half<R, W>(from: &mut R, to: &mut W, moved: &AtomicU64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(head: &str) -> Result<(Target, Vec<u8>), Reject> {
        parse(head.as_bytes())
    }

    #[test]
    fn connect_targets_parse_as_url_hosts() {
        for (authority, host, port) in [
            ("example.com:443", "example.com", 443),
            ("EXAMPLE.com:8443", "example.com", 8443),
            ("127.1:80", "127.0.0.1", 80),
            ("2130706433:443", "127.0.0.1", 443),
            ("0x7f.0.0.1:443", "127.0.0.1", 443),
            ("[::1]:443", "[::1]", 443),
            ("[::ffff:127.0.0.1]:443", "[::ffff:7f00:1]", 443),
        ] {
            let (t, _) = target(&format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
            ))
            .unwrap_or_else(|r| panic!("{authority}: {}", r.body));
            assert!(t.connect);
            assert_eq!(
                (t.url.host_str().unwrap(), t.port),
                (host, port),
                "{authority}"
            );
        }
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:99999",
            ":443",
            "user@example.com:443",
            "example.com:443/x",
            "::1:443",
            "[::1:443",
            "http://example.com:443",
        ] {
            let r = target(&format!("CONNECT {bad} HTTP/1.1\r\n\r\n"));
            assert!(
                matches!(r, Err(Reject { status: 400, .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn plain_requests_go_on_in_origin_form_without_hop_headers() {
        let (t, out) = target(
            "GET http://media.example:8080/v.mp4?sig=abc#frag HTTP/1.1\r\n\
             Host: ignored.example\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: x\r\n\
             Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nCookie: a=b\r\nUser-Agent: yt\r\n\r\n",
        )
        .map_err(|r| r.body)
        .unwrap();
        assert!(!t.connect);
        assert_eq!(t.port, 8080);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "GET /v.mp4?sig=abc HTTP/1.1\r\nHost: media.example:8080\r\nCookie: a=b\r\n\
             User-Agent: yt\r\nConnection: close\r\n\r\n"
        );
        let (t, out) = target("HEAD http://a.example/ HTTP/1.0\r\n\r\n")
            .map_err(|r| r.body)
            .unwrap();
        assert_eq!(t.port, 80);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("HEAD / HTTP/1.1\r\nHost: a.example\r\n")
        );
    }

    #[test]
    fn non_proxy_requests_are_refused() {
        for head in [
            "GET /v.mp4 HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "GET https://a.example/ HTTP/1.1\r\n\r\n",
            "GET ftp://a.example/ HTTP/1.1\r\n\r\n",
            "GET http://u:p@a.example/ HTTP/1.1\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(
                matches!(target(head), Err(Reject { status: 400, .. })),
                "{head:?}"
            );
        }
    }

    #[test]
    fn refusals_are_recognised_in_yt_dlp_output() {
        // Lines yt-dlp 2026.10.26 printed for this proxy's 403, on CONNECT and on plain GET.
        let connect = "ERROR: [generic] x: Unable to download webpage: ('Unable to connect to proxy', OSError('Tunnel connection failed: 403 Forbidden (clipstash egress guard: forbidden_address)'))";
        let plain = "ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden (clipstash egress guard: forbidden_address) (caused by <HTTPError 403: Forbidden (clipstash egress guard: forbidden_address)>)";
        assert!(is_refusal(connect));
        assert!(is_refusal(plain));
        assert!(!is_refusal(
            "ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden"
        ));
        let r = Reject::forbidden(&Forbidden::NoHost);
        assert!(r.reason.contains(REFUSAL_MARKER));
    }
}
