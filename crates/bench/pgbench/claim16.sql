\set b random(1, 299980)
WITH i AS (SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid AS id, n AS lk FROM generate_series(:b::bigint, :b::bigint + 15) n),
l AS (SELECT id, pg_try_advisory_lock(lk) AS got FROM i),
u AS (UPDATE jobs j SET status = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, now()), updated_at = now() FROM l WHERE l.got AND j.id = l.id AND j.status = ANY('{queued,retrying}') RETURNING j.*, (attempts = 1) AS first)
SELECT l.got, u.* FROM l LEFT JOIN u ON u.id = l.id;
SELECT pg_advisory_unlock_all();
