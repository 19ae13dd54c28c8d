//! Storage emulators for the provider tests: moto (S3) and Azurite (Azure Blob), installed
//! by `deploy/emulators/ensure.sh` (`just test` runs it) and started here on free loopback
//! ports, once per test binary. Each test takes a bucket or container of its own.
//!
//! A watchdog shell around each emulator kills it when the test process exits, so none
//! outlives its tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// Azurite's public development account and key (documented by Microsoft; not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    pub port: u16,
    pub pid: u32,
}

impl Emulator {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the emulator vanishes mid-conversation, as a crashed service would.
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `ensure.sh` installed a binary (`CLIPSTASH_MOTO` / `CLIPSTASH_AZURITE` override).
fn installed(var: &str, rel: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("CLIPSTASH_EMULATORS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/clipstash-emulators")
            });
        base.join(rel)
    });
    assert!(
        path.exists(),
        "{} not installed: run deploy/emulators/ensure.sh (`just test` does)",
        path.display()
    );
    path
}

/// Starts `cmd` under a watchdog that kills it once this process is gone, and waits until
/// its port accepts connections.
#[allow(
    clippy::zombie_processes,
    reason = "the watchdog runs as long as the test process, which never waits for it"
)]
fn start(name: &str, cmd: String, port: u16) -> Emulator {
    let log = std::env::temp_dir().join(format!("cs-{name}-{port}.log"));
    let script = format!(
        "{cmd} >{log} 2>&1 & c=$!; echo $c; \
         while kill -0 {parent} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 0.5; done; kill $c 2>/dev/null",
        log = log.display(),
        parent = std::process::id()
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("bash");
    let mut pid = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut pid)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline && matches!(child.try_wait(), Ok(None)),
            "{name} did not listen on {port}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Emulator {
        port,
        pid: pid.trim().parse().unwrap_or(0),
    }
}

/// The S3 emulator (moto server), shared by the tests of this binary.
pub fn moto() -> &'static Emulator {
    static MOTO: OnceLock<Emulator> = OnceLock::new();
    MOTO.get_or_init(start_moto)
}

/// A moto server of the caller's own, for a test that stops it ([`Emulator::kill`]).
pub fn start_moto() -> Emulator {
    let bin = installed("CLIPSTASH_MOTO", "venv/bin/moto_server");
    let port = free_port();
    start(
        "moto",
        format!("{} -H 127.0.0.1 -p {port}", bin.display()),
        port,
    )
}

/// The Azure Blob emulator (Azurite, in memory), shared by the tests of this binary.
pub fn azurite() -> &'static Emulator {
    static AZURITE: OnceLock<Emulator> = OnceLock::new();
    AZURITE.get_or_init(|| {
        let bin = installed("CLIPSTASH_AZURITE", "node_modules/.bin/azurite-blob");
        let port = free_port();
        start(
            "azurite",
            format!(
                "{} --blobHost 127.0.0.1 --blobPort {port} --inMemoryPersistence \
                 --skipApiVersionCheck --loose --disableTelemetry",
                bin.display(),
            ),
            port,
        )
    })
}

/// A fresh bucket on the shared moto; returns its `s3://` storage URL with its options.
pub async fn s3_bucket(name: &str) -> String {
    s3_bucket_on(moto(), name).await
}

/// A fresh bucket on `moto`; returns its `s3://` storage URL with the options to reach it.
pub async fn s3_bucket_on(moto: &Emulator, name: &str) -> String {
    let r = reqwest::Client::new()
        .put(format!("{}/{name}", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "creating bucket {name}: {}",
        r.status()
    );
    s3_url(moto, name)
}

/// The storage URL of bucket `name` on `moto`.
pub fn s3_url(moto: &Emulator, name: &str) -> String {
    let mut url = url::Url::parse(&format!("s3://{name}")).unwrap();
    url.query_pairs_mut()
        .append_pair("aws_endpoint", &moto.endpoint())
        .append_pair("aws_region", "us-east-1")
        .append_pair("aws_access_key_id", "test")
        .append_pair("aws_secret_access_key", "test")
        .append_pair("aws_allow_http", "true");
    url.to_string()
}

/// A fresh container on Azurite; returns its `az://` storage URL with the options to reach it.
pub async fn azure_container(name: &str) -> String {
    let azurite = azurite();
    let script = repo_root().join("deploy/emulators/azurite_mkcontainer.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(azurite.endpoint())
        .arg(name)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "creating container {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut url = url::Url::parse(&format!("az://{name}")).unwrap();
    url.query_pairs_mut()
        .append_pair("azure_storage_account_name", AZURITE_ACCOUNT)
        .append_pair("azure_storage_account_key", AZURITE_KEY)
        .append_pair(
            "azure_storage_endpoint",
            &format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint()),
        )
        .append_pair("azure_allow_http", "true");
    url.to_string()
}

/// A bucket or container name of its own for a test (lower-case, 3-63 characters).
pub fn unique_bucket() -> String {
    format!("cs-{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}
