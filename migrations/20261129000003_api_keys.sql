-- API keys and job ownership. A key is stored only as the SHA-256 of its full text: keys are
-- 256-bit random, so a fast hash is enough (no salt or KDF needed against guessing).

CREATE TABLE api_keys (
    id                uuid        PRIMARY KEY,               -- UUIDv7
    name              text        NOT NULL CHECK (name <> ''),
    key_hash          bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix            text        NOT NULL,                  -- first characters, to recognise a key
    rate_per_minute   integer     CHECK (rate_per_minute > 0),   -- NULL: the server's default
    max_active_jobs   integer     CHECK (max_active_jobs > 0),   -- NULL: the server's default
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at      timestamptz,
    revoked_at        timestamptz
);

-- A name names one live key; a revoked key's name may be reused.
CREATE UNIQUE INDEX api_keys_live_name_idx ON api_keys (name) WHERE revoked_at IS NULL;

-- NULL: created with CLIPSTASH_AUTH=off (or before keys existed).
ALTER TABLE jobs ADD COLUMN api_key_id uuid REFERENCES api_keys (id);

-- A key's listing (newest first) and its active-jobs count at submit.
CREATE INDEX jobs_api_key_id_idx ON jobs (api_key_id, id DESC) WHERE api_key_id IS NOT NULL;
CREATE INDEX jobs_active_by_key_idx ON jobs (api_key_id)
    WHERE status IN ('queued', 'running', 'retrying') AND api_key_id IS NOT NULL;
