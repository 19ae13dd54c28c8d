//! One file per provider kind. Each turns a configured URL and its options into a store
//! (and a signer for kinds that can sign URLs); [`Provider`] wraps the result.

pub mod azure;
pub mod gcs;
pub mod local;
pub mod s3;

use std::sync::Arc;
use std::time::Duration;

use clipstash_domain::StorageProvider;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, GetResult, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
    WriteMultipart,
};
use url::Url;

use crate::{LOCAL_PART_BYTES, UPLOAD_PART_BYTES};

/// Which kind of store backs a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Kind {
    Local,
    S3,
    Gcs,
    Azure,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a kind's builder hands back.
pub struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub signer: Option<Arc<dyn Signer>>,
}

/// One configured storage provider: a named store, an optional key prefix inside it, and
/// its quota (0 = none).
#[derive(Clone)]
pub struct Provider {
    name: StorageProvider,
    kind: Kind,
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
    prefix: Option<Path>,
    quota_bytes: u64,
}

impl std::fmt::Debug for Provider {
    // Names and kinds only: the store's configuration may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("quota_bytes", &self.quota_bytes)
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(
        name: StorageProvider,
        kind: Kind,
        built: Built,
        prefix: &str,
        quota_bytes: u64,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            name,
            kind,
            store: built.store,
            signer: built.signer,
            prefix: (!prefix.is_empty()).then(|| Path::from(prefix)),
            quota_bytes,
        }
    }

    pub fn name(&self) -> &StorageProvider {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// The store's path of one of our keys (under the configured prefix).
    fn path(&self, key: &str) -> Path {
        match &self.prefix {
            Some(p) => Path::from(format!("{p}/{key}")),
            None => Path::from(key),
        }
    }

    /// Starts a streamed upload to `key`; nothing is visible at `key` until it finishes.
    pub async fn start_upload(&self, key: &str) -> object_store::Result<WriteMultipart> {
        let upload = self.store.put_multipart(&self.path(key)).await?;
        let part_bytes = match self.kind {
            Kind::Local => LOCAL_PART_BYTES,
            Kind::S3 | Kind::Gcs | Kind::Azure => UPLOAD_PART_BYTES,
        };
        Ok(WriteMultipart::new_with_chunk_size(upload, part_bytes))
    }

    /// Writes `payload` at `key` in one request; nothing is visible at `key` unless it
    /// succeeds (local disk writes a staging file and renames it).
    pub async fn put(&self, key: &str, payload: PutPayload) -> object_store::Result<()> {
        self.store.put(&self.path(key), payload).await.map(drop)
    }

    /// Reads `key`, whole or a range of it.
    pub async fn get(&self, key: &str, range: Option<GetRange>) -> object_store::Result<GetResult> {
        let options = GetOptions {
            range,
            ..Default::default()
        };
        self.store.get_opts(&self.path(key), options).await
    }

    pub async fn head(&self, key: &str) -> object_store::Result<ObjectMeta> {
        self.store.head(&self.path(key)).await
    }

    /// Deletes an object; a missing one is not an error (deletes are retried).
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists our keys under `prefix` (relative to the provider's own prefix) with their sizes.
    pub async fn list(&self, prefix: &str) -> object_store::Result<Vec<(String, ObjectMeta)>> {
        use futures_util::TryStreamExt;
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.path(prefix)))
            .try_collect()
            .await?;
        let strip = self.prefix.as_ref().map(|p| format!("{p}/"));
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                let key = match &strip {
                    Some(s) => full.strip_prefix(s.as_str()).unwrap_or(&full).to_string(),
                    None => full,
                };
                (key, m)
            })
            .collect())
    }

    /// A short-lived URL a client can GET `key` from, on kinds that can sign (S3, GCS,
    /// Azure); `None` on local disk.
    pub async fn signed_get_url(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> object_store::Result<Option<Url>> {
        match &self.signer {
            Some(s) => Ok(Some(
                s.signed_url(
                    object_store::signer::Method::GET,
                    &self.path(key),
                    expires_in,
                )
                .await?,
            )),
            None => Ok(None),
        }
    }
}

/// Builds a cloud kind's store the same way for every kind: credentials and defaults from the
/// kind's usual environment variables, then the URL's bucket, then each query option parsed
/// into the kind's own configuration key (an unknown key is an error naming it, never its
/// value), then our retry policy. The store signs URLs too.
macro_rules! build_cloud {
    ($builder:ty, $key:ty, $scheme:literal, $url:expr, $options:expr) => {{
        let mut builder = <$builder>::from_env().with_url(super::base_url($url));
        for (key, value) in $options {
            let k: $key = key
                .parse()
                .map_err(|_| format!("unknown option '{key}' for {}://", $scheme))?;
            builder = builder.with_config(k, value);
        }
        let store = std::sync::Arc::new(
            builder
                .with_retry(super::retry())
                .build()
                .map_err(|e| e.to_string())?,
        );
        Ok(super::Built {
            store: store.clone(),
            signer: Some(store),
        })
    }};
}
pub(crate) use build_cloud;

/// `scheme://bucket`: what the builders read from a URL (never its query, which may hold
/// credentials, nor its path, which is our prefix).
fn base_url(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

/// Client retries of the cloud kinds: a few, within 30 s. The job's own attempt loop retries
/// with backoff on top, and an unreachable provider should fail an attempt quickly enough
/// for the next one to try elsewhere (object_store's default keeps trying for 3 minutes).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}
