#!/usr/bin/env bash
# Makes sure Postgres (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379) answer.
# Starts the local servers when none answers, installing Debian's packages when missing.
# Used by `just up` and `just test`; safe to run again.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/../retry.sh"

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""

install() {
  if [ -z "$apt_updated" ]; then retry $SUDO apt-get update -qq; apt_updated=1; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -o Acquire::Retries=3 -y -qq "$@" >/dev/null
}

pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }
wait_for() { for _ in $(seq 1 50); do "$1" && return 0; sleep 0.2; done; return 1; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "installing postgresql..."; install postgresql postgresql-client
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Local development only: trust loopback so tests can create their own databases.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  echo "starting postgresql $version..."
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || $SUDO pg_ctlcluster "$version" main start
  wait_for pg_up || { echo "postgres did not come up on $PG_HOST:$PG_PORT" >&2; exit 1; }
fi

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    echo "installing redis..."; install redis-server redis-tools
  fi
  echo "starting redis..."
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  wait_for redis_up || { echo "redis did not come up on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
fi
echo "postgres: $PG_HOST:$PG_PORT  redis: 127.0.0.1:$REDIS_PORT"
