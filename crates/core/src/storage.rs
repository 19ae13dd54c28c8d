//! Object storage behind one provider abstraction (`object_store`). The local filesystem is
//! the embedded default; S3, GCS and Azure join as further [`StorageBackend`] variants.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use uuid::Uuid;

use crate::config::StorageArgs;

/// Part size of streamed uploads: S3's minimum is 5 MiB; memory per download is bounded by
/// about (1 + `UPLOAD_PARTS_IN_FLIGHT`) parts.
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts written concurrently before the download waits (back-pressure).
pub const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// Which kind of store backs a [`Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Local,
}

impl StorageBackend {
    /// The `provider` label and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Local => "local",
        }
    }
}

/// A configured storage provider.
#[derive(Clone)]
pub struct Storage {
    backend: StorageBackend,
    store: Arc<dyn ObjectStore>,
    quota_bytes: u64,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("provider", &self.provider())
            .finish()
    }
}

impl Storage {
    /// Builds the provider from settings, creating the local root if needed.
    pub fn from_args(args: &StorageArgs) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.storage_dir).map_err(|e| {
            anyhow::anyhow!(
                "CLIPSTASH_STORAGE_DIR={}: cannot create: {e}",
                args.storage_dir.display()
            )
        })?;
        let store = LocalFileSystem::new_with_prefix(&args.storage_dir)
            .map_err(|e| {
                anyhow::anyhow!("CLIPSTASH_STORAGE_DIR={}: {e}", args.storage_dir.display())
            })?
            // Removes emptied folders after deletes.
            .with_automatic_cleanup(true);
        Ok(Self {
            backend: StorageBackend::Local,
            store: Arc::new(store),
            quota_bytes: args.storage_quota_bytes,
        })
    }

    pub fn provider(&self) -> &'static str {
        self.backend.as_str()
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
