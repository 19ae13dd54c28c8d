\set b random(300001, 599980)
WITH i AS (SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid AS id, 'k/' || n AS key, 65536::bigint AS size, (n % 16)::smallint AS shard FROM generate_series(:b::bigint, :b::bigint + 15) n),
u AS (UPDATE jobs j SET status = 'succeeded', provider = 'local', object_key = i.key, size_bytes = i.size, sha256 = 'abc', content_type = 'video/mp4', error_code = NULL, error_message = NULL, finished_at = COALESCE(finished_at, now()), updated_at = now() FROM i WHERE j.id = i.id AND j.status = ANY('{running}') RETURNING j.id, j.callback_url, i.key, i.size, i.shard),
w AS (INSERT INTO webhook_deliveries (id, job_id, url) SELECT gen_random_uuid(), id, callback_url FROM u WHERE callback_url IS NOT NULL),
f AS (INSERT INTO stored_files (job_id, provider, object_key, size_bytes) SELECT id, 'local', key, size FROM u ON CONFLICT (job_id) DO NOTHING RETURNING job_id, size_bytes),
r AS (DELETE FROM storage_reservations WHERE job_id IN (SELECT id FROM u)),
up AS (INSERT INTO storage_usage (provider, shard, bytes_used, file_count) SELECT 'local', u.shard, SUM(f.size_bytes), count(*) FROM f JOIN u ON u.id = f.job_id GROUP BY u.shard ORDER BY u.shard ON CONFLICT (provider, shard) DO UPDATE SET bytes_used = storage_usage.bytes_used + EXCLUDED.bytes_used, file_count = storage_usage.file_count + EXCLUDED.file_count, updated_at = now())
SELECT id FROM u;
