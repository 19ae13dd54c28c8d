//! SHA-256 of a download, computed beside it. The first bytes are hashed inline, so a small
//! file costs no hop to another thread; past [`OFFLOAD_AFTER`] the running state moves to a
//! thread of the blocking pool, fed in batches of about [`BATCH_BYTES`], so hashing runs on
//! one core while the socket reads and the upload run on another. SHA-256 is the largest
//! single cost of a large download (docs/BENCHMARKS.md, "Large file").

use bytes::Bytes;
use clipstash_domain::{ErrorCode, JobError};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes hashed inline before the hashing moves to a thread of its own.
pub const OFFLOAD_AFTER: u64 = 8 * 1024 * 1024;
/// Bytes handed to the hashing thread at a time: one wake-up per batch, not per chunk.
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Batches queued for the hashing thread before the download waits for it: the hash alone
/// keeps at most this many batches alive, plus the one being hashed and the one being built
/// (about 4 MiB per download).
///
/// Each large download holds a thread of tokio's blocking pool (512 threads) while it runs;
/// `CLIPSTASH_CONCURRENCY` is capped at 256, so file writes and DNS lookups always find one.
const BATCHES_QUEUED: usize = 2;

/// The hash of a stream being read, fed chunk by chunk.
pub struct StreamHasher {
    size: u64,
    state: State,
}

enum State {
    Inline(Sha256),
    Offloaded {
        batch: Vec<Bytes>,
        batch_bytes: usize,
        tx: mpsc::Sender<Vec<Bytes>>,
        done: JoinHandle<Sha256>,
    },
}

impl Default for StreamHasher {
    fn default() -> Self {
        Self {
            size: 0,
            state: State::Inline(Sha256::new()),
        }
    }
}

impl StreamHasher {
    /// Adds `chunk`; waits only when the hashing thread is [`BATCHES_QUEUED`] batches behind.
    pub async fn update(&mut self, chunk: &Bytes) {
        self.size += chunk.len() as u64;
        match &mut self.state {
            State::Inline(hasher) if self.size <= OFFLOAD_AFTER => hasher.update(chunk),
            State::Inline(hasher) => {
                let mut hasher = std::mem::take(hasher);
                let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(BATCHES_QUEUED);
                let done = tokio::task::spawn_blocking(move || {
                    while let Some(batch) = rx.blocking_recv() {
                        for chunk in batch {
                            hasher.update(&chunk);
                        }
                    }
                    hasher
                });
                self.state = State::Offloaded {
                    batch: vec![chunk.clone()],
                    batch_bytes: chunk.len(),
                    tx,
                    done,
                };
            }
            State::Offloaded {
                batch,
                batch_bytes,
                tx,
                ..
            } => {
                batch.push(chunk.clone());
                *batch_bytes += chunk.len();
                if *batch_bytes >= BATCH_BYTES {
                    *batch_bytes = 0;
                    // A send fails only if the thread is gone; `finish` reports that.
                    let _ = tx.send(std::mem::take(batch)).await;
                }
            }
        }
    }

    /// The hex digest of everything added.
    pub async fn finish(self) -> Result<String, JobError> {
        let hasher = match self.state {
            State::Inline(hasher) => hasher,
            State::Offloaded {
                batch, tx, done, ..
            } => {
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
                drop(tx);
                done.await.map_err(|e| {
                    JobError::new(ErrorCode::InternalError, format!("hashing thread: {e}"))
                })?
            }
        };
        Ok(hex::encode(hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest is the same whether the stream stays inline or crosses to the thread, at
    /// every boundary: below, at and past the hand-over, in chunks of odd sizes.
    #[tokio::test]
    async fn offloaded_digest_matches_inline() {
        let data: Vec<u8> = (0..(OFFLOAD_AFTER as usize + 3 * BATCH_BYTES + 12_345))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [
            0,
            1,
            OFFLOAD_AFTER as usize,
            OFFLOAD_AFTER as usize + 1,
            data.len(),
        ] {
            let data = Bytes::copy_from_slice(&data[..len]);
            let mut hasher = StreamHasher::default();
            let mut at = 0;
            for step in [70_001usize, 1, 65_536].iter().cycle() {
                if at >= len {
                    break;
                }
                let end = (at + step).min(len);
                hasher.update(&data.slice(at..end)).await;
                at = end;
            }
            let offloaded = matches!(hasher.state, State::Offloaded { .. });
            assert_eq!(offloaded, len as u64 > OFFLOAD_AFTER, "{len} bytes");
            assert_eq!(
                hasher.finish().await.unwrap(),
                hex::encode(Sha256::digest(&data)),
                "{len} bytes"
            );
        }
    }
}
