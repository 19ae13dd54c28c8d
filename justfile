# clipstash: local recipes. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build output lives outside the clone so fresh clones rebuild incrementally.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", home_directory() / ".cache/clipstash-target")
# sslmode=disable: Postgres is on loopback here, where TLS protects nothing and costs ~10% of a
# small job's CPU (docs/CONFIGURATION.md#postgres-and-tls). Without it, TLS is used whenever the
# server offers it (libpq's `prefer`), as Debian's Postgres does.
export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/clipstash?sslmode=disable")
export REDIS_URL := env_var_or_default("REDIS_URL", "redis://127.0.0.1:6379")
export CLIPSTASH_STORAGE_DIR := env_var_or_default("CLIPSTASH_STORAGE_DIR", justfile_directory() / ".data/storage")
# Local runs fetch from loopback (the SSRF guard's switch; off by default in production).
export CLIPSTASH_ALLOW_PRIVATE_NETWORKS := "true"

data := justfile_directory() / ".data"
bin := CARGO_TARGET_DIR / "debug"

_default:
    @just --list

# Start Postgres and Redis if they do not answer (installing them if missing)
services:
    deploy/local/ensure-services.sh

# Build both binaries
build:
    cargo build --workspace --bins

# Create the database if missing and apply migrations
migrate: services build
    psql "postgres://postgres@127.0.0.1:5432/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'clipstash'" | grep -q 1 \
      || psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "CREATE DATABASE clipstash"
    {{bin}}/clipstash-api migrate

# Run the whole system locally: Postgres, Redis, the API on :8080 and one worker (metrics :9101)
up: migrate
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data}}/logs {{data}}/pids {{data}}/prometheus
    just down >/dev/null 2>&1 || true
    # Auth stays on locally, as in production: a fresh key named `local` on every `just up`
    # (the previous one is revoked), kept in .data/api-key for the curl session.
    # The key that encrypts a download's cookies at rest, shared by the API and the workers:
    # made once, kept in .data/secret-key.
    export CLIPSTASH_SECRET_KEY=${CLIPSTASH_SECRET_KEY:-$(just _secret-key)}
    {{bin}}/clipstash-api keys revoke local >/dev/null 2>&1 || true
    # Line 1 of `keys create` is the key, line 2 its webhook signing secret (docs/ACCESS.md).
    (umask 077; {{bin}}/clipstash-api keys create --name local 2>/dev/null > {{data}}/key.tmp \
      && head -n1 {{data}}/key.tmp > {{data}}/api-key && sed -n 2p {{data}}/key.tmp > {{data}}/webhook-secret; rm -f {{data}}/key.tmp)
    # The pinned yt-dlp (YouTube and other sites; video info), installed once per machine.
    eval "$(deploy/ytdlp/ensure.sh)"; export CLIPSTASH_YTDLP
    {{bin}}/clipstash-api serve >{{data}}/logs/api.log 2>&1 & echo $! > {{data}}/pids/api.pid
    echo '[]' > {{data}}/prometheus/workers.json
    just worker >/dev/null
    for _ in $(seq 1 100); do curl -fs http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.1; done
    curl -fs http://127.0.0.1:8080/readyz >/dev/null || { echo "API did not become ready; see {{data}}/logs/api.log"; exit 1; }
    echo "clipstash is up"
    echo "  API:            http://127.0.0.1:8080   (metrics: http://127.0.0.1:8080/metrics)"
    echo "  worker 1:       metrics http://127.0.0.1:9101/metrics"
    echo "  storage:        $CLIPSTASH_STORAGE_DIR"
    echo "  logs:           {{data}}/logs/"
    echo "  API key:        $(cat {{data}}/api-key)   (in {{data}}/api-key; new on every just up)"
    echo "  more workers:   just worker;  Prometheus: just monitor;  stop: just down"
    echo "  try:            KEY=\$(cat .data/api-key)"
    echo "                  curl -s -XPOST localhost:8080/v1/downloads -H \"authorization: Bearer \$KEY\" -H 'content-type: application/json' -d '{\"url\":\"https://example.com/video.mp4\"}'"
    echo "                  curl -s -G localhost:8080/v1/videos/info -H \"authorization: Bearer \$KEY\" --data-urlencode 'url=https://www.youtube.com/shorts/VIDEO_ID'"

# Add one more worker on the next free metrics port (9101, 9102, ...)
worker:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data}}/logs {{data}}/pids {{data}}/prometheus
    export CLIPSTASH_SECRET_KEY=${CLIPSTASH_SECRET_KEY:-$(just _secret-key)}
    port=9101
    while [ -e {{data}}/pids/worker-$port.pid ] && kill -0 "$(cat {{data}}/pids/worker-$port.pid)" 2>/dev/null; do port=$((port+1)); done
    eval "$(deploy/ytdlp/ensure.sh)"; export CLIPSTASH_YTDLP
    CLIPSTASH_METRICS_LISTEN=127.0.0.1:$port {{bin}}/clipstash-worker run >{{data}}/logs/worker-$port.log 2>&1 &
    echo $! > {{data}}/pids/worker-$port.pid
    # Register the target for `just monitor` (file_sd: Prometheus picks it up without a reload).
    targets=$(for f in {{data}}/pids/worker-*.pid; do p=${f##*-}; p=${p%.pid}; kill -0 "$(cat $f)" 2>/dev/null && printf '"127.0.0.1:%s",' "$p"; done)
    echo "[{\"targets\": [${targets%,}], \"labels\": {\"env\": \"local\"}}]" > {{data}}/prometheus/workers.json
    echo "worker started: metrics http://127.0.0.1:$port/metrics, log {{data}}/logs/worker-$port.log"

# Print the local CLIPSTASH_SECRET_KEY, generating .data/secret-key (32 random bytes, base64) the first time
_secret-key:
    #!/usr/bin/env bash
    set -euo pipefail
    f={{data}}/secret-key
    mkdir -p {{data}}
    if [ ! -s "$f" ]; then (umask 077; head -c 32 /dev/urandom | base64 > "$f.tmp" && mv "$f.tmp" "$f"); fi
    cat "$f"

# Stop everything `just up`, `just worker` and `just monitor` started
down:
    #!/usr/bin/env bash
    for f in {{data}}/pids/*.pid; do
      [ -e "$f" ] || continue
      kill -TERM "$(cat "$f")" 2>/dev/null && echo "stopped $(basename "$f" .pid)"
      rm -f "$f"
    done

# Start a local Prometheus on :9090 scraping the local stack with deploy/prometheus.yml's jobs
monitor:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v prometheus >/dev/null || { . deploy/retry.sh; [ "$(id -u)" -eq 0 ] && S="" || S=sudo; retry $S apt-get update -qq; $S env DEBIAN_FRONTEND=noninteractive apt-get install -o Acquire::Retries=3 -y -qq prometheus >/dev/null; }
    mkdir -p {{data}}/prometheus/tsdb {{data}}/pids {{data}}/logs
    [ -e {{data}}/prometheus/workers.json ] || echo '[]' > {{data}}/prometheus/workers.json
    cp deploy/prometheus.yml deploy/alerts.yml {{data}}/prometheus/
    [ -e {{data}}/pids/prometheus.pid ] && kill "$(cat {{data}}/pids/prometheus.pid)" 2>/dev/null || true
    prometheus --config.file={{data}}/prometheus/prometheus.yml --storage.tsdb.path={{data}}/prometheus/tsdb \
      --web.listen-address=127.0.0.1:9090 >{{data}}/logs/prometheus.log 2>&1 &
    echo $! > {{data}}/pids/prometheus.pid
    echo "Prometheus: http://127.0.0.1:9090 (targets: http://127.0.0.1:9090/targets)"

# Run the whole test suite (starts Postgres and Redis if needed)
test: services
    #!/usr/bin/env bash
    set -euo pipefail
    command -v promtool >/dev/null || { . deploy/retry.sh; [ "$(id -u)" -eq 0 ] && S="" || S=sudo; retry $S apt-get update -qq; $S env DEBIAN_FRONTEND=noninteractive apt-get install -o Acquire::Retries=3 -y -qq prometheus >/dev/null; }
    deploy/check.sh
    # moto (S3) and Azurite (Azure Blob) for the storage tests: pinned, installed once per machine.
    eval "$(deploy/emulators/ensure.sh)"; export CLIPSTASH_MOTO CLIPSTASH_AZURITE
    # The pinned yt-dlp the yt-dlp tests run (offline, against a local server).
    eval "$(deploy/ytdlp/ensure.sh)"; export CLIPSTASH_YTDLP
    cargo build --workspace --bins
    cargo test --workspace
    # The patched metrics-exporter-prometheus is not a workspace member: upstream's own tests,
    # which check every line of the text render (crates/metrics-exporter-prometheus/CLIPSTASH.md).
    cargo test --locked --lib --no-default-features --manifest-path crates/metrics-exporter-prometheus/Cargo.toml
    # Schemathesis against an API and a worker of its own (docs/API.md); under 3 minutes.
    deploy/fuzz/run.sh

# Fault suite: the real binaries against a Postgres and a Redis of their own, one fault per scenario, then the promise checked (docs/RELIABILITY.md; `just chaos --help`, `just chaos --quick redis-pause`)
chaos *ARGS:
    cargo build --workspace --bins
    {{bin}}/clipstash-chaos {{ARGS}}

# Fuzz a running API (`just up`) from docs/openapi.json with Schemathesis, with the local key (`just test` fuzzes an API of its own)
fuzz URL="http://127.0.0.1:8080" *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    st=$(deploy/fuzz/ensure-schemathesis.sh)
    key=${CLIPSTASH_API_KEY:-$(cat {{data}}/api-key 2>/dev/null || true)}
    [ -n "$key" ] || { echo "no API key: run just up (it writes .data/api-key) or set CLIPSTASH_API_KEY"; exit 1; }
    curl -fs "{{URL}}/readyz" >/dev/null || { echo "no ready API at {{URL}}: run just up first"; exit 1; }
    # Under the default per-key rate (120/min), so the run tests the routes, not the limiter.
    "$st" run docs/openapi.json --url "{{URL}}" -H "Authorization: Bearer $key" \
      --checks all --rate-limit 100/m --max-time 120 {{ARGS}}

# Format and lint
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark the job path with release binaries (figures next to same-run baselines; docs/BENCHMARKS.md)
bench *ARGS: services
    cargo build --release --workspace --bins
    {{CARGO_TARGET_DIR}}/release/clipstash-bench {{ARGS}}

# A/B of the submit path: two builds' enqueue phase alternated ROUNDS times, medians printed. A and B are folders, each holding one build's clipstash-{api,worker,bench} (docs/BENCHMARKS.md)
bench-ab A B ROUNDS="10" *FLAGS="--keys 32": services
    #!/usr/bin/env bash
    set -euo pipefail
    runs=$(mktemp); trap 'rm -f "$runs"' EXIT
    for _ in $(seq 1 {{ROUNDS}}); do for build in {{A}} {{B}}; do
      out=$("$build/clipstash-bench" --enqueue-only {{FLAGS}} 2>&1) || { echo "$out" >&2; exit 1; }
      rate=$(awk '/^enqueue:/ {print $5}' <<<"$out")
      p99=$(awk '/^enqueue:/ {print $7}' <<<"$out")
      cpu=$(sed -n 's/.*CPU per submit: \([0-9]*\) µs.*/\1/p' <<<"$out")
      [ -n "$rate" ] && [ -n "$cpu" ] || { echo "no enqueue figures from $build:" >&2; echo "$out" >&2; exit 1; }
      echo "$build $rate $p99 $cpu" | tee -a "$runs"
    done; done
    median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
    for build in {{A}} {{B}}; do
      col() { awk -v b="$build" -v c="$1" '$1 == b { print $c }' "$runs" | median; }
      echo "$build: median submits/s $(col 2), p99 $(col 3) ms, CPU per submit $(col 4) µs ({{ROUNDS}} runs)"
    done

# The enqueue phase with Postgres and Redis moved to a CPU of their own (the API and the load generator on the others, as with the stores on their own hosts), alternated with the usual shared run; medians of the ratio to /healthz. Needs root: it moves the local servers' CPU affinity and puts it back (docs/BENCHMARKS.md)
bench-stores-apart ROUNDS="5" *FLAGS="": services
    #!/usr/bin/env bash
    set -euo pipefail
    [ "$(id -u)" -eq 0 ] || { echo "needs root: it moves the local Postgres' and Redis' CPU affinity" >&2; exit 1; }
    # The CPUs this shell may use (a cpuset need not start at 0): the stores get the last.
    cpus=()
    IFS=, read -ra parts <<<"$(taskset -cp $$ | sed 's/.*: //')"
    for p in "${parts[@]}"; do
      if [[ $p == *-* ]]; then cpus+=($(seq "${p%-*}" "${p#*-}")); else cpus+=("$p"); fi
    done
    [ "${#cpus[@]}" -ge 2 ] || { echo "needs at least 2 CPUs" >&2; exit 1; }
    stores=${cpus[-1]}; rest=$(IFS=,; echo "${cpus[*]:0:${#cpus[@]}-1}")
    # Every Postgres process (new backends inherit the postmaster's CPUs) and Redis thread,
    # with the CPUs each had, put back on exit.
    saved=$(for p in $(pgrep -x postgres) $(pgrep -x redis-server); do echo "$p $(taskset -p "$p" | awk '{print $NF}')"; done)
    [ -n "$saved" ] || { echo "no local postgres or redis-server process to move" >&2; exit 1; }
    echo "stores on CPU $stores, API and bench on $rest; masks to put back by hand if this is killed:" $saved >&2
    cargo build --release --workspace --bins
    bench={{CARGO_TARGET_DIR}}/release/clipstash-bench
    restore() { while read -r p mask; do taskset -a -p "$mask" "$p" >/dev/null 2>&1 || true; done <<<"$saved"; }
    runs=$(mktemp); trap 'restore; rm -f "$runs"' EXIT
    for _ in $(seq 1 {{ROUNDS}}); do for mode in apart shared; do
      if [ "$mode" = apart ]; then
        while read -r p _; do taskset -a -p -c "$stores" "$p" >/dev/null || { echo "cannot move pid $p" >&2; exit 1; }; done <<<"$saved"
        out=$(taskset -c "$rest" "$bench" --enqueue-only {{FLAGS}} 2>&1) || { echo "$out" >&2; exit 1; }
        restore
      else
        out=$("$bench" --enqueue-only {{FLAGS}} 2>&1) || { echo "$out" >&2; exit 1; }
      fi
      healthz=$(awk '/^baseline: GET \/healthz/ {print $4}' <<<"$out")
      read -r rate p99 ratio < <(awk '/^enqueue:/ {print $5, $7, $8}' <<<"$out") || true
      [ -n "$healthz" ] && [ -n "${ratio:-}" ] || { echo "no enqueue figures:" >&2; echo "$out" >&2; exit 1; }
      echo "$mode: /healthz $healthz/s, submits $rate/s, p99 $p99 ms, ${ratio} /healthz; $(grep -o 'CPU per submit: [^;]*' <<<"$out")" | tee -a "$runs"
    done; done
    median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
    for mode in apart shared; do
      echo "$mode: median $(awk -v m="$mode:" '$1 == m { sub(/x$/, "", $9); print $9 }' "$runs" | median)x /healthz ({{ROUNDS}} runs)"
    done

# What Postgres alone does for the small-job path: pgbench of the claim and completion statements, one job at a time and batched (docs/BENCHMARKS.md)
bench-postgres: services
    crates/bench/pgbench/run.sh
