//! The egress guard end to end: a worker with the guard on, against local media servers.
//! Every URL here is loopback (127.0.0.1, localhost, [::1] and other spellings of them):
//! the guard must refuse them before connecting, so the servers count zero hits.

mod common;

use std::time::Duration;

use clipstash_testkit::MediaServer;
use clipstash_worker::Settings;
use common::Env;

const LIMIT: Duration = Duration::from_secs(60);

/// Test settings with the guard on and `allow` as `CLIPSTASH_EGRESS_ALLOW`.
fn guarded(env: &Env, allow: &str) -> Settings {
    let mut s = env.settings();
    s.common.network.allow_private_networks = false;
    s.common.network.egress_allow = allow.parse().unwrap();
    s
}

/// Submits `url` and asserts it fails at once with `forbidden_address`.
async fn assert_refused(env: &Env, url: &str) {
    let id = env.submit(url).await;
    let job = env.finished(id, LIMIT).await;
    assert_eq!(
        (
            job.status.as_str(),
            job.error_code.map(|c| c.as_str()),
            job.attempts
        ),
        ("failed", Some("forbidden_address"), 1),
        "{url}: {:?}",
        job.error_message
    );
    let msg = job.error_message.unwrap_or_default();
    assert!(msg.contains("loopback"), "{url}: {msg}");
}

#[tokio::test]
async fn loopback_in_any_spelling_is_refused_without_a_connection() {
    let env = Env::new().await;
    let media = MediaServer::start().await;
    let port = media.addr.port();
    let worker = env.start_worker(guarded(&env, "")).await;
    // (host as written, path on the media server)
    let cases = [
        ("127.0.0.1", "/media/1000/1/literal"),
        ("localhost", "/media/1000/1/name"),
        ("[::1]", "/media/1000/1/v6"),
        ("2130706433", "/media/1000/1/decimal"),
        ("0177.0.0.1", "/media/1000/1/octal"),
        ("0x7f.1", "/media/1000/1/hex"),
        ("127.1", "/media/1000/1/short"),
        ("[::ffff:127.0.0.1]", "/media/1000/1/mapped"),
    ];
    for (host, path) in cases {
        assert_refused(&env, &format!("http://{host}:{port}{path}")).await;
    }
    for (host, path) in cases {
        assert_eq!(media.hits(path), 0, "{host} reached the media server");
    }
    assert!(env.stored_files().is_empty());
    worker.shutdown().await;
}

#[tokio::test]
async fn the_allowlist_opens_one_host_port_and_redirects_are_checked_per_hop() {
    let env = Env::new().await;
    let allowed = MediaServer::start().await;
    let other = MediaServer::start().await;
    let (a, b) = (allowed.addr.port(), other.addr.port());
    let worker = env
        .start_worker(guarded(&env, &format!("127.0.0.1:{a}")))
        .await;

    // The allowlisted host:port is fetched, directly and through a redirect to itself.
    for path in [
        "/media/5000/2/direct".to_string(),
        format!("/redirect/127.0.0.1/{a}/media/5000/3/hop"),
    ] {
        let id = env.submit(&allowed.url(&path)).await;
        let job = env.finished(id, LIMIT).await;
        assert_eq!(
            job.status.as_str(),
            "succeeded",
            "{path}: {:?}",
            job.error_message
        );
        assert_eq!(job.size_bytes, Some(5000));
    }
    assert_eq!(allowed.hits("/media/5000/3/hop"), 1);

    // A redirect from the allowlisted host to another loopback port: refused at the hop.
    let to_other = format!("/redirect/127.0.0.1/{b}/media/1000/4/other");
    assert_refused(&env, &allowed.url(&to_other)).await;
    assert_eq!(allowed.hits(&to_other), 1);
    assert_eq!(other.hits("/media/1000/4/other"), 0);

    // A redirect to the allowlisted port under a name that is not on the list: the
    // resolver refuses what `localhost` resolves to.
    let to_name = format!("/redirect/localhost/{a}/media/1000/5/name");
    assert_refused(&env, &allowed.url(&to_name)).await;
    assert_eq!(allowed.hits(&to_name), 1);
    assert_eq!(allowed.hits("/media/1000/5/name"), 0);

    // Directly: another port of the same address, and the allowlisted port by name.
    assert_refused(&env, &other.url("/media/1000/6/direct")).await;
    assert_eq!(other.hits("/media/1000/6/direct"), 0);
    assert_refused(&env, &format!("http://localhost:{a}/media/1000/7/name")).await;
    assert_eq!(allowed.hits("/media/1000/7/name"), 0);

    worker.shutdown().await;
}
