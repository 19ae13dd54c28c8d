-- A submit adds the jobs it inserts to its keys' counts itself, in the statement that checks
-- their caps (clipstash_db::batch, the only writer of jobs with a key), instead of through an
-- insert trigger: the trigger's plpgsql call and transition table took ~8% of a keyed
-- submit's CPU (docs/BENCHMARKS.md, "Keyed submits counted by their statement"). Updates,
-- deletes and truncations, made by many statements (claims, completions, cancels, retention,
-- an operator's SQL), stay counted by the trigger.
--
-- A job inserted with a key by other SQL is not counted; and such an insert skips the cap,
-- which only the submit statement checks. deploy/sql/recount-active-jobs.sql repairs counts.
--
-- Rolling upgrade: an API of the previous version still running after this migration
-- inserts without counting (this version's API refuses to start on the previous schema, where
-- it would count twice). Run the recount script once the last API of the previous version
-- has stopped (docs/CONFIGURATION.md).

-- Taken in this order for the reason given in 20261130000011_key_active_jobs.sql.
LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE;
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

DROP TRIGGER jobs_count_active_inserted ON jobs;

-- As in migration 11, without the branch for inserts.
CREATE OR REPLACE FUNCTION jobs_count_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
    deltas bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE api_keys SET active_jobs = 0 WHERE active_jobs <> 0;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(api_key_id), array_agg(-n) INTO ids, deltas
        FROM (SELECT api_key_id, count(*) AS n FROM old_rows
              WHERE api_key_id IS NOT NULL AND job_is_active(status)
              GROUP BY api_key_id) c;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(api_key_id), array_agg(n) INTO ids, deltas
        FROM (SELECT api_key_id, sum(d)::bigint AS n FROM (
                  SELECT api_key_id, 1 AS d FROM new_rows
                  WHERE api_key_id IS NOT NULL AND job_is_active(status)
                  UNION ALL
                  SELECT api_key_id, -1 FROM old_rows
                  WHERE api_key_id IS NOT NULL AND job_is_active(status)) m
              GROUP BY api_key_id HAVING sum(d) <> 0) c;
    ELSE
        RAISE EXCEPTION 'jobs_count_active: % is counted by the statement that makes it', TG_OP;
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
