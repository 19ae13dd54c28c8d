#!/usr/bin/env bash
# What Postgres alone can do for the small-job path on this machine, without workers, Redis
# or HTTP: pgbench runs the claim and completion statements of `clipstash_db::transitions`
# (copied here with literal values; keep them in step) against a scratch database built from
# migrations/, 10 s each:
#   one-job        claim, then complete with the lock release folded in: a statement each per
#                  job (32 clients, as 2 workers x 16 jobs each held a connection)
#   batched-done   claim and unlock one job at a time, completions 16 per statement (32 clients)
#   batched        claims and completions 16 per statement, as the workers' lock sessions send
#                  them (8 clients: each worker has one session)
# Jobs per second is the figure: the one-job tps, the claims' tps when completions are
# batched, and 16 x the tps of either script when both are.
# Usage: crates/bench/pgbench/run.sh [postgres URL of a server to create a database on]
set -euo pipefail
command -v pgbench >/dev/null || { echo "pgbench not found: it comes with Debian's postgresql package (just services installs it)" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../../.."
url="${1:-postgres://postgres@127.0.0.1:5432}"
db="clipstash_pgbench_$$"
psql -q "$url/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$url/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
for f in "$root"/migrations/*.sql; do psql -q -v ON_ERROR_STOP=1 "$url/$db" -f "$f"; done
psql -q "$url/$db" -c "INSERT INTO jobs (id, url, source, requested_source) \
  SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid, 'http://127.0.0.1:1/' || n, 'direct', 'auto' \
  FROM generate_series(1, 600000) n"
# Ids 1-300,000 queued (to claim), 300,001-600,000 running (to complete), fresh each run.
reset() {
  psql -q "$url/$db" -c "UPDATE jobs SET status = CASE WHEN id <= '00000000-0000-0000-0000-0000000493e0' \
    THEN 'queued' ELSE 'running' END, attempts = 0, provider = NULL WHERE true; \
    TRUNCATE stored_files, webhook_deliveries; UPDATE storage_usage SET bytes_used = 0, file_count = 0"
  psql -q "$url/$db" -c "VACUUM ANALYZE jobs"
}
bench() { pgbench -n -M prepared -j 2 -T 10 "$@" "$url/$db" 2>&1 | grep -E '^tps|^ - .*tps|aborted'; }
for round in 1 2; do
  reset; echo "== one-job (round $round)"; bench -c 32 -f "$here/one-job.sql"
  reset; echo "== batched-done (round $round)"; bench -c 32 -f "$here/claim-unlock.sql@16" -f "$here/complete16.sql@1"
  reset; echo "== batched (round $round)"; bench -c 8 -f "$here/claim16.sql" -f "$here/complete16.sql"
done
