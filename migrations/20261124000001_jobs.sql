-- Download jobs, the files they stored, and per-provider storage usage.

CREATE TABLE jobs (
    id            uuid        PRIMARY KEY,          -- UUIDv7: ordered by creation time
    url           text        NOT NULL,
    source        text        NOT NULL,             -- video source: direct, youtube
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    attempts      integer     NOT NULL DEFAULT 0,
    provider      text,                             -- storage provider holding the object
    object_key    text,
    size_bytes    bigint,
    sha256        text,
    content_type  text,
    error_code    text,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    deleted_at    timestamptz,                      -- stored object deleted by the client
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Keyset pagination, newest first, optionally by status.
CREATE INDEX jobs_status_id_idx ON jobs (status, id DESC);

-- One row per stored object: the primary key makes recording a file idempotent, so a job
-- delivered twice cannot count its bytes twice.
CREATE TABLE stored_files (
    job_id      uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    provider    text        NOT NULL,
    object_key  text        NOT NULL,
    size_bytes  bigint      NOT NULL CHECK (size_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_usage (
    provider    text   PRIMARY KEY,
    bytes_used  bigint NOT NULL DEFAULT 0 CHECK (bytes_used >= 0),
    file_count  bigint NOT NULL DEFAULT 0 CHECK (file_count >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
