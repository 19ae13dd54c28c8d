-- Storage across several providers: usage spread over shards so completions on different
-- workers do not serialise on one row, and quota reservations held while an upload runs.

-- Usage was one row per provider, updated by every completion (a hot row). Now each provider
-- has up to 16 shard rows; a job's file is counted in shard hash(job id) % 16, and readers sum.
ALTER TABLE storage_usage ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE storage_usage DROP CONSTRAINT storage_usage_pkey;
ALTER TABLE storage_usage ADD PRIMARY KEY (provider, shard);
-- A shard may go below zero transiently only if accounting were wrong; keep the totals honest
-- with the per-row checks already on bytes_used and file_count.

-- Space reserved for a running upload: counted against its provider's quota until the job
-- completes (the reservation becomes usage in the same transaction) or fails (deleted).
-- Only reservations of running jobs count, so a crash cannot leak quota for good.
CREATE TABLE storage_reservations (
    job_id      uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    provider    text        NOT NULL,
    bytes       bigint      NOT NULL CHECK (bytes >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_reservations_provider_idx ON storage_reservations (provider);
CREATE INDEX stored_files_provider_idx ON stored_files (provider);
