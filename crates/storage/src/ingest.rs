//! The ingest pipeline every download goes through, whatever its source: media stream ->
//! size cap -> SHA-256 -> multipart upload. Bytes flow in bounded parts, so memory does not
//! grow with file size; on any error the partial upload is aborted and nothing is left at
//! the key.

use clipstash_domain::{ErrorCode, JobError, Media, StoredObject};
use futures_util::StreamExt;
use metrics_core::Tracker;
use object_store::WriteMultipart;
use sha2::{Digest, Sha256};

use crate::{Storage, UPLOAD_PARTS_IN_FLIGHT};

/// Streams `media` into `storage` at `key`, refusing more than `max_bytes`.
pub async fn ingest(
    storage: &Storage,
    key: &str,
    media: Media,
    max_bytes: u64,
) -> Result<StoredObject, JobError> {
    if let Some(len) = media.expected_len.filter(|&l| l > max_bytes) {
        return Err(too_large(len, max_bytes));
    }
    let upload_tracker = Tracker::start(storage.provider());
    let mut upload = storage
        .start_upload(key)
        .await
        .map_err(|e| JobError::new(ErrorCode::StorageError, format!("starting upload: {e}")))?;
    let content_type = media.content_type.clone();
    match copy(media, &mut upload, max_bytes).await {
        Ok((size, sha256)) => {
            upload.finish().await.map_err(|e| {
                JobError::new(ErrorCode::StorageError, format!("finishing upload: {e}"))
            })?;
            upload_tracker.success();
            Ok(StoredObject {
                provider: storage.provider().clone(),
                object_key: key.to_string(),
                size_bytes: size as i64,
                sha256,
                content_type,
            })
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key, error = %abort, "aborting a failed upload");
            }
            Err(e)
        }
    }
}

/// Copies the body into the upload, counting and hashing on the way.
async fn copy(
    media: Media,
    upload: &mut WriteMultipart,
    max_bytes: u64,
) -> Result<(u64, String), JobError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut body = media.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(too_large(size, max_bytes));
        }
        hasher.update(&chunk);
        upload
            .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| JobError::new(ErrorCode::StorageError, format!("writing: {e}")))?;
        upload.put(chunk);
    }
    if let Some(len) = media.expected_len.filter(|&l| l != size) {
        return Err(JobError::new(
            ErrorCode::Truncated,
            format!("got {size} of {len} bytes"),
        ));
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn too_large(size: u64, max: u64) -> JobError {
    JobError::new(
        ErrorCode::FileTooLarge,
        format!("file is larger than the limit of {max} bytes (at least {size})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageArgs;

    fn media(chunks: Vec<&'static [u8]>, expected_len: Option<u64>) -> Media {
        let body = futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(bytes::Bytes::from_static(c))),
        );
        Media {
            content_type: "video/mp4".into(),
            expected_len,
            body: body.boxed(),
        }
    }

    fn storage() -> (Storage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("cs-ingest-{}", uuid::Uuid::new_v4().simple()));
        let s = Storage::from_args(&StorageArgs {
            storage_dir: dir.clone(),
            storage_quota_bytes: 0,
        })
        .unwrap();
        (s, dir)
    }

    #[tokio::test]
    async fn stores_hashes_caps_and_leaves_nothing_behind_on_failure() {
        let (s, dir) = storage();
        let ok = ingest(&s, "downloads/a", media(vec![b"abc", b"def"], Some(6)), 100)
            .await
            .unwrap();
        assert_eq!(ok.size_bytes, 6);
        assert_eq!(ok.sha256, hex::encode(Sha256::digest(b"abcdef")));
        assert_eq!(std::fs::read(dir.join("downloads/a")).unwrap(), b"abcdef");

        let cases = [
            (
                media(vec![b"abc", b"def"], None),
                5,
                ErrorCode::FileTooLarge,
            ),
            (media(vec![b"abc"], Some(500)), 100, ErrorCode::FileTooLarge),
            (media(vec![b"abc"], Some(6)), 100, ErrorCode::Truncated),
        ];
        for (i, (m, cap, code)) in cases.into_iter().enumerate() {
            let key = format!("downloads/bad{i}");
            let e = ingest(&s, &key, m, cap).await.unwrap_err();
            assert_eq!(e.code, code, "case {i}");
            assert!(!dir.join(&key).exists(), "case {i} left an object");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("downloads"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["a"], "no staging files are left");
        let _ = std::fs::remove_dir_all(dir);
    }
}
