-- A batch of submits with Idempotency-Keys, written in one call (one round trip) instead of
-- four (BEGIN, lock the batch's API keys, the insert, COMMIT). The lock must come in a
-- statement before the insert: the insert's existence checks read the snapshot it starts
-- with, and a key whose Idempotency-Key a concurrent batch wrote while this one waited for
-- the lock must be seen as a replay, not ranked under the cap. In a VOLATILE function each
-- statement takes a fresh snapshot, so the insert below sees what was committed while the
-- PERFORM waited; the whole call is still one transaction, so the locks last until commit.
--
-- The API calls it from clipstash_db::batch (IDEMPOTENT_INSERT), which documents each step.
-- It has the shape of the keyed batch statement there (CAPPED_INSERT), plus: a submit whose
-- Idempotency-Key already names a job, or that repeats a key earlier in the batch, is left
-- out before the cap is counted; rows go in sorted by key (two writers of the same new keys
-- never wait on each other); ON CONFLICT leaves out a key a concurrent keyless batch wrote.
-- Keyless submits (in_keys NULL) lock nothing and are never capped.
--
-- enable_seqscan is off inside it: a connection caches this statement's plan, and one planned
-- while jobs is nearly empty (a new deployment, every bench run) checked each Idempotency-Key
-- with a scan of the whole table until the next ANALYZE: from an empty table, a batch of 64
-- took 14.9-17.3 ms on average over 8 s of pgbench, 4.7-5.4 ms with the index forced
-- (docs/BENCHMARKS.md, "Idempotent batches in one call, and a plan cached while `jobs` is
-- empty").
--
-- An API of this build or later calls it by this signature, and an API accepts a database
-- ahead of it (clipstash_db::check_schema): a change to its parameters is a new function
-- (or overload) beside this one, never a replacement, while older APIs may still run.
CREATE FUNCTION submit_jobs_idempotent(
    in_ids uuid[], in_urls text[], in_sources text[], in_requested text[], in_formats text[],
    in_heights int4[], in_cookies bytea[], in_callbacks text[], in_status text,
    in_keys uuid[], in_caps int8[], in_idempotency_keys text[], in_hashes text[])
RETURNS SETOF jobs
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $fn$
BEGIN
    PERFORM 1 FROM api_keys WHERE id = ANY (in_keys) ORDER BY id FOR NO KEY UPDATE;
    RETURN QUERY
    WITH b AS (
        SELECT u.*, row_number() OVER (
                   PARTITION BY u.api_key_id, u.idempotency_key ORDER BY u.ord) AS nth
        FROM UNNEST(in_ids, in_urls, in_sources, in_requested, in_formats, in_heights,
                    in_cookies, in_callbacks, in_keys, in_caps, in_idempotency_keys, in_hashes)
             WITH ORDINALITY AS u(id, url, source, requested_source, format, max_height,
                                  cookies_sealed, callback_url, api_key_id, cap,
                                  idempotency_key, request_sha256, ord)
    ), k AS (
        SELECT a.id, a.active_jobs FROM api_keys a
        WHERE a.id IN (SELECT b.api_key_id FROM b WHERE b.api_key_id IS NOT NULL)
        ORDER BY a.id FOR NO KEY UPDATE
    ), ranked AS (
        SELECT b.*, row_number() OVER (PARTITION BY b.api_key_id ORDER BY b.ord) AS rn
        FROM b
        WHERE b.idempotency_key IS NULL OR (b.nth = 1
            AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.api_key_id = b.api_key_id
                            AND j.idempotency_key = b.idempotency_key)
            AND NOT EXISTS (SELECT 1 FROM jobs j WHERE b.api_key_id IS NULL
                            AND j.api_key_id IS NULL AND j.idempotency_key = b.idempotency_key))
    ), inserted AS (
        INSERT INTO jobs (id, url, source, status, api_key_id, requested_source, format,
                          max_height, cookies_sealed, callback_url, idempotency_key,
                          request_sha256)
        SELECT r.id, r.url, r.source, in_status, r.api_key_id, r.requested_source, r.format,
               r.max_height, r.cookies_sealed, r.callback_url, r.idempotency_key,
               r.request_sha256
        FROM ranked r LEFT JOIN k ON k.id = r.api_key_id
        WHERE r.api_key_id IS NULL OR k.active_jobs + r.rn <= r.cap
        ORDER BY r.api_key_id, r.idempotency_key
        ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), counted AS (
        UPDATE api_keys a SET active_jobs = a.active_jobs + n.n
        FROM (SELECT i.api_key_id, count(*) AS n FROM inserted i
              WHERE i.api_key_id IS NOT NULL GROUP BY i.api_key_id) n
        WHERE a.id = n.api_key_id
    )
    SELECT i.* FROM inserted i;
END
$fn$;
