-- Idempotency keys belong to the API key that sent them (NULL when auth is off): two clients
-- that happen to pick the same Idempotency-Key never see each other's jobs.
DROP INDEX jobs_idempotency_key_idx;
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (api_key_id, idempotency_key) NULLS NOT DISTINCT
    WHERE idempotency_key IS NOT NULL;
