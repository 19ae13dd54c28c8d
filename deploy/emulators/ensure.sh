#!/usr/bin/env bash
# Installs the storage emulators the tests start: moto (S3, PyPI) in a venv and Azurite (Azure
# Blob, npm). Installed once under $CLIPSTASH_EMULATORS (default ~/.cache/clipstash-emulators),
# outside the clone, so fresh clones on one machine reuse them. Prints the two binaries' paths.
# Used by `just test` and `.ci/run`; safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../retry.sh"
dest=${CLIPSTASH_EMULATORS:-$HOME/.cache/clipstash-emulators}
mkdir -p "$dest"

# The stamp covers the pinned versions only (file contents, not paths), so every clone shares it.
stamp() { cat "$here/requirements.txt" "$here/package.json" | sha256sum | cut -c1-16; }
want=$(stamp)
# Installed means the stamp matches and both binaries are there (a half-deleted cache is redone).
if [ "$(cat "$dest/.stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$dest/venv/bin/moto_server" ] \
   || [ ! -x "$dest/node_modules/.bin/azurite-blob" ]; then
  echo "installing storage emulators into $dest ..." >&2
  rm -rf "$dest/venv" "$dest/node_modules" "$dest/package-lock.json"
  python3 -m venv "$dest/venv"
  retry "$dest/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  command -v npm >/dev/null || { retry apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -o Acquire::Retries=3 -y -qq nodejs npm >&2; }
  cp "$here/package.json" "$dest/package.json"
  (cd "$dest" && retry npm install --silent --no-audit --no-fund >&2)
  echo "$want" > "$dest/.stamp"
fi
echo "CLIPSTASH_MOTO=$dest/venv/bin/moto_server"
echo "CLIPSTASH_AZURITE=$dest/node_modules/.bin/azurite-blob"
