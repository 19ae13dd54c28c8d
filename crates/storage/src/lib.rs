//! Object storage: the configured provider ([`Storage`], one file per provider kind, today
//! [`local`]) and the [`ingest`] pipeline every download goes through.

pub mod ingest;
pub mod local;

use std::path::PathBuf;
use std::sync::Arc;

use clipstash_domain::StorageProvider;
use clipstash_domain::config::byte_size;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use uuid::Uuid;

/// Part size of streamed uploads: S3's minimum is 5 MiB; memory per download is bounded by
/// about (1 + `UPLOAD_PARTS_IN_FLIGHT`) parts.
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts written concurrently before the download waits (back-pressure).
pub const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// Object storage settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Root folder of the local-disk storage provider (created if missing).
    #[arg(
        long,
        env = "CLIPSTASH_STORAGE_DIR",
        value_name = "CLIPSTASH_STORAGE_DIR",
        default_value = ".data/storage"
    )]
    pub storage_dir: PathBuf,

    /// Storage quota, exported as storage_quota_bytes for alerting (bytes, or with a unit:
    /// 5GiB); 0 = none. Not enforced yet.
    #[arg(long, env = "CLIPSTASH_STORAGE_QUOTA_BYTES", value_name = "CLIPSTASH_STORAGE_QUOTA_BYTES", default_value = "0", value_parser = byte_size)]
    pub storage_quota_bytes: u64,
}

/// A configured storage provider.
#[derive(Clone)]
pub struct Storage {
    provider: StorageProvider,
    store: Arc<dyn ObjectStore>,
    quota_bytes: u64,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("provider", &self.provider)
            .finish()
    }
}

impl Storage {
    /// Builds the provider from settings.
    pub fn from_args(args: &StorageArgs) -> anyhow::Result<Self> {
        Ok(Self {
            provider: StorageProvider::new(local::NAME),
            store: Arc::new(local::open(&args.storage_dir)?),
            quota_bytes: args.storage_quota_bytes,
        })
    }

    /// The provider's configured name: the `provider` label and column.
    pub fn provider(&self) -> &StorageProvider {
        &self.provider
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// The object key of a job's media: our own id, never user input.
    pub fn object_key(job_id: Uuid) -> String {
        format!("downloads/{job_id}")
    }

    /// Starts a streamed upload to `key`; nothing is visible at `key` until it finishes.
    pub async fn start_upload(&self, key: &str) -> object_store::Result<WriteMultipart> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(WriteMultipart::new_with_chunk_size(
            upload,
            UPLOAD_PART_BYTES,
        ))
    }

    /// Deletes an object; a missing one is not an error (deletes are retried).
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
