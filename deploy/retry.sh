# Sourced by the install scripts: `retry CMD...` runs CMD up to three times, 10 s and then 20 s
# apart. Package registries fail now and then: a fresh machine's `.ci/run` once went red on
# pip answering "from versions: none" for the pinned Schemathesis, which installed a minute
# later. A command that fails three times fails the script as before.
retry() {
  local attempt
  for attempt in 1 2; do
    "$@" && return 0
    echo "failed (attempt $attempt of 3), retrying in $((attempt * 10)) s: $*" >&2
    sleep $((attempt * 10))
  done
  "$@"
}
