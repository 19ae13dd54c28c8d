#!/usr/bin/env bash
# Schemathesis against a live API and worker this script starts itself: free loopback ports,
# a database and a Redis queue prefix of their own, and an API key it creates, so it runs
# beside anything else (`just up`, other test runs). `just test` runs it; `just fuzz` points
# Schemathesis at an API you started yourself instead.
#
# Usage: deploy/fuzz/run.sh [extra `st run` arguments]
# Needs: the debug binaries (cargo build --workspace --bins), Postgres and Redis (as for the
# tests: CLIPSTASH_TEST_DATABASE_URL, CLIPSTASH_TEST_REDIS_URL), python3.
# Exits non-zero when Schemathesis finds anything (a 5xx, a response outside the contract).
#
# Both processes run with the egress guard on (CLIPSTASH_ALLOW_PRIVATE_NETWORKS=false), so
# jobs and callbacks Schemathesis submits never reach loopback or private networks; the
# contract's URL pattern only describes names, which the worker may try to resolve and fetch
# (retries off, 2 s connect timeout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
bin=${CARGO_TARGET_DIR:-$HOME/.cache/clipstash-target}/debug
admin=${CLIPSTASH_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
redis=${CLIPSTASH_TEST_REDIS_URL:-redis://127.0.0.1:6379}
max_time=${CLIPSTASH_FUZZ_MAX_TIME:-150}

st=$("$here/ensure-schemathesis.sh")
id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')
db=cs_fuzz_$id
queue=cs-fuzz:$id
work=$(mktemp -d)
read -r api_port metrics_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# The admin URL with this run's database, keeping its query (e.g. sslmode).
admin_base=${admin%%\?*}
db_url="${admin_base%/*}/$db${admin#"$admin_base"}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$redis" --scan --pattern "$queue*" 2>/dev/null | xargs -r redis-cli -u "$redis" del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
export DATABASE_URL=$db_url REDIS_URL=$redis CLIPSTASH_QUEUE=$queue
export CLIPSTASH_STORAGE_DIR=$work/storage CLIPSTASH_ALLOW_PRIVATE_NETWORKS=false CLIPSTASH_EGRESS_ALLOW=
# A key of this run's own, so submits with cookies are taken (sealed) as in production.
export CLIPSTASH_SECRET_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
"$bin/clipstash-api" migrate
# High limits: the run tests the routes, not the limiter (it has its own tests).
# Its whole output first (line 1 the key, line 2 its webhook secret): `| head -n1` could close
# the pipe before the second line and fail the run on a broken pipe.
created=$("$bin/clipstash-api" keys create --name fuzz --rate 100000 --max-active 100000 2>/dev/null)
key=${created%%$'\n'*}

CLIPSTASH_LISTEN=127.0.0.1:$api_port CLIPSTASH_HTTP_WORKERS=2 \
  "$bin/clipstash-api" serve >"$work/api.log" 2>&1 &
pids+=($!)
CLIPSTASH_METRICS_LISTEN=127.0.0.1:$metrics_port CLIPSTASH_CONCURRENCY=4 CLIPSTASH_MAX_RETRIES=0 \
  CLIPSTASH_CONNECT_TIMEOUT=2s CLIPSTASH_ATTEMPT_TIMEOUT=10s \
  CLIPSTASH_WEBHOOK_TIMEOUT=2s CLIPSTASH_WEBHOOK_MAX_ATTEMPTS=1 \
  "$bin/clipstash-worker" run >"$work/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$api_port/readyz" >/dev/null && curl -fs "http://127.0.0.1:$metrics_port/healthz" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$api_port/readyz" >/dev/null || { echo "fuzz: the API did not become ready:"; cat "$work/api.log"; exit 1; }

cd "$work"
status=0
# - hooks.py: a fresh Idempotency-Key per request (why: in the file).
# - use_after_free is off: DELETE cancels a job or deletes its stored object and the job stays
#   readable (GET answers its final state; docs/API.md), which that check reads as a leak.
# - One worker: Hypothesis's lambda inspection trips CPython 3.11's AST recursion check
#   when run from several threads ("AST constructor recursion depth mismatch").
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" CLIPSTASH_FUZZ_KEY=$key \
"$st" --config-file "$here/schemathesis.toml" run "$repo/docs/openapi.json" \
  --url "http://127.0.0.1:$api_port" --checks all --exclude-checks use_after_free --max-time "$max_time" --workers 1 \
  --seed "${CLIPSTASH_FUZZ_SEED:-$RANDOM}" "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz: Schemathesis found problems (above); API log tail:"
  tail -n 50 "$work/api.log"
fi
exit "$status"
