-- Recounts every API key's active jobs (api_keys.active_jobs, which a submit checks the key's
-- cap against) from the jobs themselves. The submit statement and the triggers on `jobs` keep
-- the counts exact, so this is only for a count changed by hand, triggers disabled for a
-- while, jobs with a key inserted by hand, or after a rolling upgrade across migration
-- 20261130000012 (see its header).
--
--   psql "$DATABASE_URL" -f deploy/sql/recount-active-jobs.sql
--
-- Safe while the service runs. It locks every key's row, in id order as submits and the
-- triggers do (so it cannot deadlock with them), and no count moves without its key's lock:
-- submits and completions of those keys wait until it commits (a moment on a small table,
-- seconds on millions of retained jobs); claims and reads go on. A job that changed but is
-- not committed yet is counted as it was, and its own count change follows the commit.
-- It prints each key it corrected, with the count it had and the one it has now.
BEGIN;
DO $$ BEGIN PERFORM 1 FROM api_keys ORDER BY id FOR NO KEY UPDATE; END $$;
WITH real AS (
    SELECT k.id, k.active_jobs AS was,
           (SELECT count(*) FROM jobs j WHERE j.api_key_id = k.id AND job_is_active(j.status)) AS n
    FROM api_keys k
)
UPDATE api_keys k SET active_jobs = real.n
FROM real
WHERE k.id = real.id AND k.active_jobs <> real.n
RETURNING k.name, real.was, k.active_jobs AS now;
COMMIT;
