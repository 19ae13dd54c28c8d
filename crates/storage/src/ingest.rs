//! The ingest pipeline every download goes through, whatever its source:
//! quota reservation -> media stream -> size cap -> SHA-256 -> multipart upload (one `put`
//! for a small file).
//!
//! Space is reserved in Postgres before the first byte is uploaded (the announced length, or
//! [`RESERVE_STEP`] at a time for a stream of unknown length, grown as it proceeds), so a
//! provider never goes over its quota however many workers upload at once. Bytes flow in
//! bounded parts, so memory does not grow with file size; on any error the partial upload is
//! aborted and nothing is left at the key (the reservation is dropped with the failure).

use std::collections::HashMap;

use bytes::Bytes;
use clipstash_db::usage;
use clipstash_domain::{ErrorCode, JobError, Media, StoredObject};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use metrics_core::Tracker;
use object_store::{PutPayload, WriteMultipart};
use sqlx::PgPool;
use uuid::Uuid;

use crate::hash::StreamHasher;
use crate::{Placement, Provider, Storage, UPLOAD_PARTS_IN_FLIGHT};

/// First reservation for a stream of unknown length; it doubles as the stream grows, by at
/// most [`RESERVE_STEP`] at a time.
pub const RESERVE_FIRST: u64 = 1024 * 1024;
/// Largest growth of a reservation.
pub const RESERVE_STEP: u64 = 64 * 1024 * 1024;

/// Files the source announces at up to this size are read whole, then written with one
/// `put`: one request to a cloud provider instead of three (start, part, complete), one hop
/// to the blocking pool on local disk instead of two.
pub const SINGLE_PUT_MAX: u64 = 1024 * 1024;

/// Streams `media` into a provider chosen by the placement policy, at the job's key,
/// refusing more than `max_bytes`.
pub async fn ingest(
    storage: &Storage,
    pool: &PgPool,
    job_id: Uuid,
    media: Media,
    max_bytes: u64,
) -> Result<StoredObject, JobError> {
    if let Some(len) = media.expected_len.filter(|&l| l > max_bytes) {
        return Err(too_large(len, max_bytes));
    }
    let key = Storage::object_key(job_id);
    if let Some(len) = media.expected_len.filter(|&l| l <= SINGLE_PUT_MAX) {
        return ingest_whole(storage, pool, job_id, key, media, len).await;
    }
    let first = media.expected_len.unwrap_or(RESERVE_FIRST).min(max_bytes);
    let (provider, mut upload) = open_upload(storage, pool, job_id, &key, first).await?;
    let mut quota = Reservation {
        pool,
        job_id,
        provider,
        reserved: first,
    };
    let upload_tracker = Tracker::start(provider.name());
    let content_type = media.content_type.clone();
    match copy(media, &mut upload, max_bytes, &mut quota).await {
        Ok((size, sha256)) => {
            upload.finish().await.map_err(|e| {
                JobError::new(ErrorCode::StorageError, format!("finishing upload: {e}"))
            })?;
            upload_tracker.success();
            Ok(StoredObject {
                provider: provider.name().clone(),
                object_key: key,
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

/// A small file of announced length `len`: space is reserved first, as for a stream; the
/// body is read whole (hashed on the way) once a provider has room, then written with one
/// `put`. A provider whose `put` fails gives its space back and the next one is tried with
/// the bytes already read.
async fn ingest_whole(
    storage: &Storage,
    pool: &PgPool,
    job_id: Uuid,
    key: String,
    media: Media,
    len: u64,
) -> Result<StoredObject, JobError> {
    let mut body = Some(media.body);
    let mut read: Option<(PutPayload, String)> = None;
    let mut placing = Placing::start(storage, pool, job_id, len).await?;
    while let Some(provider) = placing.next().await? {
        if let Some(body) = body.take() {
            read = Some(read_whole(body, len).await?);
        }
        let Some((payload, sha256)) = &read else {
            unreachable!("the body is read before the first put");
        };
        let tracker = Tracker::start(provider.name());
        match provider.put(&key, payload.clone()).await {
            Ok(()) => {
                tracker.success();
                return Ok(StoredObject {
                    provider: provider.name().clone(),
                    object_key: key,
                    size_bytes: len as i64,
                    sha256: sha256.clone(),
                    content_type: media.content_type,
                });
            }
            Err(e) => placing.failed(provider, e).await?,
        }
    }
    Err(placing.none_took().await)
}

/// Reads a body announced at `len` bytes whole, hashing it; fails as soon as it runs past
/// `len`, and if it ends short.
async fn read_whole(
    mut body: BoxStream<'static, Result<Bytes, JobError>>,
    len: u64,
) -> Result<(PutPayload, String), JobError> {
    let mut hasher = StreamHasher::default();
    let mut chunks = Vec::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > len {
            return Err(length_mismatch(size, len));
        }
        hasher.update(&chunk).await;
        chunks.push(chunk);
    }
    if size != len {
        return Err(length_mismatch(size, len));
    }
    Ok((chunks.into_iter().collect(), hasher.finish().await?))
}

/// The providers in the order the placement policy tries them. Only least-used placement
/// needs the usage figures: the others are spared a query per job.
async fn candidates<'s>(
    storage: &'s Storage,
    pool: &PgPool,
) -> Result<Vec<&'s Provider>, JobError> {
    let used: HashMap<String, i64> = if storage.placement() == Placement::LeastUsed {
        usage::storage_usage(pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|u| (u.provider, u.bytes_used))
            .collect()
    } else {
        HashMap::new()
    };
    Ok(storage.placement().order(storage.providers(), &used))
}

/// Tries providers in placement order: reserve `bytes`, then start the upload.
async fn open_upload<'s>(
    storage: &'s Storage,
    pool: &PgPool,
    job_id: Uuid,
    key: &str,
    bytes: u64,
) -> Result<(&'s Provider, WriteMultipart), JobError> {
    let mut placing = Placing::start(storage, pool, job_id, bytes).await?;
    while let Some(provider) = placing.next().await? {
        match provider.start_upload(key).await {
            Ok(upload) => return Ok((provider, upload)),
            Err(e) => placing.failed(provider, e).await?,
        }
    }
    Err(placing.none_took().await)
}

/// Providers tried in placement order for one file of `bytes`: [`next`](Placing::next)
/// reserves the space on the next one with room. A provider that then fails to take the
/// file is reported with [`failed`](Placing::failed), which gives its space back before the
/// next is tried; when none is left, [`none_took`](Placing::none_took) says why.
struct Placing<'s, 'p> {
    pool: &'p PgPool,
    job_id: Uuid,
    bytes: u64,
    order: std::vec::IntoIter<&'s Provider>,
    last_error: Option<object_store::Error>,
}

impl<'s, 'p> Placing<'s, 'p> {
    async fn start(
        storage: &'s Storage,
        pool: &'p PgPool,
        job_id: Uuid,
        bytes: u64,
    ) -> Result<Self, JobError> {
        Ok(Self {
            pool,
            job_id,
            bytes,
            order: candidates(storage, pool).await?.into_iter(),
            last_error: None,
        })
    }

    /// The next provider in order with room for the file, its space now reserved.
    async fn next(&mut self) -> Result<Option<&'s Provider>, JobError> {
        for provider in self.order.by_ref() {
            let name = provider.name().as_str();
            if usage::reserve(
                self.pool,
                self.job_id,
                name,
                self.bytes,
                provider.quota_bytes(),
            )
            .await
            .map_err(db_error)?
            {
                return Ok(Some(provider));
            }
        }
        Ok(None)
    }

    /// `provider` did not take the file: its space goes back before the next is tried.
    async fn failed(
        &mut self,
        provider: &Provider,
        e: object_store::Error,
    ) -> Result<(), JobError> {
        tracing::warn!(job_id = %self.job_id, provider = provider.name().as_str(), error = %e,
            "provider failed to take the file; trying the next");
        usage::release_reservation(self.pool, self.job_id)
            .await
            .map_err(db_error)?;
        self.last_error = Some(e);
        Ok(())
    }

    /// No provider took the file: the last one's error, or none had room.
    async fn none_took(self) -> JobError {
        if let Err(e) = usage::release_reservation(self.pool, self.job_id).await {
            return db_error(e);
        }
        match self.last_error {
            Some(e) => JobError::new(ErrorCode::StorageError, format!("storing: {e}")),
            None => JobError::new(
                ErrorCode::StorageFull,
                format!("no storage provider has room for {} more bytes", self.bytes),
            ),
        }
    }
}

/// The space a running upload holds on its provider.
struct Reservation<'a> {
    pool: &'a PgPool,
    job_id: Uuid,
    provider: &'a Provider,
    reserved: u64,
}

impl Reservation<'_> {
    /// Makes sure at least `size` bytes are reserved: doubling, by at most [`RESERVE_STEP`].
    async fn cover(&mut self, size: u64, max_bytes: u64) -> Result<(), JobError> {
        if size <= self.reserved {
            return Ok(());
        }
        let wanted = (self.reserved * 2)
            .min(self.reserved + RESERVE_STEP)
            .max(size)
            .min(max_bytes.max(size));
        let p = self.provider;
        if usage::reserve(
            self.pool,
            self.job_id,
            p.name().as_str(),
            wanted,
            p.quota_bytes(),
        )
        .await
        .map_err(db_error)?
        {
            self.reserved = wanted;
            Ok(())
        } else {
            Err(JobError::new(
                ErrorCode::StorageFull,
                format!("storage '{}' ran out of quota during the upload", p.name()),
            ))
        }
    }
}

/// Copies the body into the upload, counting, capping and hashing on the way.
async fn copy(
    media: Media,
    upload: &mut WriteMultipart,
    max_bytes: u64,
    quota: &mut Reservation<'_>,
) -> Result<(u64, String), JobError> {
    let mut hasher = StreamHasher::default();
    let mut size: u64 = 0;
    let mut body = media.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(too_large(size, max_bytes));
        }
        quota.cover(size, max_bytes).await?;
        hasher.update(&chunk).await;
        upload
            .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| JobError::new(ErrorCode::StorageError, format!("writing: {e}")))?;
        upload.put(chunk);
    }
    if let Some(len) = media.expected_len.filter(|&l| l != size) {
        return Err(length_mismatch(size, len));
    }
    Ok((size, hasher.finish().await?))
}

/// The body's length is not the one announced.
fn length_mismatch(size: u64, len: u64) -> JobError {
    JobError::new(ErrorCode::Truncated, format!("got {size} of {len} bytes"))
}

fn too_large(size: u64, max: u64) -> JobError {
    JobError::new(
        ErrorCode::FileTooLarge,
        format!("file is larger than the limit of {max} bytes (at least {size})"),
    )
}

fn db_error(e: sqlx::Error) -> JobError {
    JobError::new(
        ErrorCode::StorageError,
        format!("recording a reservation: {e}"),
    )
}
