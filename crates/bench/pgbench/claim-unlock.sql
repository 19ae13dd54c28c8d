\set n random(1, 300000)
WITH l AS (SELECT pg_try_advisory_lock(:n::bigint) AS got), u AS (UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, now()), updated_at = now() FROM l WHERE l.got AND id = ('00000000-0000-0000-0000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid AND status = ANY('{queued,retrying}') RETURNING jobs.*, (attempts = 1) AS first) SELECT l.got, u.* FROM l LEFT JOIN u ON true;
SELECT pg_advisory_unlock(:n::bigint);
