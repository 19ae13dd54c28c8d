-- Each key's count of active jobs (queued, running or retrying), kept in the key's row by the
-- triggers below, in the statement that changes it. A submit checks the key's cap by reading
-- this one row (locked) instead of counting the key's jobs, which grew with the key's
-- backlog (docs/BENCHMARKS.md, "A counter per key").

-- No job may change while the counts are taken and the triggers put in place; reads of jobs
-- go on. api_keys first: a running API of the previous version locks a key's row and then
-- inserts into jobs, so taking the two the other way round could deadlock with it.
LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE;
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

-- No CHECK (>= 0): see jobs_count_active; deploy/sql/recount-active-jobs.sql repairs a count.
ALTER TABLE api_keys ADD COLUMN active_jobs bigint NOT NULL DEFAULT 0;

-- The statuses that count against a key's cap (clipstash_db::jobs::active_statuses).
CREATE FUNCTION job_is_active(status text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT status IN ('queued', 'running', 'retrying')
$$;

UPDATE api_keys k SET active_jobs = c.n
FROM (SELECT api_key_id, count(*) AS n FROM jobs
      WHERE api_key_id IS NOT NULL AND job_is_active(status)
      GROUP BY api_key_id) c
WHERE k.id = c.api_key_id;

-- One function behind the four triggers below. It adds to each key's count what the
-- statement moved: +1 for each of the key's active rows after it, -1 for each before it. An
-- updated row is in both tables, so a row that stays active (or stays ended) nets 0, and a
-- row moved to another key moves its count; a statement that moves no count (a claim:
-- queued to running) locks no key. The keys are locked first, in id order as submits lock
-- them (clipstash_db::batch), so two statements touching the same keys cannot deadlock; then
-- one UPDATE writes them all (a statement per key cost a batch of 32 keys 0.45 ms more). The
-- count never goes below 0: a count lowered by hand must not fail the key's next completion.
CREATE FUNCTION jobs_count_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
    deltas bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE api_keys SET active_jobs = 0 WHERE active_jobs <> 0;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(api_key_id), array_agg(n) INTO ids, deltas
        FROM (SELECT api_key_id, count(*) AS n FROM new_rows
              WHERE api_key_id IS NOT NULL AND job_is_active(status)
              GROUP BY api_key_id) c;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(api_key_id), array_agg(-n) INTO ids, deltas
        FROM (SELECT api_key_id, count(*) AS n FROM old_rows
              WHERE api_key_id IS NOT NULL AND job_is_active(status)
              GROUP BY api_key_id) c;
    ELSE
        SELECT array_agg(api_key_id), array_agg(n) INTO ids, deltas
        FROM (SELECT api_key_id, sum(d)::bigint AS n FROM (
                  SELECT api_key_id, 1 AS d FROM new_rows
                  WHERE api_key_id IS NOT NULL AND job_is_active(status)
                  UNION ALL
                  SELECT api_key_id, -1 FROM old_rows
                  WHERE api_key_id IS NOT NULL AND job_is_active(status)) m
              GROUP BY api_key_id HAVING sum(d) <> 0) c;
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM api_keys WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;
    UPDATE api_keys k SET active_jobs = GREATEST(k.active_jobs + d.delta, 0)
    FROM UNNEST(ids, deltas) AS d(id, delta)
    WHERE k.id = d.id;
    RETURN NULL;
END
$$;

-- Statement-level, so a statement moving many jobs (a batch of submits, a worker's batch of
-- completions) updates each of its keys once.
CREATE TRIGGER jobs_count_active_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_active();
CREATE TRIGGER jobs_count_active_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_active();
CREATE TRIGGER jobs_count_active_deleted AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_active();
CREATE TRIGGER jobs_count_active_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_active();

-- The count no longer reads the key's active jobs.
DROP INDEX jobs_active_by_key_idx;
