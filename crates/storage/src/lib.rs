//! Object storage: the configured providers ([`Storage`], one file per kind in
//! [`providers`]), where a new object goes ([`placement`]), and the [`ingest`] pipeline every
//! download goes through (quota reservation, size cap, SHA-256, multipart upload).

pub mod config;
pub mod hash;
pub mod ingest;
pub mod placement;
pub mod providers;

use std::path::PathBuf;

use clipstash_domain::config::byte_size;
use uuid::Uuid;

pub use placement::Placement;
pub use providers::{Kind, Provider};

/// Part size of streamed uploads: S3's minimum is 5 MiB; memory per download is bounded by
/// about (1 + `UPLOAD_PARTS_IN_FLIGHT`) parts.
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Part size on local disk, which has no minimum: a part is one write, and small parts keep
/// the bytes between the socket and the file in the CPU's cache (docs/BENCHMARKS.md).
pub const LOCAL_PART_BYTES: usize = 1024 * 1024;
/// Parts written concurrently before the download waits (back-pressure).
pub const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// Object storage settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// A storage provider as NAME=URL (repeatable; in the variable, entries are separated by
    /// spaces or newlines). URL: file:///abs/path, s3://bucket[/prefix], gs://bucket[/prefix],
    /// az://container[/prefix]; query parameters are object_store's options plus quota=SIZE.
    /// Unset: local=file://<CLIPSTASH_STORAGE_DIR> with CLIPSTASH_STORAGE_QUOTA_BYTES.
    #[arg(
        long = "storage",
        env = "CLIPSTASH_STORAGE",
        value_name = "CLIPSTASH_STORAGE",
        hide_env_values = true
    )]
    pub storage: Vec<String>,

    /// Where new objects go: random (the original), least-used (lowest fraction of quota),
    /// ordered (the first with room, in configuration order).
    #[arg(
        long,
        env = "CLIPSTASH_PLACEMENT",
        value_name = "CLIPSTASH_PLACEMENT",
        default_value = "random",
        value_enum
    )]
    pub placement: Placement,

    /// Root folder of the default local-disk provider when CLIPSTASH_STORAGE is unset
    /// (created if missing).
    #[arg(
        long,
        env = "CLIPSTASH_STORAGE_DIR",
        value_name = "CLIPSTASH_STORAGE_DIR",
        default_value = ".data/storage"
    )]
    pub storage_dir: PathBuf,

    /// Quota of the default local provider (bytes, or with a unit: 5GiB); 0 = none. Enforced:
    /// an upload that would exceed it goes elsewhere or fails as storage_full.
    #[arg(long, env = "CLIPSTASH_STORAGE_QUOTA_BYTES", value_name = "CLIPSTASH_STORAGE_QUOTA_BYTES", default_value = "0", value_parser = byte_size)]
    pub storage_quota_bytes: u64,
}

/// Every configured provider and the placement policy.
#[derive(Debug, Clone)]
pub struct Storage {
    providers: Vec<Provider>,
    placement: Placement,
}

impl Storage {
    /// Parses and builds every provider; the first bad entry stops start-up with a message
    /// naming it.
    pub fn from_args(args: &StorageArgs) -> anyhow::Result<Self> {
        let entries: Vec<String> = if args.storage.iter().all(|s| s.trim().is_empty()) {
            let dir = std::path::absolute(&args.storage_dir).map_err(|e| {
                anyhow::anyhow!("CLIPSTASH_STORAGE_DIR={}: {e}", args.storage_dir.display())
            })?;
            std::fs::create_dir_all(&dir).map_err(|e| {
                anyhow::anyhow!(
                    "CLIPSTASH_STORAGE_DIR={}: cannot create: {e}",
                    dir.display()
                )
            })?;
            let url = url::Url::from_directory_path(&dir).map_err(|_| {
                anyhow::anyhow!("CLIPSTASH_STORAGE_DIR={}: not a usable path", dir.display())
            })?;
            vec![format!("local={url}?quota={}", args.storage_quota_bytes)]
        } else {
            args.storage
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_string)
                .collect()
        };
        let mut providers: Vec<Provider> = Vec::new();
        for raw in &entries {
            let provider = config::parse_entry(raw)
                .and_then(|e| e.build())
                .map_err(|e| anyhow::anyhow!("CLIPSTASH_STORAGE: {e}"))?;
            anyhow::ensure!(
                providers.iter().all(|p| p.name() != provider.name()),
                "CLIPSTASH_STORAGE: storage '{}' is configured twice",
                provider.name()
            );
            providers.push(provider);
        }
        Ok(Self {
            providers,
            placement: args.placement,
        })
    }

    /// Every provider, in configuration order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The provider named `name`, if configured.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name().as_str() == name)
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The object key of a job's media: our own, never user input
    /// (`downloads/YYYY/MM/DD/<job id>`, the date from the id's UUIDv7 timestamp).
    pub fn object_key(job_id: Uuid) -> String {
        let date = job_id
            .get_timestamp()
            .and_then(|t| {
                let (secs, nanos) = t.to_unix();
                chrono::DateTime::from_timestamp(secs as i64, nanos)
            })
            .unwrap_or_default();
        format!("downloads/{}/{job_id}", date.format("%Y/%m/%d"))
    }
}
