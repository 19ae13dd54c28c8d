//! The contract between a video source and storage: a source opens a [`Media`] stream, the
//! storage ingest pipeline consumes it and reports a [`StoredObject`].

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::error::JobError;
use crate::labels::StorageProvider;

/// An open media stream from a source. Body errors are already classified into job errors.
pub struct Media {
    /// Lower-case MIME type without parameters (`video/mp4`).
    pub content_type: String,
    /// The length the source announced, if any; a body that ends short is `truncated`.
    pub expected_len: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, JobError>>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("content_type", &self.content_type)
            .field("expected_len", &self.expected_len)
            .finish_non_exhaustive()
    }
}

/// A stored object's facts, as the ingest pipeline reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub provider: StorageProvider,
    pub object_key: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub content_type: String,
}
