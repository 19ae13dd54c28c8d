#!/usr/bin/env bash
# Installs Schemathesis (PyPI, pinned in requirements.txt) into a venv under $CLIPSTASH_FUZZ
# (default ~/.cache/clipstash-fuzz), outside the clone, once per pinned version. Prints the
# path of its `st` command. Used by `just fuzz`; safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../retry.sh"
dest=${CLIPSTASH_FUZZ:-$HOME/.cache/clipstash-fuzz}
mkdir -p "$dest"
want=$(sha256sum < "$here/requirements.txt" | cut -c1-16)
if [ "$(cat "$dest/.stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing Schemathesis into $dest ..." >&2
  rm -rf "$dest/venv"
  python3 -m venv "$dest/venv"
  retry "$dest/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" > "$dest/.stamp"
fi
echo "$dest/venv/bin/st"
