-- Reliability: idempotent submits, and indexes for the worker's sweeper and retention.

-- Idempotency-Key of the submit that created the job, and the SHA-256 (hex) of its canonical
-- body, so a replay with another body is refused. Keys are global for now: when API keys
-- arrive, add the owning key's column and make the unique index (api_key_id, idempotency_key).
ALTER TABLE jobs
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_sha256  text;

-- The arbiter of concurrent duplicates: INSERT ... ON CONFLICT on this index, never a
-- check-then-insert.
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The sweeper's scan: live jobs not updated for a while.
CREATE INDEX jobs_live_updated_at_idx ON jobs (updated_at)
    WHERE status IN ('queued', 'running', 'retrying');

-- Retention: finished jobs by age.
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at)
    WHERE finished_at IS NOT NULL;
