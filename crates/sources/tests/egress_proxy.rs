//! The egress proxy end to end, against the test kit's media server on 127.0.0.1. Every
//! destination here is loopback (127.0.0.1 in its spellings, `localhost`, `[::1]`): the
//! refused ones must be refused before any connection, so the media server counts zero hits.

use std::net::SocketAddr;
use std::time::Duration;

use clipstash_sources::egress::proxy::{REFUSAL_HEADER, REFUSAL_MARKER};
use clipstash_sources::{EgressPolicy, EgressProxy, NetworkArgs, ProxyLimits};
use clipstash_testkit::{MediaServer, media_sha256, prom};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

fn guarded(allow: &str) -> EgressPolicy {
    EgressPolicy::new(&NetworkArgs {
        allow_private_networks: false,
        egress_allow: allow.parse().unwrap(),
    })
}

async fn proxy(policy: EgressPolicy) -> EgressProxy {
    EgressProxy::start(policy, ProxyLimits::default())
        .await
        .unwrap()
}

/// A response read to its end: status line, head and body.
struct Answer {
    status_line: String,
    head: String,
    body: Vec<u8>,
}

fn split(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    Answer {
        status_line: head.lines().next().unwrap_or("").to_string(),
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Reads one response: its head, then as many body bytes as its Content-Length says (or to
/// the end of the stream). Servers here keep connections open, so the end is not awaited.
async fn read_response(sock: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|len| raw.len() >= end + 4 + len)
                    || head.starts_with("http/1.1 200 connection established")
                {
                    return;
                }
            }
            match sock.read(&mut chunk).await.unwrap() {
                0 => return,
                n => raw.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the proxy answers");
    split(&raw)
}

/// Sends `head` to the proxy and reads the answer.
async fn ask(proxy: SocketAddr, head: &str) -> Answer {
    let mut sock = TcpStream::connect(proxy).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut sock).await
}

/// A plain proxied GET of `url` (absolute form, as yt-dlp sends it).
async fn plain_get(proxy: SocketAddr, url: &str) -> Answer {
    ask(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: ignored\r\nProxy-Connection: keep-alive\r\n\r\n"),
    )
    .await
}

/// CONNECT `authority`; on 200, a GET of `path` through the tunnel.
async fn connect_get(proxy: SocketAddr, authority: &str, path: &str) -> Answer {
    let mut sock = TcpStream::connect(proxy).await.unwrap();
    sock.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_response(&mut sock).await;
    if !answer.status_line.starts_with("HTTP/1.1 200 ") {
        return answer;
    }
    assert!(answer.body.is_empty(), "bytes after the CONNECT answer");
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(&mut sock).await
}

fn assert_media(a: &Answer, len: u64, seed: u64, what: &str) {
    assert!(a.status_line.contains(" 200 "), "{what}: {}", a.head);
    assert_eq!(a.body.len() as u64, len, "{what}");
    assert_eq!(
        hex::encode(Sha256::digest(&a.body)),
        media_sha256(len, seed),
        "{what}"
    );
}

fn assert_refused(a: &Answer, what: &str) {
    assert!(
        a.status_line.starts_with("HTTP/1.1 403 ") && a.status_line.contains(REFUSAL_MARKER),
        "{what}: {}",
        a.head
    );
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains(&format!("{}: refused", REFUSAL_HEADER.to_ascii_lowercase())),
        "{what}: {}",
        a.head
    );
    let body = String::from_utf8_lossy(&a.body);
    assert!(body.contains(REFUSAL_MARKER), "{what}: {body}");
}

#[tokio::test]
async fn connect_and_plain_get_reach_an_allowlisted_host_port() {
    let media = MediaServer::start().await;
    let port = media.addr.port();
    let proxy = proxy(guarded(&format!("127.0.0.1:{port}"))).await;

    let a = connect_get(
        proxy.addr(),
        &format!("127.0.0.1:{port}"),
        "/media/70000/1/connect",
    )
    .await;
    assert_media(&a, 70000, 1, "CONNECT");
    assert_eq!(media.hits("/media/70000/1/connect"), 1);

    let a = plain_get(proxy.addr(), &media.url("/media/70000/2/plain?token=x")).await;
    assert_media(&a, 70000, 2, "plain GET");
    // The server would keep the connection; the client is told not to reuse it.
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close"),
        "{}",
        a.head
    );
    assert_eq!(media.hits("/media/70000/2/plain?token=x"), 1);

    // A real client configured with the proxy: reqwest sends the absolute form too.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    let body = client
        .get(media.url("/media/5000/3/reqwest"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), media_sha256(5000, 3));
    assert_eq!(media.hits("/media/5000/3/reqwest"), 1);
}

#[tokio::test]
async fn a_destination_off_the_allowlist_is_refused_without_a_connection() {
    // Refusals are counted through the recorder of this thread (a current-thread runtime:
    // the proxy's tasks run here too).
    let recorder = metrics_core::catalogue::prometheus_builder().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let media = MediaServer::start().await;
    let other = MediaServer::start().await;
    let proxy = proxy(guarded(&format!("127.0.0.1:{}", other.addr.port()))).await;
    let port = media.addr.port();

    let a = connect_get(
        proxy.addr(),
        &format!("127.0.0.1:{port}"),
        "/media/1000/1/connect",
    )
    .await;
    assert_refused(&a, "CONNECT");
    let a = plain_get(proxy.addr(), &media.url("/media/1000/1/plain")).await;
    assert_refused(&a, "plain GET");
    assert!(
        String::from_utf8_lossy(&a.body).contains("loopback"),
        "the reason is given"
    );
    assert_eq!(media.hits("/media/1000/1/connect"), 0);
    assert_eq!(media.hits("/media/1000/1/plain"), 0);

    let samples = prom::parse(&handle.render());
    assert_eq!(
        prom::sum(&samples, "egress_refused_total", &[("via", "proxy")]),
        2.0
    );
}

#[tokio::test]
async fn every_spelling_of_loopback_and_names_that_resolve_to_it_are_refused() {
    let media = MediaServer::start().await;
    let port = media.addr.port();
    let proxy = proxy(guarded("")).await;
    let hosts = [
        "127.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
        "LocalHost",
    ];
    for (i, host) in hosts.iter().enumerate() {
        let connect_path = format!("/media/1000/1/connect-{i}");
        let a = connect_get(proxy.addr(), &format!("{host}:{port}"), &connect_path).await;
        assert_refused(&a, &format!("CONNECT {host}"));
        let plain_path = format!("/media/1000/1/plain-{i}");
        let a = plain_get(proxy.addr(), &format!("http://{host}:{port}{plain_path}")).await;
        assert_refused(&a, &format!("GET {host}"));
        assert_eq!(media.hits(&connect_path), 0, "{host} reached the server");
        assert_eq!(media.hits(&plain_path), 0, "{host} reached the server");
    }
}

#[tokio::test]
async fn the_allowlist_means_what_it_means_for_direct_fetches() {
    let media = MediaServer::start().await;
    let port = media.addr.port();
    // The address entry admits every spelling of that address, on that port only; a name
    // is admitted by its own entry, never by the address it resolves to.
    let proxy = proxy(guarded(&format!("127.0.0.1:{port}"))).await;
    for (i, host) in ["127.1", "0x7f.0.0.1", "2130706433", "[::ffff:127.0.0.1]"]
        .iter()
        .enumerate()
    {
        let path = format!("/media/2000/{i}/spelled");
        let a = connect_get(proxy.addr(), &format!("{host}:{port}"), &path).await;
        assert_media(&a, 2000, i as u64, host);
    }
    for host in ["localhost", "[::1]"] {
        let a = plain_get(
            proxy.addr(),
            &format!("http://{host}:{port}/media/1000/1/no"),
        )
        .await;
        assert_refused(&a, host);
    }
    assert_eq!(media.hits("/media/1000/1/no"), 0);

    let by_name = proxy_named(port).await;
    let a = plain_get(
        by_name.addr(),
        &format!("http://localhost:{port}/media/3000/4/name"),
    )
    .await;
    assert_media(&a, 3000, 4, "allowlisted name");
    let a = connect_get(
        by_name.addr(),
        &format!("localhost:{}", port.wrapping_add(1).max(1)),
        "/media/1000/1/other-port",
    )
    .await;
    assert_refused(&a, "allowlisted name, another port");
}

async fn proxy_named(port: u16) -> EgressProxy {
    proxy(guarded(&format!("localhost:{port}"))).await
}

#[tokio::test]
async fn malformed_and_non_proxy_requests_get_400() {
    let proxy = proxy(guarded("")).await;
    for head in [
        "GET /media/1/1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET https://127.0.0.1/ HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        let a = ask(proxy.addr(), head).await;
        assert!(
            a.status_line.starts_with("HTTP/1.1 400 "),
            "{head:?}: {}",
            a.head
        );
    }
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let media = MediaServer::start().await;
    let port = media.addr.port();
    let proxy = EgressProxy::start(
        guarded(&format!("127.0.0.1:{port}")),
        ProxyLimits {
            idle_timeout: Duration::from_millis(300),
            ..ProxyLimits::default()
        },
    )
    .await
    .unwrap();
    // `/stall` sends its head and 1 KiB, then holds the connection open until the client
    // leaves: only the proxy's idle timeout ends this read.
    let a = connect_get(proxy.addr(), &format!("127.0.0.1:{port}"), "/stall/idle").await;
    assert!(a.status_line.contains(" 200 "), "{}", a.head);
    assert_eq!(a.body.len(), 1024);
}
